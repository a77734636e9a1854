"""ReActNet-A (``service.model.zoo``) in the model format: exported and loaded, its logits those of
the PyTorch BNN within float tolerance; its fusions (RSign folded into a binary conv's packing or
into the dual output of the conv before it, RPReLU in the conv's epilogue) bit for bit the graph run
node by node, on every instruction-set path this CPU has; the new ops' validation."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from service.export import ExportError, export_model
from service.kernel import BinaryConv2d, available_isas, get_num_threads, set_num_threads, use_isa
from service.model import ModelLoadError, load_model
from service.model.graph import Executor
from service.model.layers import RPReLU, RSign
from service.model.manifest import Node
from service.model.store import read_weights
from service.model.zoo import ReActNetA

from .conftest import SPEC, randomise

SPEC32 = dict(SPEC, height=32, width=32)
WIDTH = 0.125  # channels 4 -> 128: the last blocks' 1x1 convs read 2 words of 64 channels
ISAS = ("avx512", "avx2", "neon", "portable")


def _shifted(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial RSign and RPReLU parameters (they start at zero shifts), BatchNorm statistics."""
    return randomise(model, seed)


def _input(batch: int = 2, spec: dict = SPEC32, seed: int = 2) -> torch.Tensor:
    x = torch.randn(batch, 3, spec["height"], spec["width"], generator=torch.Generator().manual_seed(seed))
    x[0, :, :3] = 0.0  # exact zeros
    return x


def _load(model: nn.Module, folder, spec: dict = SPEC32):
    loaded = load_model(export_model(model, folder, "m", "1", spec, [str(i) for i in range(5)]))
    graph = loaded.manifest.graph
    tensors, _ = read_weights(loaded.folder, loaded.manifest)
    return loaded, Executor(graph.nodes, graph.output, tensors, fuse=False)


@pytest.fixture(scope="module")
def reactnet(tmp_path_factory):
    torch.manual_seed(5)
    model = _shifted(ReActNetA(binary=True, num_classes=5, width=WIDTH), 5)
    loaded, unfused = _load(model, tmp_path_factory.mktemp("reactnet") / "m")
    return model, loaded, unfused


def test_architecture_is_reactnet_a():
    full = ReActNetA()
    blocks = list(full.blocks)
    assert [(b.cin, b.cout, b.conv3.stride) for b in blocks] == [
        (32, 64, (1, 1)),
        (64, 128, (2, 2)),
        (128, 128, (1, 1)),
        (128, 256, (2, 2)),
        (256, 256, (1, 1)),
        (256, 512, (2, 2)),
        *[(512, 512, (1, 1))] * 5,
        (512, 1024, (2, 2)),
        (1024, 1024, (1, 1)),
    ]
    binary = [m for m in full.modules() if isinstance(m, BinaryConv2d)]
    assert len(binary) == 13 + 13 + 5  # a 3x3 per block, a 1x1 per block, a second 1x1 where channels double
    assert all(m.use_scale and m.pad_value == 0 for m in binary)
    twin = ReActNetA(binary=False)
    assert not any(isinstance(m, (BinaryConv2d, RSign)) for m in twin.modules())
    assert twin.fc.in_features == 1024 and twin.stem[0].stride == (2, 2)


def test_export_round_trip(reactnet):
    _, loaded, _ = reactnet
    ops = [n.op for n in loaded.manifest.graph.nodes]
    assert {"rsign", "rprelu", "concat", "binary_conv2d", "add", "avg_pool2d"} <= set(ops)
    assert "batch_norm" not in ops  # every BatchNorm folded (stem conv, binary conv epilogues)
    assert ops.count("rsign") == 26 and ops.count("rprelu") == 26 and ops.count("concat") == 5
    assert len(loaded.binary_layers) == 31
    # written and read back unchanged
    written = json.loads((loaded.folder / "model.json").read_text())["graph"]["nodes"]
    assert [n["attrs"] for n in written] == [n.attrs.model_dump(mode="json") for n in loaded.manifest.graph.nodes]
    assert {n["attrs"]["dim"] for n in written if n["op"] == "concat"} == {1}


