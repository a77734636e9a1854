"""Operations of the model graph and the executor that runs them.

Each op has a builder: given the node (attributes, inputs) and its loaded parameter tensors, it
checks them against each other and returns a function of the node's inputs. All weight work
(unpacking bits into :class:`PackedWeights`, reshaping scale vectors) happens here, once, at
load time; the functions only compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F

from service.kernel import InferenceConv, PackedWeights, sign, unpack_weights

from .manifest import GRAPH_INPUT, Node

Fn = Callable[..., torch.Tensor]


class GraphError(ValueError):
    """A node that cannot be built (bad attributes, or parameters that do not fit them)."""


@dataclass(frozen=True)
class BinaryLayer:
    """A binary convolution (or binary linear layer, as a 1x1 convolution) ready for the kernel."""

    name: str
    op: str
    weights: PackedWeights
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: int
    scale: torch.Tensor | None
    bias: torch.Tensor | None

    @property
    def float_size_bytes(self) -> int:
        w = self.weights
        return 4 * w.out_channels * w.in_channels * w.kernel_size[0] * w.kernel_size[1]


# ---- attribute and parameter checks ------------------------------------------------------


class _Ctx:
    """One node being built: typed access to its attributes and parameters."""

    def __init__(self, node: Node, tensors: dict[str, torch.Tensor]) -> None:
        self.node = node
        self.tensors = tensors
        self.used_attrs: set[str] = set()

    def fail(self, problem: str) -> GraphError:
        return GraphError(f"node {self.node.name!r} ({self.node.op}): {problem}")

    def attr(self, key: str, default: Any = ..., kind: type | tuple[type, ...] = int) -> Any:
        self.used_attrs.add(key)
        if key not in self.node.attrs:
            if default is ...:
                raise self.fail(f"missing attribute {key!r}")
            return default
        value = self.node.attrs[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise self.fail(f"attribute {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def count(self, key: str, default: Any = ..., minimum: int = 1) -> int:
        value = self.attr(key, default, int)
        if value < minimum:
            raise self.fail(f"attribute {key!r} must be >= {minimum}, got {value}")
        return value

    def pair(self, key: str, default: Any = ..., minimum: int = 0) -> tuple[int, int]:
        self.used_attrs.add(key)
        value = self.node.attrs.get(key, default)
        if value is ...:
            raise self.fail(f"missing attribute {key!r}")
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value)
        ):
            raise self.fail(f"attribute {key!r} must be an int or a pair of ints >= {minimum}, got {value!r}")
        return int(value[0]), int(value[1])

    def number(self, key: str, default: Any = ...) -> float:
        return float(self.attr(key, default, (int, float)))

    @overload
    def param(
        self, role: str, dtype: torch.dtype, shape: tuple[int, ...], optional: Literal[False] = False
    ) -> torch.Tensor: ...
    @overload
    def param(self, role: str, dtype: torch.dtype, shape: tuple[int, ...], optional: bool) -> torch.Tensor | None: ...

    def param(
        self, role: str, dtype: torch.dtype, shape: tuple[int, ...], optional: bool = False
    ) -> torch.Tensor | None:
        name = self.node.params.get(role)
        if name is None:
            if optional:
                return None
            raise self.fail(f"missing parameter {role!r}")
        t = self.tensors[name]
        if t.dtype != dtype:
            raise self.fail(f"parameter {role!r} (tensor {name!r}) must be {dtype}, got {t.dtype}")
        if tuple(t.shape) != tuple(shape):
            raise self.fail(f"parameter {role!r} (tensor {name!r}) must have shape {list(shape)}, got {list(t.shape)}")
        return t

    def finish(self, n_inputs: int, roles: set[str]) -> None:
        if len(self.node.inputs) != n_inputs:
            raise self.fail(f"takes {n_inputs} input(s), got {len(self.node.inputs)}")
        extra_attrs = set(self.node.attrs) - self.used_attrs
        if extra_attrs:
            raise self.fail(f"unknown attributes {sorted(extra_attrs)}")
        extra_params = set(self.node.params) - roles
        if extra_params:
            raise self.fail(f"unknown parameters {sorted(extra_params)}")


def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


# ---- builders ----------------------------------------------------------------------------
# Each returns (fn, binary_layer_or_None).


def _conv2d(c: _Ctx):
    cin, cout, groups = c.count("in_channels"), c.count("out_channels"), c.count("groups", 1)
    k = c.pair("kernel_size", minimum=1)
    stride, padding, dilation = c.pair("stride", 1, 1), c.pair("padding", 0), c.pair("dilation", 1, 1)
    if cin % groups or cout % groups:
        raise c.fail(f"groups={groups} must divide in_channels={cin} and out_channels={cout}")
    w = c.param("weight", torch.float32, (cout, cin // groups, *k))
    b = c.param("bias", torch.float32, (cout,), optional=True)
    c.finish(1, {"weight", "bias"})
    return (lambda x: _channels_last(F.conv2d(x, w, b, stride, padding, dilation, groups))), None


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    """The executor runs channels-last; torch's conv keeps the input's format except where it is
    ambiguous (C = 1), so make sure."""
    return y.contiguous(memory_format=torch.channels_last) if y.dim() == 4 else y


def _binary(
    c: _Ctx, cin: int, cout: int, k: tuple[int, int]
) -> tuple[PackedWeights, torch.Tensor | None, torch.Tensor | None]:
    words = math.ceil(cin / 64)
    bits = c.param("weight", torch.uint8, (cout, *k, words * 8))
    try:
        packed = unpack_weights(bits, cin)
    except Exception as e:  # noqa: BLE001 - the kernel's own validation, reworded
        raise c.fail(f"packed weights do not unpack: {e}") from None
    scale = c.param("scale", torch.float32, (cout,), optional=True)
    bias = c.param("bias", torch.float32, (cout,), optional=True)
    return packed, scale, bias


def _binary_conv2d(c: _Ctx):
    cin, cout = c.count("in_channels"), c.count("out_channels")
    k = c.pair("kernel_size", minimum=1)
    stride, padding, dilation = c.pair("stride", 1, 1), c.pair("padding", 0), c.pair("dilation", 1, 1)
    pad_value = c.attr("pad_value", 0)
    if pad_value not in (-1, 0, 1):
        raise c.fail(f"pad_value must be -1, 0 or 1, got {pad_value}")
    packed, scale, bias = _binary(c, cin, cout, k)
    c.finish(1, {"weight", "scale", "bias"})
    layer = BinaryLayer(c.node.name, c.node.op, packed, stride, padding, dilation, pad_value, scale, bias)
    return InferenceConv(packed, stride, padding, dilation, pad_value, scale=scale, bias=bias), layer


def _binary_linear(c: _Ctx):
    cin, cout = c.count("in_features"), c.count("out_features")
    packed, scale, bias = _binary(c, cin, cout, (1, 1))
    c.finish(1, {"weight", "scale", "bias"})
    layer = BinaryLayer(c.node.name, c.node.op, packed, (1, 1), (0, 0), (1, 1), 0, scale, bias)
    conv = InferenceConv(packed, scale=scale, bias=bias)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return conv(x.reshape(x.shape[0], cin, 1, 1)).reshape(x.shape[0], cout)

    return fn, layer


def _linear(c: _Ctx):
    cin, cout = c.count("in_features"), c.count("out_features")
    w = c.param("weight", torch.float32, (cout, cin))
    b = c.param("bias", torch.float32, (cout,), optional=True)
    c.finish(1, {"weight", "bias"})
    return (lambda x: F.linear(x, w, b)), None


def _batch_norm(c: _Ctx):
    """Inference BatchNorm, stored folded: y = x * scale + shift per channel (dim 1)."""
    n = c.count("num_features")
    scale = c.param("scale", torch.float32, (n,))
    shift = c.param("shift", torch.float32, (n,))
    c.finish(1, {"scale", "shift"})
    return (lambda x: torch.addcmul(_channel_view(shift, x), x, _channel_view(scale, x))), None


def _sign(c: _Ctx):
    c.finish(1, set())
    return sign, None


def _relu(c: _Ctx):
    c.finish(1, set())
    return F.relu, None


def _hardtanh(c: _Ctx):
    lo, hi = c.number("min_val", -1.0), c.number("max_val", 1.0)
    if not lo < hi:
        raise c.fail(f"min_val {lo} must be < max_val {hi}")
    c.finish(1, set())
    return (lambda x: F.hardtanh(x, lo, hi)), None


def _prelu(c: _Ctx):
    n = c.count("num_parameters", 1)
    w = c.param("weight", torch.float32, (n,))
    c.finish(1, {"weight"})
    return (lambda x: F.prelu(x, w)), None


def _max_pool2d(c: _Ctx):
    k = c.pair("kernel_size", minimum=1)
    stride, padding, dilation = c.pair("stride", k, 1), c.pair("padding", 0), c.pair("dilation", 1, 1)
    ceil_mode = c.attr("ceil_mode", False, bool)
    c.finish(1, set())
    return (lambda x: F.max_pool2d(x, k, stride, padding, dilation, ceil_mode)), None


def _avg_pool2d(c: _Ctx):
    k = c.pair("kernel_size", minimum=1)
    stride, padding = c.pair("stride", k, 1), c.pair("padding", 0)
    ceil_mode = c.attr("ceil_mode", False, bool)
    include_pad = c.attr("count_include_pad", True, bool)
    c.finish(1, set())
    return (lambda x: F.avg_pool2d(x, k, stride, padding, ceil_mode, include_pad)), None


def _adaptive_avg_pool2d(c: _Ctx):
    size = c.pair("output_size", (1, 1), minimum=1)
    c.finish(1, set())
    if size == (1, 1):  # global average pooling
        return (lambda x: x.mean(dim=(2, 3), keepdim=True)), None
    return (lambda x: F.adaptive_avg_pool2d(x, size)), None


def _flatten(c: _Ctx):
    start, end = c.attr("start_dim", 1), c.attr("end_dim", -1)
    c.finish(1, set())
    return (lambda x: torch.flatten(x, start, end)), None


def _add(c: _Ctx):
    c.finish(2, set())
    return torch.add, None


OPS: dict[str, Callable[[_Ctx], tuple[Fn, BinaryLayer | None]]] = {
    "conv2d": _conv2d,
    "binary_conv2d": _binary_conv2d,
    "linear": _linear,
    "binary_linear": _binary_linear,
    "batch_norm": _batch_norm,
    "sign": _sign,
    "relu": _relu,
    "hardtanh": _hardtanh,
    "prelu": _prelu,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "flatten": _flatten,
    "add": _add,
}


# ---- the executor ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    name: str
    fn: Fn
    inputs: tuple[str, ...]
    release: tuple[str, ...]  # values no later step needs


def _identity(x: Any) -> Any:
    return x


def _fuse_packed_outputs(nodes: list[Node], output: str, fns: dict[str, Fn]) -> tuple[str, ...]:
    """Lets each binary conv whose readers are only binary convs (directly or through ``sign``
    nodes) write their packed input itself: its step becomes ``sign_packed`` with the readers'
    padding, and those ``sign`` nodes pass the bits through. A binary conv binarises its input
    anyway, so the results are bit for bit the same; the float output is never written, read or
    packed. Returns the names of the fused convs."""
    readers: dict[str, list[Node]] = {}
    for node in nodes:
        for ref in node.inputs:
            readers.setdefault(ref, []).append(node)

    def packed_readers(name: str, signs: list[str]) -> set[tuple[int, int]] | None:
        """Paddings of the binary convs reading ``name`` through sign nodes only (None: a reader
        needs floats); the sign nodes passed are appended to ``signs``."""
        if name == output or name not in readers:
            return None
        paddings: set[tuple[int, int]] = set()
        for r in readers[name]:
            if r.op == "binary_conv2d":
                paddings.add(fns[r.name].padding)  # type: ignore[attr-defined]  # a binary conv node is an InferenceConv
            elif r.op == "sign":
                sub = packed_readers(r.name, signs)
                if sub is None:
                    return None
                paddings |= sub
                signs.append(r.name)
            else:
                return None
        return paddings

    fused = []
    for node in nodes:
        if node.op != "binary_conv2d":
            continue
        signs: list[str] = []
        paddings = packed_readers(node.name, signs)
        if paddings is None or len(paddings) != 1:
            continue
        conv, (out_padding,) = fns[node.name], paddings
        fns[node.name] = lambda x, conv=conv, out_padding=out_padding: conv.sign_packed(x, out_padding)
        for name in signs:
            fns[name] = _identity
        fused.append(node.name)
    return tuple(fused)


class Executor:
    """Runs the nodes in order, dropping each intermediate value after its last use.

    Holds no per-call state, so one executor serves any number of threads at once. A binary conv
    that only feeds binary convs hands them packed bits (``packed_outputs``), not floats.
    """

    def __init__(
        self, nodes: list[Node], output: str, tensors: dict[str, torch.Tensor], *, fuse_packed: bool = True
    ) -> None:
        self.binary_layers: dict[str, BinaryLayer] = {}
        fns: dict[str, Fn] = {}
        for node in nodes:
            builder = OPS.get(node.op)
            if builder is None:
                raise GraphError(f"node {node.name!r}: unknown op {node.op!r} (known: {sorted(OPS)})")
            fn, layer = builder(_Ctx(node, tensors))
            if layer is not None:
                self.binary_layers[node.name] = layer
            fns[node.name] = fn
        self.packed_outputs = _fuse_packed_outputs(nodes, output, fns) if fuse_packed else ()
        built = [(node.name, fns[node.name], tuple(node.inputs)) for node in nodes]
        last_use: dict[str, int] = {}
        for i, (_, _, inputs) in enumerate(built):
            for ref in inputs:
                last_use[ref] = i
        self.steps = [
            _Step(name, fn, inputs, tuple(r for r in set(inputs) if last_use[r] == i and r != output))
            for i, (name, fn, inputs) in enumerate(built)
        ]
        self.output = output

    def run(self, x: torch.Tensor, record_shapes: dict[str, list[int]] | None = None) -> torch.Tensor:
        # Run the whole graph NHWC: torch's float ops keep channels_last, and the binary kernel
        # then packs channels-last input and writes channels-last output with no transposes.
        if x.dim() == 4:
            # Explicit NHWC strides: for C = 1, .contiguous(memory_format=channels_last) keeps the
            # NCHW strides (both layouts match), and torch's conv would then answer NCHW.
            x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        values = {GRAPH_INPUT: x}
        for step in self.steps:
            try:
                out = step.fn(*(values[r] for r in step.inputs))
            except (RuntimeError, ValueError) as e:
                raise GraphError(f"node {step.name!r} failed: {e}") from e
            values[step.name] = out
            if record_shapes is not None:
                record_shapes[step.name] = list(out.shape)
            for r in step.release:
                del values[r]
        return values[self.output]
