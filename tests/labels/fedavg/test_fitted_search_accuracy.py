"""``labels=fedavg_fitted_search`` reaches its claimed accuracy (0.9625 on the default LeNet, 20
clients; docs/fedavg.md) on a case small enough for the fast suite; the soft fit alone, which
is what a search that never moved a label would return, does not."""

from deepleak.tasks.attack import run

# LeNet width 8 (DLG init) on the 16 px sample set, 10 classes, N = 8 distinct labels, B = 4,
# E = 2, eta = 0.1; every fit 300 Adam steps and 2 feature draws per scored label set (the
# method's 1000 steps and 3 draws cost ~2x the time and got 23 of the 24 labels here).
# Clients 37-39: the first three consecutive clients of 0-39 on which the soft fit gets a label
# wrong (measured on clients 0-39 at 300 steps: soft fit 306 of 320 labels, 0.956; the search,
# 3 draws, fixed 9 of the 13 clients the soft fit got wrong).
SMALL_CLIENTS = (
    "+scenario=fedavg", "attack=none", "batch_size=8", "distribution=unique", "scenario.local_batch_size=4",
    "scenario.epochs=2", "scenario.lr=0.1", "dataset.resolution=16", "model.width=8", "first_trial=37",
    "trials=3", "save_images=false",
)


def test_fitted_search_reaches_its_accuracy_on_a_small_case(compose, tmp_path):
    """Measured: fitted_search 24 of 24 labels (1.0), the soft fit 21 of 24 (0.875). The bar,
    0.95, is met with one label to spare and fails the soft fit by two."""
    fast = ("labels.iterations=300", "labels.starts=2", "+labels.fitted.iterations=300")
    searched = run(compose(*SMALL_CLIENTS, "labels=fedavg_fitted_search", *fast), tmp_path / "search")
    fitted = run(compose(*SMALL_CLIENTS, "labels=fedavg_fitted", "labels.iterations=300"), tmp_path / "fitted")
    assert searched["labels"] == "fitted_search" and fitted["labels"] == "fitted"
    assert [t["trial"] for t in searched["per_trial"]] == [37, 38, 39]
    search_accuracy = searched["summary"]["label_accuracy"]["mean"]
    fitted_accuracy = fitted["summary"]["label_accuracy"]["mean"]
    assert search_accuracy >= 0.95, (search_accuracy, fitted_accuracy)
    assert fitted_accuracy < 0.95, (search_accuracy, fitted_accuracy)