def test_logits_match_pytorch(reactnet):
    model, loaded, unfused = reactnet
    x = _input()
    with torch.no_grad():
        expected = model(x)
    got = loaded.predict(x)
    # float stem and fc: torch's NCHW order of sums differs from the executor's channels-last one
    assert (got - expected).abs().max().item() < 1e-4
    assert (unfused.run(x) - expected).abs().max().item() < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_summary_lists_the_fusions(reactnet):
    _, loaded, unfused = reactnet
    summary = loaded.summary()
    nodes = loaded.manifest.graph.nodes
    rsigns = [n.name for n in nodes if n.op == "rsign"]
    # every RSign is computed by a packing: the conv's own after the stem and after a concat whose
    # halves do not start on a 16-channel block (blocks 0 and 1 at this width: 4 and 8 channels),
    # else the dual output of the step before it (after a concat: its halves' epilogues)
    assert list(summary["sign_shifts"]) == rsigns
    packing = {k for k, v in summary["sign_shifts"].items() if v.startswith("packing of ")}
    assert packing == {f"blocks.{i}.rsign3" for i in (0, 1, 2)}
    assert summary["sign_shifts"]["blocks.4.rsign3"] == "dual output of blocks.3.rprelu2"  # a concat step
    assert all(summary["sign_shifts"][k].startswith("dual output of ") for k in set(rsigns) - packing)
    # every block's first RPReLU is in its 3x3 conv's epilogue, with the residual sum; the second
    # in its 1x1 conv's, or where the block doubles its channels, in both halves' epilogues, which
    # write the concat in place
    fused_acts = {step for step, members in summary["fusions"].items() if members[-1].endswith("rprelu1")}
    assert fused_acts == {f"blocks.{i}.rprelu1" for i in range(13)}
    assert summary["fusions"]["blocks.3.rprelu1"] == ["blocks.3.conv3", "add_8", "blocks.3.rprelu1"]
    assert summary["fusions"]["blocks.0.rprelu1"] == ["blocks.0.rsign3", "blocks.0.conv3", "add", "blocks.0.rprelu1"]
    assert {f"blocks.{i}.rprelu2" for i in range(13)} <= set(summary["fusions"])
    assert summary["fusions"]["blocks.2.rprelu2"] == ["blocks.2.conv1", "add_7", "blocks.2.rprelu2"]
    assert summary["fusions"]["blocks.0.rprelu2"] == [
        *("blocks.0.conv1a", "add_1", "blocks.0.conv1b", "add_2"),
        *("cat", "blocks.0.rprelu2"),
    ]
    assert len(loaded.executor.steps) == 57  # (an RSign a dual output computes stays as a no-op step)
    assert all("output_shape" in layer for layer in summary["layers"])
    shapes = {layer["name"]: layer["output_shape"] for layer in summary["layers"]}
    assert shapes["blocks.0.rsign3"] == [1, 4, 16, 16] and shapes["blocks.12.rprelu2"] == [1, 128, 1, 1]
    assert shapes["blocks.0.conv1b"] == shapes["add_2"] == [1, 4, 16, 16] and shapes["cat"] == [1, 8, 16, 16]
    assert unfused.fusions == {} and unfused.sign_shifts == {} and unfused.dual_outputs == ()


@pytest.mark.parametrize("isa", ISAS)
def test_fused_equals_unfused_bit_for_bit(reactnet, isa):
    if isa not in available_isas():
        pytest.skip(f"{isa}: not on this CPU or not in this build")
    _, loaded, unfused = reactnet
    x = _input(3)
    threads = get_num_threads()
    try:
        for n in (1, 2):
            set_num_threads(n)
            with use_isa(isa):
                assert torch.equal(loaded.predict(x), unfused.run(x)), (isa, n)
    finally:
        set_num_threads(threads)


# ---- the other routes an RSign can take ---------------------------------------------------


class TwoReaders(nn.Module):
    """An RSign read by two binary convs after a float conv: one packing step for both."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 70, 3, padding=1)
        self.rsign = RSign(70)
        self.a = BinaryConv2d(70, 16, 3, padding=1, scale=True)
        self.b = BinaryConv2d(70, 16, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 16, 5))

    def forward(self, x):
        s = self.rsign(self.stem(x))
        return self.head(self.a(s) + self.b(s))


class TwoShifts(nn.Module):
    """One conv's output read by two RSigns: one set of packed bits cannot serve both."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.conv = BinaryConv2d(16, 16, 3, padding=1)
        self.rs1, self.rs2 = RSign(16), RSign(16)
        self.a = BinaryConv2d(16, 8, 1)
        self.b = BinaryConv2d(16, 8, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 5))

    def forward(self, x):
        y = self.conv(self.stem(x))
        return self.head(self.a(self.rs1(y)) + self.b(self.rs2(y)))


