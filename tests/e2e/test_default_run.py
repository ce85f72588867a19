"""README's first run, in the default suite: plain ``deepleak attack`` (a FedSGD batch of 4
distinct-class sample-set crops at 32 px, an untrained LeNet of width 32, deepleak's labels
(``adaptive``: here feature_fit's restarts, agreed by zeroshot_plus) and L-BFGS gradient matching (``geng_plus``)) restores every label and
reconstructs the batch at 43.9 dB (README: 43.91 dB, about 25 s). The bar is 35 dB; the
batch's noise floor is 12.3 dB (the sample set's mean image; uniform noise 7.9 dB)."""

import json

from crafted import noise_floor_psnr
from deepleak.data import SampleDataset

LABELS, RECIPE = "adaptive", "geng_plus"  # the defaults (conf/config.yaml)


def test_the_default_run_restores_every_label_and_passes_35_db(deepleak, tmp_path):
    result = deepleak("attack", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "outputs" / "runs").glob("*/*") if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    trial = metrics["per_trial"][0]
    print(f"default run: labels {trial['restored_labels']} (true {trial['true_labels']}), "
          f"PSNR {trial['psnr']} mean {trial['psnr_mean']:.3f} dB, {metrics['wall_seconds']:.1f} s")

    # The default batch: 4 distinct-class crops at 32 px of the sample set, FedSGD.
    assert metrics["scenario"] == "fedsgd" and metrics["dataset"] == "SampleDataset"
    assert metrics["batch_size"] == 4 and metrics["image_shape"] == [3, 32, 32] and metrics["trials"] == 1
    assert len(set(trial["true_labels"])) == 4

    # metrics.json names the label method and the recipe that ran.
    assert metrics["labels"] == LABELS and trial["label_route"] == "feature_fit_agreed"
    named = {value for value in metrics.values() if isinstance(value, str)}
    assert RECIPE in named, f"metrics.json does not name the recipe {RECIPE!r}: {sorted(named)}"

    # The headline: every label, >= 35 dB (measured 43.905 dB), >= 10 dB above the floor.
    assert trial["label_accuracy"] == 1.0 and trial["restored_labels"] == sorted(trial["true_labels"])
    assert metrics["summary"]["label_accuracy"]["mean"] == 1.0
    data = SampleDataset(num_classes=metrics["num_classes"], resolution=32)
    images, _ = data.batch(trial["indices"])
    assert noise_floor_psnr(images) + 10 <= 35
    assert trial["psnr_mean"] >= 35, trial["psnr"]
    assert metrics["summary"]["psnr_mean"]["mean"] == trial["psnr_mean"]
    assert all(value >= 30 for value in trial["psnr"]), trial["psnr"]  # no image left behind (measured >= 39.6)
