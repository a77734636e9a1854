"""The op registry: every op exports, reads back and runs; malformed nodes are refused when the
manifest is read, naming the node; and an op declared in one place is enough to export and serve it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from service.export import ExportError, export_model
from service.kernel import BinaryConv2d, sign
from service.model import load_model
from service.model.layers import BinaryLinear, RPReLU, RSign
from service.model.manifest import Node
from service.model.ops import (
    Attrs,
    Build,
    Built,
    Call,
    Exported,
    OpSpec,
    Param,
    as_float,
    op_spec,
    register,
    registered_ops,
    unregister,
)

from .conftest import SPEC, randomise

SMALL = dict(SPEC, height=8, width=8)


class _Sign(nn.Module):
    def forward(self, x):
        return sign(x)


class _Residual(nn.Module):
    def forward(self, x):
        return x + torch.relu(x)


class _Concat(nn.Module):
    def forward(self, x):
        return torch.cat([x, torch.relu(x)], dim=1)


def _shifted(module: nn.Module) -> nn.Module:
    """RSign / RPReLU with random parameters (they start at zero shifts)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


# One small network per op (each ends in a flatten, so every output element is a class).
NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "conv2d": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2)), nn.Flatten()),
    "binary_conv2d": lambda: nn.Sequential(
        BinaryConv2d(3, 70, 3, stride=2, padding=1, pad_value=-1, scale=True, bias=True), nn.Flatten()
    ),
    "linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)),
    "binary_linear": lambda: nn.Sequential(nn.Flatten(), BinaryLinear(3 * 8 * 8, 5, bias=True, scale=True)),
    "batch_norm": lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Flatten()),
    "sign": lambda: nn.Sequential(_Sign(), nn.Flatten()),
    "relu": lambda: nn.Sequential(nn.ReLU(), nn.Flatten()),
    "hardtanh": lambda: nn.Sequential(nn.Hardtanh(-0.5, 0.25), nn.Flatten()),
    "prelu": lambda: nn.Sequential(nn.PReLU(3), nn.Flatten()),
    "max_pool2d": lambda: nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Flatten()),
    "avg_pool2d": lambda: nn.Sequential(nn.AvgPool2d(2, padding=1, count_include_pad=False), nn.Flatten()),
    "adaptive_avg_pool2d": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten()),
    "flatten": lambda: nn.Flatten(),
    "add": lambda: nn.Sequential(_Residual(), nn.Flatten()),
    "rsign": lambda: nn.Sequential(_shifted(RSign(3)), nn.Flatten()),
    "rprelu": lambda: nn.Sequential(_shifted(RPReLU(3)), nn.Flatten()),
    "concat": lambda: nn.Sequential(_Concat(), nn.Flatten()),
}


