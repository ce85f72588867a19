"""Sweeps: launchers, interruption and resume, parallel starts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def sweep_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs" / "multirun").glob("*/*") if p.is_dir())


def attempts(job: Path) -> list[str]:
    return [line.split(" ", 3)[-1] for line in (job / "attempts.log").read_text().splitlines()]


def popen(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_HOME=str(tmp_path / "torch_home"))
    # A suite started in the background of a non-interactive shell inherits SIGINT ignored, and
    # so would the child; give it the default disposition so that Ctrl-C reaches it.
    return subprocess.Popen([sys.executable, "-m", "deepleak.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


# Adam costs the same every step, and the third job is long (about 12 s): the interruption
# lands inside it however slow the poll.
SWEEP = ("attack", "-m", "attack.iterations=5,6,2000,7", "attack/optimizer=adam", "batch_size=1", "save_images=false")


def test_interrupted_sweep_resumes_without_redoing_finished_jobs(tmp_path, deepleak):
    process = popen(tmp_path, *SWEEP)
    deadline = time.time() + 240
    while time.time() < deadline:
        done = [p for p in tmp_path.glob("outputs/multirun/*/*/*/status") if p.read_text().strip() == "done"]
        third = list(tmp_path.glob("outputs/multirun/*/*/2/attack.log"))
        if len(done) >= 2 and third and "step 10:" in third[0].read_text():
            break  # the third job is in the middle of its attack
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the sweep did not finish two jobs in time")
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "resume=true" in stderr
    (sweep,) = sweep_dirs(tmp_path)
    statuses = {p.name: (p / "status").read_text().strip() for p in sweep.iterdir() if (p / "status").is_file()}
    finished = {name for name, status in statuses.items() if status == "done"}
    assert len(finished) >= 2 and "interrupted" in statuses.values()

    result = deepleak(*SWEEP, "resume=true")
    assert result.returncode == 0, result.stderr
    assert sweep_dirs(tmp_path) == [sweep]  # the same sweep dir, not a new one
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    for job in jobs:
        assert (job / "status").read_text().strip() == "done"
        assert json.loads((job / "metrics.json").read_text())["trials_done"] == 1
        history = attempts(job)
        if job.name in finished:
            assert history == ["started", "skipped: complete"], job.name  # never ran twice
        else:
            assert history[-1] == "started" and "skipped: complete" not in history
    assert statuses["2"] == "interrupted"
    # The interrupted attempt wrote its best-so-far result, and the rerun kept it aside.
    kept = json.loads((sweep / "2" / "previous-1" / "metrics.json").read_text())
    assert kept["per_trial"][0]["interrupted"] is True
    assert kept["per_trial"][0]["psnr_mean"] is not None


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers_run_every_job(deepleak, tmp_path, launcher):
    result = deepleak("attack", "-m", "batch_size=1,2,4", "attack=none", f"hydra/launcher={launcher}", timeout=600)
    assert result.returncode == 0, result.stderr
    (sweep,) = sweep_dirs(tmp_path)
    metrics = [json.loads(p.read_text()) for p in sorted(sweep.rglob("metrics.json"))]
    assert sorted(m["batch_size"] for m in metrics) == [1, 2, 4]


def test_a_failed_job_does_not_stop_the_sweep(deepleak, tmp_path):
    result = deepleak("attack", "-m", "batch_size=2,100000,3", "attack=none")
    (sweep,) = sweep_dirs(tmp_path)
    statuses = [(sweep / str(i) / "status").read_text().strip() for i in range(3)]
    assert statuses == ["done", "failed", "done"]
    assert "100000" in (sweep / "1" / "error.txt").read_text()
    assert result.returncode == 1  # the sweep reports that a job failed


def test_two_runs_started_together_write_two_dirs(tmp_path):
    processes = [popen(tmp_path, "attack", "attack=none") for _ in range(2)]
    for process in processes:
        process.communicate(timeout=120)
        assert process.returncode == 0
    dirs = [p for p in (tmp_path / "outputs" / "runs").glob("*/*") if p.is_dir()]
    assert len(dirs) == 2
    assert all((d / "metrics.json").is_file() for d in dirs)


def test_a_scenario_sweep_resumes_into_its_own_dir(deepleak, tmp_path):
    """``-m +scenario=fedsgd,fedavg`` sweeps both scenarios; rerun with resume=true, the same
    sweep dir is found (the overrides are recorded as Hydra got them) and nothing reruns."""
    sweep_args = ("attack", "-m", "+scenario=fedsgd,fedavg", "attack=none", "save_images=false")
    first = deepleak(*sweep_args)
    assert first.returncode == 0, first.stderr
    (sweep,) = sweep_dirs(tmp_path)
    names = [json.loads((sweep / str(i) / "metrics.json").read_text())["scenario"] for i in range(2)]
    assert names == ["fedsgd", "fedavg"]
    again = deepleak(*sweep_args, "resume=true")
    assert again.returncode == 0, again.stderr
    assert sweep_dirs(tmp_path) == [sweep]
    assert all(attempts(sweep / str(i)) == ["started", "skipped: complete"] for i in range(2))
