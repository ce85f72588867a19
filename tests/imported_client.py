"""A client written in plain PyTorch that saves its update in the import format
(``deepleak attack +scenario=imported scenario.path=DIR``), for the import tests.

It computes its gradient or its local SGD without deepleak, so the tests check deepleak's
reading and replay against an independent client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from deepleak.models import build_model

# deepleak's LeNet, narrow and small: fast enough for every test.
LENET = {"name": "lenet", "width": 6}
LENET_TARGET = {"_target_": "deepleak.models.LeNet", "width": 6, "activation_fn": "sigmoid", "init_scale": 0.5}


def save_png(image: torch.Tensor, path: Path) -> None:
    array = (image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype("uint8")
    Image.fromarray(array).save(path)


def read_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def lenet(num_classes: int = 10, side: int = 12, seed: int = 0) -> nn.Module:
    return build_model(LENET_TARGET, num_classes, (3, side, side), seed=seed)


def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A state_dict as .pt ({name: tensor}) or .npz (arrays in order, as Flower's NDArrays)."""
    if path.suffix == ".npz":
        np.savez(path, *[value.detach().cpu().numpy() for value in state.values()])
    else:
        torch.save({name: value.detach().clone() for name, value in state.items()}, path)


def write_client(
    root: Path,
    kind: str = "gradient",
    model: nn.Module | None = None,
    model_entry: dict[str, Any] | None = None,
    images: torch.Tensor | None = None,
    labels: list[int] | None = None,
    normalization: tuple[list[float], list[float]] | None = None,
    truth: bool = True,
    suffix: str = ".pt",
    local_batch_size: int = 1,
    local_epochs: int = 1,
    lr: float = 0.05,
    bn_mode: str = "train",
    num_classes: int = 10,
    **manifest: Any,
) -> Path:
    """Play one client in plain PyTorch and write DIR (manifest.yaml, global, update, truth/).

    ``kind``: gradient (the gradient of the mean loss over the batch) or weights (local plain
    SGD in the data order). Images are saved as 8-bit PNGs and the client trains on the saved
    pixels, as a real client trains on its files. ``manifest``: keys to override (None: drop).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else lenet(num_classes)
    model_entry = model_entry if model_entry is not None else dict(LENET)
    if images is None:
        images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    labels = labels if labels is not None else list(range(len(images)))
    (root / "truth").mkdir(exist_ok=True)
    for index, image in enumerate(images):
        save_png(image, root / "truth" / f"{index:03d}.png")
    pixels = torch.stack([read_png(root / "truth" / f"{i:03d}.png") for i in range(len(images))])
    x = pixels
    if normalization is not None:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization)
        x = (pixels - mean) / std
    y = torch.tensor(labels)
    model.train(bn_mode == "train")
    save_state(root / f"global{suffix}", model.state_dict())
    entry: dict[str, Any] = {
        "kind": kind,
        "model": model_entry,
        "num_classes": num_classes,
        "image_shape": list(images.shape[1:]),
        "global": f"global{suffix}",
        "num_examples": len(images),
        "bn_mode": bn_mode,
    }
    if kind == "gradient":
        gradient = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        names = [name for name, _ in model.named_parameters()]
        if suffix == ".npz":
            np.savez(root / "gradient.npz", *[g.numpy() for g in gradient])
        else:
            torch.save(dict(zip(names, gradient)), root / "gradient.pt")
        entry["gradient"] = f"gradient{suffix}"
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(local_epochs):
            for start in range(0, len(images), local_batch_size):
                optimizer.zero_grad()
                F.cross_entropy(model(x[start:start + local_batch_size]), y[start:start + local_batch_size]).backward()
                optimizer.step()
        save_state(root / f"client{suffix}", model.state_dict())
        entry.update(update=f"client{suffix}", local_batch_size=local_batch_size, local_epochs=local_epochs, lr=lr)
    if normalization is not None:
        entry["normalization"] = {"mean": list(normalization[0]), "std": list(normalization[1])}
    if truth:
        entry["truth"] = {"images": "truth/", "labels": list(labels)}
    for key, value in manifest.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    (root / "manifest.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    return root


def edit_manifest(root: Path, **changes: Any) -> Path:
    """Change (None: remove) keys of DIR/manifest.yaml."""
    path = Path(root) / "manifest.yaml"
    entry = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return Path(root)
