"""The binary convolution: the raw call into the core, the ``bnn::binary_conv2d`` torch op, the
general :func:`binary_conv2d` and the fixed-weights :class:`InferenceConv`.

``bnn::binary_conv2d`` is registered with ``torch.library`` (float weights, a fake implementation
for shapes and strides, a straight-through backward), so ``torch.compile`` and ``torch.export``
trace through it as one node. Packed weights are a C++ object, not a tensor: calls with
:class:`PackedWeights` take the direct path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.grad

from service import _core

from .geometry import ConvGeometry, IntPair, pair
from .packing import (
    PackedActivations,
    PackedWeights,
    as_kernel_input,
    channel_vector,
    check_float_tensor,
    pack_activations,
    pack_weights,
    sign,
    signed_weights,
    suggests_channels_last,
)
from .runtime import ensure_configured

# ---- the raw call ------------------------------------------------------------------------


# The core's keyword arguments for one call's epilogue: per-channel float32 vectors, the residual,
# the clamp's bounds.
CoreArgs = dict[str, Any]


def epilogue(scale: torch.Tensor | None, bias: torch.Tensor | None) -> CoreArgs:
    """scale/bias in the form the core takes (float32 numpy vectors)."""
    extra = {}
    if scale is not None:
        extra["scale"] = scale.detach().to(torch.float32).contiguous().numpy()
    if bias is not None:
        extra["bias"] = bias.detach().to(torch.float32).contiguous().numpy()
    return extra


def nhwc_array(t: torch.Tensor, name: str) -> np.ndarray:
    """A float32 [N, C, H, W] tensor's values as an NHWC numpy array: a view (transposed by numpy,
    a few µs less than by torch); C-contiguous when ``t`` is channels-last in memory, else the core's
    binding copies it."""
    check_float_tensor(t, name, 4)
    if t.dtype != torch.float32:
        raise ValueError(f"{name} must be float32, got {t.dtype}")
    return t.detach().numpy().transpose(0, 2, 3, 1)


def run_kernel(
    x: torch.Tensor,
    weights: PackedWeights,
    g: ConvGeometry,
    extra: CoreArgs,
    channels_last_out: bool | None = None,
) -> torch.Tensor:
    """One call into the core: checks ``x`` against the weights and geometry, then convolves. The
    output is channels-last when asked, else when torch's conv2d would make it so
    (``suggest_memory_format``)."""
    check_float_tensor(x, "input", 4)
    if x.shape[1] != weights.in_channels:
        raise ValueError(f"channel mismatch: input has {x.shape[1]} channels, weight expects {weights.in_channels}")
    if x.numel() == 0:
        raise ValueError(f"input must not be empty, got shape {tuple(x.shape)}")
    g.check_fits(x.shape[2], x.shape[3], weights.kernel_size)
    if channels_last_out is None:
        channels_last_out = suggests_channels_last(x)
    arr, channels_last = as_kernel_input(x)
    ensure_configured()
    out = _core.conv2d(
        arr,
        channels_last,
        weights,
        g.stride,
        g.padding,
        g.dilation,
        g.pad_value,
        channels_last_out=channels_last_out,
        **extra,
    )
    if channels_last_out:  # [N, OH, OW, O] -> logical NCHW with torch.channels_last strides
        return torch.from_numpy(out).permute(0, 3, 1, 2)
    return torch.from_numpy(out)


def ste_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    signed_w: torch.Tensor,
    g: ConvGeometry,
    weight: torch.Tensor | None,
    needs: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Straight-through estimator: d/dx through sign(w), zeroed where |x| > 1; d/dw (float
    ``weight`` only) from sign(x) padded with the geometry's pad value."""
    grad_x = grad_w = None
    if needs[0]:
        grad_x = torch.nn.grad.conv2d_input(x.shape, signed_w, grad_out, g.stride, g.padding, g.dilation)
        grad_x = (grad_x * (x.abs() <= 1)).to(x.dtype)
    if weight is not None and needs[1]:
        sx = sign(x)
        if g.pad_value != 0:
            p = g.padding
            sx = F.pad(sx, (p[1], p[1], p[0], p[0]), value=float(g.pad_value))
            grad_w = torch.nn.grad.conv2d_weight(sx, weight.shape, grad_out, g.stride, 0, g.dilation)
        else:
            grad_w = torch.nn.grad.conv2d_weight(sx, weight.shape, grad_out, g.stride, g.padding, g.dilation)
        grad_w = grad_w.to(weight.dtype)
    return grad_x, grad_w


