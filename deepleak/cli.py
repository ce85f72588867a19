"""The ``deepleak`` command: ``deepleak attack [hydra overrides]``. Dispatch only.

User errors (bad config, missing data, impossible batch) end in one line on stderr and
exit code 2; the full story is in the run's log.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from deepleak.config import register
from deepleak.errors import DeepleakError
from deepleak.runs import set_status

log = logging.getLogger("deepleak")

USAGE = """usage: deepleak attack [OVERRIDE ...] [-m]

  deepleak attack                         FedSGD on the embedded sample set
  deepleak attack +scenario=fedavg        (another scenario)
  deepleak attack batch_size=8 attack=ig  (override any config value)
  deepleak attack -m batch_size=1,2,4     (a sweep)
  deepleak attack --cfg job               (print the composed config)
  deepleak attack --help                  (all config groups and options)
"""

SCENARIO_KEYS = ("scenario", "+scenario", "++scenario", "~scenario")


def with_default_scenario(overrides: list[str]) -> list[str]:
    """Append ``+scenario=fedsgd`` unless a scenario is given; accept ``scenario=X`` too.

    The scenario group is not in the primary defaults so that the literal
    ``+scenario=fedavg`` (an append) works; this supplies FedSGD when it is absent.
    """
    result, given = [], False
    for item in overrides:
        key = item.split("=", 1)[0]
        if key in SCENARIO_KEYS:
            given = True
            if key == "scenario":
                item = "+" + item
        result.append(item)
    if not given:
        result.append("+scenario=fedsgd")
    return result


def fail(message: str) -> None:
    sys.stderr.write(f"deepleak: error: {message}\n")
    raise SystemExit(2)


def run_job(task, cfg: DictConfig) -> None:
    """Run one job with a status marker; a user error becomes one line, never a traceback.

    In a sweep a failed job is recorded (status ``failed`` and ``error.txt``) and the sweep
    goes on; a single run exits with code 2.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
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


def attack_command(args: list[str]) -> None:
    from deepleak.config import precheck  # noqa: PLC0415
    from deepleak.tasks.attack import run  # noqa: PLC0415

    overrides = with_default_scenario(args)
    try:
        precheck(overrides)
    except DeepleakError as error:
        fail(str(error))

    @hydra.main(version_base=None, config_path="pkg://deepleak_conf", config_name="config")
    def app(cfg: DictConfig) -> None:
        run_job(run, cfg)

    sys.argv = ["deepleak attack", *overrides]
    app()


COMMANDS = {"attack": attack_command}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; available: {', '.join(COMMANDS)}")
    register()
    COMMANDS[command](rest)


if __name__ == "__main__":
    main()
