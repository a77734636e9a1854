"""Export a trained PyTorch model to a model-store folder (``model.json`` + ``weights.safetensors``).

The model is traced with ``torch.fx`` (``BinaryConv2d`` and ``BinaryLinear`` as leaves), each
module or function becomes a graph node, BatchNorm is folded into the convolution or linear
layer it follows (into the fused per-channel scale/bias of binary layers), Dropout and Identity
disappear, and binary weights are stored bit-packed (1 bit per weight).

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
import operator
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from service import kernel
from service.kernel import BinaryConv2d, pack_weights, packed_bits
from service.model.layers import BinaryLinear
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


class ExportError(ValueError):
    """The model uses something the format cannot express."""


@dataclass
class _IRNode:
    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, torch.Tensor] = field(default_factory=dict)  # float, unpacked


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (BinaryConv2d, BinaryLinear)) or super().is_leaf_module(m, qualname)


def _pair(v: Any) -> list[int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return [int(v[0])] * 2
        return [int(v[0]), int(v[1])]
    return [int(v), int(v)]


def _f(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).clone()


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm as y = x * scale + shift."""
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError("BatchNorm without running statistics (track_running_stats=False) cannot be exported")
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return _f(scale), _f(beta - bn.running_mean.double() * scale)


def _module_node(name: str, m: nn.Module, inputs: list[str]) -> _IRNode | None:
    """The node for a leaf module, or None for one that passes its input through."""
    if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity)):
        return None
    if isinstance(m, BinaryConv2d):
        if m.groups != 1:
            raise ExportError(f"{name}: grouped binary convolutions are not supported")
        params = {"weight": _f(m.weight)}
        if (scale := m.channel_scale()) is not None:  # None exactly when not m.use_scale
            params["scale"] = _f(scale)
        if m.bias is not None:
            params["bias"] = _f(m.bias)
        attrs = {
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": list(m.padding),
            "dilation": list(m.dilation),
            "pad_value": m.pad_value,
        }
        return _IRNode(name, "binary_conv2d", inputs, attrs, params)
    if isinstance(m, BinaryLinear):
        params = {"weight": _f(m.weight).view(m.out_features, m.in_features, 1, 1)}
        if (scale := m.channel_scale()) is not None:  # None exactly when not m.use_scale
            params["scale"] = _f(scale)
        if m.bias is not None:
            params["bias"] = _f(m.bias)
        return _IRNode(
            name, "binary_linear", inputs, {"in_features": m.in_features, "out_features": m.out_features}, params
        )
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ExportError(
                f"{name}: only zero padding given as numbers is supported (got {m.padding_mode}, {m.padding!r})"
            )
        params = {"weight": _f(m.weight)}
        if m.bias is not None:
            params["bias"] = _f(m.bias)
        attrs = {
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": _pair(m.kernel_size),
            "stride": _pair(m.stride),
            "padding": _pair(m.padding),
            "dilation": _pair(m.dilation),
            "groups": m.groups,
        }
        return _IRNode(name, "conv2d", inputs, attrs, params)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale, shift = _bn_affine(m)
        return _IRNode(name, "batch_norm", inputs, {"num_features": m.num_features}, {"scale": scale, "shift": shift})
    if isinstance(m, nn.Linear):
        params = {"weight": _f(m.weight)}
        if m.bias is not None:
            params["bias"] = _f(m.bias)
        return _IRNode(name, "linear", inputs, {"in_features": m.in_features, "out_features": m.out_features}, params)
    if isinstance(m, nn.ReLU):
        return _IRNode(name, "relu", inputs)
    if isinstance(m, nn.Hardtanh):
        return _IRNode(name, "hardtanh", inputs, {"min_val": float(m.min_val), "max_val": float(m.max_val)})
    if isinstance(m, nn.PReLU):
        return _IRNode(name, "prelu", inputs, {"num_parameters": m.num_parameters}, {"weight": _f(m.weight)})
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise ExportError(f"{name}: MaxPool2d(return_indices=True) is not supported")
        return _IRNode(
            name,
            "max_pool2d",
            inputs,
            {
                "kernel_size": _pair(m.kernel_size),
                "stride": _pair(m.stride or m.kernel_size),
                "padding": _pair(m.padding),
                "dilation": _pair(m.dilation),
                "ceil_mode": bool(m.ceil_mode),
            },
        )
    if isinstance(m, nn.AvgPool2d):
        if m.divisor_override is not None:
            raise ExportError(f"{name}: AvgPool2d(divisor_override) is not supported")
        return _IRNode(
            name,
            "avg_pool2d",
            inputs,
            {
                "kernel_size": _pair(m.kernel_size),
                "stride": _pair(m.stride or m.kernel_size),
                "padding": _pair(m.padding),
                "ceil_mode": bool(m.ceil_mode),
                "count_include_pad": bool(m.count_include_pad),
            },
        )
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = _pair(m.output_size)
        return _IRNode(name, "adaptive_avg_pool2d", inputs, {"output_size": size})
    if isinstance(m, nn.Flatten):
        return _IRNode(name, "flatten", inputs, {"start_dim": m.start_dim, "end_dim": m.end_dim})
    raise ExportError(f"{name}: module type {type(m).__name__} is not supported by the model format")


