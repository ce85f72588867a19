"""The imported scenario in process: reading update files (prefixes, BN buffers, orders),
the normalising wrapper seen by the label methods, the regeneration check and the
threat-model record."""

import copy
import logging
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepleak.errors import DeepleakError
from deepleak.labels import ZeroShot
from deepleak.labels.base import last_layer_gradient
from deepleak.models import LeNet, classifier, classifier_parameter_names, features_and_logits, load_checkpoint
from deepleak.models.normalized import Normalized
from deepleak.scenarios import FedAvg, FedSGD, Imported, PrivateBatch
from deepleak.scenarios.base import ProvidesClient, Scenario
from deepleak.scenarios.imported import candidate_orders
from deepleak.scenarios.recipe import local_sgd
from deepleak.scenarios.threat_model import threat_model
from deepleak.scenarios.update_files import read_gradient, read_state
from imported_client import edit_manifest, lenet, write_client

CPU = torch.device("cpu")

BN_NET = '''
import torch
from torch import nn


class BNNet(nn.Module):
    """A client's own model with batch norm (not shipped with deepleak)."""

    def __init__(self, classes=4, side=8):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.Sigmoid()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * side * side, classes)

    def forward(self, x):
        return self.fc(self.flat(self.act(self.bn(self.conv(x)))))
'''


class Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


