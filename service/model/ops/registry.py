"""The op registry: one :class:`OpSpec` per operation of the model format.

An op's spec is everything the rest of the code knows about it: its attributes (a pydantic
model, checked when ``model.json`` is read), its parameters (role, dtype, shape as a function of
the attributes), how many inputs it takes, how to build the function that runs it, which modules
and traced calls the exporter turns into it, and whether it is a binary layer. ``graph``,
``manifest``, ``store`` and ``service.export`` ask the registry; none of them names an op.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Generic, Self, TypeVar

import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_serializer,
)
from torch import fx, nn

from service.kernel import ConvGeometry, PackedWeights
from service.kernel.geometry import pair, parse_pad_value

Fn = Callable[..., torch.Tensor]


class GraphError(ValueError):
    """A node that cannot be built (bad attributes, or parameters that do not fit them)."""


class ExportError(ValueError):
    """The model uses something the format cannot express."""


# ---- attributes --------------------------------------------------------------------------


class Attrs(BaseModel):
    """An op's attributes: strict types (no bool for an int, no str for a number), no unknown keys.

    Dumps only the fields that were given, so a manifest reads back and writes out unchanged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @classmethod
    def parse(cls, **values: Any) -> Self:
        """Validated attributes from loose values (ints for pairs, torch's tuples), as the
        exporter's matchers take them from modules."""
        return cls.model_validate(values)

    @model_serializer(mode="wrap")
    def _as_given(self, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class NoAttrs(Attrs):
    """For ops without attributes."""


def _int_pair(minimum: int) -> BeforeValidator:
    def parse(value: Any, info: ValidationInfo) -> tuple[int, int]:
        try:
            return pair(value, info.field_name or "value", minimum)
        except TypeError as e:  # pydantic reports ValueError only
            raise ValueError(str(e)) from None

    return BeforeValidator(parse)


# Attribute types. A pair is written as an int or [h, w] and held as a tuple (parsed by
# service.kernel.geometry.pair, the one parser of int-or-pair).
Count = Annotated[int, Field(ge=1)]
PositivePair = Annotated[tuple[int, int], _int_pair(1)]  # kernel_size, stride, dilation, output_size
# A pair whose default (None, never written) another attribute decides, e.g. a pool's stride.
PositivePairOrUnset = Annotated[tuple[int, int] | None, _int_pair(1)]
NonNegativePair = Annotated[tuple[int, int], _int_pair(0)]  # padding
PadValue = Annotated[int, AfterValidator(parse_pad_value)]


def attrs_problem(e: ValidationError) -> str:
    """A readable account of what is wrong with a node's attributes."""
    problems: list[str] = []
    unknown = [str(err["loc"][0]) for err in e.errors() if err["type"] == "extra_forbidden" and err["loc"]]
    if unknown:
        problems.append(f"unknown attributes {sorted(unknown)}")
    for err in e.errors():
        if err["type"] == "extra_forbidden":
            continue
        key = str(err["loc"][0]) if err["loc"] else None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            problems.append(f"missing attribute {key!r}")
        elif key is None:
            problems.append(msg)
        elif msg.startswith(key):
            problems.append(f"attribute {msg}")
        else:
            problems.append(f"attribute {key!r}: {msg}, got {err['input']!r}")
    return "; ".join(problems)


# ---- parameters --------------------------------------------------------------------------

A = TypeVar("A", bound=Attrs)


@dataclass(frozen=True)
class Param(Generic[A]):
    """A parameter role: its dtype and its shape given the node's attributes. ``bits``: the
    tensor holds bit-packed binary weights (packed by the exporter, unpacked by the builder)."""

    role: str
    dtype: torch.dtype
    shape: Callable[[A], tuple[int, ...]]
    optional: bool = False
    bits: bool = False


# ---- building ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryLayer:
    """A binary convolution (or binary linear layer, as a 1x1 convolution) ready for the kernel."""

    name: str
    op: str
    weights: PackedWeights
    geometry: ConvGeometry
    scale: torch.Tensor | None
    bias: torch.Tensor | None

    @property
    def float_size_bytes(self) -> int:
        w = self.weights
        return 4 * w.out_channels * w.in_channels * w.kernel_size[0] * w.kernel_size[1]


@dataclass(frozen=True)
class Build(Generic[A]):
    """One node being built: its name, typed attributes and parameter tensors (checked against
    the spec's :class:`Param` rules; an absent optional one is missing from ``params``)."""

    name: str
    op: str
    attrs: A
    params: dict[str, torch.Tensor]

    def fail(self, problem: str) -> GraphError:
        return GraphError(f"node {self.name!r} ({self.op}): {problem}")


@dataclass(frozen=True)
class Epilogue:
    """What a binary conv's epilogue can do in place of this op when the op reads the conv's
    output (``graph`` chooses the fusion): ``"residual"``, the sum of the conv and another
    tensor; ``"concat"``, a channel concatenation (each conv writes its channels of the result);
    the activations ``"prelu"``, PReLU with ``slope`` (1 value, or 1 per channel), ``"rprelu"``,
    ``prelu(x + shift_in, slope) + shift_out`` (each 1 per channel), and ``"clamp"``,
    ``torch.clamp(x, lo, hi)`` (ReLU, hardtanh)."""

    kind: str
    slope: torch.Tensor | None = None
    shift_in: torch.Tensor | None = None
    shift_out: torch.Tensor | None = None
    lo: float | None = None
    hi: float | None = None

    @property
    def is_activation(self) -> bool:
        return self.kind in ("prelu", "rprelu", "clamp")

    def channels(self, start: int, stop: int, total: int) -> Epilogue | None:
        """This activation on channels ``[start, stop)`` of a ``total``-channel tensor (its
        per-channel parameters cut to them), or None where its parameters do not have one value
        per channel of ``total`` (a single PReLU slope is kept whole)."""
        cut: dict[str, torch.Tensor | None] = {}
        for name in ("slope", "shift_in", "shift_out"):
            v = getattr(self, name)
            if v is None or (name == "slope" and self.kind == "prelu" and v.shape == (1,)):
                cut[name] = v
            elif v.shape == (total,):
                cut[name] = v[start:stop]
            else:
                return None
        return replace(self, slope=cut["slope"], shift_in=cut["shift_in"], shift_out=cut["shift_out"])


@dataclass(frozen=True)
class Built:
    """What a builder returns: the function of the node's inputs, for a binary op its layer, for
    an op a binary conv's epilogue can absorb, how, for an op that is ``sign(x + sign_shift)``
    per channel (RSign), the shift: the packing of a binary conv that reads it (or the epilogue
    that writes that packed input) computes it instead; and for an op that can take a ReLU'd input
    in the same pass, that function (``after_relu``)."""

    fn: Fn
    layer: BinaryLayer | None = None
    epilogue: Epilogue | None = None
    sign_shift: torch.Tensor | None = None
    # the same op applied to relu(x) in one pass, bit for bit F.relu then fn: where the op's input
    # is a relu that only it reads, graph runs this instead of the two (the stem's relu -> max pool)
    after_relu: Fn | None = None


# ---- exporting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """What a matcher returns: the node's attributes and its float parameters (unpacked)."""

    attrs: Attrs
    params: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """A traced function or method call, for the matchers: for a method, ``args[0]`` is the
    tensor it is called on, so positions match the function form (``x.flatten(1)``)."""

    node: fx.Node
    inputs: int  # how many tensor arguments

    def arg(self, index: int, key: str, default: Any = None) -> Any:
        if len(self.node.args) > index:
            return self.node.args[index]
        return self.node.kwargs.get(key, default)


def as_float(t: torch.Tensor) -> torch.Tensor:
    """A detached float32 copy, as the exporter stores parameters."""
    return t.detach().to(torch.float32).clone()


ModuleMatcher = Callable[[Any], Exported]
CallMatcher = Callable[[Call], Exported]
# How a per-channel affine y = x * scale + shift (a folded BatchNorm) is merged into a layer's
# parameters; False when it cannot be.
AbsorbAffine = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], bool]


