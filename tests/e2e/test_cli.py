"""The command line as users type it: errors are one line, runs write complete dirs."""

import json
from pathlib import Path

import pytest


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs" / "runs").glob("*/*") if p.is_dir())


@pytest.mark.parametrize(
    "args, expected",
    [
        (["atack.iterations=5"], "unknown config key 'atack"),
        (["dataset=cifar11"], "unknown option dataset=cifar11; choose one of cifar10, imagenet, sample"),
        (["batch_size=abc"], "batch_size must be of type int"),
        (["dataset=cifar10", "dataset.root=/nonexistent"], "/nonexistent"),
        (["batch_size=-3"], "batch_size must be >= 1, got -3"),
        (["batch_size=100000"], "100000"),
        (["attack.iterations=abc"], "attack.iterations"),
        (["-m", "batch_size=1,abc"], "batch_size must be of type int"),
        (["-m", "batch_size=1,2", "--cfg", "job"], "-m and --cfg cannot be combined"),
        (["labels.wrong=1"], "labels.wrong is now wrong_labels"),
        (["+scenario=fedavg", "scenario.batch_size=2"], "scenario.batch_size is now scenario.local_batch_size"),
        (["scenario=fedavg", "scenario.local_batch_size=8"], "scenario.local_batch_size (the local mini-batch B = 8) must be <="),
    ],
)
def test_user_errors_end_in_one_line(deepleak, tmp_path, args, expected):
    result = deepleak("attack", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("deepleak: error: ")
    assert expected in lines[0]


def test_a_failed_run_is_marked_failed_with_its_reason(deepleak, tmp_path):
    result = deepleak("attack", "batch_size=100000")
    assert result.returncode == 2
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "status").read_text().strip() == "failed"
    assert "100000" in (run_dir / "error.txt").read_text()


def test_unknown_command(deepleak):
    result = deepleak("atack")
    assert result.returncode == 2
    assert result.stderr.strip() == "deepleak: error: unknown command 'atack'; available: attack, train, report"


def test_a_run_writes_everything_into_its_dir(deepleak, tmp_path):
    result = deepleak("attack", "batch_size=2", "attack.iterations=2", "distribution=unique")
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "status").read_text().strip() == "done"
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "batch_size: 2" in config and "deepleak.scenarios.FedSGD" in config
    assert "trial 0: label accuracy" in (run_dir / "attack.log").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scenario"] == "fedsgd" and metrics["labels"] == "adaptive"  # the default
    assert metrics["device"] == "cpu" and metrics["seed"] == 0
    trial = metrics["per_trial"][0]
    assert len(trial["restored_labels"]) == len(trial["true_labels"]) == 2
    assert len(trial["psnr"]) == len(trial["ssim"]) == 2
    assert trial["iterations"] == 2 and trial["attack_seconds"] > 0
    assert metrics["wall_seconds"] > 0
    assert metrics["summary"]["label_accuracy"]["mean"] == pytest.approx(trial["label_accuracy"])
    # LPIPS weights are absent in this TORCH_HOME: recorded with the reason, never a number.
    assert trial["lpips"] is None and "alexnet" in metrics["lpips_absent_reason"].lower()
    images = run_dir / "images" / "trial_000"
    assert {p.name for p in images.iterdir()} == {"grid.png", "rec_00.png", "rec_01.png"}


def test_multirun_writes_one_dir_per_job(deepleak, tmp_path):
    result = deepleak("attack", "-m", "batch_size=1,2", "attack.iterations=1", "save_images=false")
    assert result.returncode == 0, result.stderr
    (sweep,) = [p for p in (tmp_path / "outputs" / "multirun").glob("*/*") if p.is_dir()]
    assert (sweep / "multirun.yaml").is_file()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    sizes = [json.loads((job / "metrics.json").read_text())["batch_size"] for job in jobs]
    assert sizes == [1, 2]


def test_a_scenario_is_chosen_with_or_without_plus(deepleak):
    """``+scenario=fedavg`` (the form users type) and ``scenario=fedavg`` print one config;
    without either the primary config's FedSGD."""
    plus = deepleak("attack", "+scenario=fedavg", "attack=ig", "--cfg", "job")
    plain = deepleak("attack", "scenario=fedavg", "attack=ig", "--cfg", "job")
    default = deepleak("attack", "--cfg", "job")
    assert plus.returncode == plain.returncode == default.returncode == 0, plus.stderr + plain.stderr + default.stderr
    assert plus.stdout == plain.stdout
    assert "deepleak.scenarios.FedAvg" in plus.stdout and "local_batch_size: 2" in plus.stdout
    assert "deepleak.scenarios.FedSGD" in default.stdout and "wrong_labels: 0" in default.stdout


def test_help_lists_every_group(deepleak):
    result = deepleak("attack", "--help")
    assert result.returncode == 0, result.stderr
    for line in ("scenario: fedavg, fedsgd", "experiment: defences, paper_batch_size", "attack: cosine_lbfgs, dlg, fedavg_replay",
                 "defence: clip, dp_sgd, noise, none, prune, quantize, secagg, soteria"):
        assert line in result.stdout
