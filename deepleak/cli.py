"""The ``deepleak`` command: ``deepleak attack [hydra overrides]``. Dispatch only.

User errors (bad config, missing data, impossible batch) end in one line on stderr and
exit code 2; the full story is in the run's log.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from deepleak.config import chosen_group_appends, register
from deepleak.errors import DeepleakError
from deepleak.runtime import set_threads
from deepleak.runs import archive_previous, find_sweep, is_complete, record_attempt, set_status

log = logging.getLogger("deepleak")

USAGE = """usage: deepleak attack [OVERRIDE ...] [-m]
       deepleak train [OVERRIDE ...]
       deepleak report DIR [DIR ...] [--out PATH]

  deepleak attack                         FedSGD on the embedded sample set
  deepleak attack scenario=fedavg         (another scenario; +scenario=fedavg works too)
  deepleak attack -m +experiment=paper_fedavg   (a preset sweep; scale=smoke|cpu|paper)
  deepleak attack batch_size=8 attack=ig  (override any config value)
  deepleak attack -m batch_size=1,2,4     (a sweep)
  deepleak attack --cfg job               (print the composed config)
  deepleak attack --help                  (all config groups and options)
  deepleak train model=resnet18 epochs=5  (a trained victim: checkpoint.pt in its run dir)
  deepleak report outputs/multirun/<date>/<time>   (tables and figures of a sweep)
"""

def fail(message: str) -> None:
    sys.stderr.write(f"deepleak: error: {message}\n")
    raise SystemExit(2)


def run_job(task, cfg: DictConfig) -> None:
    """Run one job with a status marker; a user error becomes one line, never a traceback.

    In a sweep a failed job is recorded (status ``failed`` and ``error.txt``) and the sweep
    goes on; a single run exits with code 2.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("resume") and is_complete(run_dir, cfg.trials):
        record_attempt(run_dir, "skipped: complete")
        log.info("resume: %s is complete; skipped", run_dir)
        return
    previous = archive_previous(run_dir)
    if previous is not None:
        log.info("resume: the unfinished attempt's results were moved to %s", previous)
    set_threads(cfg.threads, str(HydraConfig.get().launcher.get("_target_", "")))
    record_attempt(run_dir, "started")
    set_status(run_dir, "running")
    try:
        task(cfg, run_dir)
    except DeepleakError as error:
        set_status(run_dir, "failed", str(error))
        log.error("%s", error)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            fail(str(error))
        return
    except KeyboardInterrupt:
        set_status(run_dir, "interrupted", "interrupted by the user")
        raise
    except Exception as error:
        set_status(run_dir, "failed", f"{type(error).__name__}: {error}")
        raise
    set_status(run_dir, "done")


def launch(command: str, config_name: str, task, validate, args: list[str]) -> None:
    """Check the command line (one line and exit 2 on a user error), then run ``task`` as
    the Hydra app of ``conf/<config_name>.yaml``, one status-marked job per run. ``args``
    come through :func:`deepleak.config.chosen_group_appends` (``+scenario=x`` -> ``scenario=x``)."""
    from deepleak.config import precheck  # noqa: PLC0415

    try:
        precheck(args, config_name=config_name, validate=validate, command=command)
    except DeepleakError as error:
        fail(str(error))

    @hydra.main(version_base=None, config_path="pkg://deepleak_conf", config_name=config_name)
    def app(cfg: DictConfig) -> None:
        run_job(task, cfg)

    sys.argv = [f"deepleak {command}", *args]
    app()


def attack_command(args: list[str]) -> None:
    from deepleak.tasks.attack import run, validate  # noqa: PLC0415

    overrides = chosen_group_appends(args, "config")
    launch("attack", "config", run, validate, resume_target(overrides))
    report_failed_jobs(overrides)


def report_failed_jobs(args: list[str]) -> None:
    """After a sweep: one line per failed job, and exit code 1 if any failed."""
    from deepleak.config import split_flags  # noqa: PLC0415
    from deepleak.runs import RESERVED  # noqa: PLC0415
    from deepleak.runs import read_status  # noqa: PLC0415

    overrides, multirun, skip = split_flags(args)
    if not multirun or skip:
        return
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.dir=")]
    sweep = Path(given[-1]) if given else Path(RESERVED.get(str(Path("outputs") / "multirun"), RESERVED.get("outputs/multirun", "")))
    if not sweep.is_dir():
        return
    jobs = [job for job in sorted(sweep.iterdir()) if (job / "status").is_file()]
    failed = [job for job in jobs if read_status(job) == "failed"]
    for job in failed:
        reason = (job / "error.txt").read_text().strip() if (job / "error.txt").is_file() else "see its log"
        sys.stderr.write(f"deepleak: job {job} failed: {reason}\n")
    if failed:
        sys.stderr.write(f"deepleak: {len(failed)} of {len(jobs)} jobs failed; the others are complete in {sweep}\n")
        raise SystemExit(1)


def resume_target(args: list[str]) -> list[str]:
    """With ``-m ... resume=true``, send the sweep into the newest earlier sweep dir that had
    the same overrides (unless ``hydra.sweep.dir`` is given); its complete jobs are skipped."""
    from deepleak.config import split_flags  # noqa: PLC0415

    overrides, multirun, _ = split_flags(args)
    resume = any(o.split("=", 1)[0].lstrip("+") == "resume" and o.split("=", 1)[1].lower() == "true" for o in overrides)
    if not (resume and multirun) or any(o.startswith("hydra.sweep.dir=") for o in overrides):
        return args
    task = [o for o in overrides if not o.startswith("hydra") and not o.startswith("+hydra")]
    sweep = find_sweep(Path("outputs") / "multirun", task)
    if sweep is None:
        log.warning("resume=true: no earlier sweep with these overrides under outputs/multirun; starting a new one")
        return args
    sys.stderr.write(f"deepleak: resuming the sweep in {sweep}\n")
    return [*args, f"hydra.sweep.dir={sweep}"]


def _terminate(signum, frame) -> None:  # noqa: ARG001
    # SIGTERM (cluster pre-emption, kill) takes the same path as Ctrl-C: best-so-far
    # results are written and the job is marked interrupted.
    raise KeyboardInterrupt


def report_command(args: list[str]) -> None:
    from deepleak.report import main as report_main  # noqa: PLC0415

    report_main(args)


def train_command(args: list[str]) -> None:
    from deepleak.tasks.train import run, validate  # noqa: PLC0415
    from deepleak.config.train import register_train  # noqa: PLC0415

    register_train()
    launch("train", "train", run, validate, chosen_group_appends(args, "train"))


COMMANDS = {"attack": attack_command, "train": train_command, "report": report_command}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; available: {', '.join(COMMANDS)}")
    register()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        COMMANDS[command](rest)
    except KeyboardInterrupt:
        sys.stderr.write("deepleak: interrupted; finished jobs are kept, rerun a sweep with resume=true to finish it\n")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
