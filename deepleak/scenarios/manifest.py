"""``manifest.yaml``: what the server knows about an imported client update.

A folder DIR holds ``manifest.yaml`` and the files it names (paths relative to DIR)::

    kind: gradient                # gradient: FedSGD, the gradient of the mean loss over one batch
                                  # weights: FedAvg, the weights after local plain SGD
    model: {name: lenet, width: 12}          # a deepleak model option, or
    # model: {_target_: mypackage.nets.Net, num_classes: 10}   any importable nn.Module class
    num_classes: 10
    image_shape: [3, 32, 32]      # C, H, W of one input
    normalization: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}   # optional: identity
    global: global.pt             # the weights the client received: state_dict .pt, or .npz
    gradient: gradient.pt         # kind=gradient: {name: tensor} .pt, or .npz in parameters() order
    update: client.npz            # kind=weights: the weights the client sent back
    num_examples: 4               # K (FedSGD batch) or N (the client's samples)
    local_batch_size: 2           # kind=weights
    local_epochs: 1               # kind=weights
    lr: 0.01                      # kind=weights: plain SGD, no momentum
    bn_mode: train                # train | eval (optional: train)
    truth:                        # optional: the auditor's copy of the client's data, for scoring
      images: truth/              # one image file per sample, sorted by name
      labels: [3, 7, 1, 0]        # in the same order

:func:`load_manifest` reads and checks the YAML alone (keys, types, values, that the named
files exist); :mod:`deepleak.scenarios.update_files` reads the tensors. Every problem is a
one-line :class:`~deepleak.errors.DeepleakError` naming the key or the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepleak.errors import DeepleakError

MANIFEST_FILE = "manifest.yaml"
KINDS = {"gradient": "FedSGD, the gradient of the mean loss over one batch",
         "weights": "FedAvg, the weights after local plain SGD"}
KEYS = ("kind", "model", "num_classes", "image_shape", "normalization", "global", "gradient", "update",
        "num_examples", "local_batch_size", "local_epochs", "lr", "bn_mode", "truth")
REQUIRED = ("kind", "model", "num_classes", "image_shape", "global", "num_examples")
REQUIRED_BY_KIND = {"gradient": ("gradient",), "weights": ("update", "local_batch_size", "local_epochs", "lr")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class Normalization:
    """What the client applied to pixels in [0, 1]: ``(x - mean) / std`` per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Truth:
    """The auditor's own copy of the client's data: image files (sorted by name) and labels."""

    images: tuple[Path, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Manifest:
    """A checked ``manifest.yaml``; file paths are absolute (resolved against ``root``)."""

    root: Path
    kind: str
    model: dict[str, Any]
    num_classes: int
    image_shape: tuple[int, int, int]
    global_file: Path
    num_examples: int
    gradient: Path | None = None
    update: Path | None = None
    local_batch_size: int | None = None
    local_epochs: int | None = None
    lr: float | None = None
    bn_mode: str = "train"
    normalization: Normalization | None = None
    truth: Truth | None = None

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def update_file(self) -> Path:
        """The shared update's file: ``gradient`` or ``update`` by kind."""
        found = self.gradient if self.kind == "gradient" else self.update
        assert found is not None
        return found

    @property
    def update_key(self) -> str:
        return "gradient" if self.kind == "gradient" else "update"


def load_manifest(directory: str | Path) -> Manifest:
    """Read and check ``DIR/manifest.yaml``; a one-line DeepleakError on the first problem."""
    import yaml  # noqa: PLC0415

    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DeepleakError(f"scenario.path {root} is not a folder (it must hold {MANIFEST_FILE} and the files it names)")
    root = root.resolve()
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DeepleakError(f"missing file {path}: an imported update's folder must hold {MANIFEST_FILE}")
    try:
        raw = yaml.safe_load(path.read_text())
    except Exception as error:
        reason = " ".join(str(error).split())
        raise DeepleakError(f"cannot read {path} as YAML: {reason[:200]}") from None
    if not isinstance(raw, dict):
        raise DeepleakError(f"{path} must be a mapping of keys (kind, model, num_classes, ...), got {type(raw).__name__}")
    return parse(raw, root)


def parse(raw: dict[str, Any], root: Path) -> Manifest:
    """Check the manifest's keys and values (``root``: the folder its paths are relative to)."""
    where = root / MANIFEST_FILE
    unknown = [key for key in raw if key not in KEYS]
    if unknown:
        raise DeepleakError(f"{where}: unknown key '{unknown[0]}'; the keys are {', '.join(KEYS)}")
    kind = raw.get("kind")
    if kind is None:
        raise DeepleakError(f"{where}: missing required key 'kind' (gradient or weights)")
    if kind not in KINDS:
        raise DeepleakError(f"{where}: unknown kind {kind!r}; choose gradient ({KINDS['gradient']}) or weights ({KINDS['weights']})")
    for key in (*REQUIRED, *REQUIRED_BY_KIND[kind]):
        if raw.get(key) is None:
            why = f" (kind: {kind})" if key in REQUIRED_BY_KIND[kind] else ""
            raise DeepleakError(f"{where}: missing required key '{key}'{why}")
    num_classes = _integer(raw, "num_classes", where, minimum=1)
    shape = raw["image_shape"]
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise DeepleakError(f"{where}: image_shape must be [C, H, W] (three positive integers), got {shape!r}")
    num_examples = _integer(raw, "num_examples", where, minimum=1)
    model = _model(raw["model"], where)
    bn_mode = raw.get("bn_mode", "train")
    if bn_mode not in ("train", "eval"):
        raise DeepleakError(f"{where}: bn_mode must be train or eval, got {bn_mode!r}")
    fields: dict[str, Any] = {}
    if kind == "weights":
        fields["local_batch_size"] = _integer(raw, "local_batch_size", where, minimum=1)
        fields["local_epochs"] = _integer(raw, "local_epochs", where, minimum=1)
        lr = _number(raw["lr"])
        if lr is None:
            raise DeepleakError(f"{where}: lr must be a number, got {raw['lr']!r}")
        if not lr > 0:
            raise DeepleakError(f"{where}: lr must be > 0 (the client's plain-SGD rate), got {lr}")
        fields["lr"] = float(lr)
        if fields["local_batch_size"] > num_examples:
            raise DeepleakError(
                f"{where}: local_batch_size ({fields['local_batch_size']}) must be <= num_examples "
                f"(the client's N = {num_examples})"
            )
        fields["update"] = _file(raw, "update", root, where)
    else:
        lr = _number(raw.get("lr"))  # not used by FedSGD, but a wrong one is still a wrong manifest
        if raw.get("lr") is not None and (lr is None or not lr > 0):
            raise DeepleakError(f"{where}: lr must be > 0, got {raw['lr']!r}")
        fields["gradient"] = _file(raw, "gradient", root, where)
    channels = shape[0]
    return Manifest(
        root=root,
        kind=kind,
        model=model,
        num_classes=num_classes,
        image_shape=(shape[0], shape[1], shape[2]),
        global_file=_file(raw, "global", root, where),
        num_examples=num_examples,
        bn_mode=bn_mode,
        normalization=_normalization(raw.get("normalization"), channels, where),
        truth=_truth(raw.get("truth"), root, where, num_examples, num_classes),
        **fields,
    )


def _integer(raw: dict[str, Any], key: str, where: Path, minimum: int) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DeepleakError(f"{where}: {key} must be an integer, got {value!r}")
    if value < minimum:
        raise DeepleakError(f"{where}: {key} must be >= {minimum}, got {value}")
    return value


def _number(value: Any) -> float | None:
    """A number, or None; YAML 1.1 reads ``1e-3`` (no dot) as a string, so strings that
    spell a number count too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _file(raw: dict[str, Any], key: str, root: Path, where: Path) -> Path:
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise DeepleakError(f"{where}: {key} must be a file name, got {value!r}")
    path = (root / value).resolve()
    if not path.is_file():
        raise DeepleakError(f"missing file {path} (the manifest's {key})")
    return path


def _model(value: Any, where: Path) -> dict[str, Any]:
    """The model entry: ``{name: OPTION, ...}`` (a deepleak model) or ``{_target_: CLASS, ...}``."""
    if not isinstance(value, dict):
        raise DeepleakError(f"{where}: model must be a mapping ({{name: lenet, ...}} or {{_target_: package.Class, ...}}), got {value!r}")
    has_name, has_target = "name" in value, "_target_" in value
    if has_name == has_target:
        raise DeepleakError(f"{where}: model needs exactly one of 'name' (a deepleak model option) or '_target_' "
                            "(an importable nn.Module class)")
    chosen = value["name"] if has_name else value["_target_"]
    if not isinstance(chosen, str) or not chosen:
        raise DeepleakError(f"{where}: model.{'name' if has_name else '_target_'} must be a string, got {chosen!r}")

    def plain(node: Any, key: str) -> None:
        # Keyword arguments are data: no nested object is ever built from a manifest.
        if isinstance(node, dict):
            for inner, item in node.items():
                if str(inner).startswith("_") and str(inner).endswith("_"):
                    raise DeepleakError(f"{where}: {key}.{inner} is not allowed: the model's arguments are plain values")
                plain(item, f"{key}.{inner}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                plain(item, f"{key}[{index}]")

    for key, item in value.items():
        if key not in ("name", "_target_"):
            if str(key).startswith("_") and str(key).endswith("_"):
                raise DeepleakError(f"{where}: model.{key} is not allowed: the model's arguments are plain values")
            plain(item, f"model.{key}")
    return dict(value)


def _normalization(value: Any, channels: int, where: Path) -> Normalization | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"mean", "std"} or not {"mean", "std"} <= set(value):
        raise DeepleakError(f"{where}: normalization must be {{mean: [...], std: [...]}} (one value per channel), got {value!r}")
    parts = {}
    for key in ("mean", "std"):
        numbers = value[key]
        if isinstance(numbers, (int, float)) and not isinstance(numbers, bool):
            numbers = [numbers] * channels
        if (not isinstance(numbers, list) or len(numbers) != channels
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)):
            raise DeepleakError(f"{where}: normalization.{key} must hold {channels} numbers (one per channel of image_shape), "
                                f"got {numbers!r}")
        parts[key] = tuple(float(v) for v in numbers)
    if any(not s > 0 for s in parts["std"]):
        raise DeepleakError(f"{where}: normalization.std must be > 0 for every channel, got {list(parts['std'])}")
    return Normalization(parts["mean"], parts["std"])


def _truth(value: Any, root: Path, where: Path, num_examples: int, num_classes: int) -> Truth | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"images", "labels"}:
        raise DeepleakError(f"{where}: truth must be {{images: FOLDER, labels: [...]}}, got {value!r}")
    if not isinstance(value["images"], str):
        raise DeepleakError(f"{where}: truth.images must be a folder name, got {value['images']!r}")
    folder = (root / value["images"]).resolve()
    if not folder.is_dir():
        raise DeepleakError(f"missing folder {folder} (the manifest's truth.images)")
    files = tuple(sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                         key=lambda p: p.name))
    if len(files) != num_examples:
        raise DeepleakError(f"{where}: truth.images {folder} holds {len(files)} image files, num_examples is {num_examples}")
    labels = value["labels"]
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DeepleakError(f"{where}: truth.labels must be a list of integers, got {labels!r}")
    if len(labels) != num_examples:
        raise DeepleakError(f"{where}: truth.labels holds {len(labels)} labels, num_examples is {num_examples}")
    outside = [v for v in labels if not 0 <= v < num_classes]
    if outside:
        raise DeepleakError(f"{where}: truth.labels must lie in [0, num_classes = {num_classes}), got {outside[0]}")
    return Truth(files, tuple(labels))
