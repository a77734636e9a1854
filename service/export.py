"""Export a trained PyTorch model to a model-store folder (``model.json`` + ``weights.safetensors``).

The model is traced with ``torch.fx`` (every module type an op claims, e.g. ``BinaryConv2d``, as a
leaf); each module or call becomes a graph node through the matchers of the op registry
(``service.model.ops``), BatchNorm is folded into the convolution or linear layer it follows
(into the fused per-channel scale/bias of binary layers), Dropout and Identity disappear, and
binary weights are stored bit-packed (1 bit per weight).

    python -m service.export --model training.train_fashion_mnist:FashionNet --kwargs '{"binary": true}' \\
        --state training/runs/bnn.safetensors --out model_store/fashion-mnist-bnn --name fashion-mnist-bnn \\
        --version 1.0.0 --input '{"channels":1,"height":28,"width":28,"mean":[0.286],"std":[0.353]}' \\
        --labels "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import fx, nn

from service.kernel import pack_weights, packed_bits
from service.model.manifest import (
    GRAPH_INPUT,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Graph,
    InputSpec,
    Manifest,
    Node,
    TensorSpec,
    WeightsSpec,
)
from service.model.ops import (
    Attrs,
    Call,
    Exported,
    ExportError,
    OpSpec,
    attrs_problem,
    call_matcher,
    knows_module,
    module_matcher,
    op_spec,
    traced_functions,
)

__all__ = ["ExportError", "build_graph", "export_model", "main"]


@dataclass
class _IRNode:
    name: str
    op: str
    inputs: list[str]
    attrs: Attrs
    params: dict[str, torch.Tensor] = field(default_factory=dict)  # float, unpacked


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return knows_module(m) or super().is_leaf_module(m, qualname)


def _node(name: str, spec: OpSpec[Any], inputs: list[str], match: Callable[[], Exported]) -> _IRNode:
    """The node ``match`` makes for ``spec``; its refusals become ExportErrors naming the node."""
    try:
        exported = match()
    except ExportError as e:
        raise ExportError(f"{name}: {e}") from None
    except ValidationError as e:
        raise ExportError(f"{name}: {spec.name} {attrs_problem(e)}") from None
    return _IRNode(name, spec.name, inputs, exported.attrs, dict(exported.params))


def _module_node(name: str, m: nn.Module, inputs: list[str]) -> _IRNode | None:
    """The node for a leaf module, or None for one that passes its input through."""
    try:
        found = module_matcher(m)
    except KeyError:
        raise ExportError(f"{name}: module type {type(m).__name__} is not supported by the model format") from None
    if found is None:
        return None
    spec, matcher = found
    return _node(name, spec, inputs, lambda: matcher(m))


def _function_node(name: str, node: fx.Node, inputs: list[str]) -> _IRNode | None:
    """The node for a traced function or method call, or None for one that passes its input through."""
    try:
        found = call_matcher(node.op, node.target)
    except (KeyError, TypeError):  # TypeError: an unhashable target
        fn = node.target
        raise ExportError(
            f"{name}: {node.op} {getattr(fn, '__name__', fn)!r} is not supported by the model format "
            "(use the nn.Module form, e.g. nn.Flatten instead of view)"
        ) from None
    if found is None:
        return None
    spec, matcher = found
    return _node(name, spec, inputs, lambda: matcher(Call(node, len(inputs))))


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    """The tensors a traced node takes, in order: its arguments, and those in a list argument
    (``torch.cat([a, b])``)."""
    found: list[fx.Node] = []
    for a in [*node.args, *node.kwargs.values()]:
        if isinstance(a, fx.Node):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found += [t for t in a if isinstance(t, fx.Node)]
    return found


def _trace(model: nn.Module) -> tuple[list[_IRNode], str]:
    try:
        graph = _Tracer(autowrap_functions=traced_functions()).trace(model)
    except Exception as e:
        raise ExportError(f"torch.fx could not trace the model: {e}") from e
    modules = dict(model.named_modules())
    alias: dict[str, str] = {}
    nodes: list[_IRNode] = []
    used_names = {GRAPH_INPUT}
    output = None
    placeholders = 0
    for node in graph.nodes:
        if node.op == "placeholder":
            placeholders += 1
            if placeholders > 1:
                raise ExportError("the model must take exactly one input tensor")
            alias[node.name] = GRAPH_INPUT
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise ExportError("the model must return a single tensor")
            output = alias[out.name]
            continue
        tensor_args = _tensor_args(node)
        inputs = [alias[a.name] for a in tensor_args]
        name = node.target if node.op == "call_module" and node.target not in used_names else node.name
        name = name.replace("-", "_")
        if node.op == "call_module":
            ir = _module_node(name, modules[node.target], inputs[:1])
            if len(inputs) != 1:
                raise ExportError(f"{name}: modules must take one tensor input")
        elif node.op in ("call_function", "call_method"):
            ir = _function_node(name, node, inputs)
        else:
            raise ExportError(f"{node.name}: {node.op} nodes (e.g. parameters used directly) are not supported")
        if ir is None:
            alias[node.name] = inputs[0]
        else:
            alias[node.name] = ir.name
            used_names.add(ir.name)
            nodes.append(ir)
    if output is None or output == GRAPH_INPUT:
        raise ExportError("the model has no output computed from its input")
    return nodes, output


def _spec(op: str) -> OpSpec[Any]:
    spec = op_spec(op)
    if spec is None:  # only if an op was unregistered mid-export
        raise ExportError(f"op {op!r} is not registered")
    return spec


def _fold_batch_norm(nodes: list[_IRNode], output: str) -> tuple[list[_IRNode], str]:
    """Merge each BatchNorm (a ``channel_affine`` op) into the layer before it, where that layer
    feeds nothing else and its op can absorb it (``absorb_affine``: conv/linear, float or binary)."""
    users: dict[str, int] = {}
    for n in nodes:
        for ref in n.inputs:
            users[ref] = users.get(ref, 0) + 1
    by_name = {n.name: n for n in nodes}
    renamed: dict[str, str] = {}
    result: list[_IRNode] = []
    for n in nodes:
        n.inputs = [renamed.get(r, r) for r in n.inputs]
        prev = by_name.get(n.inputs[0]) if _spec(n.op).channel_affine else None
        if prev is not None and users.get(prev.name) == 1 and prev.name != output:
            absorb = _spec(prev.op).absorb_affine
            if absorb is not None and absorb(prev.params, n.params["scale"], n.params["shift"]):
                renamed[n.name] = prev.name
                continue
        result.append(n)
    return result, renamed.get(output, output)


def build_graph(model: nn.Module) -> tuple[list[_IRNode], str]:
    """The exportable graph of ``model`` (in eval mode), BatchNorm folded."""
    nodes, output = _trace(model)
    return _fold_batch_norm(nodes, output)


def export_model(
    model: nn.Module,
    folder: str | os.PathLike,
    name: str,
    version: str,
    input_spec: InputSpec | dict,
    labels: list[str],
    description: str = "",
) -> Path:
    """Write ``model`` to ``folder`` (created if needed) as ``model.json`` + ``weights.safetensors``."""
    from safetensors.torch import save as save_safetensors

    spec = input_spec if isinstance(input_spec, InputSpec) else InputSpec.model_validate(input_spec)
    was_training = model.training
    model.eval()
    try:
        nodes, output = build_graph(model)
    finally:
        model.train(was_training)

    tensors: dict[str, torch.Tensor] = {}
    manifest_nodes = []
    for n in nodes:
        op = _spec(n.op)
        refs = {}
        for role, t in n.params.items():
            key = f"{n.name}.{role}"
            if op.param(role).bits:
                tensors[key] = packed_bits(pack_weights(t.contiguous())).contiguous()
            else:
                tensors[key] = t.to(torch.float32).contiguous()
            refs[role] = key
        manifest_nodes.append(Node(name=n.name, op=n.op, inputs=n.inputs, attrs=n.attrs, params=refs))

    blob = save_safetensors(tensors, metadata={"format": "bnn-model", "model": name, "version": version})
    manifest = Manifest(
        name=name,
        version=version,
        description=description,
        input=spec,
        labels=list(labels),
        graph=Graph(nodes=manifest_nodes, output=output),
        weights=WeightsSpec(
            file=WEIGHTS_FILE,
            sha256=hashlib.sha256(blob).hexdigest(),
            tensors={
                k: TensorSpec(dtype=str(t.dtype).removeprefix("torch."), shape=list(t.shape))
                for k, t in tensors.items()
            },
        ),
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for filename, data in ((WEIGHTS_FILE, blob), (MANIFEST_FILE, (manifest.model_dump_json(indent=2) + "\n").encode())):
        tmp = folder / f".{filename}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / filename)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m service.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="module:callable that builds the nn.Module")
    p.add_argument("--kwargs", default="{}", help="JSON keyword arguments for the callable")
    p.add_argument("--state", required=True, help="state_dict as .safetensors (no pickle)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument(
        "--input", required=True, help="input spec as JSON (channels, height, width, resize, mean, std, invert)"
    )
    p.add_argument("--labels", required=True, help="comma-separated class labels, or @file with one per line")
    p.add_argument("--description", default="")
    args = p.parse_args(argv)
    from safetensors.torch import load_file

    module_name, _, attr = args.model.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    model = factory(**json.loads(args.kwargs))
    model.load_state_dict(load_file(args.state))
    labels = Path(args.labels[1:]).read_text().splitlines() if args.labels.startswith("@") else args.labels.split(",")
    folder = export_model(
        model, args.out, args.name, args.version, json.loads(args.input), [l for l in labels if l], args.description
    )
    from service.model import load_model

    print(json.dumps(load_model(folder).summary()["sizes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
