"""The executor: runs a model graph whose nodes the op registry (``ops``) builds.

Each node is built once, at load time, by its op's spec (:meth:`~service.model.ops.OpSpec.make`):
all weight work (unpacking bits into :class:`PackedWeights`, reshaping scale vectors) happens
then; the functions only compute.

The executor then chooses fusions from the graph, each bit for bit the unfused graph (the same
float operations in the same order; ``Executor.fusions`` and ``LoadedModel.summary()`` list them):

- **epilogue**: a binary conv whose only reader is a residual ``add``, and that add's only reader a
  ``prelu`` or ``rprelu`` (optional), run as one kernel call that does the sum and the activation
  in the conv's epilogue, on the output while it is in cache (no separate pass, no intermediate
  tensors);
- **packed output**: a binary conv read only by binary convs (directly or through ``sign``) writes
  their packed input and no floats (``packed_outputs``);
- **dual output**: a binary conv (fused or not) read by binary convs and by float ops writes its
  floats and, from the same pass, the binary readers' packed input (``dual_outputs``); where those
  readers read it through an ``rsign`` (ReActNet), the packed bits are those of its
  ``sign(y + shift)``;
- **shifted packing**: any other ``rsign`` read only by binary convs is computed by their packing
  (``sign(x + shift)`` in one pass, no float ±1 tensor): by the conv's own packing where it has one
  reader, else by one packing step the readers share.

``Executor.sign_shifts`` (and the summary) says where each ``rsign`` went.

- **relu prologue**: a ``relu`` read only by an op that can take a ReLU'd input in the same pass
  (``max_pool2d``: the stem's conv -> relu -> max pool) runs as that op with the ReLU applied to each
  value it reads, with no intermediate tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from service.kernel import InferenceConv, PackedActivations, pack_activations, sign

from .manifest import GRAPH_INPUT, Node
from .ops import BinaryLayer, Built, Epilogue, Fn, GraphError, op_spec, registered_ops

__all__ = ["PACKED", "BinaryLayer", "Executor", "GraphError"]

# A value holding the packed bits of node ``name``'s output is named ``name + PACKED`` (node
# names cannot contain '#').
PACKED = "#packed"


@dataclass(frozen=True)
class _Step:
    name: str  # the value it writes: its last node's output
    fn: Fn
    inputs: tuple[str, ...]
    release: tuple[str, ...]  # values no later step needs
    nodes: tuple[str, ...]  # the graph nodes it computes (several: a fusion)
    dual: bool = False  # fn returns (floats, packed bits); the bits are the value name + PACKED
    head: int = 0  # how many of ``nodes`` have the step's input's shape (an rsign before a conv, a relu prologue)


@dataclass
class _Plan:
    """A step before liveness: what ``_Step`` holds, still being fused."""

    fn: Fn
    inputs: list[str]
    nodes: tuple[str, ...]
    dual: bool = False
    head: int = 0


def _identity(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class _ConvEpilogue:
    """A binary conv with the residual sum (and PReLU) that followed it fused into its epilogue;
    where a residual does not fit the fused path (another shape or dtype: torch would broadcast
    or promote) it runs the separate ops instead. With ``out_padding``, a dual output."""

    fused: InferenceConv  # with the PReLU slope, if any
    conv: InferenceConv
    add: Fn
    conv_first: bool  # add(conv, residual), not add(residual, conv)
    prelu: Fn | None  # the activation's own function (prelu or rprelu)
    out_padding: tuple[int, int] | None = None
    out_shift: torch.Tensor | None = None  # the dual output's bits are of y + out_shift

    def __call__(self, x: torch.Tensor | PackedActivations, residual: torch.Tensor) -> Any:
        if (
            isinstance(residual, torch.Tensor)
            and residual.dtype == torch.float32
            and tuple(residual.shape) == self.conv.output_shape(x)
        ):
            if self.out_padding is None:
                return self.fused(x, residual)
            return self.fused.dual(x, self.out_padding, residual, self.out_shift)
        y = self.conv(x)
        y = self.add(y, residual) if self.conv_first else self.add(residual, y)
        if self.prelu is not None:
            y = self.prelu(y)
        return y if self.out_padding is None else (y, pack_activations(y, self.out_padding, self.out_shift))

    def with_input_shift(self, shift: torch.Tensor) -> _ConvEpilogue:
        return replace(self, fused=self.fused.with_input_shift(shift), conv=self.conv.with_input_shift(shift))


class _Readers:
    """Who reads each node's output, and the binary convs that read it through ``sign`` and
    ``rsign`` nodes."""

    def __init__(self, nodes: list[Node], output: str, built: dict[str, Built]) -> None:
        self.output = output
        self.fns = {name: b.fn for name, b in built.items()}
        self.shifts = {name: b.sign_shift for name, b in built.items() if b.sign_shift is not None}
        self.of: dict[str, list[Node]] = {}
        for node in nodes:
            for ref in node.inputs:
                self.of.setdefault(ref, []).append(node)

    def only(self, name: str) -> Node | None:
        """The one node reading ``name`` once (None: several, none, or the graph output)."""
        readers = self.of.get(name, [])
        if name == self.output or len(readers) != 1 or list(readers[0].inputs).count(name) != 1:
            return None
        return readers[0]

    def binary_only(self, name: str) -> list[Node] | None:
        """The readers of ``name`` when they are all binary convs, each reading it once; else None."""
        readers = self.of.get(name, [])
        if name == self.output or not readers:
            return None
        if all(isinstance(self.fns[r.name], InferenceConv) and list(r.inputs) == [name] for r in readers):
            return readers
        return None

    def binary(
        self,
        name: str,
        direct: list[str],
        signs: list[str],
        floats: list[str],
        shifts: dict[str, torch.Tensor] | None = None,
    ) -> set[tuple[int, int]]:
        """Paddings of the binary convs reading ``name`` directly or through sign nodes that only
        binary convs read. Appends those sign nodes to ``signs``, the binary convs and sign nodes
        that read ``name`` itself to ``direct``, and every other reader to ``floats``. With
        ``shifts``, rsign nodes that only binary convs read count as sign nodes too, and go into
        ``shifts`` (node -> its shift)."""
        paddings: set[tuple[int, int]] = set()
        for r in self.of.get(name, []):
            reader = self.fns[r.name]
            if isinstance(reader, InferenceConv):
                paddings.add(reader.geometry.padding)
                direct.append(r.name)
                continue
            shifted = shifts is not None and r.name in self.shifts
            if (reader is sign or shifted) and r.name != self.output:
                sub_signs: list[str] = []
                sub_floats: list[str] = []
                sub = self.binary(r.name, [], sub_signs, sub_floats)
                if sub and not sub_floats:
                    paddings |= sub
                    signs += [*sub_signs, r.name]
                    direct.append(r.name)
                    if shifts is not None and shifted:
                        shifts[r.name] = self.shifts[r.name]
                    continue
            floats.append(r.name)
        return paddings


def _activation_epilogue(conv: InferenceConv, epilogue: Epilogue) -> InferenceConv | None:
    """``conv`` with the activation ``epilogue`` describes in its epilogue, or None where it cannot
    take it (not an activation, or parameters for another channel count)."""
    o = conv.weights.out_channels
    if epilogue.kind == "prelu" and epilogue.slope is not None and epilogue.slope.shape[0] in (1, o):
        return conv.with_prelu(epilogue.slope)
    if epilogue.kind == "rprelu":
        vectors = (epilogue.shift_in, epilogue.slope, epilogue.shift_out)
        if all(v is not None and v.shape == (o,) for v in vectors):
            return conv.with_rprelu(*vectors)  # type: ignore[arg-type]
    return None


def _fuse_epilogues(nodes: list[Node], built: dict[str, Built], readers: _Readers, plans: dict[str, _Plan]) -> None:
    """Binary conv -> residual add (-> prelu) chains become one step at the last node's place."""
    for node in nodes:
        conv = built[node.name].fn
        if not isinstance(conv, InferenceConv):
            continue
        add = readers.only(node.name)
        add_epilogue = built[add.name].epilogue if add is not None else None
        own = plans.get(add.name) if add is not None else None  # None, or a group: another conv took it
        if add is None or own is None or own.nodes != (add.name,):
            continue
        if add_epilogue is None or add_epilogue.kind != "residual":
            continue
        members, fused, prelu = [node.name, add.name], conv, None
        act = readers.only(add.name)
        act_epilogue = built[act.name].epilogue if act is not None else None
        if act is not None and act_epilogue is not None:
            with_act = _activation_epilogue(conv, act_epilogue)
            if with_act is not None:
                fused, prelu = with_act, built[act.name].fn
                members.append(act.name)
        conv_first = add.inputs[0] == node.name
        residual = add.inputs[1] if conv_first else add.inputs[0]
        fn = _ConvEpilogue(fused, conv, built[add.name].fn, conv_first, prelu)
        del plans[node.name], plans[add.name]
        plans[members[-1]] = _Plan(fn, [*node.inputs, residual], tuple(members))