def _export_and_load(model: nn.Module, folder, spec: dict = SMALL):
    x = torch.randn(2, spec["channels"], spec["height"], spec["width"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    labels = [str(i) for i in range(expected.shape[1])]
    return load_model(export_model(model, folder, "m", "1", spec, labels)), x, expected


def test_every_op_has_a_network_here():
    assert set(NETWORKS) == set(registered_ops())


@pytest.mark.parametrize("op", sorted(NETWORKS))
def test_every_op_round_trips(tmp_path, op):
    """export -> model.json -> load: the op is in the graph, its attributes read back as written,
    and the loaded graph computes what the module does."""
    torch.manual_seed(0)
    model = randomise(NETWORKS[op]())
    loaded, x, expected = _export_and_load(model, tmp_path / "m")
    nodes = [n for n in loaded.manifest.graph.nodes if n.op == op]
    assert nodes, f"{op} not in {[n.op for n in loaded.manifest.graph.nodes]}"
    written = json.loads((tmp_path / "m" / "model.json").read_text())["graph"]["nodes"]
    assert [n["attrs"] for n in written] == [n.attrs.model_dump(mode="json") for n in loaded.manifest.graph.nodes]
    for node in nodes:
        assert isinstance(node.attrs, op_spec(op).attrs)
    got = loaded.predict(x)
    if op in ("binary_conv2d", "sign", "rsign", "rprelu", "concat"):  # the kernel, or the same torch ops
        assert torch.equal(got, expected)  # the kernel is exact
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert set(loaded.binary_layers) == {n.name for n in nodes if op_spec(op).binary}


def test_every_op_has_a_matcher_or_is_load_only():
    for name in registered_ops():
        spec = op_spec(name)
        assert spec.load_only or spec.modules or spec.from_call, name
        assert not (spec.load_only and (spec.modules or spec.from_call)), name


def test_call_forms_export_as_the_module_forms(tmp_path):
    class Calls(nn.Module):
        def forward(self, x):
            x = F.hardtanh(x, -0.5, max_val=2.0)
            x = x.add(x.relu()) + F.relu(x)
            x = F.adaptive_avg_pool2d(F.dropout(x, training=self.training), 4)
            return torch.flatten(sign(x), 1)

    loaded, x, expected = _export_and_load(Calls().eval(), tmp_path / "calls")
    ops = [n.op for n in loaded.manifest.graph.nodes]
    assert ops == ["hardtanh", "relu", "add", "relu", "add", "adaptive_avg_pool2d", "sign", "flatten"]
    assert torch.equal(loaded.predict(x), expected)


def test_export_names_the_node_it_cannot_express(tmp_path):
    with pytest.raises(ExportError, match=r"^2: max_pool2d attribute kernel_size must be >= 1"):
        export_model(nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(2), nn.MaxPool2d(0)), tmp_path / "z", "z", "1",
                     SMALL, ["a"])
    with pytest.raises(ExportError, match="view"):
        export_model(_View(), tmp_path / "v", "v", "1", SMALL, ["a"])


class _View(nn.Module):
    def forward(self, x):
        return x.view(x.shape[0], -1)


# ---- manifest-time validation ------------------------------------------------------------


def _node(**changes) -> dict:
    node = {
        "name": "c",
        "op": "conv2d",
        "inputs": ["input"],
        "attrs": {"in_channels": 3, "out_channels": 4, "kernel_size": [3, 3], "stride": 1, "padding": [1, 0]},
        "params": {"weight": "c.weight"},
    }
    node.update(changes)
    return node


def _attrs(**changes) -> dict:
    return dict(_node()["attrs"], **changes)


def test_node_attrs_are_typed_by_the_op():
    node = Node.model_validate(_node())
    assert type(node.attrs).__name__ == "Conv2dAttrs"
    assert (node.attrs.stride, node.attrs.padding, node.attrs.dilation) == ((1, 1), (1, 0), (1, 1))
    assert node.attrs.geometry().padding == (1, 0)
    # written back as given: defaults stay out, an int stays an int's pair
    assert node.model_dump(mode="json")["attrs"] == {
        "in_channels": 3, "out_channels": 4, "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 0]}


@pytest.mark.parametrize(
    "node, problem",
    [
        (_node(op="gelu"), "node 'c': unknown op 'gelu' (known: ["),
        (_node(attrs=_attrs(inplace=True)), "node 'c' (conv2d): unknown attributes ['inplace']"),
        (_node(attrs=_attrs(in_channels="3")), "attribute 'in_channels': Input should be a valid integer, got '3'"),
        (_node(attrs=_attrs(in_channels=True)), "attribute 'in_channels': Input should be a valid integer, got True"),
        (_node(attrs=_attrs(in_channels=3.0)), "attribute 'in_channels': Input should be a valid integer, got 3.0"),
        (_node(attrs=_attrs(out_channels=0)), "attribute 'out_channels': Input should be greater than or equal to 1"),
        (_node(attrs=_attrs(stride=[0, 1])), "node 'c' (conv2d): attribute stride must be >= 1, got [0, 1]"),
        (_node(attrs=_attrs(padding=[1, 2, 3])), "padding must be an int or a pair of ints, got [1, 2, 3]"),
        (_node(attrs=_attrs(dilation=[1, True])), "dilation must be an int or a pair of ints"),
        (_node(attrs=_attrs(groups=2)), "groups=2 must divide in_channels=3 and out_channels=4"),
        (_node(attrs={"in_channels": 3, "out_channels": 4}), "missing attribute 'kernel_size'"),
        (_node(attrs=[3, 4]), "node 'c' (conv2d): attrs must be an object, got list"),
        (_node(op="hardtanh", attrs={"min_val": 1, "max_val": 0.5}, params={}), "min_val 1.0 must be < max_val 0.5"),
        (_node(op="max_pool2d", attrs={"kernel_size": 2, "ceil_mode": 1}, params={}),
         "attribute 'ceil_mode': Input should be a valid boolean, got 1"),
        (_node(op="binary_conv2d", attrs=_attrs(pad_value=2)), "pad_value must be -1, 0 or 1, got 2"),
        (_node(inputs=["input", "input"]), "node 'c' (conv2d): takes 1 input(s), got 2"),
        (_node(op="add", attrs={}, params={}), "node 'c' (add): takes 2 input(s), got 1"),
        (_node(params={"weight": "w", "gamma": "g"}), "node 'c' (conv2d): unknown parameters ['gamma']"),
        (_node(params={}), "node 'c' (conv2d): missing parameter 'weight'"),
    ],
)
def test_malformed_nodes_are_refused_naming_the_node(node, problem):
    with pytest.raises(ValidationError) as info:
        Node.model_validate(node)
    assert problem in str(info.value)


# ---- one declaration is enough -----------------------------------------------------------


class ScaleShift(nn.Module):
    """y = x * factor + shift[c]: a module no op knows, until the test declares one."""

    def __init__(self, channels: int, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.shift = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        return x * self.factor + self.shift.view(1, -1, 1, 1)


def scale_shift(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The function form (no shift), traced as a call."""
    return x * factor


class ScaleShiftAttrs(Attrs):
    channels: int = 0
    factor: float


def _build(b: Build[ScaleShiftAttrs]) -> Built:
    factor, shift = b.attrs.factor, b.params.get("shift")
    if shift is None:
        return Built(lambda x: x * factor)
    return Built(lambda x: x * factor + shift.view(1, -1, 1, 1))


def _from_module(m: ScaleShift) -> Exported:
    return Exported(ScaleShiftAttrs(channels=m.shift.shape[0], factor=m.factor), {"shift": as_float(m.shift)})


def _from_call(call: Call) -> Exported:
    return Exported(ScaleShiftAttrs(factor=float(call.arg(1, "factor"))))


TOY = OpSpec(
    "scale_shift",
    ScaleShiftAttrs,
    _build,
    params=(Param("shift", torch.float32, lambda a: (a.channels,), optional=True),),
    modules={ScaleShift: _from_module},
    functions=(scale_shift,),
    from_call=_from_call,
)


@pytest.fixture
def toy_op() -> Iterator[OpSpec]:
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


class _UsesToy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = ScaleShift(4, 2.5)
        self.flat = nn.Flatten()

    def forward(self, x):
        return self.flat(scale_shift(self.scale(self.conv(x)), 0.5))


def test_an_op_declared_in_one_place_exports_loads_and_runs(tmp_path, toy_op):
    assert "scale_shift" in registered_ops()
    model = _UsesToy().eval()
    loaded, x, expected = _export_and_load(model, tmp_path / "toy")
    nodes = [n for n in loaded.manifest.graph.nodes if n.op == "scale_shift"]
    assert [n.name for n in nodes] == ["scale", "scale_shift"]
    assert nodes[0].attrs.model_dump() == {"channels": 4, "factor": 2.5}
    assert set(nodes[0].params) == {"shift"} and nodes[1].params == {}
    torch.testing.assert_close(loaded.predict(x), expected)


def test_without_its_declaration_the_op_is_unknown(tmp_path):
    # not a leaf without its op: traced into, down to a call nothing claims
    with pytest.raises(ExportError, match="'mul' is not supported by the model format"):
        export_model(_UsesToy().eval(), tmp_path / "toy", "m", "1", SMALL, ["a"])
    with pytest.raises(ValidationError, match="unknown op 'scale_shift'"):
        Node.model_validate({"name": "s", "op": "scale_shift", "inputs": ["input"], "attrs": {"factor": 1.0}})


def test_registration_refuses_clashes(toy_op):
    with pytest.raises(ValueError, match="already registered"):
        register(TOY)
    with pytest.raises(ValueError, match="module type Conv2d is already claimed by op 'conv2d'"):
        register(OpSpec("other", ScaleShiftAttrs, _build, modules={nn.Conv2d: _from_module}))
    with pytest.raises(ValueError, match="already claimed by a pass-through"):
        register(OpSpec("other", ScaleShiftAttrs, _build, modules={nn.Dropout: _from_module}))
    with pytest.raises(ValueError, match="give a matcher"):
        register(OpSpec("other", ScaleShiftAttrs, _build))
    assert op_spec("other") is None


def test_a_load_only_op_is_read_but_never_exported():
    spec = register(OpSpec("toy_load_only", ScaleShiftAttrs, _build, load_only=True))
    try:
        node = Node.model_validate({"name": "s", "op": "toy_load_only", "inputs": ["input"], "attrs": {"factor": 2}})
        assert node.attrs.factor == 2.0
        x = torch.randn(2, 3)
        torch.testing.assert_close(spec.make("s", node.attrs, 1, {}, {}).fn(x), x * 2)
    finally:
        unregister("toy_load_only")


class _PlainSubclass(BinaryConv2d):
    """Computes what BinaryConv2d does: exported as one."""


class _Doubled(nn.Conv2d):
    """Its own forward: not a conv2d node, so traced into (and refused)."""

    def forward(self, x):
        return super().forward(x) * 2


def test_a_subclass_is_its_registered_type_unless_it_overrides_forward(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(_PlainSubclass(3, 8, 3, padding=1), nn.ReLU6(), nn.Flatten()).eval()
    loaded, x, expected = _export_and_load(model, tmp_path / "sub")
    assert [n.op for n in loaded.manifest.graph.nodes] == ["binary_conv2d", "hardtanh", "flatten"]
    assert torch.equal(loaded.predict(x), expected)
    with pytest.raises(ExportError, match="not supported"):
        export_model(nn.Sequential(_Doubled(3, 4, 3), nn.Flatten()), tmp_path / "d", "d", "1", SMALL, ["a"])
