"""PyTorch face of the compiled binary convolution: the only module that touches ``service._core``.

Semantics, for activations and weights alike: ``sign(x) = +1`` where ``x >= 0`` and ``-1``
otherwise (so ``sign(0) = +1`` and ``sign(nan) = -1``). The result is the exact integer
correlation of the ±1 values as float32 NCHW; with ``pad_value=0`` it equals
``F.conv2d(sign(x), sign(w), stride=…, padding=…, dilation=…)`` bit for bit. ``pad_value=1``
(free) and ``pad_value=-1`` (bitorch-engine's CPU behaviour) pad with that value instead.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.grad
from torch import nn

from service import _core

IntPair = int | tuple[int, int]
PackedWeights = _core.PackedWeights
# Bit-packed activations (channels-last words of 64 channels, with a +1 border): what a binary
# layer writes with InferenceConv.sign_packed and what the next binary layer reads without packing.
PackedActivations = _core.PackedActivations
PAD_VALUES = (-1, 0, 1)

__all__ = [
    "BinaryConv2d",
    "BinaryConv2dForward",
    "CancelToken",
    "Cancelled",
    "InferenceConv",
    "PackedActivations",
    "PackedWeights",
    "active_isa",
    "available_isas",
    "binary_conv2d",
    "cancellable",
    "conv_output_size",
    "get_num_threads",
    "pack_activations",
    "pack_weights",
    "packed_bits",
    "set_isa",
    "set_num_threads",
    "sign",
    "unpack_weights",
    "use_isa",
]


# ---- runtime settings --------------------------------------------------------------------


def available_isas() -> list[str]:
    """Instruction-set paths this CPU and build support, best first (e.g. avx512, avx2, portable)."""
    return list(_core.available_isas())


def active_isa() -> str:
    """The path in use: the best supported one, or the one forced by ``BNN_ISA`` / :func:`set_isa`."""
    return _core.active_isa()


def set_isa(name: str) -> None:
    if name not in ("avx512", "avx2", "portable"):
        raise ValueError(f"unknown instruction set {name!r}: expected 'avx512', 'avx2' or 'portable'")
    if name not in available_isas():
        raise ValueError(f"instruction set {name!r} is not supported here; available: {available_isas()}")
    _core.set_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Temporarily force one path (the tests run every supported path through this)."""
    previous = active_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def set_num_threads(n: int) -> None:
    """Threads the kernel uses (the caller's thread included); respected exactly."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads must be an integer >= 1, got {n!r}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    return _core.get_num_threads()


def _default_threads() -> int:
    env = os.environ.get("BNN_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"BNN_NUM_THREADS must be an integer >= 1, got {env!r}") from None
        if n < 1:
            raise ValueError(f"BNN_NUM_THREADS must be an integer >= 1, got {env!r}")
        return n
    # The kernel runs while torch's pool is idle, so sharing its size never oversubscribes.
    return max(1, torch.get_num_threads())


# Cancellation: a token bound to a thread stops that thread's packing and convolutions within one
# work item (a row of output) of ``token.cancel()`` (from any thread) or of its ``timeout_s``
# passing; the call then raises Cancelled and returns no partial output. A call waiting for the
# kernel behind another thread's call gives up too.
CancelToken = _core.CancelToken
Cancelled = _core.Cancelled  # a RuntimeError


@contextlib.contextmanager
def cancellable(token: CancelToken | None) -> Iterator[CancelToken | None]:
    """Bind ``token`` to the kernel calls this thread makes inside the block (None: no token),
    then restore the previous one. Enter it in the thread that runs the calls (e.g. inside the
    function given to an executor): the binding is per thread.

    ::

        token = kernel.CancelToken(timeout_s=0.5)
        with kernel.cancellable(token):
            kernel.binary_conv2d(x, w, padding=1)  # Cancelled once token.cancel() or 0.5 s
    """
    previous = _core.set_cancel_token(token)
    try:
        yield token
    finally:
        _core.set_cancel_token(previous)


set_num_threads(_default_threads())
# Detect (or take BNN_ISA's forced choice) once, at import: a bad BNN_ISA fails here, loudly.
_core.active_isa()


# ---- argument checking -------------------------------------------------------------------


def _pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pad_value(value: float) -> int:
    if isinstance(value, bool) or value not in PAD_VALUES:
        raise ValueError(f"pad_value must be -1, 0 or 1, got {value!r}")
    return int(value)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length along one axis: floor((size + 2p - d(k-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_float_tensor(t: torch.Tensor, name: str, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got device {t.device}")


def sign(t: torch.Tensor) -> torch.Tensor:
    """The binarisation every path uses: +1 where t >= 0, else -1 (NaN -> -1)."""
    return torch.where(t >= 0, 1.0, -1.0).to(torch.float32)


def _suggests_channels_last(x: torch.Tensor) -> bool:
    """torch's ``suggest_memory_format(x) == channels_last`` for a 4-D tensor (the rule its conv2d
    uses for the output layout): the strides order the dims C, W, H, N from fastest to slowest."""
    sizes, strides = x.shape, x.stride()
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0:
            return False
        if strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def _as_kernel_input(x: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A float32 buffer the core reads without copying where possible; True if channels-last."""
    x = x.detach()
    if x.dtype != torch.float32:
        # Binarise before narrowing: a tiny negative float64 must not round to -0.0 (= +1).
        x = sign(x)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).numpy(), True
    return x.contiguous().numpy(), False


# ---- weights -----------------------------------------------------------------------------


def pack_weights(weight: torch.Tensor) -> PackedWeights:
    """Binarise and bit-pack float weights [O, C, KH, KW] once, for reuse across calls."""
    _check_float_tensor(weight, "weight", 4)
    if weight.numel() == 0:
        raise ValueError(f"weight must not be empty, got shape {tuple(weight.shape)}")
    w = weight.detach()
    if w.dtype != torch.float32:
        w = sign(w)
    return _core.PackedWeights.from_float(w.contiguous().numpy())


def packed_bits(weights: PackedWeights) -> torch.Tensor:
    """Canonical packing as uint8 [O, KH, KW, words * 8] (little-endian words): what the model store saves."""
    return torch.from_numpy(weights.bits().view(np.uint8).copy())


def unpack_weights(bits: torch.Tensor, in_channels: int) -> PackedWeights:
    """Inverse of :func:`packed_bits`; validates the shape and that no bit lies beyond in_channels."""
    if not isinstance(bits, torch.Tensor) or bits.dtype != torch.uint8 or bits.dim() != 4:
        raise ValueError("packed weight bits must be a 4-D uint8 tensor [O, KH, KW, words * 8]")
    if bits.shape[3] % 8 != 0:
        raise ValueError(f"packed weight bits: last dimension {bits.shape[3]} is not a multiple of 8")
    words = np.ascontiguousarray(bits.numpy()).view("<u8")
    return _core.PackedWeights.from_bits(words, int(in_channels))


def _signed_weights(weights: PackedWeights) -> torch.Tensor:
    """±1 float weights [O, C, KH, KW] from packed ones (for gradients and references)."""
    o, c, (kh, kw) = weights.out_channels, weights.in_channels, weights.kernel_size
    bits = np.unpackbits(weights.bits().view(np.uint8), axis=-1, bitorder="little")[..., :c]
    return torch.from_numpy(1.0 - 2.0 * bits.astype(np.float32)).reshape(o, kh, kw, c).permute(0, 3, 1, 2).contiguous()


# ---- the convolution ---------------------------------------------------------------------


def _epilogue(scale: torch.Tensor | None, bias: torch.Tensor | None) -> dict[str, np.ndarray]:
    """scale/bias in the form the core takes (float32 numpy vectors)."""
    extra = {}
    if scale is not None:
        extra["scale"] = scale.detach().to(torch.float32).contiguous().numpy()
    if bias is not None:
        extra["bias"] = bias.detach().to(torch.float32).contiguous().numpy()
    return extra


