"""scripts/adaptive_fit.py: adaptive's K >= classes settings scored on cached per-trial inputs
with Adaptive's own weight and blend."""

import json
import re

import pytest


def confident_row(counts_less_mass):
    """K = 16 over 10 classes, classes 0-3 once and 4-9 twice; a confident victim (c = 0.9, and
    the counts-less-mass below misses m = 10 / 32 of the labels: zeroshot_plus's weight
    1 / (1 + (0.9 / (0.15 m^0.25))^4) < 1e-3) whose zeroshot_plus counts are flat."""
    labels = [0, 1, 2, 3] + [c for c in range(4, 10) for _ in range(2)]
    return {"checkpoint": "crafted", "k": 16, "classes": 10, "confidence": 0.9, "zeroshot_plus": [1.6] * 10,
            "counts_less_mass": counts_less_mass, "present": [True] * 10, "labels": labels}


def test_the_residual_decides_the_flat_guess_s_remaining_units(adaptive_fit):
    """The flat guess gives its six extra units to classes 0-5: 12 of 16 right. A counts-less-mass
    of +1 on the twice-present classes and -1 on the others moves them to 4-9: 16 of 16, a gain
    of 0.25 over the floor; without the residual term (or with it pointing the other way) the
    answer is the flat guess's own, gain 0."""
    row = confident_row([-1.0] * 4 + [1.0] * 6)
    assert adaptive_fit.gains([row], 0.15, 4, 0.25, 0.5, 0.1) == {("crafted", 16): 0.25}
    assert adaptive_fit.gains([row], 0.15, 4, 0.25, 0.5, 0.0) == {("crafted", 16): 0.0}
    assert adaptive_fit.gains([confident_row([1.0] * 4 + [-1.0] * 6)], 0.15, 4, 0.25, 0.5, 0.1) == {("crafted", 16): 0.0}


def test_it_ranks_settings_and_reuses_its_cache(adaptive_fit, tmp_path, capsys, monkeypatch):
    """Two untrained (DLG) batches at K = 16: c is near 0, so zeroshot_plus keeps its weight and
    both residuals score the same, above the floor; the second run reads the cache, no attack."""
    cache = tmp_path / "inputs.json"
    argv = ["--checkpoints", "dlg", "--ks", "16", "--trials", "2", "--shrink", "0.15", "--sharpness", "4",
            "--mass-power", "0.25", "--present-share", "0.5", "--residual", "0,0.1", "--cache", str(cache)]
    adaptive_fit.main(argv)
    first = capsys.readouterr().out
    rows = re.findall(r"^\| 0.15 \| 4 \| 0.25 \| 0.5 \| (0|0.1) \| ([+-][0-9.]+) \| ([+-][0-9.]+) \|$", first, re.M)
    assert len(rows) == 2 and rows[0][1] == rows[1][1] and float(rows[0][1]) > 0.1
    assert len(json.loads(cache.read_text())) == 2
    monkeypatch.setattr(adaptive_fit, "inputs", lambda *a: pytest.fail("the cache was not used"))
    adaptive_fit.main(argv)
    assert capsys.readouterr().out == first
    other = tmp_path / "other.json"  # several caches are scored together: the same rows twice
    other.write_text(cache.read_text())
    adaptive_fit.main(argv + ["--cache", str(other)])
    assert capsys.readouterr().out.replace("4 trials", "2 trials") == first
    with pytest.raises(SystemExit):  # several caches are only read: a missing one is refused
        adaptive_fit.main(argv + ["--cache", str(tmp_path / "missing.json")])
    assert "missing.json does not exist" in capsys.readouterr().err


def test_cells_are_grouped_by_stage_and_overrides(adaptive_fit):
    assert adaptive_fit.group("/r/checkpoints/epoch_20.pt distribution=one_class") == "trained distribution=one_class"
    assert [adaptive_fit.group(f"/r/checkpoints/epoch_{e}.pt") for e in (0, 2, 3, 5, 10)] == \
        ["untrained", "untrained", "mid", "mid", "trained"]
    assert adaptive_fit.group("dlg model=mlp") == "untrained model=mlp"
