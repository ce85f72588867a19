"""The structured-config schema, the run-dir resolver, and one-line config errors.

The schema types the top-level values (``batch_size=abc`` fails at start); Hydra's struct
mode rejects unknown keys anywhere (``atack.iterations=5`` fails at start). Every group
option is built with ``_target_``; its constructor checks its own values.
"""

from __future__ import annotations

import collections.abc
import inspect
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


@dataclass
class DeepleakConfig:
    dataset: Any = MISSING
    model: Any = MISSING
    scenario: Any = MISSING
    labels: Any = MISSING
    attack: Any = MISSING
    distribution: Any = MISSING
    batch_size: int = 4
    seed: int = 0
    trials: int = 1
    first_trial: int = 0
    device: str = "auto"
    save_images: bool = True
    resume: bool = False
    threads: int = 0
    scale: str = "cpu"


def register() -> None:
    """Register the schema and the resolvers; idempotent."""
    ConfigStore.instance().store(name="deepleak_schema", node=DeepleakConfig)
    if not OmegaConf.has_resolver("scaled"):
        OmegaConf.register_new_resolver("scaled", scaled)
    if not OmegaConf.has_resolver("deepleak_unique_dir"):
        # use_cache: one config resolves to one dir, however often it is read.
        OmegaConf.register_new_resolver("deepleak_unique_dir", unique_dir, use_cache=True)


def config_dir() -> Path:
    """The top-level conf/ folder (packaged as deepleak_conf when installed)."""
    import deepleak_conf  # noqa: PLC0415  (a package only to ship the YAML files)

    return Path(deepleak_conf.__file__).parent


SCALES = ("cpu", "paper")


def scaled(cpu: Any, paper: Any, *, _root_: Any) -> Any:
    """``${scaled:CPU_VALUE,PAPER_VALUE}``: experiment presets carry both sizes; the
    top-level ``scale=cpu|paper`` picks one (paper-scale settings are meant for a GPU)."""
    from deepleak.errors import DeepleakError  # noqa: PLC0415

    scale = _root_.get("scale", "cpu")
    if scale not in SCALES:
        raise DeepleakError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return paper if scale == "paper" else cpu


RESERVED: dict[str, str] = {}  # base -> the dir this process reserved last


