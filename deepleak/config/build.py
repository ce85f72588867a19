"""Building configured objects: ``hydra.utils.instantiate`` with the user's one sentence."""

from __future__ import annotations

from typing import Any


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


def make_defence(cfg: Any) -> Any:
    """The configured client defence (``conf/defence``); no defence when the group is left
    out (``~defence`` on the command line, or a config from before defences existed)."""
    from omegaconf import OmegaConf  # noqa: PLC0415

    from deepleak.defences import NoDefence  # noqa: PLC0415

    node = OmegaConf.select(cfg, "defence", default=None, throw_on_missing=False)
    return NoDefence() if node is None else make(node)