class FloatReader(nn.Module):
    """An RSign whose ±1 output a float op reads too: it stays a node of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.rsign = RSign(16)
        self.conv = BinaryConv2d(16, 16, 3, padding=1)
        self.act = RPReLU(16)  # after a sum whose other summand is not a conv's: not fused
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 16, 5))

    def forward(self, x):
        s = self.rsign(self.stem(x))
        return self.head(self.act(self.conv(s) + s))


@pytest.mark.parametrize(
    "make, sign_shifts",
    [
        (TwoReaders, {"rsign": "packing step"}),
        (TwoShifts, {"rs1": "packing step", "rs2": "packing step"}),
        (FloatReader, {}),
    ],
)
def test_rsign_routes_are_exact(make, sign_shifts, tmp_path):
    torch.manual_seed(3)
    model = _shifted(make(), 3)
    loaded, unfused = _load(model, tmp_path / "m", SPEC)
    assert loaded.summary()["sign_shifts"] == sign_shifts
    x = _input(2, SPEC)
    with torch.no_grad():
        expected = model(x)
    for isa in available_isas():
        with use_isa(isa):
            got = loaded.predict(x)
            assert torch.equal(got, unfused.run(x)), isa
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# ---- validation ----------------------------------------------------------------------------


def _node(op: str, attrs: dict, params: dict, inputs: list[str] | None = None) -> dict:
    return {"name": "r", "op": op, "inputs": inputs or ["input"], "attrs": attrs, "params": params}


RPRELU_PARAMS = {"shift_in": "a", "slope": "b", "shift_out": "c"}


@pytest.mark.parametrize(
    "node, problem",
    [
        (_node("rsign", {}, {"shift": "t"}), "node 'r' (rsign): missing attribute 'channels'"),
        (
            _node("rsign", {"channels": 0}, {"shift": "t"}),
            "attribute 'channels': Input should be greater than or equal to 1",
        ),
        (
            _node("rsign", {"channels": "4"}, {"shift": "t"}),
            "attribute 'channels': Input should be a valid integer, got '4'",
        ),
        (
            _node("rsign", {"channels": 4, "threshold": 1}, {"shift": "t"}),
            "node 'r' (rsign): unknown attributes ['threshold']",
        ),
        (_node("rsign", {"channels": 4}, {}), "node 'r' (rsign): missing parameter 'shift'"),
        (
            _node("rprelu", {"channels": 4}, {"shift_in": "a", "slope": "b"}),
            "node 'r' (rprelu): missing parameter 'shift_out'",
        ),
        (
            _node("rprelu", {"channels": 4}, {**RPRELU_PARAMS, "weight": "w"}),
            "node 'r' (rprelu): unknown parameters ['weight']",
        ),
        (
            _node("rprelu", {"channels": 4}, RPRELU_PARAMS, ["input", "input"]),
            "node 'r' (rprelu): takes 1 input(s), got 2",
        ),
        (_node("concat", {}, {}, ["input", "input"]), "node 'r' (concat): missing attribute 'dim'"),
        (
            _node("concat", {"dim": 1.0}, {}, ["input", "input"]),
            "attribute 'dim': Input should be a valid integer, got 1.0",
        ),
        (_node("concat", {"dim": 1}, {}), "node 'r' (concat): takes 2 input(s), got 1"),
    ],
)
def test_malformed_nodes_are_refused_naming_the_node(node, problem):
    with pytest.raises(ValidationError) as info:
        Node.model_validate(node)
    assert problem in str(info.value)


def _rewrite(folder, edit) -> None:
    """Replace tensors in the weights file, declared and checksummed as written (only the intended fault remains)."""
    tensors = load_file(str(folder / "weights.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "weights.safetensors"))
    data = json.loads((folder / "model.json").read_text())
    data["weights"]["sha256"] = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    data["weights"]["tensors"] = {
        k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)} for k, t in tensors.items()
    }
    (folder / "model.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "tensor, value, problem",
    [
        (
            "rsign.shift",
            torch.zeros(69),
            "node 'rsign' (rsign): parameter 'shift' (tensor 'rsign.shift') must have shape [70], got [69]",
        ),
        (
            "rsign.shift",
            torch.zeros(70, dtype=torch.uint8),
            "parameter 'shift' (tensor 'rsign.shift') must be torch.float32, got torch.uint8",
        ),
    ],
)
def test_parameters_that_do_not_fit_are_refused(tmp_path, tensor, value, problem):
    model = _shifted(TwoReaders(), 0)
    folder = export_model(model, tmp_path / "m", "m", "1", SPEC, [str(i) for i in range(5)])
    _rewrite(folder, lambda t: t.__setitem__(tensor, value))
    with pytest.raises(ModelLoadError, match="rsign") as info:
        load_model(folder)
    assert problem in str(info.value)


def test_rprelu_parameters_must_match_its_channels(tmp_path):
    model = _shifted(FloatReader(), 0)
    folder = export_model(model, tmp_path / "m", "m", "1", SPEC, [str(i) for i in range(5)])
    _rewrite(folder, lambda t: t.__setitem__("act.slope", torch.zeros(8)))
    with pytest.raises(ModelLoadError) as info:
        load_model(folder)
    assert "node 'act' (rprelu): parameter 'slope' (tensor 'act.slope') must have shape [16], got [8]" in str(
        info.value
    )


class ThreeWayCat(nn.Module):
    def forward(self, x):
        return torch.flatten(torch.cat([x, x, x], dim=1), 1)


def test_export_refuses_a_concat_of_three(tmp_path):
    with pytest.raises(ExportError, match="cat: only the concatenation of two tensors is supported"):
        export_model(ThreeWayCat(), tmp_path / "m", "m", "1", SPEC, ["a"])
