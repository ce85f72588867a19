"""One job under Hydra, and a sweep's jobs after it ran.

:func:`run_job` wraps a task with status markers (``running``, ``done``, ``failed``,
``interrupted``), skips a complete job on ``resume=true`` and moves an unfinished attempt's
results aside. :func:`resume_target` finds the sweep dir to resume; :func:`report_failed_jobs`
lists a sweep's failed jobs once it is over.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from deepleak.config import split_flags
from deepleak.errors import DeepleakError, fail
from deepleak.runtime import set_threads
from deepleak.runs import RESERVED, archive_previous, find_sweep, incomplete_reason, read_status, record_attempt, set_status

log = logging.getLogger("deepleak")


def run_job(task, cfg: DictConfig) -> None:
    """Run one job with a status marker; a user error becomes one line, never a traceback.

    In a sweep a failed job is recorded (status ``failed`` and ``error.txt``) and the sweep
    goes on; a single run exits with code 2.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # deepleak train has no resume (nor trials): an earlier attempt there is always moved aside.
    reason = incomplete_reason(run_dir, cfg.trials) if cfg.get("resume") else "this run does not resume"
    if reason is None:
        record_attempt(run_dir, "skipped: complete")
        log.info("resume: %s is complete; skipped", run_dir)
        return
    previous = archive_previous(run_dir)
    if previous is not None:
        log.info("the earlier attempt here (%s) was moved to %s", reason, previous)
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


def report_failed_jobs(args: list[str]) -> None:
    """After a sweep: one line per failed job, and exit code 1 if any failed."""
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