def unique_dir(base: str) -> str:
    """Reserve and return ``base/<date>/<time to microseconds>`` that no one else has.

    The dir is created here with an exclusive mkdir, so two processes started in the same
    microsecond (or on two hosts sharing a file system) still get different dirs: the loser
    adds ``-1``, ``-2``, ...
    """
    now = datetime.now()
    parent = Path(base) / now.strftime("%Y-%m-%d")
    parent.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%H-%M-%S-%f")
    for attempt in range(1000):
        candidate = parent / (stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        RESERVED[base] = str(candidate)
        return str(candidate)
    raise RuntimeError(f"could not reserve a run dir under {parent}")


def explain(error: BaseException, command: str = "attack") -> str:
    """One sentence for a config error raised by Hydra or OmegaConf."""
    text = str(error)
    cause = error.__cause__ or error.__context__
    while cause is not None and not str(text).strip():
        text, cause = str(cause), cause.__cause__
    full = text + "\n" + (str(cause) if cause else "")
    match = re.search(r"Could not (?:load|find) 'hydra/launcher/([^']+)'", full)
    if match:
        plugin = {"submitit_slurm": "hydra-submitit-launcher", "submitit_local": "hydra-submitit-launcher",
                  "joblib": "hydra-joblib-launcher", "ray": "hydra-ray-launcher"}.get(match.group(1))
        hint = f": pip install {plugin}" if plugin else ""
        return f"the launcher plugin for hydra/launcher={match.group(1)} is not installed{hint}"
    match = re.search(r"Could not find '([^']+)/([^']+)'", full)
    if match:
        group, option = match.groups()
        options = re.findall(r"^\t(\S+)$", full, flags=re.M)
        choices = f"; choose one of {', '.join(options)}" if options else ""
        return f"unknown option {group}={option}{choices}"
    match = re.search(r"Key '([^']+)' (?:is not in struct|not in '[^']+')", full)
    if match:
        key = re.search(r"full_key: (\S+)", full)
        name = key.group(1) if key else match.group(1)
        return f"unknown config key '{name}' (check its spelling; `deepleak {command} --cfg job` lists all keys)"
    match = re.search(r"Value '([^']*)' (?:of type '[^']+' )?could not be converted to (\w+)", full)
    if match:
        key = re.search(r"full_key: (\S+)", full)
        name = key.group(1) if key else "a value"
        return f"{name} must be of type {match.group(2).lower()}, got '{match.group(1)}'"
    match = re.search(r"(?:Could not append to config\. An item is already at|Multiple values for) '?([\w/.]+)'?", full)
    if match:
        return f"{match.group(1)} is set twice; give it once (use {match.group(1)}=... to change it)"
    first = next((line.strip() for line in full.splitlines() if line.strip()), type(error).__name__)
    return first


FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--experimental-rerun"}
MODE_FLAGS = {"-m": "multirun", "--multirun": "multirun", "--cfg": "cfg", "-c": "cfg", "--info": "info", "-i": "info",
              "--shell-completion": "shell", "-sc": "shell"}
SKIP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--version"}


def split_flags(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun, skip): the override strings, whether -m was given, and whether a
    flag asks Hydra for help/info instead of a run (then nothing is checked)."""
    overrides, multirun, skip = [], False, False
    items = iter(args)
    for item in items:
        if item in ("-m", "--multirun"):
            multirun = True
        elif item in SKIP_FLAGS:
            skip = True
        elif item in FLAGS_WITH_VALUE:
            next(items, None)
        elif item.startswith("-"):
            continue
        else:
            overrides.append(item)
    return overrides, multirun, skip


def job_override_sets(overrides: list[str]) -> list[list[str]]:
    """The override lists to check for a (possible) sweep: every value of every swept key
    once, the other keys at their first value. Linear in the number of values, not a product."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices: list[list[str]] = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # interval sweeps have no finite list; leave them to Hydra
                values = []
            choices.append([f"{key}={value}" for value in values] or [override.input_line])
        else:
            choices.append([override.input_line])
    first = [options[0] for options in choices]
    sets = [first]
    for position, options in enumerate(choices):
        for option in options[1:]:
            sets.append(first[:position] + [option] + first[position + 1:])
    return sets


def precheck(args: list[str], validate: Any, config_name: str = "config", command: str = "attack") -> None:
    """Compose ``config_name`` for every job the command line asks for, check every
    ``_target_`` node against its constructor and run ``validate(cfg)`` (the task's own
    checks), so a typo, an unknown option or a wrong type stops the command before any work."""
    from hydra import compose, initialize_config_dir  # noqa: PLC0415
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415

    from deepleak.errors import DeepleakError  # noqa: PLC0415

    modes = [item for item in args if item in MODE_FLAGS]
    if len({MODE_FLAGS[item] for item in modes}) > 1:
        raise DeepleakError(f"{' and '.join(modes)} cannot be combined: Hydra takes one of --multirun, --cfg, --info, "
                            "--shell-completion (drop -m to print the configuration of one job)")
    overrides, multirun, skip = split_flags(args)
    if skip:
        return
    register()
    try:
        sets = job_override_sets(overrides)
    except Exception as error:
        raise DeepleakError(f"cannot parse the overrides: {explain(error, command)}") from None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            pending, seen_params = list(sets), False
            while pending:
                job = pending.pop(0)
                try:
                    cfg = compose(config_name=config_name, overrides=job, return_hydra_config=True)
                except Exception as error:
                    raise DeepleakError(explain(error, command)) from None
                check_types(cfg)
                validate(cfg)
                params = OmegaConf.select(cfg, "hydra.sweeper.params") if multirun else None
                if params and not seen_params:
                    # A preset's own sweep (hydra.sweeper.params): check each of its values too.
                    seen_params = True
                    # The command line wins over the preset for the same key, as in Hydra's sweeper.
                    given = {item.split("=", 1)[0].lstrip("+~") for item in job}
                    extra = [f"{key}={value}" for key, value in params.items() if key not in given]
                    pending.extend(job_override_sets(job + extra)[1:])
    finally:
        GlobalHydra.instance().clear()


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a config value fits a constructor annotation (unknown annotations pass)."""
    import types  # noqa: PLC0415
    import typing  # noqa: PLC0415

    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence) or annotation in (tuple, list):
        return isinstance(value, (list, tuple, ListConfig))
    return True


# Keys inside a group option that the task handles itself, not the constructor:
# model.checkpoint (weights loaded after construction), labels.wrong (corrupted labels).
TASK_KEYS = {"checkpoint": (str, type(None)), "wrong": (int,)}


def check_types(cfg: Any, path: str = "") -> None:
    """Check every ``_target_`` node against its constructor's signature: unknown settings and
    values of the wrong type fail here, at start, with the key's full name.

    The constructors' annotations are the schema of the config groups, so a group option
    needs no second copy of its fields.
    """
    from hydra._internal.utils import _locate  # noqa: PLC0415

    from deepleak.errors import DeepleakError  # noqa: PLC0415

    if isinstance(cfg, ListConfig):
        for index, item in enumerate(cfg):
            check_types(item, f"{path}[{index}]")
        return
    if not isinstance(cfg, DictConfig):
        return
    target_name = cfg.get("_target_") if "_target_" in cfg else None
    parameters: dict[str, inspect.Parameter] | None = None
    hints: dict[str, Any] = {}
    if isinstance(target_name, str):
        try:
            target = _locate(target_name)
        except Exception:
            raise DeepleakError(f"{path or 'config'}._target_ names {target_name}, which cannot be imported") from None
        function = target.__init__ if inspect.isclass(target) else target
        try:
            signature = inspect.signature(function)
            hints = typing_hints(function)
        except (TypeError, ValueError):
            signature = None
        if signature is not None and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            parameters = dict(signature.parameters)
    for key in cfg:
        name = f"{path}.{key}" if path else str(key)
        if key.startswith("_") and key.endswith("_"):
            continue
        if parameters is not None and key not in parameters and key not in TASK_KEYS:
            raise DeepleakError(f"unknown setting '{name}' for {target_name}")
        if name == "hydra" or OmegaConf.is_interpolation(cfg, key) or OmegaConf.is_missing(cfg, key):
            continue
        value = cfg[key]
        if isinstance(value, (DictConfig, ListConfig)):
            check_types(value, name)
            continue
        if key in TASK_KEYS and (parameters is None or key not in parameters):
            if not isinstance(value, TASK_KEYS[key]) or isinstance(value, bool):
                raise DeepleakError(f"{name} has the wrong type: got {value!r}")
            continue
        if parameters is not None and key in parameters:
            annotation = hints.get(key, parameters[key].annotation)
            if not _accepts(annotation, value):
                expected = getattr(annotation, "__name__", str(annotation)).replace("typing.", "")
                raise DeepleakError(f"{name} must be of type {expected}, got {value!r}")


def typing_hints(function: Any) -> dict[str, Any]:
    import typing  # noqa: PLC0415

    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return {}


def make(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a DeepleakError from a constructor through
    unwrapped, so the user reads its one sentence, not Hydra's wrapper."""
    from hydra.errors import InstantiationException  # noqa: PLC0415
    from hydra.utils import instantiate  # noqa: PLC0415

    from deepleak.errors import DeepleakError  # noqa: PLC0415

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, DeepleakError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise
