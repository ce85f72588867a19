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

from collections.abc import Iterator
from contextlib import contextmanager

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
def narrow_input_gradient(weight: Tensor, grad: Tensor, conf: tuple, size: torch.Size,
                          weight2: Tensor | None = None, grad2: Tensor | None = None) -> Tensor:
    """The input gradient of ``conv2d(x, weight)`` (``conf``: stride, padding, dilation; ``size``:
    x's spatial size) for the output gradient ``grad``, plus that of ``weight2`` for ``grad2``
    when given (one sum of columns, one fold): batched matrix products and a ``fold`` (col2im)."""
    stride, padding, dilation = conf
    batch, kernel = grad.shape[0], weight.shape[2:]
    flats = [weight.reshape(weight.shape[0], -1).t()]
    grads = [grad.reshape(batch, grad.shape[1], -1)]
    if weight2 is not None:
        flats.append(weight2.reshape(weight2.shape[0], -1).t())
        grads.append(grad2.reshape(batch, grad2.shape[1], -1))

    def columns(start: int, stop: int) -> Tensor:
        count = stop - start
        out = torch.bmm(flats[0].expand(count, *flats[0].shape), grads[0][start:stop])
        if len(flats) > 1:
            out.baddbmm_(flats[1].expand(count, *flats[1].shape), grads[1][start:stop])
        return F.fold(out, size, kernel, dilation, padding, stride)

    # In chunks of images whose columns stay in cache (LeNet batch 64, first layer: about 2x).
    chunk = max(1, COLUMN_BUDGET // (flats[0].shape[0] * grads[0].shape[2]))
    if chunk >= batch:
        return columns(0, batch)
    out = grad.new_empty(batch, weight.shape[1], *size)
    for start in range(0, batch, chunk):
        out[start:start + chunk] = columns(start, min(start + chunk, batch))
    return out


COLUMN_BUDGET = 2**18  # floats of im2col columns per chunk (1 MB in float32)


class Deferral:
    """While :func:`deferring` is active, a narrow convolution that reads ``images`` leaves its
    input gradient out (autograd sees none) and records (weight, output gradient, conf, size)
    instead: the finite-difference route then combines the records of two passes into one
    input gradient (:func:`combine_deferred`), one ``fold`` instead of one per pass."""

    def __init__(self, images: Tensor) -> None:
        self.images = images
        self.records: list[tuple[Tensor, Tensor, tuple, torch.Size]] = []
        self.open = True  # closed: later backward passes (a prior's) compute the input gradient as usual

    def close(self) -> "Deferral":
        self.open = False
        return self


_DEFERRAL: Deferral | None = None


@contextmanager
def deferring(images: Tensor) -> Iterator[Deferral]:
    """Defer the input gradient of the narrow convolutions that read ``images`` in the
    forward passes run inside (their backward may run later)."""
    global _DEFERRAL
    previous, _DEFERRAL = _DEFERRAL, Deferral(images)
    try:
        yield _DEFERRAL
    finally:
        _DEFERRAL = previous


def combine_deferred(at_a: Deferral, at_b: Deferral, span: float) -> Tensor | None:
    """(sum of the input gradients at_a recorded - those at_b recorded) / ``span``, with each
    pair of records from the same layer as one stacked input gradient:

        (Wa^T ga - Wb^T gb) / s = [Wb; (Wa - Wb) / s]^T [(ga - gb) / s; ga]

    None when nothing was recorded."""
    if not at_a.records and not at_b.records:
        return None
    paired = len(at_a.records) == len(at_b.records) and all(
        a[1].shape == b[1].shape and a[0].shape == b[0].shape and a[2:] == b[2:] for a, b in zip(at_a.records, at_b.records))
    total = None
    if paired:
        for (wa, ga, conf, size), (wb, gb, _, _) in zip(at_a.records, at_b.records):
            part = narrow_input_gradient(wb, ga.sub(gb).div_(span), conf, size, wa.sub(wb).div_(span), ga)
            total = part if total is None else total.add_(part)
        return total
    for records, sign in ((at_a.records, 1.0 / span), (at_b.records, -1.0 / span)):
        for weight, grad, conf, size in records:
            part = narrow_input_gradient(weight, grad, conf, size).mul_(sign)
            total = part if total is None else total.add_(part)
    return total


class _NarrowConv2d(torch.autograd.Function):
    """conv2d(x, weight, bias) whose input gradient is one matrix product and a ``fold``
    (col2im) instead of oneDNN's backward-data kernel, which is slow for a layer with a few
    input channels: measured on CPU, one thread, LeNet's first layer (3 -> 32, 5x5, stride 2)
    at batch 64 3.82 -> 1.83 ms, batch 8 0.51 -> 0.26 ms, and ResNet-18's 7x7 stem at 224 px
    9.6 -> 5.4 ms; wide layers are faster natively (tests/test_step.py checks the values).
    Under :func:`deferring` it records instead of computing the input gradient.
    First order only: the finite-difference route's passes use it, the double backward not."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        ctx.deferral = _DEFERRAL if _DEFERRAL is not None and x is _DEFERRAL.images else None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            if ctx.deferral is not None and ctx.deferral.open:
                # A copy (a few thousand numbers): the record must keep this pass's weight
                # whatever happens to the parameter afterwards.
                ctx.deferral.records.append((weight.detach().clone(), grad, ctx.conf, x.shape[2:]))
            else:
                grad_x = narrow_input_gradient(weight, grad, ctx.conf, x.shape[2:])
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], 1, [False, True, False]
            )[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None, None


def _narrow_forward(module: nn.Conv2d, x: Tensor) -> Tensor:
    if (not x.requires_grad or not torch.is_grad_enabled() or x.device.type != "cpu"
            or torch._C._functorch.peek_interpreter_stack() is not None):
        # Nothing to differentiate, a GPU (measured only on CPU: cuDNN keeps it), or inside
        # a torch.func transform: the native convolution.
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