@pytest.fixture
def bn_net(tmp_path, monkeypatch):
    """A model class importable as clientnets.BNNet from a folder on sys.path."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "clientnets.py").write_text(BN_NET)
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    module = importlib.import_module("clientnets")
    yield module.BNNet
    import sys

    sys.modules.pop("clientnets", None)


# ---------------------------------------------------------------------- the wrapper
def test_the_normalising_wrapper_keeps_order_names_and_the_classifier():
    inner = LeNet(10, (3, 12, 12), width=6)
    model = Normalized(inner, [0.5, 0.4, 0.3], [0.25, 0.2, 0.1])
    assert [p is q for p, q in zip(model.parameters(), inner.parameters())] == [True] * 8
    assert [name for name, _ in model.named_parameters()] == [f"model.{n}" for n, _ in inner.named_parameters()]
    assert classifier(model) is inner.fc
    assert classifier_parameter_names(model) == ("model.fc.weight", "model.fc.bias")
    assert list(model.state_dict()) == [f"model.{n}" for n in inner.state_dict()]  # mean/std not persisted
    x = torch.rand(3, 3, 12, 12)
    normalised = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.25, 0.2, 0.1]).view(1, 3, 1, 1)
    features, logits = features_and_logits(model, x)
    inner_features, inner_logits = features_and_logits(inner, normalised)
    torch.testing.assert_close(logits, inner_logits)
    torch.testing.assert_close(features, inner_features)
    weights = [p.detach() * 2 for p in model.parameters()]
    torch.testing.assert_close(features_and_logits(model, x, weights)[1], features_and_logits(inner, normalised, weights)[1])
    with pytest.raises(DeepleakError, match="std must be > 0"):
        Normalized(inner, [0.5] * 3, [0.25, 0, 0.25])


def test_label_methods_read_a_normalised_model_as_the_bare_one():
    torch.manual_seed(0)
    inner = LeNet(10, (3, 12, 12), width=6)
    batch = PrivateBatch(torch.rand(3, 3, 12, 12), torch.tensor([1, 4, 7]))
    observation = FedSGD().observe(Normalized(inner, [0.5] * 3, [0.25] * 3), batch, 10)
    weight, bias = last_layer_gradient(observation)
    assert weight.shape == (10, 54) and bias.shape == (10,)
    assert ZeroShot().restore(observation).tolist() == [1, 4, 7]


# ---------------------------------------------------------------------- update files
def test_prefixes_of_opacus_and_data_parallel_are_stripped_and_logged(tmp_path, caplog):
    model = lenet()
    for prefix in ("_module.", "module.", "module._module."):
        path = tmp_path / f"{prefix.replace('.', '_')}.pt"
        torch.save({prefix + name: value for name, value in model.state_dict().items()}, path)
        with caplog.at_level(logging.INFO, logger="deepleak.scenarios.update_files"):
            state = read_state(lenet(seed=1), path, "global")
        for got, want in zip(state.parameters, model.parameters()):
            torch.testing.assert_close(got, want.detach())
    assert "stripped the '_module.' prefix (Opacus)" in caplog.text
    assert "stripped the 'module.' prefix (DataParallel)" in caplog.text


def test_bn_buffers_present_in_flower_order_or_absent(tmp_path, bn_net, caplog):
    client = bn_net()
    client.train()
    client(torch.rand(4, 3, 8, 8))  # running statistics away from their defaults
    state = client.state_dict()
    assert "bn.num_batches_tracked" in state
    # Flower: the values of state_dict() in order, buffers included.
    np.savez(tmp_path / "flower.npz", *[v.numpy() for v in state.values()])
    read = read_state(bn_net(), tmp_path / "flower.npz", "update")
    assert set(read.buffers) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    torch.testing.assert_close(read.buffers["bn.running_var"], state["bn.running_var"])
    assert read.buffers["bn.num_batches_tracked"].dtype == torch.int64
    # Parameters alone, in parameters() order (npz) or by name (.pt): the model keeps its buffers.
    np.savez(tmp_path / "params.npz", *[p.detach().numpy() for p in client.parameters()])
    torch.save({n: p.detach() for n, p in client.named_parameters()}, tmp_path / "params.pt")
    with caplog.at_level(logging.INFO, logger="deepleak.scenarios.update_files"):
        for name in ("params.npz", "params.pt"):
            read = read_state(bn_net(), tmp_path / name, "global")
            assert read.buffers == {}
            torch.testing.assert_close(read.parameters[0], client.conv.weight.detach())
    assert "holds no buffers" in caplog.text


def test_named_npz_arrays_are_matched_by_name(tmp_path):
    model = lenet()
    np.savez(tmp_path / "named.npz", **{n: p.detach().numpy() for n, p in reversed(list(model.named_parameters()))})
    gradient = read_gradient(lenet(seed=3), tmp_path / "named.npz")
    torch.testing.assert_close(gradient[0], model.body[0].weight.detach())


def test_an_imported_bn_client_shares_its_buffers_in_the_threat_model(tmp_path, bn_net):
    torch.manual_seed(0)
    model = bn_net()
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    root = write_client(tmp_path / "u", kind="weights", model=model, images=images, labels=[0, 1, 2, 3],
                        model_entry={"_target_": "clientnets.BNNet", "classes": 4, "side": 8}, num_classes=4,
                        suffix=".npz", local_batch_size=2, local_epochs=1, lr=0.1)
    scenario = Imported(str(root))
    assert isinstance(scenario, ProvidesClient) and not isinstance(scenario, Scenario)
    assert scenario.check() == 4
    client = scenario.load(CPU)
    assert set(client.observation.metadata["bn_buffers"]) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    record = threat_model(client.observation, scored=True)
    assert record["batch_norm"] == {"in_model": True, "buffers_shared": True}
    assert record["client"] == "imported" and record["update"] == "weights"
    # The client trained in the data order with batch-norm batch statistics: replayed exactly.
    assert client.regeneration["cosine"] > 0.9999 and client.regeneration["relative_error"] < 1e-3


# ---------------------------------------------------------------------- loading and regeneration
def test_a_gradient_update_loads_as_the_client_computed_it(tmp_path):
    model = lenet()
    root = write_client(tmp_path / "u", model=model, normalization=([0.5] * 3, [0.25] * 3))
    client = Imported(str(root)).load(CPU)
    observation = client.observation
    assert isinstance(observation.model, Normalized) and observation.gradient is not None and observation.weights is None
    expected = torch.load(root / "gradient.pt")
    for got, (name, _) in zip(observation.gradient, model.named_parameters()):
        torch.testing.assert_close(got, expected[name])
    assert observation.recipe.num_samples == observation.recipe.batch_size == 2
    assert client.truth.labels.tolist() == [0, 1] and client.truth.images.shape == (2, 3, 12, 12)
    assert 0 <= float(client.truth.images.min()) and float(client.truth.images.max()) <= 1
    assert client.regeneration["cosine"] > 0.99999 and client.regeneration["relative_error"] < 1e-4
    assert (client.num_classes, client.image_shape) == (10, (3, 12, 12))


def test_without_truth_there_is_no_regeneration(tmp_path):
    client = Imported(str(write_client(tmp_path / "u", truth=False))).load(CPU)
    assert client.truth is None and client.regeneration is None


def test_regeneration_finds_the_clients_shuffle_order(tmp_path):
    images = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    root = write_client(tmp_path / "u", kind="weights", images=images, labels=[3, 1, 2, 0], local_batch_size=2,
                        local_epochs=1, lr=0.5)
    # The client trained on batches {0, 1}, {2, 3}; its truth lists the samples as 0, 2, 1, 3.
    truth = root / "truth"
    (truth / "001.png").rename(truth / "tmp.png")
    (truth / "002.png").rename(truth / "001.png")
    (truth / "tmp.png").rename(truth / "002.png")
    edit_manifest(root, truth={"images": "truth/", "labels": [3, 2, 1, 0]})
    client = Imported(str(root)).load(CPU)
    assert client.regeneration["orders_tried"] == 6 and "best of 6 batch orders" in client.regeneration["order"]
    assert client.regeneration["cosine"] > 0.99999
    # The data order alone replays other batches: a worse match.
    model = copy.deepcopy(client.observation.model)
    local_sgd(model, client.truth.images, client.truth.labels, 1, 2, 0.5, None)
    start = [p.detach() for p in client.observation.model.parameters()]
    identity = torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start)])
    shared = torch.cat([(w - s).flatten() for w, s in zip(client.observation.weights, start)])
    assert float(F.cosine_similarity(identity, shared, dim=0)) < client.regeneration["cosine"] - 1e-4


def test_a_wrong_lr_gives_a_warning_naming_the_causes(tmp_path, caplog):
    root = edit_manifest(write_client(tmp_path / "u", kind="weights", lr=0.5, local_epochs=3), lr=0.05)
    with caplog.at_level(logging.WARNING, logger="deepleak.scenarios.imported"):
        client = Imported(str(root)).load(CPU)
    assert client.regeneration["cosine"] < 0.99
    for cause in ("wrong lr", "momentum or weight decay", "augmentation", "loss other than mean cross-entropy", "dropout"):
        assert cause in caplog.text


def test_candidate_orders():
    orders, note = candidate_orders(4, 2, 1)  # {01|23}, {02|13}, {03|12}, each in two step orders
    assert len(orders) == 6 and "best of 6" in note
    assert len({tuple(frozenset(o[0][i:i + 2]) for i in (0, 2)) for o in orders}) == 6
    assert len(candidate_orders(4, 2, 2)[0]) == 36
    assert len(candidate_orders(2, 1, 2)[0]) == 4 and len(candidate_orders(3, 3, 5)[0]) == 1
    orders, note = candidate_orders(8, 2, 1)
    assert orders == [(tuple(range(8)),)] and "too many" in note


# ---------------------------------------------------------------------- the threat model
def test_the_threat_model_of_simulated_clients():
    torch.manual_seed(0)
    model = LeNet(10, (3, 12, 12), width=6)
    batch = PrivateBatch(torch.rand(4, 3, 12, 12), torch.tensor([0, 1, 2, 3]))
    fedsgd = threat_model(FedSGD().observe(model, batch, 10), scored=True)
    assert fedsgd["client"] == "simulated" and fedsgd["update"] == "gradient"
    assert fedsgd["recipe_known"] == {"num_examples": 4, "bn_mode": "train", "loss": "mean cross-entropy",
                                      "num_classes": 10, "image_shape": [3, 12, 12]}
    assert fedsgd["step_labels_leaked"] is False and fedsgd["snapshots_shared"] is False
    assert fedsgd["batch_norm"] == {"in_model": False, "buffers_shared": False}
    assert fedsgd["defence"] == {"name": "none"} and fedsgd["truth_for_scoring"] is True
    assert fedsgd["normalization"] is None
    fedavg = threat_model(FedAvg(local_batch_size=2, epochs=2, lr=0.01, leak_metadata=True, snapshot_every=1)
                          .observe(model, batch, 10), scored=False)
    assert fedavg["update"] == "weights" and fedavg["step_labels_leaked"] is True
    assert fedavg["snapshots_shared"] is True and fedavg["snapshots"] == 3
    assert fedavg["recipe_known"]["local_batch_size"] == 2 and fedavg["recipe_known"]["lr"] == 0.01
    assert fedavg["recipe_known"]["local_epochs"] == 2 and fedavg["truth_for_scoring"] is False


# ---------------------------------------------------------------------- model.checkpoint
def test_a_checkpoint_pickling_os_system_is_refused_in_one_line(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(1)}, "hook": Evil()}, path)
    with pytest.raises(DeepleakError) as caught:
        load_checkpoint(lenet(), path)
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message
    assert message.startswith(f"refused model checkpoint {path}: it holds the Python object posix.system (os.system)")


def test_a_checkpoint_with_an_unknown_class_is_refused_naming_it(tmp_path):
    import argparse

    torch.save({"args": argparse.Namespace(lr=1)}, tmp_path / "ns.pt")
    with pytest.raises(DeepleakError, match=r"holds the Python object argparse\.Namespace, not only tensors"):
        load_checkpoint(lenet(), tmp_path / "ns.pt")


def test_the_imported_client_trains_as_fedavg_does(tmp_path):
    """The plain-PyTorch client of these tests and deepleak's FedAvg (no shuffle) agree."""
    model = lenet()
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    root = write_client(tmp_path / "u", kind="weights", model=lenet(), images=images, local_batch_size=1, local_epochs=2, lr=0.05)
    client = Imported(str(root)).load(CPU)
    simulated = FedAvg(local_batch_size=1, epochs=2, lr=0.05, shuffle=False).observe(model, client.truth, 10)
    for got, want in zip(client.observation.weights, simulated.weights):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