@dataclass(frozen=True, eq=False)
class OpSpec(Generic[A]):
    """Everything about one op. Register it with :func:`register`.

    ``modules`` maps module types to the matcher that makes this op's attributes and parameters
    from such a module (the most derived registered type of a module wins); ``functions``
    (callables) and ``methods`` (tensor method names) are the traced calls ``from_call`` turns
    into this op. ``load_only`` ops have no matcher: manifests may use them, the exporter never
    writes them. ``channel_affine``: the op is ``y = x * scale + shift`` per channel and the
    exporter folds it into the layer before it where that layer's ``absorb_affine`` allows.
    """

    name: str
    attrs: type[A]
    build: Callable[[Build[A]], Built]
    params: tuple[Param[A], ...] = ()
    inputs: int = 1
    binary: bool = False
    modules: Mapping[type[nn.Module], ModuleMatcher] = field(default_factory=dict)
    functions: tuple[Any, ...] = ()
    methods: tuple[str, ...] = ()
    from_call: CallMatcher | None = None
    absorb_affine: AbsorbAffine | None = None
    channel_affine: bool = False
    load_only: bool = False

    def param(self, role: str) -> Param[A]:
        for p in self.params:
            if p.role == role:
                return p
        raise KeyError(f"op {self.name!r} has no parameter {role!r}")

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(p.role for p in self.params)

    def node_problems(self, inputs: int, roles: set[str]) -> list[str]:
        """What is wrong with a node of this op taking ``inputs`` inputs and these parameter roles."""
        problems = []
        if inputs != self.inputs:
            problems.append(f"takes {self.inputs} input(s), got {inputs}")
        if unknown := roles - set(self.roles):
            problems.append(f"unknown parameters {sorted(unknown)}")
        problems += [f"missing parameter {p.role!r}" for p in self.params if not p.optional and p.role not in roles]
        return problems

    def make(
        self, name: str, attrs: Attrs, inputs: int, refs: Mapping[str, str], tensors: Mapping[str, torch.Tensor]
    ) -> Built:
        """Builds node ``name`` (``inputs`` inputs, parameter roles mapped to tensor names by
        ``refs``), first checking the tensors against the parameter rules."""

        def fail(problem: str) -> GraphError:
            return GraphError(f"node {name!r} ({self.name}): {problem}")

        if not isinstance(attrs, self.attrs):
            raise fail(f"attributes must be {self.attrs.__name__}, got {type(attrs).__name__}")
        if problems := self.node_problems(inputs, set(refs)):
            raise fail("; ".join(problems))
        params: dict[str, torch.Tensor] = {}
        for p in self.params:
            tensor = refs.get(p.role)
            if tensor is None:
                continue
            t = tensors[tensor]
            if t.dtype != p.dtype:
                raise fail(f"parameter {p.role!r} (tensor {tensor!r}) must be {p.dtype}, got {t.dtype}")
            shape = p.shape(attrs)
            if tuple(t.shape) != tuple(shape):
                raise fail(
                    f"parameter {p.role!r} (tensor {tensor!r}) must have shape {list(shape)}, got {list(t.shape)}"
                )
            params[p.role] = t
        built = self.build(Build(name, self.name, attrs, params))
        if (built.layer is not None) != self.binary:
            raise fail("builder and spec disagree on whether the op is binary")
        return built


