"""The zero-shot figure of the spine issue with deepleak's zero-shot variant (zeroshot_plus, the
default labels until 2026-12-07), through the same task code the CLI runs:
`deepleak attack labels=zeroshot_plus attack=none batch_size=16 dataset.num_classes=20
model.width=12 distribution=one_class_r distribution.r=R trials=50`."""

import pytest

from deepleak.tasks.attack import run



@pytest.mark.parametrize("r", [1, 2, 4, 6, 8])
def test_zero_shot_accuracy_with_duplicates(compose, tmp_path, r):
    cfg = compose(
        "labels=zeroshot_plus", "attack=none", "batch_size=16", "dataset.num_classes=20", "model.width=12",
        "distribution=one_class_r", f"distribution.r={r}", "trials=50",
    )
    result = run(cfg, tmp_path)
    accuracy = result["summary"]["label_accuracy"]["mean"]
    assert result["trials_done"] == 50
    assert all(sorted(t["true_labels"]).count(max(set(t["true_labels"]), key=t["true_labels"].count)) == r
               for t in result["per_trial"])
    assert accuracy >= 0.97, f"r={r}: {accuracy:.4f}"
