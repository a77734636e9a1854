"""The executor: runs a model graph whose nodes the op registry (``ops``) builds.

Each node is built once, at load time, by its op's spec (:meth:`~service.model.ops.OpSpec.make`):
all weight work (unpacking bits into :class:`PackedWeights`, reshaping scale vectors) happens
then; the functions only compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from service.kernel import InferenceConv, sign

from .manifest import GRAPH_INPUT, Node
from .ops import BinaryLayer, Fn, GraphError, op_spec, registered_ops

__all__ = ["BinaryLayer", "Executor", "GraphError"]


@dataclass(frozen=True)
class _Step:
    name: str
    fn: Fn
    inputs: tuple[str, ...]
    release: tuple[str, ...]  # values no later step needs


def _identity(x: Any) -> Any:
    return x


def _fuse_packed_outputs(nodes: list[Node], output: str, fns: dict[str, Fn]) -> tuple[str, ...]:
    """Lets each binary conv (an :class:`InferenceConv` step) whose readers are only binary convs
    (directly or through ``sign`` steps) write their packed input itself: its step becomes ``sign_packed`` with the readers'
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
            reader = fns[r.name]
            if isinstance(reader, InferenceConv):
                paddings.add(reader.geometry.padding)
            elif reader is sign:
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
        conv = fns[node.name]
        if not isinstance(conv, InferenceConv):
            continue
        signs: list[str] = []
        paddings = packed_readers(node.name, signs)
        if paddings is None or len(paddings) != 1:
            continue
        (out_padding,) = paddings
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
            spec = op_spec(node.op)
            if spec is None:
                raise GraphError(f"node {node.name!r}: unknown op {node.op!r} (known: {list(registered_ops())})")
            built = spec.make(node.name, node.attrs, len(node.inputs), node.params, tensors)
            if built.layer is not None:
                self.binary_layers[node.name] = built.layer
            fns[node.name] = built.fn
        self.packed_outputs = _fuse_packed_outputs(nodes, output, fns) if fuse_packed else ()
        order = [(node.name, fns[node.name], tuple(node.inputs)) for node in nodes]
        last_use: dict[str, int] = {}
        for i, (_, _, inputs) in enumerate(order):
            for ref in inputs:
                last_use[ref] = i
        self.steps = [
            _Step(name, fn, inputs, tuple(r for r in set(inputs) if last_use[r] == i and r != output))
            for i, (name, fn, inputs) in enumerate(order)
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
