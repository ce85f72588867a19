"""Reading an imported update's tensor files safely and matching them to the model.

Two formats, for the global weights, the client's weights and the gradient alike:

- ``.pt`` / ``.pth``: read with ``torch.load(weights_only=True)``
  (:func:`deepleak.models.base.read_torch_file`: tensors only, a file holding anything else
  is refused in one line). A ``{name: tensor}`` dict (a ``state_dict``, also under a
  ``state_dict`` or ``model`` key), or a list of tensors in order.
- ``.npz``: read with ``numpy.load(allow_pickle=False)``. Arrays saved positionally
  (``np.savez(f, *arrays)``: ``arr_0``, ``arr_1``, ...; Flower's NDArrays) are taken in order:
  ``state_dict()`` order for weights (buffers included, or parameters alone), ``parameters()``
  order for a gradient. Arrays saved by name (NVFlare's name-to-array dicts) are matched by name.

Names lose an Opacus ``_module.`` or DataParallel ``module.`` prefix (logged). Batch-norm
buffers may be present (Flower sends them) or absent (the model keeps its own). Every
mismatch ends in one line naming the file and the first offending entry.
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepleak.errors import DeepleakError
from deepleak.models.base import read_torch_file

log = logging.getLogger(__name__)

PREFIXES = {"_module.": "Opacus", "module.": "DataParallel"}
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_POSITIONAL = re.compile(r"arr_(\d+)")


def read_entries(path: Path, what: str) -> dict[str, torch.Tensor] | list[torch.Tensor]:
    """The tensors in ``path``: by name (a dict) or in order (a list). ``what`` names the
    file's role in messages (``global``, ``update``, ``gradient``)."""
    path = Path(path)
    if not path.is_file():
        raise DeepleakError(f"missing file {path} (the manifest's {what})")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, what)
    if suffix not in TORCH_SUFFIXES:
        raise DeepleakError(f"{what} file {path}: unknown format {suffix or '(no suffix)'}; use .pt (torch.save of a "
                            "state_dict or a {name: tensor} dict) or .npz (numpy arrays)")
    content = read_torch_file(path, f"{what} file")
    if isinstance(content, dict):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
        for name, value in content.items():
            if not isinstance(value, torch.Tensor):
                raise DeepleakError(f"{what} file {path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        return {str(name): value for name, value in content.items()}
    if isinstance(content, (list, tuple)):
        for index, value in enumerate(content):
            if not isinstance(value, torch.Tensor):
                raise DeepleakError(f"{what} file {path}: item {index} is a {type(value).__name__}, not a tensor")
        return list(content)
    raise DeepleakError(f"{what} file {path} holds a {type(content).__name__}; expected a {{name: tensor}} dict "
                        "(a state_dict) or a list of tensors")


def _read_npz(path: Path, what: str) -> dict[str, torch.Tensor] | list[torch.Tensor]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:
        raise DeepleakError(f"cannot read {what} file {path} as .npz ({type(error).__name__}: "
                            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        archive.close() if hasattr(archive, "close") else None
        raise DeepleakError(f"{what} file {path} is a single array, not an .npz archive of arrays")
    with archive:
        arrays: dict[str, np.ndarray] = {}
        for name in archive.files:
            try:
                array = archive[name]
            except ValueError:  # "Object arrays cannot be loaded when allow_pickle=False"
                raise DeepleakError(f"refused {what} file {path}: its array {name!r} holds Python objects, not numbers; "
                                    "deepleak reads numeric arrays only and runs no code from a file") from None
            except (OSError, zipfile.BadZipFile, EOFError) as error:
                raise DeepleakError(f"cannot read array {name!r} of {what} file {path} ({type(error).__name__})") from None
            if array.dtype.kind not in "biuf":
                raise DeepleakError(f"{what} file {path}: array {name!r} has dtype {array.dtype}, not a number type")
            arrays[name] = array
    tensors = {name: torch.from_numpy(np.array(array, copy=True)) for name, array in arrays.items()}
    positions = [_POSITIONAL.fullmatch(name) for name in tensors]
    if tensors and all(positions):
        order = sorted(range(len(positions)), key=lambda i: int(positions[i].group(1)))
        names = list(tensors)
        return [tensors[names[i]] for i in order]
    return tensors


def strip_prefixes(entries: dict[str, torch.Tensor], path: Path, what: str) -> dict[str, torch.Tensor]:
    """Drop an Opacus ``_module.`` or DataParallel ``module.`` prefix that every name carries."""
    changed = True
    while changed and entries:
        changed = False
        for prefix, source in PREFIXES.items():
            if all(name.startswith(prefix) for name in entries):
                entries = {name[len(prefix):]: value for name, value in entries.items()}
                log.info("%s file %s: stripped the %r prefix (%s) from its names", what, path.name, prefix, source)
                changed = True
    return entries


@dataclass(frozen=True)
class StateFile:
    """A weights file matched to a model: ``parameters`` in ``parameters()`` order; the
    ``buffers`` the file holds (batch-norm statistics), by state_dict name ({} when absent)."""

    parameters: tuple[torch.Tensor, ...]
    buffers: dict[str, torch.Tensor]


def _shape(tensor: torch.Tensor) -> list[int]:
    return list(tensor.shape)


def read_state(model: nn.Module, path: Path, what: str) -> StateFile:
    """The weights in ``path`` (a state_dict, or arrays in state_dict order) matched to ``model``:
    names and shapes must agree; buffers may be absent."""
    entries = read_entries(path, what)
    state = model.state_dict()
    parameter_names = [name for name, _ in model.named_parameters()]
    buffer_names = [name for name in state if name not in set(parameter_names)]
    kind = type(model).__name__
    if isinstance(entries, list):
        if len(entries) == len(state):
            named = dict(zip(state, entries))
        elif len(entries) == len(parameter_names):
            named = dict(zip(parameter_names, entries))
        else:
            raise DeepleakError(
                f"{what} file {path} holds {len(entries)} arrays; the model {kind} has {len(state)} state_dict entries "
                f"({len(parameter_names)} parameters and {len(buffer_names)} buffers, in state_dict() order), "
                f"or {len(parameter_names)} without buffers"
            )
        _check_positional_shapes(named, state, path, what, "{name!r} (entry {index} of its state_dict order)")
    else:
        named = _by_name(entries, state, parameter_names, path, what, kind,
                         unknown="is not in the model {kind}'s state_dict (its first keys: {first})",
                         lacking="lacks the model {kind}'s parameter {name!r}")
    absent = [name for name in buffer_names if name not in named]
    if absent and buffer_names:
        log.info("%s file %s holds no buffers (%s ...): the model keeps its own", what, path.name, absent[0])
    parameters = tuple(named[name].to(state[name].dtype) for name in parameter_names)
    buffers = {name: named[name].to(state[name].dtype) for name in buffer_names if name in named}
    return StateFile(parameters, buffers)


def read_gradient(model: nn.Module, path: Path, what: str = "gradient") -> tuple[torch.Tensor, ...]:
    """The gradient in ``path`` ({parameter name: tensor}, or arrays in ``parameters()``
    order), one tensor per parameter of ``model`` in that order."""
    entries = read_entries(path, what)
    parameters = dict(model.named_parameters())
    names = list(parameters)
    kind = type(model).__name__
    if isinstance(entries, list):
        if len(entries) != len(names):
            raise DeepleakError(f"{what} file {path} holds {len(entries)} arrays; the model {kind} has {len(names)} "
                                "parameters (a gradient is one array per parameter, in parameters() order)")
        named = dict(zip(names, entries))
        _check_positional_shapes(named, parameters, path, what, "parameter {name!r} (number {index} in parameters() order)")
    else:
        named = _by_name(entries, parameters, names, path, what, kind,
                         unknown="is not a parameter of the model {kind} (its first parameters: {first})",
                         lacking="lacks the gradient of the model {kind}'s parameter {name!r}")
    return tuple(named[name].to(parameters[name].dtype) for name in names)


def _check_positional_shapes(named: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], path: Path,
                             what: str, entry: str) -> None:
    """Arrays read by position (``named``: the model's names in order) must have the shapes of
    ``reference``; ``entry`` names the model's entry ({name}, {index}) in the refusal."""
    for index, (name, tensor) in enumerate(named.items()):
        if tuple(tensor.shape) != tuple(reference[name].shape):
            raise DeepleakError(f"{what} file {path}: array {index} has shape {_shape(tensor)}, the model's "
                                f"{entry.format(name=name, index=index)} has {_shape(reference[name])}")


def _by_name(entries: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], required: list[str], path: Path,
             what: str, kind: str, unknown: str, lacking: str) -> dict[str, torch.Tensor]:
    """``entries`` keyed by name (prefixes stripped), checked against ``reference``: every name
    known and of its shape, every ``required`` name present. ``unknown``/``lacking``: the
    sentences' endings, formatted with ``kind``, ``first`` (the first reference names) and ``name``."""
    named = strip_prefixes(entries, path, what)
    for name, tensor in named.items():
        if name not in reference:
            first = ", ".join(list(reference)[:3])
            raise DeepleakError(f"{what} file {path}: key {name!r} " + unknown.format(kind=kind, first=first))
        if tuple(tensor.shape) != tuple(reference[name].shape):
            raise DeepleakError(f"{what} file {path}: {name!r} has shape {_shape(tensor)}, "
                                f"the model {kind}'s has {_shape(reference[name])}")
    missing = [name for name in required if name not in named]
    if missing:
        raise DeepleakError(f"{what} file {path} " + lacking.format(kind=kind, name=missing[0])
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return named
