#!/usr/bin/env python
"""Save what a plain-PyTorch federated client shares, in the format deepleak imports.

A stand-in for your own client: its own model class (``TinyNet`` below, not one of
deepleak's), its own input normalisation and its own images (photos scikit-image ships).
It writes up to two update directories under ``--out``:

- ``gradient/``: FedSGD. The gradient of the mean loss over one batch, as a ``.pt``
  ({parameter name: tensor}), the global model as a state_dict ``.pt``.
- ``weights/``: FedAvg. The global and the trained weights as ``.npz`` files of arrays in
  state_dict order (as a Flower client sends them), after local plain SGD.

Each holds a ``manifest.yaml`` (docs/import.md), and the images as ``truth/`` so the attack
can be scored. The manifest's ``model._target_`` is ``export_pytorch_update.TinyNet``, so
deepleak needs this script's folder on PYTHONPATH; from the repository root::

    python scripts/export_pytorch_update.py --out my_update
    PYTHONPATH=scripts deepleak attack +scenario=imported scenario.path=my_update/gradient
    PYTHONPATH=scripts deepleak attack +scenario=imported scenario.path=my_update/weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

# The client's own preprocessing: pixels in [0, 1] -> (x - mean) / std before the model.
MEAN = [0.5, 0.45, 0.4]
STD = [0.25, 0.25, 0.25]


class TinyNet(nn.Module):
    """The client's model: three 5x5 sigmoid convolutions (strides 2, 2, 1), one batch-norm
    layer and a linear classifier; the normalised image goes in, logits come out."""

    def __init__(self, num_classes: int = 10, channels: int = 3, side: int = 32, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(width, width, 5, stride=2, padding=2)
        self.norm = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 5, stride=1, padding=2)
        self.fc = nn.Linear(width * ((side + 3) // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.conv1(x))
        x = torch.sigmoid(self.norm(self.conv2(x)))
        x = torch.sigmoid(self.conv3(x))
        return self.fc(x.flatten(1))


def photos(count: int, side: int) -> torch.Tensor:
    """``count`` 8-bit colour crops (count, 3, side, side) in [0, 1] of scikit-image's photos."""
    from skimage import data  # noqa: PLC0415
    from skimage.transform import resize  # noqa: PLC0415

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    images = []
    for index in range(count):
        photo = sources[index % len(sources)]
        h, w = photo.shape[:2]
        crop = photo[: min(h, w), : min(h, w)] if index < len(sources) else photo[-min(h, w):, -min(h, w):]
        small = resize(crop, (side, side), anti_aliasing=True)  # floats in [0, 1]
        images.append(np.round(small * 255) / 255)  # what a PNG on disk holds
    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)


def save_truth(folder: Path, images: torch.Tensor) -> None:
    from PIL import Image  # noqa: PLC0415

    (folder / "truth").mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        pixels = image.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / "truth" / f"{index:03d}.png")


def manifest(kind: str, files: dict, num_classes: int, side: int, width: int, labels: list[int], **recipe) -> dict:
    return {
        "kind": kind,
        # Any importable nn.Module, built with these keyword arguments (this script's module).
        "model": {"_target_": f"{Path(__file__).stem}.TinyNet", "num_classes": num_classes, "channels": 3,
                  "side": side, "width": width},
        "num_classes": num_classes,
        "image_shape": [3, side, side],
        "normalization": {"mean": MEAN, "std": STD},
        **files,
        "num_examples": len(labels),
        **recipe,
        "truth": {"images": "truth/", "labels": labels},
    }


def write(folder: Path, content: dict) -> None:
    (folder / "manifest.yaml").write_text(yaml.safe_dump(content, sort_keys=False, default_flow_style=None))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("pytorch_update"), help="output folder (default: %(default)s)")
    parser.add_argument("--kinds", default="gradient,weights", help="gradient, weights or both (default: %(default)s)")
    parser.add_argument("--images", type=int, default=2, help="the client's samples: K (FedSGD) or N (FedAvg)")
    parser.add_argument("--labels", default="3,7,1,0,5", help="their labels, comma-separated (default: %(default)s)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--side", type=int, default=32, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--width", type=int, default=16, help="TinyNet's channels (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.05, help="FedAvg: local SGD rate (default: %(default)s)")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--local-batch-size", type=int, default=0, help="FedAvg: local mini-batch (0: all samples)")
    parser.add_argument("--seed", type=int, default=0, help="the global model's initialisation")
    args = parser.parse_args(argv)

    labels = [int(label) for label in args.labels.split(",")][: args.images]
    if len(labels) < args.images:
        parser.error(f"--labels gives {len(labels)} labels for --images {args.images}")
    kinds = {kind.strip() for kind in args.kinds.split(",")}
    if not kinds <= {"gradient", "weights"}:
        parser.error(f"--kinds takes gradient and/or weights, got {args.kinds!r}")
    images, targets = photos(args.images, args.side), torch.tensor(labels)
    torch.manual_seed(args.seed)
    net = TinyNet(args.num_classes, 3, args.side, args.width)
    common = {"num_classes": args.num_classes, "side": args.side, "width": args.width, "labels": labels}

    if "gradient" in kinds:  # FedSGD: one gradient of the mean loss, the model in train mode
        folder = args.out / "gradient"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), folder / "global.pt")
        net.train()
        loss = F.cross_entropy(net(normalise(images)), targets)
        gradient = torch.autograd.grad(loss, list(net.parameters()))
        torch.save({name: g.detach() for (name, _), g in zip(net.named_parameters(), gradient)}, folder / "gradient.pt")
        save_truth(folder, images)
        write(folder, manifest("gradient", {"global": "global.pt", "gradient": "gradient.pt"}, bn_mode="train", **common))
        print(f"wrote {folder}")

    if "weights" in kinds:  # FedAvg: local epochs of plain SGD, weights as Flower's NDArrays
        folder = args.out / "weights"
        folder.mkdir(parents=True, exist_ok=True)
        client = TinyNet(args.num_classes, 3, args.side, args.width)
        client.load_state_dict(net.state_dict())
        np.savez(folder / "global.npz", *[v.detach().numpy() for v in client.state_dict().values()])
        batch = args.local_batch_size or args.images
        optimizer = torch.optim.SGD(client.parameters(), lr=args.lr)  # no momentum, no weight decay
        client.train()
        for _ in range(args.local_epochs):
            for start in range(0, args.images, batch):  # no shuffling: the order the truth is in
                optimizer.zero_grad()
                F.cross_entropy(client(normalise(images[start:start + batch])), targets[start:start + batch]).backward()
                optimizer.step()
        np.savez(folder / "client.npz", *[v.detach().numpy() for v in client.state_dict().values()])
        save_truth(folder, images)
        write(folder, manifest("weights", {"global": "global.npz", "update": "client.npz"}, local_batch_size=batch,
                               local_epochs=args.local_epochs, lr=args.lr, bn_mode="train", **common))
        print(f"wrote {folder}")


if __name__ == "__main__":
    main()