def _output_size(
    h: int, w: int, weights: PackedWeights, stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]
) -> None:
    kh, kw = weights.kernel_size
    oh = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"output size would be {oh}x{ow}: kernel {kh}x{kw} with dilation {dilation} does not fit "
            f"input {h}x{w} with padding {padding}"
        )


def _run_kernel(
    x: torch.Tensor,
    weights: PackedWeights,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
    extra: dict[str, np.ndarray],
) -> torch.Tensor:
    _check_float_tensor(x, "input", 4)
    if x.shape[1] != weights.in_channels:
        raise ValueError(f"channel mismatch: input has {x.shape[1]} channels, weight expects {weights.in_channels}")
    if x.numel() == 0:
        raise ValueError(f"input must not be empty, got shape {tuple(x.shape)}")
    _output_size(x.shape[2], x.shape[3], weights, stride, padding, dilation)
    channels_last_out = _suggests_channels_last(x)
    arr, channels_last = _as_kernel_input(x)
    out = _core.conv2d(
        arr, channels_last, weights, stride, padding, dilation, pad_value, channels_last_out=channels_last_out, **extra
    )
    if channels_last_out:  # [N, OH, OW, O] -> logical NCHW with torch.channels_last strides
        return torch.from_numpy(out).permute(0, 3, 1, 2)
    return torch.from_numpy(out)