# ---- the registry ------------------------------------------------------------------------

_OPS: dict[str, OpSpec[Any]] = {}
# What the exporter does with a module type / traced call: make this op (a matcher), or nothing
# (None: the module or call passes its input through, e.g. Dropout).
_MODULES: dict[type[nn.Module], tuple[OpSpec[Any], ModuleMatcher] | None] = {}
_CALLS: dict[tuple[str, Any], tuple[OpSpec[Any], CallMatcher] | None] = {}


def _check_free(table: dict[Any, Any], key: Any, what: str) -> None:
    if key in table:
        holder = table[key]
        raise ValueError(f"{what} is already claimed by {f'op {holder[0].name!r}' if holder else 'a pass-through'}")


def register(spec: OpSpec[A]) -> OpSpec[A]:
    """Adds ``spec`` to the format; its name, module types and calls must be new."""
    if spec.name in _OPS:
        raise ValueError(f"op {spec.name!r} is already registered")
    has_matcher = bool(spec.modules) or spec.from_call is not None
    if has_matcher == spec.load_only:
        raise ValueError(f"op {spec.name!r}: give a matcher (modules or from_call) or load_only=True, not both")
    if bool(spec.functions or spec.methods) != (spec.from_call is not None):
        raise ValueError(f"op {spec.name!r}: from_call goes with functions or methods")
    claims: list[tuple[dict[Any, Any], Any, str, Any]] = [
        *((_MODULES, t, f"module type {t.__name__}", (spec, m)) for t, m in spec.modules.items()),
        *((_CALLS, ("call_function", f), f"function {f!r}", (spec, spec.from_call)) for f in spec.functions),
        *((_CALLS, ("call_method", m), f"method {m!r}", (spec, spec.from_call)) for m in spec.methods),
    ]
    for table, key, what, _ in claims:
        _check_free(table, key, what)
    for table, key, _, value in claims:
        table[key] = value
    _OPS[spec.name] = spec
    return spec


