"""Write what a simulated client shared in the import format (``export_update=true``).

The directory this module writes is the one ``deepleak attack +scenario=imported
scenario.path=DIR`` reads (docs/import.md): ``manifest.yaml`` and the files it names. It
holds exactly the server's view, the :class:`~deepleak.scenarios.base.Observation` (the
global model W_0, the public recipe and the shared update), plus the truth (the private
batch) only when the caller hands it over explicitly, for scoring:

```
manifest.yaml   kind, model, num_classes, image_shape, global, gradient | update,
                num_examples, [local_batch_size, local_epochs, lr], bn_mode, truth
global.pt       W_0: the global model's state_dict, buffers included
gradient.pt     kind=gradient: {parameter name: gradient of the mean loss}
client.pt       kind=weights: {parameter name: W_T}, the client's weights after local SGD
                (parameters only: the Observation carries no client-side BN statistics)
truth/000.png   one 8-bit PNG per private sample, in the batch order of truth.labels
```

``normalization`` is left out (identity): deepleak's models take pixels in [0, 1]. Leaked
metadata (``scenario.leak_metadata``, ``scenario.snapshot_every``) has no place in the
format and is not written; a warning says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from deepleak.errors import DeepleakError
from deepleak.scenarios.base import Observation, PrivateBatch

log = logging.getLogger(__name__)

MANIFEST = "manifest.yaml"
GLOBAL_FILE = "global.pt"
GRADIENT_FILE = "gradient.pt"
UPDATE_FILE = "client.pt"
TRUTH_DIR = "truth"


def model_option(model: DictConfig | Mapping[str, Any], num_classes: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    """The model option as the manifest's ``model``: ``_target_`` and its keyword arguments,
    with the data's ``num_classes`` and ``image_shape`` and without ``checkpoint`` (W_0 is in
    global.pt, whatever the weights came from)."""
    option = OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else dict(model)
    option = {key: value for key, value in option.items() if key != "checkpoint"}
    if "_target_" not in option:
        raise ValueError("the model option has no _target_")
    option.update(num_classes=int(num_classes), image_shape=[int(s) for s in image_shape])
    return option


def export_update(
    folder: str | Path,
    observation: Observation,
    model: DictConfig | Mapping[str, Any],
    truth: PrivateBatch | None = None,
) -> Path:
    """Write ``observation`` (and ``truth``, when given) to ``folder`` in the import format;
    returns the manifest's path. ``model`` is the model option the global model was built
    from (``cfg.model``)."""
    if observation.scenario == "imported":
        raise DeepleakError("export_update=true writes a simulated client's update; an imported one is already in "
                            "the import format (scenario.path)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recipe = observation.recipe
    names = [name for name, _ in observation.model.named_parameters()]
    manifest: dict[str, Any] = {
        "kind": "gradient" if observation.gradient is not None else "weights",
        "model": model_option(model, recipe.num_classes, recipe.image_shape),
        "num_classes": int(recipe.num_classes),
        "image_shape": [int(s) for s in recipe.image_shape],
        "global": GLOBAL_FILE,
    }
    torch.save(_plain(observation.model.state_dict()), folder / GLOBAL_FILE)
    if observation.gradient is not None:
        torch.save(_plain(dict(zip(names, observation.gradient, strict=True))), folder / GRADIENT_FILE)
        manifest.update(gradient=GRADIENT_FILE, num_examples=int(recipe.num_samples))
    elif observation.weights is not None:
        torch.save(_plain(dict(zip(names, observation.weights, strict=True))), folder / UPDATE_FILE)
        manifest.update(
            update=UPDATE_FILE,
            num_examples=int(recipe.num_samples),
            local_batch_size=int(recipe.batch_size),
            local_epochs=int(recipe.epochs),
            lr=float(recipe.lr),
        )
    else:
        raise ValueError(f"the {observation.scenario} observation shares neither gradient nor weights")
    manifest["bn_mode"] = recipe.bn_mode
    if truth is not None:
        if len(truth) != recipe.num_samples:
            raise ValueError(f"the truth holds {len(truth)} samples, the recipe {recipe.num_samples}")
        (folder / TRUTH_DIR).mkdir(exist_ok=True)
        for old in (folder / TRUTH_DIR).glob("*.png"):  # a rerun into the same folder
            old.unlink()
        for index, image in enumerate(truth.images.detach().cpu()):
            save_png_8bit(image, folder / TRUTH_DIR / f"{index:03d}.png")
        manifest["truth"] = {"images": f"{TRUTH_DIR}/", "labels": [int(label) for label in truth.labels.cpu()]}
    if observation.metadata:
        log.warning(
            "export_update: the import format has no place for the leaked metadata (%s); not exported",
            ", ".join(sorted(observation.metadata)),
        )
    path = folder / MANIFEST
    header = "# Written by deepleak attack export_update=true: the server's view of one simulated client.\n"
    path.write_text(header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None))
    log.info("update exported to %s (kind %s)", folder, manifest["kind"])
    return path


def save_png_8bit(image: torch.Tensor, path: Path) -> None:
    """A (C, H, W) image with pixels in [0, 1] as a lossless 8-bit PNG (grey for C = 1, RGB
    for C = 3), rounded to the nearest of the 256 levels."""
    from PIL import Image  # noqa: PLC0415

    if image.shape[0] not in (1, 3):
        raise ValueError(f"a PNG holds 1 or 3 channels, the image has {image.shape[0]}")
    pixels = image.mul(255).round().clamp(0, 255).to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(array).save(path)


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (torch.save of a view would save its whole storage)."""
    return {name: tensor.detach().cpu().clone().contiguous() for name, tensor in state.items()}
