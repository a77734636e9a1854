"""Export -> load gives the PyTorch model's scores; the loaded model's API."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from PIL import Image
from torch import nn

from service.export import ExportError, export_model
from service.export import main as export_main
from service.kernel import BinaryConv2d, pack_weights, packed_bits, sign
from service.model import LoadedModel, ModelStore, load_model
from service.model.ops import registered_ops

from .conftest import LABELS, SPEC, make_every_op, randomise


def test_every_op_round_trip(exported):
    model, folder = exported
    loaded = load_model(folder)
    ops = {n.op for n in loaded.manifest.graph.nodes}
    assert ops == set(registered_ops()), f"ops not exercised: {set(registered_ops()) - ops}"
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    got = loaded.predict(x)
    assert got.shape == (6, len(LABELS)) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_batch_norm_is_folded(exported):
    _, folder = exported
    nodes = {n.name: n for n in load_model(folder).manifest.graph.nodes}
    assert "stem_bn" not in nodes and "bn1" not in nodes and "bn_lin" not in nodes and "down.bn" not in nodes
    assert nodes["bn_standalone"].op == "batch_norm"           # follows an add: kept
    assert set(nodes["bconv"].params) == {"weight", "scale", "bias"}
    assert "drop" not in nodes


def test_binary_layers_are_exact_and_packed(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(
        BinaryConv2d(3, 64, 3, padding=1, pad_value=-1), BinaryConv2d(64, 130, 3, stride=2, padding=1, dilation=1),
        BinaryConv2d(130, 8, 2, dilation=2, pad_value=1), nn.Flatten(),
    ).eval()
    spec = dict(SPEC, height=9, width=9)
    loaded = load_model(export_model(model, tmp_path / "m", "m", "1", spec, [str(i) for i in range(8 * 3 * 3)]))
    x = torch.randn(4, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(loaded.predict(x), model(x))            # bit-exact
    layers = loaded.binary_layers
    assert list(layers) == ["0", "1", "2"]
    for name, module in zip(layers, model):
        layer = layers[name]
        assert torch.equal(packed_bits(layer.weights), packed_bits(pack_weights(module.weight)))
        g = layer.geometry
        assert (g.stride, g.padding, g.dilation, g.pad_value) == (
            module.stride, module.padding, module.dilation, module.pad_value)
        assert layer.weights.in_channels == module.in_channels and layer.weights.out_channels == module.out_channels
    # 64 and 128 input channels fill whole 64-bit words: exactly 32x smaller than float32
    assert layers["1"].float_size_bytes / layers["1"].weights.nbytes == 32
    sizes = loaded.summary()["sizes"]
    assert sizes["binary_weights_float_bytes"] / sizes["binary_weights_packed_bytes"] > 20  # 3 input channels waste a word
    assert loaded.packed_size_bytes == sizes["packed_size_bytes"] < sizes["float_size_bytes"] / 20


def test_loaded_model_api(exported):
    _, folder = exported
    store = ModelStore.load(folder.parent)
    assert store.errors == {} and list(store.models) == ["good"]
    m = store.models["good"]
    assert isinstance(m, LoadedModel)
    assert (m.name, m.version, m.labels, m.num_classes) == ("good", "1.2.3", LABELS, 5)
    assert (m.input.channels, m.input.height, m.input.width, m.input.resize) == (3, 16, 16, "stretch")
    assert m.input.mean == SPEC["mean"] and m.input.std == SPEC["std"] and m.input.invert is False
    summary = json.loads(json.dumps(m.summary()))
    assert summary["name"] == "good" and summary["labels"] == LABELS
    assert next(layer["name"] for layer in summary["layers"]) == "stem"
    assert summary["layers"][-1]["output_shape"] == [1, 5]
    assert summary["sizes"]["packed_size_bytes"] == m.packed_size_bytes


@pytest.mark.parametrize(
    "batch, problem",
    [
        (torch.zeros(3, 16, 16), "shape"),
        (torch.zeros(2, 1, 16, 16), "shape"),
        (torch.zeros(2, 3, 16, 15), "shape"),
        (torch.zeros(0, 3, 16, 16), "shape"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.int64), "floating"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_predict_rejects_bad_batches(exported, batch, problem):
    m = load_model(exported[1])
    with pytest.raises(ValueError, match=problem):
        m.predict(batch)


def test_predict_is_thread_safe(exported):
    m = load_model(exported[1])
    x = torch.randn(3, 3, 16, 16)
    expected = m.predict(x)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(m.predict(x))
        except Exception as e:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20
    assert all(torch.equal(r, expected) for r in results)


def test_preprocess(tmp_path, every_op_model):
    folder = export_model(every_op_model, tmp_path / "m", "m", "1", SPEC, LABELS)
    m = load_model(folder)
    img = Image.new("RGB", (40, 20), (255, 0, 128))
    x = m.preprocess(img)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(SPEC["mean"])) / torch.tensor(SPEC["std"])
    torch.testing.assert_close(x[:, 8, 8], expected)
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))                  # fully transparent -> white
    torch.testing.assert_close(m.preprocess(rgba)[:, 0, 0], (1 - torch.tensor(SPEC["mean"])) / torch.tensor(SPEC["std"]))
    assert m.preprocess(Image.new("L", (5, 70))).shape == (3, 16, 16)  # grey converted to RGB

    gray = dict(SPEC, channels=1, mean=[0.5], std=[0.5], invert=True, resize="fit")
    model1 = randomise(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)))
    g = load_model(export_model(model1, tmp_path / "g", "g", "1", gray, LABELS))
    y = g.preprocess(Image.new("RGB", (32, 8), (255, 255, 255)))    # white, letterboxed with black
    assert y.shape == (1, 16, 16)
    assert y[0, 8, 8].item() == pytest.approx((0.0 - 0.5) / 0.5)      # white inverted
    assert y[0, 0, 8].item() == pytest.approx((1.0 - 0.5) / 0.5)      # black padding inverted
    c = load_model(export_model(model1, tmp_path / "c", "c", "1", dict(gray, resize="center_crop"), LABELS))
    assert c.preprocess(Image.new("L", (64, 16))).shape == (1, 16, 16)
    n = load_model(export_model(model1, tmp_path / "n", "n", "1", dict(gray, resize="none"), LABELS))
    assert n.preprocess(Image.new("L", (16, 16))).shape == (1, 16, 16)
    with pytest.raises(ValueError, match="exactly 16x16"):
        n.preprocess(Image.new("L", (17, 16)))


def test_export_rejects_unsupported_modules(tmp_path):
    with pytest.raises(ExportError, match="Sigmoid"):
        export_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid()), tmp_path / "x", "x", "1", SPEC, LABELS)
    with pytest.raises(ExportError, match="grouped"):
        export_model(nn.Sequential(BinaryConv2d(4, 4, 3, groups=2)), tmp_path / "y", "y", "1", dict(SPEC, channels=3), LABELS)


def test_export_cli(tmp_path):
    from safetensors.torch import save_file

    model = make_every_op()
    state = tmp_path / "state.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(state))
    out = tmp_path / "store" / "cli"
    assert export_main(["--model", "tests.model.conftest:make_every_op", "--state", str(state), "--out", str(out),
                        "--name", "cli", "--version", "2", "--input", json.dumps(SPEC), "--labels", ",".join(LABELS)]) == 0
    loaded = load_model(out)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(x), model(x), rtol=1e-4, atol=1e-4)


def test_shipped_model_runs_channels_last_throughout(monkeypatch):
    """Every 4-D activation of the shipped model is NHWC in memory, from the 1-channel input on
    (for C = 1 torch cannot tell the layouts apart and would run the stem, pools and PReLUs NCHW,
    about 3x slower at batch 32)."""
    import dataclasses

    from tests.tiny_model import REPO

    model = load_model(REPO / "model_store" / "fashion-mnist-bnn")
    nhwc: dict[str, bool] = {}

    def recording(step):
        def fn(*args):
            out = step.fn(*args)
            floats = out[0] if step.dual else out  # a dual output: (floats, packed bits)
            if floats.dim() == 4:
                nhwc[step.name] = floats.stride()[1] == 1 and floats.shape[1] > 1
            return out
        return dataclasses.replace(step, fn=fn)

    monkeypatch.setattr(model.executor, "steps", [recording(s) for s in model.executor.steps])
    model.predict(torch.randn(3, 1, 28, 28))
    assert len(nhwc) >= 10 and all(nhwc.values()), nhwc


class _Branches(nn.Module):
    """a feeds two binary convs through sign (fusable: one padding); d feeds a binary conv and a
    ReLU (a dual output: the ReLU needs floats); k feeds binary convs of two paddings (not fusable)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = BinaryConv2d(3, 70, 3, padding=1, scale=True, bias=True)
        self.b = BinaryConv2d(70, 16, 3, padding=1, pad_value=-1)
        self.c = BinaryConv2d(70, 16, 3, padding=1, pad_value=1)
        self.d = BinaryConv2d(16, 16, 1, bias=True)
        self.e = BinaryConv2d(16, 16, 3, padding=1)
        self.k = BinaryConv2d(16, 8, 1, scale=True)
        self.f = BinaryConv2d(8, 8, 3, padding=1)
        self.g = BinaryConv2d(8, 8, 1)

    def forward(self, x):
        y = sign(self.a(x))
        d = self.d(self.b(y) + self.c(y))
        k = self.k(self.e(d) + torch.relu(d))
        return torch.flatten(self.f(k) + self.g(k), 1)