def _arg(node: fx.Node, index: int, key: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)


def _function_node(name: str, node: fx.Node, inputs: list[str]) -> _IRNode | None:
    fn: Any = node.target
    if node.op == "call_method":
        fn = {"add": operator.add, "relu": F.relu, "flatten": torch.flatten}.get(fn, fn)
    if fn in (operator.add, torch.add, operator.iadd):
        if len(inputs) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise ExportError(f"{name}: only the sum of two tensors is supported")
        return _IRNode(name, "add", inputs)
    if fn in (F.relu, torch.relu):
        return _IRNode(name, "relu", inputs)
    if fn is kernel.sign:
        return _IRNode(name, "sign", inputs)
    if fn is F.hardtanh:
        return _IRNode(
            name,
            "hardtanh",
            inputs,
            {"min_val": float(_arg(node, 1, "min_val", -1.0)), "max_val": float(_arg(node, 2, "max_val", 1.0))},
        )
    if fn is torch.flatten:
        return _IRNode(
            name,
            "flatten",
            inputs,
            {"start_dim": int(_arg(node, 1, "start_dim", 0)), "end_dim": int(_arg(node, 2, "end_dim", -1))},
        )
    if fn is F.adaptive_avg_pool2d:
        return _IRNode(name, "adaptive_avg_pool2d", inputs, {"output_size": _pair(_arg(node, 1, "output_size"))})
    if fn in (F.dropout, F.dropout2d):
        return None
    raise ExportError(
        f"{name}: {node.op} {getattr(fn, '__name__', fn)!r} is not supported by the model format "
        "(use the nn.Module form, e.g. nn.Flatten instead of view)"
    )


def _trace(model: nn.Module) -> tuple[list[_IRNode], str]:
    try:
        graph = _Tracer(autowrap_functions=(kernel.sign,)).trace(model)
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
        tensor_args = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
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


def _fold_batch_norm(nodes: list[_IRNode], output: str) -> tuple[list[_IRNode], str]:
    """Merge each BatchNorm into the conv/linear layer before it, where that layer feeds nothing else."""
    users: dict[str, int] = {}
    for n in nodes:
        for ref in n.inputs:
            users[ref] = users.get(ref, 0) + 1
    by_name = {n.name: n for n in nodes}
    renamed: dict[str, str] = {}
    result: list[_IRNode] = []
    for n in nodes:
        n.inputs = [renamed.get(r, r) for r in n.inputs]
        prev = by_name.get(n.inputs[0]) if n.op == "batch_norm" else None
        if (
            prev is not None
            and users.get(prev.name) == 1
            and prev.name != output
            and prev.op in ("conv2d", "linear", "binary_conv2d", "binary_linear")
        ):
            s, t = n.params["scale"], n.params["shift"]
            out_ch = prev.params["weight"].shape[0]
            if s.shape[0] == out_ch:
                if prev.op in ("conv2d", "linear"):
                    w = prev.params["weight"]
                    prev.params["weight"] = w * s.view(-1, *([1] * (w.dim() - 1)))
                    prev.params["bias"] = prev.params.get("bias", torch.zeros(out_ch)) * s + t
                else:  # binary: fold into the kernel's fused epilogue, y = conv * scale + bias
                    prev.params["scale"] = prev.params.get("scale", torch.ones(out_ch)) * s
                    prev.params["bias"] = prev.params.get("bias", torch.zeros(out_ch)) * s + t
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
        refs = {}
        for role, t in n.params.items():
            key = f"{n.name}.{role}"
            if role == "weight" and n.op in ("binary_conv2d", "binary_linear"):
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
