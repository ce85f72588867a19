"""The label noise floor in every run: a blind, flat guess of the counts scored per trial."""

import pytest

from deepleak import metrics
from deepleak.tasks.attack import run

SMALL = ("model.width=8", "dataset.resolution=16", "save_images=false")


def test_every_trial_records_the_label_floor_of_its_batch(compose, tmp_path):
    """metrics.json's label_floor: the flat guess's label accuracy on the trial's true labels,
    and its mean over trials in the summary (the reference row of every label table)."""
    result = run(compose(*SMALL[:3], "attack=none", "batch_size=12", "distribution=random", "trials=3"), tmp_path / "run")
    for trial in result["per_trial"]:
        assert trial["label_floor"] == metrics.label_floor(trial["true_labels"], 10)
        assert 0 < trial["label_floor"] <= 1
    floors = [t["label_floor"] for t in result["per_trial"]]
    assert result["summary"]["label_floor"]["mean"] == pytest.approx(sum(floors) / 3)
