"""The checks run before any work: every job of the command line composes, every
``_target_`` node fits its constructor, and the task's own ``validate`` passes.

Hydra's struct mode rejects unknown keys anywhere (``atack.iterations=5`` fails at start);
the constructors' signatures are the schema of the group options (``attack.iterations=abc``
fails at start). Every failure is one sentence (a DeepleakError).
"""

from __future__ import annotations

import collections.abc
import inspect
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from deepleak.config.argv import MODE_FLAGS, job_override_sets, split_flags
from deepleak.config.explain import explain, renamed
from deepleak.config.overrides import chosen_group_appends
from deepleak.config.schema import config_dir, register


def precheck(args: list[str], validate: Any, config_name: str = "config", command: str = "attack") -> None:
    """Compose ``config_name`` for every job the command line asks for, check every
    ``_target_`` node against its constructor and run ``validate(cfg)`` (the task's own
    checks), so a typo, an unknown option or a wrong type stops the command before any work.
    ``args`` are the command line's (``+scenario=x`` is read as ``scenario=x``, as the CLI passes it).
    """
    from hydra import compose, initialize_config_dir  # noqa: PLC0415
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415

    from deepleak.errors import DeepleakError  # noqa: PLC0415

    modes = [item for item in args if item in MODE_FLAGS]
    if len({MODE_FLAGS[item] for item in modes}) > 1:
        raise DeepleakError(f"{' and '.join(modes)} cannot be combined: Hydra takes one of --multirun, --cfg, --info, "
                            "--shell-completion (drop -m to print the configuration of one job)")
    register()
    overrides, multirun, skip = split_flags(chosen_group_appends(args, config_name))
    if skip:
        return
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
                check_types(cfg, command=command)
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


def check_types(cfg: Any, path: str = "", command: str = "attack") -> None:
    """Check every ``_target_`` node against its constructor's signature: unknown settings and
    values of the wrong type fail here, at start, with the key's full name.

    The constructors' annotations are the schema of the config groups, so a group option
    needs no second copy of its fields.
    """
    from hydra._internal.utils import _locate  # noqa: PLC0415

    from deepleak.errors import DeepleakError  # noqa: PLC0415

    if isinstance(cfg, ListConfig):
        for index, item in enumerate(cfg):
            check_types(item, f"{path}[{index}]", command)
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
        if parameters is not None and key not in parameters:
            raise DeepleakError(renamed(name, command) or f"unknown setting '{name}' for {target_name}")
        if name == "hydra" or OmegaConf.is_interpolation(cfg, key) or OmegaConf.is_missing(cfg, key):
            continue
        value = cfg[key]
        if isinstance(value, (DictConfig, ListConfig)):
            check_types(value, name, command)
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
