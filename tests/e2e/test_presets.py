"""Every experiment preset of conf/experiment/ runs end to end at scale=smoke (a few jobs, one
trial, a step or two each) and its sweep is reported: a new preset is picked up by its file."""

from pathlib import Path

import pytest

from deepleak.cli import main
from deepleak.config import config_dir

PRESETS = sorted(path.stem for path in (Path(config_dir()) / "experiment").glob("*.yaml"))


@pytest.mark.e2e
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_and_reports_at_smoke_scale(deepleak, tmp_path, capsys, preset):
    extra = []
    if preset == "paper_trained_vs_untrained":
        # As scripts/reproduce_trained_vs_untrained.sh: a trained victim (one epoch here) and
        # the untrained one side by side.
        trained = deepleak("train", "model.width=12", "dataset.num_classes=100", "dataset.crops_per_class=4",
                           "epochs=1", f"hydra.run.dir={tmp_path / 'train'}")
        assert trained.returncode == 0, trained.stderr[-3000:]
        extra = [f"model.checkpoint=null,{tmp_path / 'train' / 'checkpoint.pt'}"]
    sweep = tmp_path / "sweep"
    result = deepleak("attack", "-m", f"+experiment={preset}", "scale=smoke", f"hydra.sweep.dir={sweep}", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert jobs, f"{preset}: no job ran"
    for job in jobs:
        assert (job / "status").read_text().strip() == "done", (job, (job / "error.txt").read_text() if (job / "error.txt").is_file() else "")
        assert (job / "metrics.json").is_file()

    # `deepleak report DIR`, in this process: a second interpreter (torch, matplotlib) per
    # preset would cost more than the report itself.
    main(["report", str(sweep)])
    assert "did not finish" not in capsys.readouterr().out
    assert (sweep / "report" / "report.md").is_file()
