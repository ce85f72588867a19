"""Victim models: DLG LeNet layout and init, ResNet-18 variants, seeded construction,
checkpoints and the classifier hooks that label methods rely on."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from deepleak.errors import DeepleakError
from deepleak.models import (
    LeNet,
    ResNet18,
    build_model,
    classifier,
    classifier_parameter_names,
    features_and_logits,
    load_checkpoint,
)

LENET_CFG = {"_target_": "deepleak.models.LeNet", "width": 12, "activation_fn": "sigmoid", "init_scale": 0.5}



def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- LeNet


def test_lenet_dlg_layout_at_32px():
    model = LeNet(num_classes=10, image_shape=(3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert [c.out_channels for c in convs] == [12, 12, 12]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 3
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1)]
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3
    assert classifier(model) is model.fc
    assert model.fc.in_features == 768 and model.fc.out_features == 10
    out = model(torch.rand(5, 3, 32, 32))
    assert out.shape == (5, 10)


@pytest.mark.parametrize("res, features", [(16, 12 * 4 * 4), (64, 12 * 16 * 16), (28, 12 * 7 * 7), (33, 12 * 9 * 9)])
def test_lenet_other_resolutions(res, features):
    model = LeNet(num_classes=7, image_shape=(3, res, res))
    assert model.fc.in_features == features
    assert model(torch.rand(2, 3, res, res)).shape == (2, 7)


def test_lenet_grayscale_input():
    model = LeNet(num_classes=4, image_shape=(1, 32, 32))
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 4)


def test_lenet_init_is_uniform_half():
    torch.manual_seed(0)
    model = LeNet(num_classes=100, image_shape=(3, 32, 32), init_scale=0.5)
    for name, p in model.named_parameters():
        assert p.min() >= -0.5 and p.max() <= 0.5, name
    values = torch.cat([p.detach().flatten() for p in model.parameters()])
    # U(-0.5, 0.5), not PyTorch's default (whose fc bound is 1/sqrt(768) ~ 0.036).
    assert values.max() > 0.45 and values.min() < -0.45
    assert abs(values.mean()) < 0.02
    assert abs(values.std() - 1 / 12**0.5) < 0.01
    # Every tensor is spread, the biases and the classifier included.
    for name, p in model.named_parameters():
        assert p.abs().max() > 0.3, name


def test_lenet_default_init_when_scale_none():
    torch.manual_seed(0)
    model = LeNet(num_classes=10, init_scale=None)
    assert model.fc.weight.abs().max() <= 1 / 768**0.5 + 1e-6


def test_lenet_unknown_activation():
    with pytest.raises(DeepleakError, match="activation"):
        LeNet(num_classes=10, activation_fn="swishy")


@pytest.mark.parametrize("name, cls", [("relu", nn.ReLU), ("tanh", nn.Tanh)])
def test_lenet_activation_choice(name, cls):
    model = LeNet(num_classes=10, activation_fn=name)
    assert sum(isinstance(m, cls) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())


# --------------------------------------------------------------------------- build_model


def test_build_model_seeded():
    a = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    b = build_model(LENET_CFG, 10, (3, 32, 32), seed=3)
    c = build_model(LENET_CFG, 10, (3, 32, 32), seed=4)
    assert isinstance(a, LeNet)
    assert _params_equal(a, b)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert not torch.equal(a.body[0].weight, c.body[0].weight)


def test_build_model_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    assert torch.equal(torch.rand(5), expected)
    # And the global seed does not leak into the model.
    torch.manual_seed(1)
    a = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    torch.manual_seed(2)
    b = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    assert _params_equal(a, b)


def test_build_model_from_omegaconf_and_shape_arguments():
    cfg = OmegaConf.create({**LENET_CFG, "checkpoint": None})
    model = build_model(cfg, 20, [3, 16, 16], seed=0)
    assert model.fc.out_features == 20 and model.fc.in_features == 12 * 4 * 4
    # The config object is not consumed.
    assert "checkpoint" in cfg
    plain = {**LENET_CFG, "checkpoint": None}
    build_model(plain, 20, (3, 16, 16), seed=0)
    assert "checkpoint" in plain


def test_build_model_width():
    model = build_model({**LENET_CFG, "width": 64}, 10, (3, 32, 32), seed=0)
    assert model.fc.in_features == 64 * 8 * 8


# --------------------------------------------------------------------------- checkpoints


def test_build_model_loads_checkpoint(tmp_path):
    source = build_model(LENET_CFG, 10, (3, 32, 32), seed=7)
    path = tmp_path / "lenet.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model({**LENET_CFG, "checkpoint": str(path)}, 10, (3, 32, 32), seed=0)
    assert _params_equal(source, loaded)
    fresh = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    assert not _params_equal(fresh, loaded)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_load_checkpoint_nested_state_dict(tmp_path, key):
    source = build_model(LENET_CFG, 10, (3, 32, 32), seed=7)
    path = tmp_path / "nested.pt"
    torch.save({key: source.state_dict(), "epoch": 3}, path)
    target = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    load_checkpoint(target, path)
    assert _params_equal(source, target)


def test_checkpoint_of_wrong_architecture(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(build_model({**LENET_CFG, "width": 16}, 10, (3, 32, 32), seed=0).state_dict(), path)
    with pytest.raises(DeepleakError, match="does not fit"):
        build_model({**LENET_CFG, "checkpoint": str(path)}, 10, (3, 32, 32), seed=0)
    path = tmp_path / "classes.pt"
    torch.save(build_model(LENET_CFG, 100, (3, 32, 32), seed=0).state_dict(), path)
    with pytest.raises(DeepleakError):
        build_model({**LENET_CFG, "checkpoint": str(path)}, 10, (3, 32, 32), seed=0)
    path = tmp_path / "resnet.pt"
    torch.save(ResNet18(num_classes=10, width=4).state_dict(), path)
    with pytest.raises(DeepleakError):
        build_model({**LENET_CFG, "checkpoint": str(path)}, 10, (3, 32, 32), seed=0)


@pytest.mark.parametrize("name", ["LeNet", "MLP", "ConvNet", "ResNet18", "ResNet18ImageNet", "ResNet50"])
def test_every_model_takes_its_checkpoint_as_an_argument(tmp_path, name):
    """model.checkpoint is the model's own constructor argument (Victim): the option builds
    with plain instantiate, no key popped by the task."""
    import inspect

    from deepleak import models

    cls = getattr(models, name)
    assert issubclass(cls, models.Victim)
    assert inspect.signature(cls).parameters["checkpoint"].default is None
    small = {"hidden": 8} if name == "MLP" else {"width": 2}
    source = cls(num_classes=3, image_shape=(3, 32, 32), **small)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(123)
    loaded = cls(num_classes=3, image_shape=(3, 32, 32), checkpoint=str(tmp_path / "w.pt"), **small)
    assert _params_equal(source, loaded)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(DeepleakError, match="does not exist"):
        build_model({**LENET_CFG, "checkpoint": str(tmp_path / "nope.pt")}, 10, (3, 32, 32), seed=0)


class _NotATensor:
    pass


def test_checkpoint_needing_full_pickle_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": _NotATensor()}, path)
    with pytest.raises(DeepleakError, match=r"refused model checkpoint .*: it holds the Python object \S*_NotATensor, not only tensors"):
        load_checkpoint(LeNet(num_classes=10), path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DeepleakError, match="cannot read model checkpoint .* as a torch file of tensors") as caught:
        load_checkpoint(LeNet(num_classes=10), garbage)
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------- ResNet-18


@pytest.mark.parametrize("name, cls", [("sigmoid", nn.Sigmoid), ("relu", nn.ReLU), ("tanh", nn.Tanh)])
def test_resnet18_activations_and_shapes(name, cls):
    model = ResNet18(num_classes=10, image_shape=(3, 32, 32), width=8, activation_fn=name)
    acts = [m for m in model.modules() if isinstance(m, cls)]
    assert len(acts) == 1 + 8 * 2  # stem + two per basic block
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    assert classifier(model) is model.fc and model.fc.in_features == 64
    for res in (16, 32):
        assert model(torch.rand(2, 3, res, res)).shape == (2, 10)


def test_resnet18_standard_width():
    model = build_model({"_target_": "deepleak.models.ResNet18", "activation_fn": "sigmoid"}, 100, (3, 32, 32), seed=0)
    assert model.fc.in_features == 512 and model.fc.out_features == 100
    n = sum(p.numel() for p in model.parameters())
    assert 11.0e6 < n < 11.4e6  # the CIFAR ResNet-18 has ~11.2M parameters
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 100)


def test_resnet18_seeded():
    cfg = {"_target_": "deepleak.models.ResNet18", "width": 8, "activation_fn": "relu"}
    a = build_model(cfg, 10, (3, 32, 32), seed=0)
    b = build_model(cfg, 10, (3, 32, 32), seed=0)
    c = build_model(cfg, 10, (3, 32, 32), seed=1)
    assert _params_equal(a, b) and not _params_equal(a, c)


# --------------------------------------------------------------------------- classifier hooks


def test_classifier_parameter_names():
    assert classifier_parameter_names(LeNet(num_classes=10)) == ("fc.weight", "fc.bias")
    assert classifier_parameter_names(ResNet18(num_classes=10, width=4)) == ("fc.weight", "fc.bias")
    no_bias = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Sigmoid(), nn.Linear(6, 3, bias=False))
    assert classifier_parameter_names(no_bias) == ("3.weight", None)


def test_classifier_missing():
    with pytest.raises(DeepleakError, match="no linear"):
        classifier(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_features_and_logits_lenet():
    model = build_model(LENET_CFG, 10, (3, 32, 32), seed=0)
    x = torch.rand(4, 3, 32, 32)
    features, logits = features_and_logits(model, x)
    assert features.shape == (4, 768) and logits.shape == (4, 10)
    with torch.no_grad():
        assert torch.allclose(features, model.body(x))
        assert torch.allclose(logits, model(x))
        assert torch.allclose(logits, model.fc(features))
    assert (features > 0).all() and (features < 1).all()  # sigmoid features
    # The hook is removed afterwards.
    assert not model.fc._forward_hooks


def test_features_and_logits_resnet():
    model = ResNet18(num_classes=10, width=8, activation_fn="sigmoid").eval()
    x = torch.rand(3, 3, 32, 32)
    features, logits = features_and_logits(model, x)
    assert features.shape == (3, 64) and logits.shape == (3, 10)
    with torch.no_grad():
        assert torch.allclose(features, model.pool(model.stages(model.stem(x))))
        assert torch.allclose(logits, model.fc(features))