def register_passthrough(
    *, modules: tuple[type[nn.Module], ...] = (), functions: tuple[Any, ...] = (), methods: tuple[str, ...] = ()
) -> None:
    """Modules and calls the exporter drops (their output is their input), e.g. Dropout."""
    claims: list[tuple[dict[Any, Any], Any, str]] = [
        *((_MODULES, t, f"module type {t.__name__}") for t in modules),
        *((_CALLS, ("call_function", f), f"function {f!r}") for f in functions),
        *((_CALLS, ("call_method", m), f"method {m!r}") for m in methods),
    ]
    for table, key, what in claims:
        _check_free(table, key, what)
    for table, key, _ in claims:
        table[key] = None


def unregister(name: str) -> None:
    """Removes op ``name`` and its matchers (for tests that register a toy op)."""
    spec = _OPS.pop(name)
    for key in [k for k, v in _MODULES.items() if v is not None and v[0] is spec]:
        del _MODULES[key]
    for call in [k for k, v in _CALLS.items() if v is not None and v[0] is spec]:
        del _CALLS[call]


def op_spec(name: str) -> OpSpec[Any] | None:
    return _OPS.get(name)


def registered_ops() -> tuple[str, ...]:
    return tuple(sorted(_OPS))


def traced_functions() -> tuple[Callable[..., Any], ...]:
    """The Python functions ops claim (e.g. ``kernel.sign``): the exporter's tracer records a call
    to one as a node instead of tracing into it."""
    return tuple(f for kind, f in _CALLS if kind == "call_function" and isinstance(f, types.FunctionType))


def module_matcher(module: nn.Module) -> tuple[OpSpec[Any], ModuleMatcher] | None:
    """The op and matcher for ``module``, found by its most derived registered type (``ReLU6`` is
    a ``Hardtanh``); None for a module that passes its input through. KeyError when no type in its
    MRO is registered, or when the module overrides that type's ``forward`` (it computes
    something else)."""
    cls = type(module)
    for t in cls.__mro__:
        if t in _MODULES:
            if getattr(cls, "forward", None) is not getattr(t, "forward", None):
                break
            return _MODULES[t]
    raise KeyError(cls.__name__)


def knows_module(module: nn.Module) -> bool:
    """Whether :func:`module_matcher` has an answer for ``module``: the exporter's tracer keeps
    such modules whole (as leaves)."""
    try:
        module_matcher(module)
    except KeyError:
        return False
    return True


def call_matcher(kind: str, target: Any) -> tuple[OpSpec[Any], CallMatcher] | None:
    """The op and matcher for a traced ``call_function``/``call_method``; None for one that
    passes its input through. KeyError when not registered."""
    return _CALLS[(kind, target)]