# ---- the torch op (float weights) --------------------------------------------------------


def _geometry(stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], pad_value: int) -> ConvGeometry:
    return ConvGeometry.parse(tuple(stride), tuple(padding), tuple(dilation), pad_value)


@torch.library.custom_op("bnn::binary_conv2d", mutates_args=())
def binary_conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    pad_value: int,
) -> torch.Tensor:
    """sign(input) ⋆ sign(weight) as float32, exact (float weights [O, C, KH, KW], groups = 1)."""
    check_float_tensor(weight, "weight", 4)
    return run_kernel(input, pack_weights(weight), _geometry(stride, padding, dilation, pad_value), {})


@binary_conv2d_op.register_fake
def _binary_conv2d_fake(input, weight, stride, padding, dilation, pad_value):
    g = _geometry(stride, padding, dilation, pad_value)
    if input.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"input and weight must be 4-D, got shapes {tuple(input.shape)} and {tuple(weight.shape)}")
    if input.shape[1] != weight.shape[1]:
        raise ValueError(f"channel mismatch: input has {input.shape[1]} channels, weight expects {weight.shape[1]}")
    oh, ow = g.output_size(input.shape[2], input.shape[3], (weight.shape[2], weight.shape[3]))
    layout = torch.channels_last if suggests_channels_last(input) else torch.contiguous_format
    return input.new_empty((input.shape[0], weight.shape[0], oh, ow), dtype=torch.float32).contiguous(
        memory_format=layout
    )


def _op_setup_context(ctx, inputs, output) -> None:
    x, weight, stride, padding, dilation, pad_value = inputs
    ctx.geometry = _geometry(stride, padding, dilation, pad_value)
    ctx.save_for_backward(x, weight)


def _op_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
    grad_x, grad_w = ste_backward(grad_out, x, sign(weight), ctx.geometry, weight, needs)
    return grad_x, grad_w, None, None, None, None


binary_conv2d_op.register_autograd(_op_backward, setup_context=_op_setup_context)


class _PackedConv(torch.autograd.Function):
    """Packed weights are not a tensor, so not an op argument: this path carries the gradient to
    the input (through the weights' signs) itself."""

    @staticmethod
    def forward(ctx, x, weights, g: ConvGeometry):
        ctx.geometry, ctx.weights = g, weights
        ctx.save_for_backward(x)
        return run_kernel(x, weights, g, {})

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        sw = signed_weights(ctx.weights) if ctx.needs_input_grad[0] else None
        grad_x, _ = ste_backward(grad_out, x, sw, ctx.geometry, None, (ctx.needs_input_grad[0], False))  # type: ignore[arg-type]
        return grad_x, None, None


def _convolve(
    x: torch.Tensor,
    weight: torch.Tensor | PackedWeights,
    g: ConvGeometry,
    scale: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """One group: the op for float weights, the packed path otherwise; a fused scale/bias is for
    inference and makes the output non-differentiable."""
    if scale is not None or bias is not None:
        packed = weight if isinstance(weight, _core.PackedWeights) else pack_weights(weight)
        return run_kernel(x, packed, g, epilogue(scale, bias))
    if isinstance(weight, _core.PackedWeights):
        if torch.is_grad_enabled() and x.requires_grad:
            return _PackedConv.apply(x, weight, g)
        return run_kernel(x, weight, g, {})
    if (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)) or torch.compiler.is_compiling():
        return torch.ops.bnn.binary_conv2d(x, weight, g.stride, g.padding, g.dilation, g.pad_value)
    # Eager, no autograd: the same kernel without the dispatcher's ~0.1 ms per call.
    return run_kernel(x, pack_weights(weight), g, {})