def _fuse_relu_prologues(
    nodes: list[Node], built: dict[str, Built], readers: _Readers, plans: dict[str, _Plan]
) -> None:
    """relu -> op chains where the op takes a ReLU'd input in one pass (``Built.after_relu``)."""
    for node in nodes:
        if built[node.name].fn is not F.relu or plans.get(node.name) is None:
            continue
        reader = readers.only(node.name)
        after_relu = built[reader.name].after_relu if reader is not None else None
        own = plans.get(reader.name) if reader is not None else None
        if reader is None or after_relu is None or own is None or own.nodes != (reader.name,):  # or fused already
            continue
        del plans[node.name]
        plans[reader.name] = _Plan(after_relu, list(node.inputs), (node.name, reader.name), head=1)


def _is_conv_step(plan: _Plan | None) -> bool:
    return plan is not None and isinstance(plan.fn, (InferenceConv, _ConvEpilogue))


def _fuse_input_shifts(
    nodes: list[Node], readers: _Readers, plans: dict[str, _Plan], sign_shifts: dict[str, str]
) -> None:
    """An rsign read only by binary convs, whose input no binary conv step writes (that step's
    dual output takes it instead, below), becomes the packing of its one reader: that conv packs
    ``sign(x + shift)`` from the rsign's input. (Several readers: see _fuse_packing_steps.)"""
    owner = {node: key for key, plan in plans.items() for node in plan.nodes}
    for node in nodes:
        shift = readers.shifts.get(node.name)
        if shift is None or plans.get(node.name) is None or plans[node.name].nodes != (node.name,):
            continue
        (source,) = node.inputs
        if _is_conv_step(plans.get(source)):
            continue
        binary = readers.binary_only(node.name)
        if binary is None or len(binary) != 1:
            continue
        key = owner[binary[0].name]
        plan = plans[key]
        if plan.inputs[0] != node.name or plan.head or not isinstance(plan.fn, (InferenceConv, _ConvEpilogue)):
            continue
        plan.fn = plan.fn.with_input_shift(shift)
        plan.inputs[0] = source
        plan.nodes = (node.name, *plan.nodes)
        plan.head = 1
        del plans[node.name]
        sign_shifts[node.name] = f"packing of {key}"


