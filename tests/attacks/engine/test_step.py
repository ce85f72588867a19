"""The attack step's convolutions (double-backward-friendly, narrow-input): same values and gradients."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepleak.attacks.engine.step import fast_double_backward
from deepleak.models import LeNet, ResNet18
from deepleak.scenarios.recipe import set_bn_mode


def image_gradient(model, images, labels, target):
    """The attack's quantity: d/dx <grad_theta CE(model(x), y), target>, and grad_theta itself."""
    params = list(model.parameters())
    x = images.clone().requires_grad_(True)
    candidate = torch.autograd.grad(F.cross_entropy(model(x), labels), params, create_graph=True)
    (gx,) = torch.autograd.grad(candidate, [x], grad_outputs=target)
    return [c.detach() for c in candidate], gx


@pytest.mark.parametrize("make, pixels", [
    (lambda: LeNet(10, (3, 15, 15), width=6), 15),            # strided, bias, odd size: output padding
    (lambda: ResNet18(10, (3, 8, 8), width=4, activation_fn="sigmoid"), 8),  # BN, shortcuts, no bias
])
def test_fast_convolutions_give_the_native_gradients(make, pixels):
    torch.manual_seed(0)
    native = set_bn_mode(make().double(), "train")
    fast = fast_double_backward(copy.deepcopy(native), min_channels=1)
    assert any("forward" in vars(m) for m in fast.modules())  # the path is really taken
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, pixels, pixels, generator=generator, dtype=torch.float64)
    labels = torch.tensor([1, 7])
    target = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in native.parameters()]
    candidate_native, gx_native = image_gradient(native, images, labels, target)
    candidate_fast, gx_fast = image_gradient(fast, images, labels, target)
    for a, b in zip(candidate_fast, candidate_native):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(gx_fast, gx_native, rtol=1e-9, atol=1e-12)
    assert float(gx_native.abs().max()) > 1e-6  # a real gradient, not zeros on both sides


def test_narrow_layers_stay_native_by_default():
    model = fast_double_backward(LeNet(10, width=32))  # 32 channels < 64
    assert not any("forward" in vars(m) for m in model.modules())
    wide = fast_double_backward(ResNet18(10, width=64))
    patched = [m for m in wide.modules() if "forward" in vars(m)]
    assert patched and all(m.in_channels >= 64 for m in patched)


@pytest.mark.parametrize("stride, padding, dilation, bias", [(2, 2, 1, True), (1, 1, 1, False), (2, 3, 2, True), (3, 0, 1, True)])
def test_narrow_convolutions_give_the_native_values_and_gradients(stride, padding, dilation, bias):
    """fast_input_gradient's matmul + fold input gradient, against the native convolution
    (float64), for the weight, bias and input gradients it returns."""
    from deepleak.attacks.engine.step import fast_input_gradient

    torch.manual_seed(0)
    native = nn.Conv2d(3, 8, 5, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    fast = fast_input_gradient(copy.deepcopy(native))
    assert "forward" in vars(fast) and "forward" not in vars(native)
    x = torch.rand(2, 3, 19, 17, dtype=torch.float64)
    weights = torch.randn_like(native(x))
    results = []
    for module in (native, fast):
        leaf = x.clone().requires_grad_(True)
        out = module(leaf)
        grads = torch.autograd.grad((out * weights).sum(), [leaf, *module.parameters()])
        results.append((out, grads))
    (out_n, grads_n), (out_f, grads_f) = results
    assert torch.allclose(out_f, out_n, rtol=0, atol=1e-12)
    for a, b in zip(grads_f, grads_n):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    # Wide layers stay native; the images' layer only.
    wide = fast_input_gradient(nn.Conv2d(16, 8, 3))
    assert "forward" not in vars(wide)


def test_deferred_input_gradients_combine_to_the_difference_of_the_passes():
    """Two passes' narrow-convolution input gradients, recorded instead of computed, combine
    to (grad_x at a - grad_x at b) / span, paired (one fold) or not (a pass with an extra use)."""
    from deepleak.attacks.engine.step import combine_deferred, deferring, fast_input_gradient

    torch.manual_seed(0)
    conv = fast_input_gradient(nn.Conv2d(3, 6, 5, stride=2, padding=2).double())
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    weights = torch.randn(2, 6, 6, 7, dtype=torch.float64)

    def passes(uses: int):
        leaf = x.clone().requires_grad_(True)
        with deferring(leaf) as deferral:
            out = sum(conv(leaf) * weights for _ in range(uses)).sin().sum()
        (skipped,) = torch.autograd.grad(out, [leaf], allow_unused=True)
        deferral.close()
        reference = x.clone().requires_grad_(True)
        (full,) = torch.autograd.grad(sum(conv(reference) * weights for _ in range(uses)).sin().sum(), [reference])
        return deferral, skipped, full

    span = 0.25
    at_a, skipped, full_a = passes(1)
    assert skipped is None and len(at_a.records) == 1  # nothing reached the images: it was recorded
    with torch.no_grad():
        conv.weight.add_(0.1)  # the other pass at other parameters
    at_b, _, full_b = passes(1)
    combined = combine_deferred(at_a, at_b, span)
    assert torch.allclose(combined, (full_a - full_b) / span, rtol=1e-10, atol=1e-12)
    at_c, _, full_c = passes(2)  # unpaired: two records against one
    assert len(at_c.records) == 2
    assert torch.allclose(combine_deferred(at_c, at_b, span), (full_c - full_b) / span, rtol=1e-10, atol=1e-12)
    # A closed deferral (a later backward pass, e.g. a prior's) computes as usual.
    leaf = x.clone().requires_grad_(True)
    with deferring(leaf) as deferral:
        out = (conv(leaf) * weights).sum()
    deferral.close()
    reference = x.clone().requires_grad_(True)
    expected = torch.autograd.grad((conv(reference) * weights).sum(), [reference])[0]
    assert torch.allclose(torch.autograd.grad(out, [leaf])[0], expected, rtol=1e-12, atol=1e-14)
    assert not deferral.records


def test_total_variation_closed_form_matches_autograd_and_vmap():
    from torch.func import grad, vmap

    from deepleak.attacks.parts.prior import TotalVariation

    tv = TotalVariation(0.3)
    x = torch.rand(3, 3, 9, 7, dtype=torch.float64).requires_grad_(True)
    value = tv(x)
    assert value.grad_fn is not None and "TotalVariation" in type(value.grad_fn).__name__
    assert torch.allclose(value, tv.functional(x), rtol=1e-14)
    (closed,) = torch.autograd.grad(value, [x])
    (plain,) = torch.autograd.grad(tv.functional(x), [x])
    assert torch.allclose(closed, plain, rtol=1e-12, atol=1e-15)
    batched = vmap(grad(tv))(x.detach().unsqueeze(1).expand(3, 2, 3, 9, 7).contiguous())
    assert torch.allclose(batched[0, 0], grad(tv.functional)(x.detach()[0:2])[0], rtol=1e-12, atol=1e-15)
    # The graph-free pair the finite-difference route adds directly.
    direct_value, direct_gradient = tv.value_and_gradient(x)
    assert direct_value.grad_fn is None and not direct_gradient.requires_grad
    assert torch.allclose(direct_value, value.detach(), rtol=1e-14)
    assert torch.allclose(direct_gradient, plain, rtol=1e-12, atol=1e-15)
    assert float(direct_gradient.abs().sum()) > 0


def test_total_variation_closed_form_over_a_restart_axis_is_one_tv_per_restart():
    from torch.func import grad_and_value, vmap

    from deepleak.attacks.parts.prior import TotalVariation

    tv = TotalVariation(0.3)
    restarts = torch.rand(4, 2, 3, 9, 7, dtype=torch.float64)
    restarts[2] = 0.5  # a flat restart: TV 0, gradient 0
    value, gradient = tv.value_and_gradient(restarts, leading=1)
    assert value.shape == (4,) and gradient.shape == restarts.shape
    plain_gradient, plain_value = vmap(grad_and_value(tv.functional))(restarts)
    assert torch.allclose(value, plain_value, rtol=1e-13)
    assert torch.allclose(gradient, plain_gradient, rtol=1e-12, atol=1e-15)
    assert float(value[2]) == 0.0 and float(value[0]) > 0
    # Not the TV of all restarts pooled: each restart's mean is over its own pixels.
    assert not torch.allclose(value, tv.value_and_gradient(restarts)[0].expand(4))
