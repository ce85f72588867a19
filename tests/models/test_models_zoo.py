"""The model zoo beyond LeNet and the CIFAR ResNet-18: ImageNet-layout ResNet-18/50, the
paper's MLP and Inverting Gradients' ConvNet. Shapes, activation choice, seeded init,
the classifier hook, and that every option builds from its YAML file."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from deepleak.config import config_dir
from deepleak.errors import DeepleakError
from deepleak.models import MLP, ConvNet, ResNet18ImageNet, ResNet50, build_model, classifier, features_and_logits

# Small widths keep the tests fast; the layouts do not depend on the width.
ZOO = {
    "resnet18_imagenet": (ResNet18ImageNet, {"width": 8}),
    "resnet50": (ResNet50, {"width": 4}),
    "mlp": (MLP, {"hidden": 32}),
    "convnet": (ConvNet, {"width": 4}),
}



def _cfg(name: str, **overrides) -> dict:
    cls, small = ZOO[name]
    return {"_target_": f"deepleak.models.{cls.__name__}", **small, **overrides}


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("res", [32, 64])
def test_output_shape(name, res):
    model = build_model(_cfg(name), 7, (3, res, res), seed=0)
    assert model(torch.rand(2, 3, res, res)).shape == (2, 7)
    features, logits = features_and_logits(model, torch.rand(2, 3, res, res))
    assert logits.shape == (2, 7) and features.shape == (2, classifier(model).in_features)


@pytest.mark.parametrize("name", ZOO)
def test_ends_in_one_linear_classifier(name):
    model = build_model(_cfg(name), 5, (3, 32, 32), seed=0)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert classifier(model) is last is model.fc
    assert last.out_features == 5
    # The classifier is the last module to run: its output is the model's output.
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    features, logits = features_and_logits(model, x)
    assert torch.allclose(last(features), logits)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("act, cls", [("relu", nn.ReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh)])
def test_activation_choice(name, act, cls):
    model = build_model(_cfg(name, activation_fn=act), 10, (3, 32, 32), seed=0)
    counts = {kind: sum(isinstance(m, kind) for m in model.modules()) for kind in (nn.ReLU, nn.Sigmoid, nn.Tanh)}
    expected = {"resnet18_imagenet": 1 + 8 * 2, "resnet50": 1 + 16 * 3, "mlp": 2, "convnet": 8}[name]
    assert counts.pop(cls) == expected
    assert sum(counts.values()) == 0


@pytest.mark.parametrize("name", ZOO)
def test_unknown_activation(name):
    with pytest.raises(DeepleakError, match="activation"):
        build_model(_cfg(name, activation_fn="swishy"), 10, (3, 32, 32), seed=0)


@pytest.mark.parametrize("name", ZOO)
def test_seeded_init_is_deterministic(name):
    a = build_model(_cfg(name), 10, (3, 32, 32), seed=5)
    b = build_model(_cfg(name), 10, (3, 32, 32), seed=5)
    c = build_model(_cfg(name), 10, (3, 32, 32), seed=6)
    assert _params_equal(a, b)
    assert not torch.equal(classifier(a).weight, classifier(c).weight)
    first = next(m for m in a.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    first_c = next(m for m in c.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert not torch.equal(first.weight, first_c.weight)


def test_checkpoint_round_trip(tmp_path):
    source = build_model(_cfg("resnet50"), 10, (3, 32, 32), seed=1)
    source.train()(torch.rand(4, 3, 32, 32))  # move the BN running statistics off their init
    path = tmp_path / "r50.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model({**_cfg("resnet50"), "checkpoint": str(path)}, 10, (3, 32, 32), seed=0)
    assert _params_equal(source, loaded)


# --------------------------------------------------------------------------- layouts


def test_paper_mlp_layout():
    model = MLP(num_classes=10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(3072, 1024), (1024, 1024), (1024, 10)]
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 2


def test_convnet_layout_matches_inverting_gradients():
    model = ConvNet(num_classes=10, width=64)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    assert model.fc.in_features == 36 * 64


def test_convnet_too_small_input():
    with pytest.raises(DeepleakError, match="at least 9 px"):
        ConvNet(num_classes=10, image_shape=(3, 8, 8))


@pytest.mark.parametrize("cls, features, convs", [(ResNet18ImageNet, 512, 20), (ResNet50, 2048, 53)])
def test_imagenet_resnet_layout(cls, features, convs):
    model = cls(num_classes=1000)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model.fc.in_features == features
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs  # shortcut convs included


@pytest.mark.parametrize("cls, name", [(ResNet18ImageNet, "resnet18"), (ResNet50, "resnet50")])
def test_imagenet_resnet_matches_torchvision(cls, name):
    """Same parameter names and shapes as torchvision, so its ImageNet checkpoints load;
    with the same weights the outputs agree."""
    torchvision = pytest.importorskip("torchvision")
    reference = getattr(torchvision.models, name)(weights=None).eval()
    model = cls(num_classes=1000).eval()
    theirs = reference.state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    model.load_state_dict(theirs)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_imagenet_resnet_width():
    model = ResNet18ImageNet(num_classes=10, width=16)
    assert model.conv1.out_channels == 16 and model.fc.in_features == 128
    assert ResNet50(num_classes=10, width=16).fc.in_features == 512


def test_imagenet_resnet_small_inputs_in_train_mode():
    """At 32 px the last stage is 1x1; a batch of 2 still trains with batch norm."""
    model = ResNet18ImageNet(num_classes=10, width=8).train()
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    assert model.conv1.weight.grad is not None


def test_resnet50_at_224px():
    """The full-width network at ImageNet size (about 1 s here, batch 1)."""
    model = ResNet50(num_classes=1000).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_resnet18_imagenet_at_224px():
    model = ResNet18ImageNet(num_classes=10, width=8).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 10)


# --------------------------------------------------------------------------- YAML options


@pytest.mark.parametrize("name", ZOO)
def test_yaml_option_builds(name):
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    assert cfg._target_ == f"deepleak.models.{ZOO[name][0].__name__}"
    assert "checkpoint" in cfg and cfg.checkpoint is None
    small = OmegaConf.merge(cfg, ZOO[name][1])
    model = build_model(small, 10, (3, 32, 32), seed=0)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ZOO)
def test_composes_in_the_attack_config(compose, name):
    from deepleak.config import check_types

    cfg = compose(f"model={name}", "model.activation_fn=tanh")
    check_types(cfg)
    assert cfg.model.activation_fn == "tanh"