def _fuse_packed_outputs(
    readers: _Readers, plans: dict[str, _Plan], sign_shifts: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Binary convs read by binary convs hand them packed bits: only by them (``sign_packed``, no
    floats), or also by float ops (a dual output). Readers through sign nodes take the bits as
    they are (sign of ±1 is itself); readers through one rsign take the bits of ``y + shift``
    (a dual output). Returns the names of the packed and of the dual outputs."""
    packed, dual = [], []
    owner = {node: key for key, plan in plans.items() for node in plan.nodes}  # node -> its step's plan
    for name, plan in plans.items():
        fn = plan.fn
        if not isinstance(fn, (InferenceConv, _ConvEpilogue)):
            continue
        direct: list[str] = []
        signs: list[str] = []
        floats: list[str] = []
        shifts: dict[str, torch.Tensor] = {}
        paddings = readers.binary(name, direct, signs, floats, shifts)
        if len(paddings) != 1 or name == readers.output:
            continue
        # one set of bits: every binary reader through the same rsign, or none through one
        if shifts and (len(shifts) != 1 or len(direct) != 1):
            continue
        (out_padding,) = paddings
        out_shift = next(iter(shifts.values())) if shifts else None
        if not floats and out_shift is None and isinstance(fn, InferenceConv):
            plan.fn = lambda x, conv=fn, p=out_padding: conv.sign_packed(x, p)
            packed.append(name)
        else:
            if isinstance(fn, InferenceConv):
                plan.fn = lambda x, conv=fn, p=out_padding, t=out_shift: conv.dual(x, p, out_shift=t)
            else:
                plan.fn = replace(fn, out_padding=out_padding, out_shift=out_shift)
            plan.dual = True
            dual.append(name)
            # the binary readers (and the sign nodes between) take the bits; a binary conv's
            # input is its step's first (a fused step's second input is the residual)
            for reader in direct:
                plans[owner[reader]].inputs[0] = name + PACKED
        for sign_name in signs:
            plans[sign_name].fn = _identity
        for rsign in shifts:
            sign_shifts[rsign] = f"dual output of {name}"
    return packed, dual


def _fuse_packing_steps(readers: _Readers, plans: dict[str, _Plan], sign_shifts: dict[str, str]) -> None:
    """Every other rsign read only by binary convs packs ``sign(x + shift)`` itself, once for all
    its readers (they take packed input)."""
    for name, shift in readers.shifts.items():
        plan = plans.get(name)
        if name in sign_shifts or plan is None or plan.nodes != (name,) or readers.binary_only(name) is None:
            continue
        convs = [readers.fns[r.name] for r in readers.of[name]]
        paddings = {conv.geometry.padding for conv in convs if isinstance(conv, InferenceConv)}
        if len(paddings) != 1:
            continue
        (padding,) = paddings
        plan.fn = _shifted_packing(padding, shift)
        sign_shifts[name] = "packing step"


def _shifted_packing(padding: tuple[int, int], shift: torch.Tensor) -> Fn:
    def pack(x: torch.Tensor) -> Any:  # PackedActivations, which binary convs take as input
        return pack_activations(x, padding, shift)

    return pack


class Executor:
    """Runs the steps in order, dropping each intermediate value after its last use.

    Holds no per-call state, so one executor serves any number of threads at once. ``fuse=False``
    runs every node as its own step (the reference the fusions are tested against).
    """

    def __init__(self, nodes: list[Node], output: str, tensors: dict[str, torch.Tensor], *, fuse: bool = True) -> None:
        self.binary_layers: dict[str, BinaryLayer] = {}
        built: dict[str, Built] = {}
        for node in nodes:
            spec = op_spec(node.op)
            if spec is None:
                raise GraphError(f"node {node.name!r}: unknown op {node.op!r} (known: {list(registered_ops())})")
            built[node.name] = made = spec.make(node.name, node.attrs, len(node.inputs), node.params, tensors)
            if made.layer is not None:
                self.binary_layers[node.name] = made.layer
        plans = {node.name: _Plan(built[node.name].fn, list(node.inputs), (node.name,)) for node in nodes}
        packed: list[str] = []
        dual: list[str] = []
        sign_shifts: dict[str, str] = {}
        if fuse:
            readers = _Readers(nodes, output, built)
            _fuse_epilogues(nodes, built, readers, plans)
            _fuse_input_shifts(nodes, readers, plans, sign_shifts)
            packed, dual = _fuse_packed_outputs(readers, plans, sign_shifts)
            _fuse_packing_steps(readers, plans, sign_shifts)
            _fuse_relu_prologues(nodes, built, readers, plans)
        # a fused step sits where its last node was: its inputs all come before
        order = [(name, plans[name]) for name in (node.name for node in nodes) if name in plans]
        last_use: dict[str, int] = {}
        for i, (_, plan) in enumerate(order):
            for ref in plan.inputs:
                last_use[ref] = i
        self.steps = [
            _Step(
                name,
                plan.fn,
                tuple(plan.inputs),
                tuple(r for r in dict.fromkeys(plan.inputs) if last_use[r] == i and r != output),
                plan.nodes,
                plan.dual,
                plan.head,
            )
            for i, (name, plan) in enumerate(order)
        ]
        self.output = output
        self.packed_outputs = tuple(packed)
        self.dual_outputs = tuple(dual)
        # rsign node -> what computes it: "packing of <step>", "dual output of <step>", "packing step"
        self.sign_shifts = {name: sign_shifts[name] for name in (node.name for node in nodes) if name in sign_shifts}
        # step name -> the nodes it computes, for the steps that fuse several
        self.fusions = {step.name: list(step.nodes) for step in self.steps if len(step.nodes) > 1}

    def run(self, x: torch.Tensor, record_shapes: dict[str, list[int]] | None = None) -> torch.Tensor:
        # Run the whole graph NHWC: torch's float ops keep channels_last, and the binary kernel
        # then packs channels-last input and writes channels-last output with no transposes.
        if x.dim() == 4:
            # Explicit NHWC strides: for C = 1, .contiguous(memory_format=channels_last) keeps the
            # NCHW strides (both layouts match), and torch's conv would then answer NCHW.
            x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        values = {GRAPH_INPUT: x}
        for step in self.steps:
            if record_shapes is not None and step.head:  # an rsign or relu fused ahead: its input's shape
                for node in step.nodes[: step.head]:
                    record_shapes[node] = list(values[step.inputs[0]].shape)
            try:
                out = step.fn(*(values[r] for r in step.inputs))
            except (RuntimeError, ValueError) as e:
                raise GraphError(f"node {step.name!r} failed: {e}") from e
            if step.dual:
                out, values[step.name + PACKED] = out
            values[step.name] = out
            if record_shapes is not None:
                for node in step.nodes[step.head :]:  # the rest are elementwise after the head: one shape
                    record_shapes[node] = list(out.shape)
            for r in step.release:
                del values[r]
        return values[self.output]
