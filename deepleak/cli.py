"""The ``deepleak`` command: ``deepleak attack|train|report [...]``. Dispatch only: argv ->
the checks -> Hydra (one status-marked job per run, :mod:`deepleak.jobs`).

User errors (bad config, missing data, impossible batch) end in one line on stderr and
exit code 2; the full story is in the run's log.
"""

from __future__ import annotations

import logging
import signal
import sys

import hydra
from omegaconf import DictConfig

from deepleak.config import chosen_group_appends, register
from deepleak.errors import DeepleakError, fail
from deepleak.jobs import report_failed_jobs, resume_target, run_job

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