class InferenceConv:
    """A binary convolution with fixed packed weights, geometry and epilogue, for inference.

    Checks its arguments once; each call then only checks the input and runs the kernel, with no
    autograd bookkeeping. ``conv(x)`` equals ``binary_conv2d(x, weights, ..., scale=, bias=)``.
    The input may also be :class:`PackedActivations` made with this layer's padding (by
    ``pack_activations`` or by the previous layer's :meth:`sign_packed`): then nothing is packed,
    and the output is channels-last.
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
        if not isinstance(weights, _core.PackedWeights):
            raise TypeError(f"weights must be PackedWeights, got {type(weights).__name__}")
        for name, vec in (("scale", scale), ("bias", bias)):
            if vec is not None and (not isinstance(vec, torch.Tensor) or vec.shape != (weights.out_channels,)):
                raise ValueError(
                    f"{name} must be a 1-D tensor of {weights.out_channels} values (one per output channel)"
                )
        self.weights = weights
        self.stride, self.padding, self.dilation = (
            _pair(stride, "stride", 1),
            _pair(padding, "padding", 0),
            _pair(dilation, "dilation", 1),
        )
        self.pad_value = _pad_value(pad_value)
        self._extra = _epilogue(scale, bias)

    def __call__(self, x: torch.Tensor | PackedActivations) -> torch.Tensor:
        if isinstance(x, _core.PackedActivations):
            out = _core.conv2d_packed(
                self._checked_packed(x),
                self.weights,
                self.stride,
                self.dilation,
                self.pad_value,
                channels_last_out=True,
                **self._extra,
            )
            return torch.from_numpy(out).permute(0, 3, 1, 2)
        return _run_kernel(x, self.weights, self.stride, self.padding, self.dilation, self.pad_value, self._extra)

    def sign_packed(self, x: torch.Tensor | PackedActivations, out_padding: IntPair = 0) -> PackedActivations:
        """``pack_activations(sign(self(x)), out_padding)`` bit for bit, computed without the float
        output: the epilogue writes the next binary layer's packed input directly."""
        out_padding = _pair(out_padding, "out_padding", 0)
        if not isinstance(x, _core.PackedActivations):
            x = pack_activations(x, self.padding)
        return _core.conv2d_packed_sign(
            self._checked_packed(x),
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
        _output_size(h, w, self.weights, self.stride, self.padding, self.dilation)
        return x


def pack_activations(x: torch.Tensor, padding: IntPair = 0) -> PackedActivations:
    """Binarise and bit-pack a float tensor [N, C, H, W] (NCHW or channels-last) with a +1 border of
    ``padding``: the input a binary layer with that padding reads."""
    _check_float_tensor(x, "input", 4)
    if x.numel() == 0:
        raise ValueError(f"input must not be empty, got shape {tuple(x.shape)}")
    padding = _pair(padding, "padding", 0)
    arr, channels_last = _as_kernel_input(x)
    return _core.pack_activations(arr, channels_last, padding)


def _backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Straight-through estimator: d/dx through sign(w), zeroed where |x| > 1; d/dw from sign(x)."""
    x, w = ctx.saved_tensors
    stride, padding, dilation, pad_value = ctx.geometry
    grad_x = grad_w = None
    sw = sign(w) if ctx.weight_is_float else ctx.signed_weights
    if ctx.needs_input_grad[0]:
        grad_x = torch.nn.grad.conv2d_input(x.shape, sw, grad_out, stride, padding, dilation)
        grad_x = (grad_x * (x.abs() <= 1)).to(x.dtype)
    if ctx.weight_is_float and ctx.needs_input_grad[1]:
        sx = sign(x)
        if pad_value != 0:
            sx = F.pad(sx, (padding[1], padding[1], padding[0], padding[0]), value=float(pad_value))
            grad_w = torch.nn.grad.conv2d_weight(sx, w.shape, grad_out, stride, 0, dilation)
        else:
            grad_w = torch.nn.grad.conv2d_weight(sx, w.shape, grad_out, stride, padding, dilation)
        grad_w = grad_w.to(w.dtype)
    return grad_x, grad_w


def _prepare_weights(ctx, weights: torch.Tensor | PackedWeights) -> PackedWeights:
    if isinstance(weights, _core.PackedWeights):
        ctx.weight_is_float = False
        ctx.signed_weights = _signed_weights(weights) if ctx.needs_input_grad[0] else None
        return weights
    ctx.weight_is_float = True
    return pack_weights(weights)


def _save(ctx, x: torch.Tensor, weights, geometry) -> None:
    ctx.geometry = geometry
    ctx.save_for_backward(x, weights if ctx.weight_is_float else torch.empty(0))


class BinaryConv2dForward(torch.autograd.Function):
    """Binary 2-D convolution with bitorch-engine's signature, plus a straight-through backward.

    ``forward(ctx, activations, weights, m, n, k, kernel_size, stride, padding, dilation, output_edge)``
    where m = output channels, n = output pixels per image, k = input channels × kernel area and
    output_edge = output height. ``weights`` is a float tensor [O, C, KH, KW] (binarised on the fly)
    or :class:`PackedWeights`. Padding is zero padding, as the reference documents.
    """

    @staticmethod
    def forward(ctx, activations, weights, m, n, k, kernel_size, stride, padding, dilation, output_edge):
        ksize = _pair(kernel_size, "kernel_size", 1)
        geometry = (_pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1), 0)
        packed = _prepare_weights(ctx, weights)
        _check_float_tensor(activations, "activations", 4)
        if packed.kernel_size != ksize:
            raise ValueError(f"kernel_size={kernel_size!r} disagrees with the weights' kernel {packed.kernel_size}")
        out = _run_kernel(activations, packed, *geometry, {})
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
        _save(ctx, activations, weights, geometry)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w = _backward(ctx, grad_out)
        return (grad_x, grad_w) + (None,) * 8


class _BinaryConv2dFunction(torch.autograd.Function):
    """The general form behind :func:`binary_conv2d`: pairs, pad_value, fused scale/bias."""

    @staticmethod
    def forward(ctx, x, weights, stride, padding, dilation, pad_value, scale, bias):
        packed = _prepare_weights(ctx, weights)
        geometry = (stride, padding, dilation, pad_value)
        out = _run_kernel(x, packed, stride, padding, dilation, pad_value, _epilogue(scale, bias))
        _save(ctx, x, weights, geometry)
        if scale is not None or bias is not None:
            ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w = _backward(ctx, grad_out)
        return grad_x, grad_w, None, None, None, None, None, None


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
    stride_ = _pair(stride, "stride", 1)
    padding_ = _pair(padding, "padding", 0)
    dilation_ = _pair(dilation, "dilation", 1)
    pad = _pad_value(pad_value)
    _check_float_tensor(input, "input", 4)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1, got {groups!r}")
    for name, vec in (("scale", scale), ("bias", bias)):
        if vec is not None and (not isinstance(vec, torch.Tensor) or vec.dim() != 1):
            raise ValueError(f"{name} must be a 1-D tensor with one value per output channel")
    if groups == 1:
        if not isinstance(weight, _core.PackedWeights):
            _check_float_tensor(weight, "weight", 4)
        return _BinaryConv2dFunction.apply(input, weight, stride_, padding_, dilation_, pad, scale, bias)
    if isinstance(weight, _core.PackedWeights):
        raise ValueError("grouped convolution takes float weights [O, C/groups, KH, KW], not PackedWeights")
    _check_float_tensor(weight, "weight", 4)
    c, o = input.shape[1], weight.shape[0]
    if c % groups or o % groups:
        raise ValueError(f"groups={groups} must divide in_channels={c} and out_channels={o}")
    if weight.shape[1] * groups != c:
        raise ValueError(
            f"channel mismatch: input has {c} channels, weight expects {weight.shape[1] * groups} with groups={groups}"
        )
    ci, co = c // groups, o // groups
    outs = [
        _BinaryConv2dFunction.apply(
            input[:, g * ci : (g + 1) * ci],
            weight[g * co : (g + 1) * co],
            stride_,
            padding_,
            dilation_,
            pad,
            None if scale is None else scale[g * co : (g + 1) * co],
            None if bias is None else bias[g * co : (g + 1) * co],
        )
        for g in range(groups)
    ]
    return torch.cat(outs, dim=1)


# ---- the layer ---------------------------------------------------------------------------


class BinaryConv2d(nn.Module):
    """Drop-in for ``nn.Conv2d`` with binary weights and activations.

    Keeps float latent weights for training (gradients by the straight-through estimator) and
    packs them once when used in eval mode. ``scale=True`` multiplies each output channel by
    α = mean|W| (XNOR-Net); ``bias=True`` adds a learnt bias. Both are fused into the kernel at
    inference.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = False,
        scale: bool = False,
        pad_value: int = 0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dilation = _pair(dilation, "dilation", 1)
        self.pad_value = _pad_value(pad_value)
        self.use_scale = scale
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self._packed: PackedWeights | None = None
        self._packed_version: tuple[int, int] | None = None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, scale={self.use_scale}, pad_value={self.pad_value}"
        )

    def channel_scale(self) -> torch.Tensor | None:
        """α = mean |W| over each output channel's weights, or None without scaling."""
        if not self.use_scale:
            return None
        return self.weight.abs().mean(dim=(1, 2, 3))

    def packed_weights(self) -> PackedWeights:
        """The bit-packed weights, packed once and repacked only if the weights change."""
        if self.groups != 1:
            raise ValueError("packed weights are available for groups=1 only")
        if self.weight.is_inference():
            # A layer built under torch.inference_mode(): its tensors have no version counter, so an
            # in-place change could not be seen; pack on every call (correct, and cheap next to the conv).
            return pack_weights(self.weight)
        version = (self.weight._version, self.weight.data_ptr())
        if self._packed is None or self._packed_version != version:
            self._packed = pack_weights(self.weight)
            self._packed_version = version
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        geometry: dict[str, Any] = dict(
            stride=self.stride, padding=self.padding, dilation=self.dilation, pad_value=self.pad_value
        )
        grad_needed = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if self.training or grad_needed:
            out = binary_conv2d(x, self.weight, groups=self.groups, **geometry)
            alpha = self.channel_scale()
            if alpha is not None:
                out = out * alpha.view(1, -1, 1, 1)
            if self.bias is not None:
                out = out + self.bias.view(1, -1, 1, 1)
            return out
        with torch.no_grad():
            weight = self.packed_weights() if self.groups == 1 else self.weight
            return binary_conv2d(
                x,
                weight,
                groups=self.groups,
                scale=self.channel_scale(),
                bias=None if self.bias is None else self.bias.detach(),
                **geometry,
            )