def binary_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor | PackedWeights,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    pad_value: int = 0,
    groups: int = 1,
    *,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary convolution of ``sign(input)`` with ``sign(weight)``, exact, as float32 [N, O, OH, OW].

    Like ``F.conv2d``, the result is in ``torch.channels_last`` memory format when the input is
    (the kernel then writes NHWC directly), and contiguous NCHW otherwise.

    ``weight`` is float [O, C/groups, KH, KW] or :class:`PackedWeights` (groups=1). ``scale`` and
    ``bias`` (per output channel) are applied in the kernel's epilogue: ``y = conv * scale + bias``;
    they are for inference (no gradient flows to them). Differentiable through a straight-through
    estimator in ``input`` and a float ``weight``.
    """
    g = ConvGeometry.parse(stride, padding, dilation, pad_value, groups)
    check_float_tensor(input, "input", 4)
    for name, vec in (("scale", scale), ("bias", bias)):
        if vec is not None and (not isinstance(vec, torch.Tensor) or vec.dim() != 1):
            raise ValueError(f"{name} must be a 1-D tensor with one value per output channel")
    if not isinstance(weight, _core.PackedWeights):
        check_float_tensor(weight, "weight", 4)
    if g.groups == 1:
        return _convolve(input, weight, g, scale, bias)
    if isinstance(weight, _core.PackedWeights):
        raise ValueError("grouped convolution takes float weights [O, C/groups, KH, KW], not PackedWeights")
    groups = g.groups
    c, o = input.shape[1], weight.shape[0]
    if c % groups or o % groups:
        raise ValueError(f"groups={groups} must divide in_channels={c} and out_channels={o}")
    if weight.shape[1] * groups != c:
        raise ValueError(
            f"channel mismatch: input has {c} channels, weight expects {weight.shape[1] * groups} with groups={groups}"
        )
    ci, co = c // groups, o // groups
    one = ConvGeometry(g.stride, g.padding, g.dilation, g.pad_value)
    outs = [
        _convolve(
            input[:, i * ci : (i + 1) * ci],
            weight[i * co : (i + 1) * co],
            one,
            None if scale is None else scale[i * co : (i + 1) * co],
            None if bias is None else bias[i * co : (i + 1) * co],
        )
        for i in range(groups)
    ]
    return torch.cat(outs, dim=1)


# ---- fixed weights, for inference --------------------------------------------------------


class InferenceConv:
    """A binary convolution with fixed packed weights, geometry and epilogue, for inference.

    Checks its arguments once; each call then only checks the input and runs the kernel, with no
    autograd bookkeeping. ``conv(x)`` equals ``binary_conv2d(x, weights, ..., scale=, bias=)``.
    The input may also be :class:`PackedActivations` made with this layer's padding (by
    ``pack_activations`` or by the previous layer's :meth:`sign_packed` or :meth:`dual`): then
    nothing is packed, and the output is channels-last.

    The epilogue can also do what would follow the conv as separate ops, with the same float
    operations (so the same bits), while the output is in cache: a residual sum
    (``conv(x, residual=r)`` is ``conv(x) + r``), then one activation: a PReLU (:meth:`with_prelu`),
    ReActNet's RPReLU (:meth:`with_rprelu`) or a clamp (:meth:`with_clamp`: ReLU, hardtanh, ReLU6);
    the output is then channels-last, and :meth:`write_into` can put it in channels of a wider
    tensor (a channel concat built in place). The packing of a float input can
    shift it first (:meth:`with_input_shift`: ReActNet's RSign before the conv), and the packed
    second output of :meth:`dual` can be of the output plus a shift (the next layer's RSign).
    """

    def __init__(
        self,
        weights: PackedWeights,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        pad_value: int = 0,
        *,
        scale: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> None:
        self._init(weights, ConvGeometry.parse(stride, padding, dilation, pad_value), scale, bias)

    @classmethod
    def with_geometry(
        cls,
        weights: PackedWeights,
        geometry: ConvGeometry,
        *,
        scale: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> InferenceConv:
        if geometry.groups != 1:
            raise ValueError("packed weights take groups=1 only")
        conv = cls.__new__(cls)
        conv._init(weights, geometry, scale, bias)
        return conv

    def with_prelu(self, slope: torch.Tensor) -> InferenceConv:
        """This layer followed by ``F.prelu(·, slope)`` (one slope, or one per output channel),
        computed in its epilogue."""
        o = self.weights.out_channels
        if not isinstance(slope, torch.Tensor) or slope.dim() != 1 or slope.shape[0] not in (1, o):
            raise ValueError(f"slope must be a 1-D tensor of 1 or {o} values")
        conv = copy.copy(self)
        conv._post = {"slope": slope.detach().to(torch.float32).expand(o).contiguous().numpy()}
        return conv

    def with_clamp(self, lo: float, hi: float) -> InferenceConv:
        """This layer followed by ``torch.clamp(·, lo, hi)``, computed in its epilogue: ``F.relu`` is
        ``(0, inf)``, ``F.hardtanh(·, lo, hi)`` and ``F.relu6`` are clamps too (bit for bit: NaN and -0.0
        pass through, and the bounds are rounded to float32 first, as torch does on float32 tensors)."""
        lo, hi = float(np.float32(lo)), float(np.float32(hi))
        if not lo <= hi:  # NaN included
            raise ValueError(f"clamp needs lo <= hi, got ({lo}, {hi})")
        conv = copy.copy(self)
        conv._post = {"clamp": (lo, hi)}
        return conv

    def with_rprelu(self, shift_in: torch.Tensor, slope: torch.Tensor, shift_out: torch.Tensor) -> InferenceConv:
        """This layer followed by ReActNet's RPReLU, ``F.prelu(y + shift_in, slope) + shift_out``
        (each one per output channel, broadcast over the image), computed in its epilogue."""
        o = self.weights.out_channels
        conv = copy.copy(self)
        conv._post = {
            "shift_in": channel_vector(shift_in, o, "shift_in"),
            "slope": channel_vector(slope, o, "slope"),
            "shift_out": channel_vector(shift_out, o, "shift_out"),
        }
        return conv

    def with_input_shift(self, shift: torch.Tensor) -> InferenceConv:
        """This layer on ``sign(x + shift)`` (one shift per input channel: ReActNet's RSign) instead
        of ``sign(x)``: the packing adds the shift, with the same float sum as ``x + shift``. A float
        input only (packed input is binarised already)."""
        conv = copy.copy(self)
        conv._input_shift = channel_vector(shift, self.weights.in_channels, "input shift")
        return conv

    @property
    def has_activation(self) -> bool:
        """Whether an activation (PReLU, RPReLU or clamp) runs in the epilogue."""
        return bool(self._post)

    @property
    def input_shift(self) -> torch.Tensor | None:
        return None if self._input_shift is None else torch.from_numpy(self._input_shift)

    def output_shape(self, x: torch.Tensor | PackedActivations) -> tuple[int, int, int, int]:
        """[N, O, OH, OW] of this layer's output for input ``x``."""
        n, _c, h, w = x.shape
        oh, ow = self.geometry.output_size(h, w, self.weights.kernel_size)
        return (n, self.weights.out_channels, oh, ow)

    def _epilogue(self, residual: torch.Tensor | None) -> tuple[CoreArgs, bool]:
        """The core's epilogue arguments for one call, and whether they need channels-last output."""
        if not self._post and residual is None:
            return self._extra, False
        extra = {**self._extra, **self._post}
        if residual is not None:
            extra["residual"] = nhwc_array(residual, "residual")
        return extra, True

    def _packed_input(self, x: torch.Tensor | PackedActivations) -> PackedActivations:
        if isinstance(x, _core.PackedActivations):
            if self._input_shift is not None:
                raise ValueError("this layer shifts its input before the sign: give it floats, not packed input")
            return self._checked_packed(x)
        return self._checked_packed(pack_activations(x, self.padding, self.input_shift))

    def _init(
        self, weights: PackedWeights, g: ConvGeometry, scale: torch.Tensor | None, bias: torch.Tensor | None
    ) -> None:
        if not isinstance(weights, _core.PackedWeights):
            raise TypeError(f"weights must be PackedWeights, got {type(weights).__name__}")
        for name, vec in (("scale", scale), ("bias", bias)):
            if vec is not None and (not isinstance(vec, torch.Tensor) or vec.shape != (weights.out_channels,)):
                raise ValueError(
                    f"{name} must be a 1-D tensor of {weights.out_channels} values (one per output channel)"
                )
        self.weights = weights
        self.geometry = g
        self.stride, self.padding, self.dilation, self.pad_value = g.stride, g.padding, g.dilation, g.pad_value
        self._extra = epilogue(scale, bias)
        # the activation in the epilogue: with_prelu, with_rprelu, with_clamp
        self._post: CoreArgs = {}
        self._input_shift: np.ndarray | None = None  # sign(x + shift) packed (with_input_shift)

    def __call__(self, x: torch.Tensor | PackedActivations, residual: torch.Tensor | None = None) -> torch.Tensor:
        extra, nhwc = self._epilogue(residual)
        if isinstance(x, _core.PackedActivations):
            x = self._packed_input(x)
            ensure_configured()
            out = _core.conv2d_packed(
                x,
                self.weights,
                self.stride,
                self.dilation,
                self.pad_value,
                channels_last_out=True,
                **extra,
            )
            return torch.from_numpy(out).permute(0, 3, 1, 2)
        if self._input_shift is not None:
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
                raise ValueError("a layer that shifts its input takes a float32 tensor")
            extra = {**extra, "input_shift": self._input_shift}
        return run_kernel(x, self.weights, self.geometry, extra, True if nhwc else None)

    def write_into(
        self,
        x: torch.Tensor | PackedActivations,
        out: torch.Tensor,
        channel_offset: int,
        residual: torch.Tensor | None = None,
        bits: PackedActivations | None = None,
        out_shift: torch.Tensor | None = None,
    ) -> None:
        """Writes ``self(x, residual)`` into channels ``[channel_offset, channel_offset + O)`` of
        ``out``, a float32 channels-last tensor [N, C, OH, OW] (the other channels untouched): the
        parts of ``torch.cat(..., dim=1)`` written in place, with no copy. With ``bits``
        (``PackedActivations.blank`` of the same [N, C, OH, OW]), also their packed signs (of
        ``y + out_shift`` with ``out_shift``) into the same channels of ``bits``, as :meth:`dual`
        would pack them: then ``channel_offset`` is a multiple of 16, and O too unless these are
        the last channels."""
        nhwc = nhwc_array(out, "out")
        if not out.is_contiguous(memory_format=torch.channels_last):  # else nhwc would be a view the core refuses
            raise ValueError("out must be a float32 channels-last tensor")
        n, o, oh, ow = self.output_shape(x)
        if (out.shape[0], out.shape[2], out.shape[3]) != (n, oh, ow):
            raise ValueError(f"out has shape {tuple(out.shape)}, the output is [{n}, {o}, {oh}, {ow}]")
        extra, _ = self._epilogue(residual)
        x = self._packed_input(x)
        ensure_configured()
        args = (x, self.weights, self.stride, self.dilation, self.pad_value)
        if bits is None:
            if out_shift is not None:
                raise ValueError("out_shift shifts the packed output: give bits too")
            _core.conv2d_packed(*args, channels_last_out=True, out=nhwc, out_channel_offset=channel_offset, **extra)
            return
        if out_shift is not None:
            extra = {**extra, "out_shift": channel_vector(out_shift, o, "out_shift")}
        _core.conv2d_packed_dual_into(*args, out=nhwc, bits=bits, out_channel_offset=channel_offset, **extra)

    def dual(
        self,
        x: torch.Tensor | PackedActivations,
        out_padding: IntPair = 0,
        residual: torch.Tensor | None = None,
        out_shift: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, PackedActivations]:
        """``(y, pack_activations(y, out_padding, out_shift))`` for ``y = self(x, residual)``, bit for
        bit, from one pass: for a layer read both by float ops and by a binary layer (which then
        packs nothing; with ``out_shift``, one per output channel, a binary layer behind an RSign).
        ``y`` is channels-last."""
        out_padding = pair(out_padding, "out_padding", 0)
        extra, _ = self._epilogue(residual)
        if out_shift is not None:
            extra = {**extra, "out_shift": channel_vector(out_shift, self.weights.out_channels, "out_shift")}
        x = self._packed_input(x)
        ensure_configured()
        out, bits = _core.conv2d_packed_dual(
            x,
            self.weights,
            self.stride,
            self.dilation,
            self.pad_value,
            out_padding=out_padding,
            **extra,
        )
        return torch.from_numpy(out).permute(0, 3, 1, 2), bits

    def sign_packed(self, x: torch.Tensor | PackedActivations, out_padding: IntPair = 0) -> PackedActivations:
        """``pack_activations(sign(self(x)), out_padding)`` bit for bit, computed without the float
        output: the epilogue writes the next binary layer's packed input directly."""
        if self._post:
            raise ValueError("sign_packed: a layer with an activation in its epilogue writes floats (use dual)")
        out_padding = pair(out_padding, "out_padding", 0)
        x = self._packed_input(x)
        ensure_configured()
        return _core.conv2d_packed_sign(
            x,
            self.weights,
            self.stride,
            self.dilation,
            self.pad_value,
            out_padding=out_padding,
            **self._extra,
        )

    def _checked_packed(self, x: PackedActivations) -> PackedActivations:
        _n, c, h, w = x.shape
        if c != self.weights.in_channels:
            raise ValueError(f"channel mismatch: input has {c} channels, weight expects {self.weights.in_channels}")
        if tuple(x.padding) != self.padding:
            raise ValueError(f"packed input has padding {tuple(x.padding)}, this layer needs {self.padding}")
        self.geometry.check_fits(h, w, self.weights.kernel_size)
        return x
