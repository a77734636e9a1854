"""The executor: runs a model graph whose nodes the op registry (``ops``) builds.

Each node is built once, at load time, by its op's spec (:meth:`~service.model.ops.OpSpec.make`):
all weight work (unpacking bits into :class:`PackedWeights`, reshaping scale vectors) happens
then; the functions only compute.

The executor then chooses fusions from the graph, each bit for bit the unfused graph (the same
float operations in the same order; ``Executor.fusions`` and ``LoadedModel.summary()`` list them):

- **epilogue**: a binary conv whose only reader is a residual ``add`` (optional), and that add's
  (or the conv's) only reader an activation (``prelu``, ``rprelu``, ``relu``, ``hardtanh``;
  optional), run as one kernel call that does the sum and the activation in the conv's epilogue,
  on the output while it is in cache (no separate pass, no intermediate tensors);
- **concat in place**: binary conv steps (each with its residual sum, if any) read only by one
  channel ``concat``, and that concat's only reader an activation (optional), run as one step:
  each conv writes its channels of the concat's output from its epilogue, with its channels' share
  of the activation's parameters (ReActNet-A's doubled 1x1 halves and their RPReLU: no concat copy,
  no separate activation pass);
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
    # nodes whose output has the step's shape but another channel count (the parts of a concat)
    channels: tuple[tuple[str, int], ...] = ()


@dataclass
class _Plan:
    """A step before liveness: what ``_Step`` holds, still being fused."""

    fn: Fn
    inputs: list[str]
    nodes: tuple[str, ...]
    dual: bool = False
    head: int = 0
    x_slots: tuple[int, ...] = (0,)  # which inputs are binary convs' inputs (a concat step has several)
    channels: tuple[tuple[str, int], ...] = ()


def _identity(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class _ConvEpilogue:
    """A binary conv with the residual sum (and activation) that followed it fused into its
    epilogue; where a residual does not fit the fused path (another shape or dtype: torch would
    broadcast or promote) it runs the separate ops instead. With ``out_padding``, a dual output."""

    fused: InferenceConv  # with the activation, if any
    conv: InferenceConv
    add: Fn
    conv_first: bool  # add(conv, residual), not add(residual, conv)
    act: Fn | None  # the activation's own function (prelu, rprelu, relu, hardtanh)
    out_padding: tuple[int, int] | None = None
    out_shift: torch.Tensor | None = None  # the dual output's bits are of y + out_shift

    def fits(self, x: torch.Tensor | PackedActivations, residual: Any) -> bool:
        return (
            isinstance(residual, torch.Tensor)
            and residual.dtype == torch.float32
            and tuple(residual.shape) == self.conv.output_shape(x)
        )

    def __call__(self, x: torch.Tensor | PackedActivations, residual: torch.Tensor) -> Any:
        if self.fits(x, residual):
            if self.out_padding is None:
                return self.fused(x, residual)
            return self.fused.dual(x, self.out_padding, residual, self.out_shift)
        y = self.unfused(x, residual)
        if self.act is not None:
            y = self.act(y)
        return y if self.out_padding is None else (y, pack_activations(y, self.out_padding, self.out_shift))

    def unfused(self, x: torch.Tensor | PackedActivations, residual: Any) -> Any:
        """The conv and the sum as separate ops (no activation)."""
        y = self.conv(x)
        return self.add(y, residual) if self.conv_first else self.add(residual, y)

    def with_input_shift(self, shift: torch.Tensor) -> _ConvEpilogue:
        return replace(self, fused=self.fused.with_input_shift(shift), conv=self.conv.with_input_shift(shift))


@dataclass(frozen=True)
class _Part:
    """One input of a concat built in place: a binary conv (``fused``: with its channels' share of
    the activation after the concat) and, for a residual sum, its ``_ConvEpilogue``."""

    fused: InferenceConv
    step: InferenceConv | _ConvEpilogue  # the step as it was, with no activation

    @property
    def inputs(self) -> int:
        """1 (x), or 2 (x, residual) for a residual sum."""
        return 2 if isinstance(self.step, _ConvEpilogue) else 1


@dataclass(frozen=True)
class _ConcatEpilogue:
    """A channel concat of binary conv steps (then an activation, optional) as one step: each conv
    writes its channels of the output from its epilogue (with ``out_padding``, a dual output: each
    also writes their packed signs, of y + ``out_shift``, into its channels of one packed tensor).
    Where an input does not fit (a residual of another shape or dtype, parts of different image
    sizes) it runs the separate ops."""

    parts: tuple[_Part, ...]
    cat: Fn  # the concat node's function
    act: Fn | None
    out_padding: tuple[int, int] | None = None
    out_shift: torch.Tensor | None = None

    @property
    def widths(self) -> list[int]:
        return [part.fused.weights.out_channels for part in self.parts]

    def packs_in_place(self) -> bool:
        """Whether each part's bits start on a 16-channel block (the kernel writes a block's bits
        as one unit), so a dual output can be written by the parts."""
        return all(w % 16 == 0 for w in self.widths[:-1])

    def __call__(self, *args: Any) -> Any:
        split, at = [], 0
        for part in self.parts:
            split.append(args[at : at + part.inputs])
            at += part.inputs
        shapes = [part.fused.output_shape(a[0]) for part, a in zip(self.parts, split)]
        n, _, oh, ow = shapes[0]
        fits = all(s[0] == n and s[2:] == (oh, ow) for s in shapes) and all(
            part.inputs == 1 or part.step.fits(*a)  # type: ignore[union-attr]
            for part, a in zip(self.parts, split)
        )
        if not fits:
            y = self.cat(*(part.step(*a) for part, a in zip(self.parts, split)))
            if self.act is not None:
                y = self.act(y)
            return y if self.out_padding is None else (y, pack_activations(y, self.out_padding, self.out_shift))
        total = sum(s[1] for s in shapes)
        out = torch.empty((n, total, oh, ow), memory_format=torch.channels_last)
        bits = None if self.out_padding is None else PackedActivations.blank(n, total, oh, ow, self.out_padding)
        offset = 0
        for part, a, s in zip(self.parts, split, shapes):
            shift = None if self.out_shift is None else self.out_shift[offset : offset + s[1]]
            part.fused.write_into(a[0], out, offset, a[1] if len(a) > 1 else None, bits, shift)
            offset += s[1]
        return out if bits is None else (out, bits)


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


def _activation_epilogue(conv: InferenceConv, epilogue: Epilogue | None) -> InferenceConv | None:
    """``conv`` with the activation ``epilogue`` describes in its epilogue, or None where it cannot
    take it (not an activation, or parameters for another channel count)."""
    if epilogue is None:
        return None
    if epilogue.kind == "clamp" and epilogue.lo is not None and epilogue.hi is not None:
        return conv.with_clamp(epilogue.lo, epilogue.hi)
    o = conv.weights.out_channels
    if epilogue.kind == "prelu" and epilogue.slope is not None and epilogue.slope.shape[0] in (1, o):
        return conv.with_prelu(epilogue.slope)
    if epilogue.kind == "rprelu":
        vectors = (epilogue.shift_in, epilogue.slope, epilogue.shift_out)
        if all(v is not None and v.shape == (o,) for v in vectors):
            return conv.with_rprelu(*vectors)  # type: ignore[arg-type]
    return None


def _fuse_epilogues(nodes: list[Node], built: dict[str, Built], readers: _Readers, plans: dict[str, _Plan]) -> None:
    """Binary conv -> residual add -> activation chains (the add or the activation optional) become
    one step at the last node's place."""
    for node in nodes:
        conv = built[node.name].fn
        if not isinstance(conv, InferenceConv) or plans[node.name].nodes != (node.name,):
            continue
        add = readers.only(node.name)
        if add is not None and (plans.get(add.name) is None or plans[add.name].nodes != (add.name,)):
            add = None  # another conv took it
        add_epilogue = built[add.name].epilogue if add is not None else None
        if add_epilogue is None or add_epilogue.kind != "residual":
            add = None
        last = add.name if add is not None else node.name
        act = readers.only(last)
        with_act = _activation_epilogue(conv, built[act.name].epilogue) if act is not None else None
        if add is None and with_act is None:
            continue
        act_name = act.name if act is not None and with_act is not None else None
        members = [node.name, *([add.name] if add is not None else []), *([act_name] if act_name else [])]
        fn: Fn
        if add is None:
            assert with_act is not None
            fn, inputs = with_act, list(node.inputs)
        else:
            conv_first = add.inputs[0] == node.name
            residual = add.inputs[1] if conv_first else add.inputs[0]
            act_fn = built[act_name].fn if act_name else None
            fn = _ConvEpilogue(with_act or conv, conv, built[add.name].fn, conv_first, act_fn)
            inputs = [*node.inputs, residual]
        for member in members:
            del plans[member]
        plans[members[-1]] = _Plan(fn, inputs, tuple(members))


