"""A real Flower client's update, attacked by deepleak (issue 23).

A Flower ``NumPyClient`` (flwr, installed by the ``test`` extra through the ``flower``
extra) trains a LeNet locally with plain SGD; the test drives it as a Flower client would be
driven, ``to_client().fit(FitIns)`` with the global model serialised as Flower
``Parameters`` (no server), saves the global NDArrays and the ones the client returns as
npz (Flower's order: the values of ``state_dict()``), writes the manifest and runs
``deepleak attack +scenario=imported``: labels restored exactly, images >= 25 dB.
"""

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import yaml
from torch import nn

flwr = pytest.importorskip("flwr")  # a guard only: the test extra installs flwr, so CI runs this

from flwr.client import NumPyClient  # noqa: E402
from flwr.common import Code, FitIns, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402

from deepleak.data import SampleDataset  # noqa: E402
from deepleak.models import build_model  # noqa: E402
from deepleak.scenarios.export import save_png_8bit  # noqa: E402

from crafted import noise_floor_psnr  # noqa: E402

MODEL = {"_target_": "deepleak.models.LeNet", "num_classes": 10, "image_shape": [3, 32, 32], "width": 32,
         "activation_fn": "sigmoid", "init_scale": 0.5}


class FlowerClient(NumPyClient):
    """The usual Flower PyTorch client: parameters in and out as the values of state_dict(),
    local training with torch.optim.SGD (no momentum, no weight decay) on the mean
    cross-entropy; the server sets lr, local_epochs and batch_size through the fit config."""

    def __init__(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.net, self.images, self.labels = net, images, labels

    def get_parameters(self, config):
        return [value.detach().cpu().numpy() for value in self.net.state_dict().values()]

    def set_parameters(self, parameters):
        state = OrderedDict((name, torch.tensor(array)) for name, array in zip(self.net.state_dict(), parameters))
        self.net.load_state_dict(state, strict=True)

    def fit(self, parameters, config):
        self.set_parameters(parameters)
        optimizer = torch.optim.SGD(self.net.parameters(), lr=float(config["lr"]))
        loss_fn = nn.CrossEntropyLoss()
        batch_size = int(config["batch_size"])
        self.net.train()
        for _ in range(int(config["local_epochs"])):
            for start in range(0, len(self.labels), batch_size):
                optimizer.zero_grad()
                loss_fn(self.net(self.images[start:start + batch_size]), self.labels[start:start + batch_size]).backward()
                optimizer.step()
        return self.get_parameters({}), len(self.labels), {}


def _private_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n crops of distinct classes of the sample set, on 8-bit pixels (the truth PNGs hold them exactly)."""
    data = SampleDataset(num_classes=10, resolution=32)
    indices = [int(np.flatnonzero(data.targets == c)[5]) for c in (7, 2)[:n]]
    images, labels = data.batch(indices)
    return images.mul(255).round().div(255), labels


@pytest.mark.parametrize("n", [1, 2])
def test_flower_client_update_is_attacked(deepleak, tmp_path, n):
    images, labels = _private_batch(n)
    net = build_model(MODEL, 10, (3, 32, 32), seed=3)
    global_arrays = [value.detach().numpy().copy() for value in net.state_dict().values()]
    lr = 0.05
    client = FlowerClient(net, images, labels).to_client()
    result = client.fit(FitIns(ndarrays_to_parameters(global_arrays),
                               {"lr": lr, "local_epochs": 1, "batch_size": n}))
    assert result.status.code == Code.OK and result.num_examples == n
    returned = parameters_to_ndarrays(result.parameters)  # as the server receives them
    assert len(returned) == len(global_arrays)
    assert any(not np.array_equal(a, b) for a, b in zip(returned, global_arrays))

    update = tmp_path / "flower_update"
    (update / "truth").mkdir(parents=True)
    np.savez(update / "global.npz", *global_arrays)
    np.savez(update / "client.npz", *returned)
    for index, image in enumerate(images):
        save_png_8bit(image, update / "truth" / f"{index:03d}.png")
    manifest = {
        "kind": "weights", "model": MODEL, "num_classes": 10, "image_shape": [3, 32, 32],
        "global": "global.npz", "update": "client.npz", "num_examples": n, "local_batch_size": n,
        "local_epochs": 1, "lr": lr, "bn_mode": "train",
        "truth": {"images": "truth/", "labels": labels.tolist()},
    }
    (update / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))

    run = deepleak("attack", "+scenario=imported", f"scenario.path={update}", "attack=geng_plus",
                   "attack.iterations=100", "seed=0", "hydra.run.dir=attack_run", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "attack_run" / "metrics.json").read_text())
    assert metrics["scored"] is True
    assert metrics["update_regeneration"]["cosine"] > 0.999  # torch.optim.SGD is the manifest's plain SGD
    record = metrics["per_trial"][0]
    print(f"flower n={n}: restored {record['restored_labels']}, true {sorted(labels.tolist())}, "
          f"PSNR {record['psnr_mean']:.2f} dB")
    assert record["restored_labels"] == sorted(labels.tolist())
    assert record["label_accuracy"] == 1.0
    # measured 82.1 dB (n = 1) and 41.4 dB (n = 2); the floors are 13.6 and 12.3 dB (the sample set's mean image)
    assert noise_floor_psnr(images) + 10 <= 25
    assert record["psnr_mean"] >= 25.0
