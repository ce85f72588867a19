"""Where a trial's seconds go (issue 24): metrics.json's per-trial ``timing`` splits the trial
into the client, the labels, the attack's set-up and iterations, and the scoring."""

import pytest

from deepleak.tasks.attack import run

SMALL = ("model.width=8", "dataset.resolution=16", "save_images=false", "attack.max_evaluations=30")


@pytest.mark.parametrize("extra", [(), ("attack=ig", "attack.restarts=2")])
def test_timing_parts_add_up_to_the_trial(compose, tmp_path, extra):
    result = run(compose(*SMALL, *extra), tmp_path / "run")
    for trial in result["per_trial"]:
        timing = trial["timing"]
        assert set(timing) == {"client_s", "labels_s", "attack_setup_s", "attack_iterations_s", "scoring_s", "trial_s"}
        assert all(value >= 0 for value in timing.values())
        parts = sum(value for key, value in timing.items() if key != "trial_s")
        assert parts == pytest.approx(timing["trial_s"], abs=1e-6)
        # The iterations are inside the attack clock, and the clock inside the attack's wall time.
        assert trial["attack_iteration_seconds"] == timing["attack_iterations_s"]
        assert 0 < timing["attack_iterations_s"] <= trial["attack_seconds"]
        assert trial["attack_seconds"] <= timing["attack_setup_s"] + timing["attack_iterations_s"] + 1e-6
        assert trial["label_seconds"] == timing["labels_s"]


def test_labels_only_runs_time_no_iterations(compose, tmp_path):
    result = run(compose(*SMALL[:3], "attack=none"), tmp_path / "run")
    timing = result["per_trial"][0]["timing"]
    assert timing["attack_iterations_s"] == 0.0 and timing["labels_s"] > 0
