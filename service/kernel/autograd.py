"""``BinaryConv2dForward``: the convolution as a ``torch.autograd.Function`` with bitorch-engine's
signature (see ../shared/reference), so code written against that engine runs unchanged."""

from __future__ import annotations

import torch

from service import _core

from .conv import run_kernel, ste_backward
from .geometry import ConvGeometry, pair
from .packing import PackedWeights, check_float_tensor, pack_weights, sign, signed_weights


class BinaryConv2dForward(torch.autograd.Function):
    """Binary 2-D convolution with bitorch-engine's signature, plus a straight-through backward.

    ``forward(ctx, activations, weights, m, n, k, kernel_size, stride, padding, dilation, output_edge)``
    where m = output channels, n = output pixels per image, k = input channels × kernel area and
    output_edge = output height. ``weights`` is a float tensor [O, C, KH, KW] (binarised on the fly)
    or :class:`PackedWeights`. Padding is zero padding, as the reference documents.
    """

    @staticmethod
    def forward(ctx, activations, weights, m, n, k, kernel_size, stride, padding, dilation, output_edge):
        ksize = pair(kernel_size, "kernel_size", 1)
        g = ConvGeometry.parse(stride, padding, dilation)
        weight_is_float = not isinstance(weights, _core.PackedWeights)
        packed: PackedWeights = pack_weights(weights) if weight_is_float else weights
        check_float_tensor(activations, "activations", 4)
        if packed.kernel_size != ksize:
            raise ValueError(f"kernel_size={kernel_size!r} disagrees with the weights' kernel {packed.kernel_size}")
        out = run_kernel(activations, packed, g, {})
        oh, ow = out.shape[2], out.shape[3]
        expected = {
            "m": (m, packed.out_channels),
            "n": (n, oh * ow),
            "k": (k, packed.in_channels * ksize[0] * ksize[1]),
            "output_edge": (output_edge, oh),
        }
        for name, (given, actual) in expected.items():
            if given != actual:
                raise ValueError(f"{name}={given!r} disagrees with the tensors, which give {name}={actual}")
        ctx.geometry = g
        ctx.packed = None if weight_is_float else packed
        ctx.save_for_backward(activations, weights if weight_is_float else torch.empty(0))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        if ctx.packed is None:
            grad_x, grad_w = ste_backward(grad_out, x, sign(w), ctx.geometry, w, needs)
        else:
            sw = signed_weights(ctx.packed) if needs[0] else None
            grad_x, grad_w = ste_backward(grad_out, x, sw, ctx.geometry, None, needs)  # type: ignore[arg-type]
        return (grad_x, grad_w) + (None,) * 8