def test_binary_convs_hand_packed_bits_to_binary_convs(tmp_path):
    """A binary conv read only by binary convs (directly or through sign) writes their packed input
    in its epilogue; the output is bit for bit the unfused one's, and the torch model's."""
    from service.model.graph import Executor
    from service.model.store import read_weights

    spec = dict(SPEC, height=10, width=10)
    torch.manual_seed(5)
    chain = nn.Sequential(BinaryConv2d(3, 70, 3, padding=1, scale=True, bias=True),
                          BinaryConv2d(70, 130, 3, padding=1, stride=2, pad_value=-1),
                          BinaryConv2d(130, 16, 1, bias=True), nn.ReLU(), BinaryConv2d(16, 8, 3, padding=1),
                          nn.Flatten()).eval()
    branches = randomise(_Branches(), 5)
    for model, n_out, fused in ((chain, 200, ("0", "1")), (branches, 800, ("a",))):  # chain: "2" feeds a ReLU
        folder = export_model(model, tmp_path / fused[0], "m", "1", spec, [str(i) for i in range(n_out)])
        loaded = load_model(folder)
        assert loaded.executor.packed_outputs == fused
        assert loaded.summary()["packed_outputs"] == list(fused)
        graph = loaded.manifest.graph
        tensors, _ = read_weights(loaded.folder, loaded.manifest)
        unfused = Executor(graph.nodes, graph.output, tensors, fuse=False)
        assert unfused.packed_outputs == ()
        x = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(2))
        x[0, :, :2] = 0.0  # exact zeros are +1
        with torch.no_grad():
            expected = model(x)
        assert torch.equal(loaded.predict(x), expected)
        assert torch.equal(unfused.run(x), expected)
