"""attack.conv_kernels: which CPU convolution kernels the restarts run on."""

import functools
import time

import pytest
import torch

from deepleak.attacks import GradientMatching
from deepleak.attacks.parts.distance import Cosine
from deepleak.attacks.engine.conv_kernels import TUNE_MAX_S, check_choice, choose, conv_kernels
from deepleak.attacks.parts.prior import TotalVariation
from deepleak.errors import DeepleakError
from deepleak.models import LeNet
from deepleak.scenarios import FedSGD, PrivateBatch

CPU = torch.device("cpu")


def test_native_turns_onednn_off_inside_only():
    before = torch.backends.mkldnn.enabled
    with conv_kernels("native"):
        assert torch.backends.mkldnn.enabled is False
    assert torch.backends.mkldnn.enabled == before
    with conv_kernels("onednn"):
        assert torch.backends.mkldnn.enabled == before


def test_bad_choice_is_one_clear_error():
    with pytest.raises(DeepleakError, match="conv_kernels must be one of"):
        check_choice("fast")
    with pytest.raises(DeepleakError, match="conv_kernels"):
        GradientMatching(Cosine(), torch.optim.Adam, conv_kernels="mkl")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
@pytest.mark.parametrize("slow", ["onednn", "native"])
def test_auto_keeps_the_faster(slow):
    calls = []

    def evaluate():
        current = "onednn" if torch.backends.mkldnn.enabled else "native"
        calls.append(current)
        time.sleep(0.004 if current == slow else 0.0005)

    chosen = choose("auto", evaluate, CPU)
    assert chosen != slow
    assert calls.count("native") >= 3 and calls.count("onednn") >= 3
    assert choose("native", evaluate, CPU) == "native" and choose("onednn", evaluate, CPU) == "onednn"
    assert choose("auto", evaluate, torch.device("cuda")) == "onednn"  # nothing to choose on a GPU


def test_channels_last_puts_the_model_in_that_layout_and_auto_times_it():
    model = LeNet(10, (3, 16, 16), width=8)
    weight = model.body[0].weight
    with conv_kernels("channels_last", model):
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    with conv_kernels("onednn", model):
        assert weight.is_contiguous()
    seen = []

    def evaluate():
        layout = "channels_last" if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous() else "nchw"
        seen.append((layout, torch.backends.mkldnn.enabled))
        time.sleep(0.0005 if layout == "channels_last" else 0.003)

    if torch.backends.mkldnn.is_available():
        assert choose("auto", evaluate, CPU, model) == "channels_last"
        assert {("channels_last", True), ("nchw", True), ("nchw", False)} == set(seen)


def test_a_list_of_models_takes_the_layout_too():
    """The snapshot attack's prepared model is one copy per segment."""
    models = [LeNet(10, (3, 16, 16), width=8) for _ in range(2)]
    with conv_kernels("channels_last", models):
        assert all(not m.body[0].weight.is_contiguous() for m in models)
    with conv_kernels("onednn", models):
        assert all(m.body[0].weight.is_contiguous() for m in models)


def test_auto_does_not_time_native_kernels_on_a_slow_evaluation():
    calls = []

    def evaluate():
        calls.append(torch.backends.mkldnn.enabled)
        time.sleep(TUNE_MAX_S * 1.2)

    assert choose("auto", evaluate, CPU) == "onednn"
    assert all(calls) and len(calls) == 2


def observe():
    torch.manual_seed(0)
    model = LeNet(10, (3, 16, 16), width=8)
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([3])
    return FedSGD().observe(model, PrivateBatch(images, labels), 10), labels


@pytest.mark.parametrize("route", [None, "finite_difference"])
def test_other_kernels_give_the_same_reconstruction_and_are_recorded(route, request):
    from deepleak.attacks.engine.image_gradient import FiniteDifference

    if route:
        # A difference quotient amplifies the kernels' rounding differences (float32 ~1e-7)
        # by 1 / step: compare its arithmetic in float64.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        request.addfinalizer(lambda: torch.set_default_dtype(previous))
    observation, labels = observe()
    attack = functools.partial(GradientMatching, Cosine(), functools.partial(torch.optim.Adam, lr=0.1),
                               priors={"tv": TotalVariation(1e-4)}, iterations=5, restarts=2, signed=False,
                               image_gradient=FiniteDifference(step=1e-5) if route else None)
    default = attack().reconstruct(observation, labels)
    auto = attack(conv_kernels="auto").reconstruct(observation, labels)
    assert "conv_kernels" not in default.extras and auto.extras["conv_kernels"] in ("onednn", "channels_last", "native")
    assert auto.history == pytest.approx(default.history, rel=1e-3)
    for choice in ("native", "channels_last"):
        other = attack(conv_kernels=choice).reconstruct(observation, labels)
        assert other.extras["conv_kernels"] == choice
        # Different kernels or layout, the same arithmetic up to float rounding.
        torch.testing.assert_close(other.images, default.images, rtol=0, atol=1e-4)
        assert other.restart_distances == pytest.approx(default.restart_distances, rel=1e-3)


def test_batched_restarts_record_the_kernels_they_ran_on():
    observation, labels = observe()
    attack = functools.partial(GradientMatching, Cosine(), functools.partial(torch.optim.Adam, lr=0.1),
                               iterations=3, restarts=2, signed=False, batched_restarts=True)
    default = attack().reconstruct(observation, labels)
    assert "conv_kernels" not in default.extras
    native = attack(conv_kernels="native").reconstruct(observation, labels)
    assert native.extras["conv_kernels"] == "native"
    torch.testing.assert_close(native.images, default.images, rtol=0, atol=1e-4)
    # vmap's batched convolutions run in NCHW: neither auto nor channels_last changes the layout.
    for choice in ("auto", "channels_last"):
        assert attack(conv_kernels=choice).reconstruct(observation, labels).extras["conv_kernels"] == "onednn"


def test_cli_records_the_choice_and_refuses_a_typo(deepleak, tmp_path):
    import json

    done = deepleak("attack", "attack=ig", "attack.conv_kernels=native", "attack.iterations=2", "attack.restarts=1", "trials=1")
    assert done.returncode == 0, done.stderr[-2000:]
    (metrics,) = list((tmp_path / "outputs").rglob("metrics.json"))
    assert json.loads(metrics.read_text())["per_trial"][0]["conv_kernels"] == "native"
    bad = deepleak("attack", "attack=ig", "attack.conv_kernels=fast", "attack.iterations=2")
    assert bad.returncode != 0 and "conv_kernels must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr
