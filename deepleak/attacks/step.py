"""The hot path of one attack step: the double backward, made cheaper where autograd wastes.

An attack step differentiates the parameter gradient of the victim once more, with respect
to the images. For a convolution, autograd's double backward (``_convolution_double_backward``)
computes the adjoint of the *weight* whenever the adjoint of the layer's input gradient is
defined, that is for every convolution but the first, although the attack never asks for it:
one extra convolution per layer, and on CPU at batch 1 a slow one (it runs with the batch
and channel axes swapped, e.g. 512 "images" of one channel on ResNet-18's last stage).

:func:`fast_double_backward` swaps the convolutions of the attacker's model copy for one
whose backward is built from two first-order ops, a transposed convolution for the input
gradient and a weight-only ``convolution_backward`` for the weight gradient. Their own
backward passes honour the mask of what is needed, so the double backward does only the
convolutions the image gradient needs. The forward pass and every gradient are the same
functions as before (tests/test_step.py checks values, first and second order, to float
tolerance). A convolution that sees the images directly (a leaf input) keeps the native
path: there the input gradient is wanted only in the second pass, and the native graph
already skips it in the first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Conv2d(torch.autograd.Function):
    """conv2d(x, weight, bias) with a backward of two separable first-order ops.

    The old-style ``forward(ctx, ...)``: its call costs about a fifth of the
    ``setup_context`` style's (11 vs 49 us measured), which matters on small models. It
    does not run under torch.func transforms; :func:`_forward` keeps those on the native path.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # The input size is ambiguous for strided convolutions: pad the output to it.
            extra = [
                x.shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1) + 1)
                for i in range(2)
            ]
            grad_x = F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups, dilation)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [False, True, False]
            )[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _forward(module: nn.Conv2d, x: Tensor) -> Tensor:
    if (x.grad_fn is None or module.padding_mode != "zeros" or isinstance(module.padding, str)
            or torch._C._functorch.peek_interpreter_stack() is not None):
        # The images themselves (the native graph is already lean there), an unsupported
        # layout, or inside a torch.func transform (vmap, grad): the native convolution.
        return nn.Conv2d.forward(module, x)
    return _Conv2d.apply(x, module.weight, module.bias, module.stride, module.padding, module.dilation, module.groups)


# The wasted convolution grows with in x out channels, the Function's call overhead does not:
# measured on CPU, one thread (second backward / whole double backward, native -> this path):
# ResNet-18 (64..512 channels) batch 1 137 -> 117 ms / 206 -> 186 ms, batch 8 554 -> 512 /
# 813 -> 775 ms; LeNet (32 channels) batch 1 2.07 -> 2.40 ms, batch 8 5.78 -> 5.74 ms: a loss
# below 64 channels, so those layers stay native.
MIN_CHANNELS = 64


def fast_double_backward(model: nn.Module, min_channels: int = MIN_CHANNELS) -> nn.Module:
    """Make the 2-d convolutions of ``model`` (in place; pass the attacker's copy) with at
    least ``min_channels`` input channels use the double-backward-friendly path. Returns the
    model."""
    for module in model.modules():
        if type(module) is nn.Conv2d and module.in_channels >= min_channels:
            module.forward = _forward.__get__(module)
    return model



# ---------------------------------------------------------------------------- narrow inputs
class _NarrowConv2d(torch.autograd.Function):
    """conv2d(x, weight, bias) whose input gradient is one matrix product and a ``fold``
    (col2im) instead of oneDNN's backward-data kernel, which is slow for a layer with a few
    input channels: measured on CPU, one thread, LeNet's first layer (3 -> 32, 5x5, stride 2)
    at batch 64 3.82 -> 1.83 ms, batch 8 0.51 -> 0.26 ms, and ResNet-18's 7x7 stem at 224 px
    9.6 -> 5.4 ms; wide layers are faster natively (tests/test_step.py checks the values).
    First order only: the finite-difference route's passes use it, the double backward not."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            flat = weight.reshape(weight.shape[0], -1).t()
            columns = torch.bmm(flat.expand(grad.shape[0], *flat.shape), grad.reshape(grad.shape[0], grad.shape[1], -1))
            grad_x = F.fold(columns, x.shape[2:], weight.shape[2:], dilation, padding, stride)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], 1, [False, True, False]
            )[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None, None


def _narrow_forward(module: nn.Conv2d, x: Tensor) -> Tensor:
    if (not x.requires_grad or torch.is_grad_enabled() is False
            or torch._C._functorch.peek_interpreter_stack() is not None):
        return nn.Conv2d.forward(module, x)
    return _NarrowConv2d.apply(x, module.weight, module.bias, module.stride, module.padding, module.dilation)


# oneDNN's backward-data kernel loses to matmul + fold up to this many input channels (the
# images' 1 or 3); from 32 channels on it wins (LeNet's second layer: 2.2 vs 5.2 ms at batch 64).
MAX_NARROW_CHANNELS = 4


def fast_input_gradient(model: nn.Module, max_channels: int = MAX_NARROW_CHANNELS) -> nn.Module:
    """Make the 2-d convolutions of ``model`` (in place; pass the attacker's copy) with at most
    ``max_channels`` input channels (the layers that see the images) compute their input
    gradient by matmul + fold (:class:`_NarrowConv2d`). For first-order passes. Returns the model."""
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.in_channels <= max_channels and module.groups == 1
                and module.padding_mode == "zeros" and not isinstance(module.padding, str)):
            module.forward = _narrow_forward.__get__(module)
    return model