def _fuse_concats(nodes: list[Node], built: dict[str, Built], readers: _Readers, plans: dict[str, _Plan]) -> None:
    """Channel concats of binary conv steps (each read only by the concat, with no activation of its
    own), and the activation after the concat, become one step that writes the concat in place."""
    for node in nodes:
        epilogue = built[node.name].epilogue
        if epilogue is None or epilogue.kind != "concat" or plans.get(node.name) is None:
            continue
        # each input a step's output (not the graph input, nor a node some step computes midway),
        # read by this concat alone
        found = [plans.get(ref) for ref in node.inputs]
        steps = [step for step in found if step is not None and _plain_conv_step(step)]
        if len(steps) != len(found) or any(readers.only(ref) is not node for ref in node.inputs):
            continue
        convs = [_conv_of(step.fn) for step in steps]
        widths = [conv.weights.out_channels for conv in convs]
        total = sum(widths)
        act = readers.only(node.name)
        act_epilogue = built[act.name].epilogue if act is not None else None
        shares: list[InferenceConv] | None = None
        if act is not None and act_epilogue is not None and act_epilogue.is_activation:
            starts = [sum(widths[:i]) for i in range(len(widths))]
            cuts = [act_epilogue.channels(a, a + w, total) for a, w in zip(starts, widths)]
            made = [_activation_epilogue(conv, cut) for conv, cut in zip(convs, cuts)]
            if all(m is not None for m in made):
                shares = made  # type: ignore[assignment]
        parts = tuple(_Part(fused, step.fn) for fused, step in zip(shares or convs, steps))  # type: ignore[arg-type]
        members = [*(m for step in steps for m in step.nodes), node.name, *([act.name] if shares and act else [])]
        inputs = [ref for step in steps for ref in step.inputs]
        x_slots = tuple(sum(len(step.inputs) for step in steps[:i]) for i in range(len(steps)))
        channels = tuple((m, w) for step, w in zip(steps, widths) for m in step.nodes)
        fn = _ConcatEpilogue(parts, built[node.name].fn, built[act.name].fn if shares and act else None)
        for member in dict.fromkeys([*node.inputs, *members]):
            plans.pop(member, None)
        plans[members[-1]] = _Plan(fn, inputs, tuple(members), x_slots=x_slots, channels=channels)


def _conv_of(fn: Fn) -> InferenceConv:
    """The binary conv of a conv step (``_plain_conv_step``)."""
    if isinstance(fn, _ConvEpilogue):
        return fn.conv
    assert isinstance(fn, InferenceConv)
    return fn


def _plain_conv_step(plan: _Plan) -> bool:
    """A binary conv step (with a residual sum or not) with no activation and nothing fused ahead."""
    fn = plan.fn
    if plan.head or plan.dual:
        return False
    if isinstance(fn, InferenceConv):
        return not fn.has_activation
    return isinstance(fn, _ConvEpilogue) and fn.act is None


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
    """A step whose epilogue can write a dual output (_fuse_packed_outputs)."""
    if plan is not None and isinstance(plan.fn, _ConcatEpilogue):
        return plan.fn.packs_in_place()
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
        if not _is_conv_step(plan):
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
        if not floats and out_shift is None and isinstance(fn, InferenceConv) and not fn.has_activation:
            plan.fn = lambda x, conv=fn, p=out_padding: conv.sign_packed(x, p)
            packed.append(name)
        else:
            if isinstance(fn, InferenceConv):
                plan.fn = lambda x, conv=fn, p=out_padding, t=out_shift: conv.dual(x, p, out_shift=t)
            else:
                assert isinstance(fn, (_ConvEpilogue, _ConcatEpilogue))  # _is_conv_step
                plan.fn = replace(fn, out_padding=out_padding, out_shift=out_shift)
            plan.dual = True
            dual.append(name)
            # the binary readers (and the sign nodes between) take the bits, in their steps'
            # binary-input slots (a fused step's second input is the residual)
            for reader in direct:
                reading = plans[owner[reader]]
                for slot in reading.x_slots:
                    if reading.inputs[slot] == name:
                        reading.inputs[slot] = name + PACKED
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
            _fuse_concats(nodes, built, readers, plans)
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
                plan.channels,
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
                for node, channels in step.channels:  # a concat's parts
                    record_shapes[node][1] = channels
            for r in step.release:
                del values[r]
        return values[self.output]
