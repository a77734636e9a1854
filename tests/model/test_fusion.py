"""The executor's fusions (a binary conv's residual sum and activation in its epilogue; channel
concats written in place; packed and dual outputs) give bit for bit the unfused graph's output, and
the PyTorch model's, on chains, branches and residual blocks; the model summary lists them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from service.export import export_model
from service.kernel import BinaryConv2d, available_isas, use_isa
from service.model import load_model
from service.model.graph import Executor
from service.model.store import read_weights

from .conftest import SPEC, randomise


class ResidualBlock(nn.Module):
    """The shipped model's block: prelu(bn(binary conv) + shortcut), the shortcut an identity or a
    1x1 float conv (computed after the binary conv in the graph's order)."""

    def __init__(self, cin: int, cout: int, prelu_params: int) -> None:
        super().__init__()
        self.conv = BinaryConv2d(cin, cout, 3, padding=1, scale=True)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(prelu_params)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class BiRealBlock(nn.Module):
    """Bi-Real-Net's block: bn(binary conv) + shortcut, no activation; downsampling with avgpool +
    1x1 conv + BN; the residual first in the sum (add(shortcut, conv))."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = BinaryConv2d(cin, cout, 3, stride=stride, padding=1, pad_value=1)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.AvgPool2d(stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return self.shortcut(x) + self.bn(self.conv(x))


class Net(nn.Module):
    def __init__(self, blocks: list[nn.Module], channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, blocks_in(blocks), 3, padding=1)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def blocks_in(blocks: list[nn.Module]) -> int:
    return blocks[0].conv.in_channels


class BroadcastResidual(nn.Module):
    """A sum the fused path cannot take (the residual broadcasts): the separate ops run."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.conv = BinaryConv2d(16, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.act = nn.PReLU(16)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 16, 5))

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.act(self.conv(x) + self.gap(x)))


class TwoConvSum(nn.Module):
    """prelu(binary conv + binary conv): the first conv takes the sum and the PReLU, the second is
    its residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.a = BinaryConv2d(16, 16, 3, padding=1, scale=True)
        self.b = BinaryConv2d(16, 16, 1, bias=True)
        self.act = nn.PReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 16, 5))

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.act(self.a(x) + self.b(x)))


class StemNet(nn.Module):
    """Bi-Real's stem (conv, BN, ReLU, max pool: the relu fused into the pooling), one block, and a
    second ReLU read twice (by a max pool and by the sum: in the block's epilogue, as the sum's only
    reader)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        self.block = BiRealBlock(16, 16, 1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        y = self.relu(self.block(self.stem(x)))
        return self.head(self.pool(y) + y)


class Clamps(nn.Module):
    """Activations with no residual sum: binary conv -> hardtanh read only by a binary conv (a dual
    output, not a packed one: the bits are of the clamped values), binary conv -> relu, and a
    residual sum -> ReLU6 (a clamp to [0, 6])."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 1)
        self.a = BinaryConv2d(16, 24, 3, padding=1, scale=True)
        self.bn_a = nn.BatchNorm2d(24)
        self.ht = nn.Hardtanh(-0.5, 0.25)
        self.b = BinaryConv2d(24, 16, 3, padding=1, pad_value=1)
        self.bn_b = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.c = BinaryConv2d(16, 16, 1)
        self.relu6 = nn.ReLU6()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        x = self.stem(x)
        y = self.relu(self.bn_b(self.b(self.ht(self.bn_a(self.a(x))))))
        return self.head(self.relu6(self.c(y) + y))


class Doubled(nn.Module):
    """ReActNet-A's doubling block's second half: cat(bn(conv a) + x, bn(conv b) + x) -> an
    activation over the concat (RPReLU, a single-slope PReLU, per-channel PReLU), read through an
    RSign by two binary convs and by a float conv; then a concat with no activation after it, and a
    concat of a binary and a float conv (not written in place). With halves of 16 channels the
    first concat also writes the RSign's packed bits (a dual output); with 20 it cannot (a
    16-channel block would straddle the halves)."""

    def __init__(self, act: str, c: int = 20) -> None:
        super().__init__()
        from service.model.layers import RPReLU, RSign

        self.stem = nn.Conv2d(3, c, 1)
        self.rsign = RSign(c)
        self.a = BinaryConv2d(c, c, 1, scale=True)
        self.bn_a = nn.BatchNorm2d(c)
        self.b = BinaryConv2d(c, c, 1, scale=True)
        self.bn_b = nn.BatchNorm2d(c)
        self.act = {"rprelu": lambda: RPReLU(2 * c), "prelu1": nn.PReLU, "prelu": lambda: nn.PReLU(2 * c)}[act]()
        self.rsign2 = RSign(2 * c)
        self.c = BinaryConv2d(2 * c, 8, 3, padding=1)
        self.d = BinaryConv2d(2 * c, 8, 3, stride=1, padding=1, bias=True)
        self.e = BinaryConv2d(16, 8, 1)
        self.f = nn.Conv2d(16, 8, 1)
        self.g = nn.Conv2d(2 * c, 16, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        x = self.stem(x)
        s = self.rsign(x)
        y = self.act(torch.cat([self.bn_a(self.a(s)) + x, self.bn_b(self.b(s)) + x], dim=1))
        t = self.rsign2(y)
        z = torch.cat([self.c(t), self.d(t)], dim=1)
        return self.head(torch.cat([self.e(z), self.f(z)], dim=1) + self.g(y))


def shipped_like() -> nn.Module:
    return Net(
        [ResidualBlock(16, 16, 16), ResidualBlock(16, 70, 70), ResidualBlock(70, 70, 1), ResidualBlock(70, 70, 70)], 70
    )


def bireal_like() -> nn.Module:
    return Net([BiRealBlock(16, 16, 1), BiRealBlock(16, 16, 1), BiRealBlock(16, 70, 2), BiRealBlock(70, 70, 1)], 70)


MODELS = {
    # name: (model, the fusions the executor must choose, the dual outputs)
    "residual_prelu": (
        shipped_like,
        {
            "blocks.0.act": ["blocks.0.conv", "add", "blocks.0.act"],
            "blocks.1.act": ["blocks.1.conv", "add_1", "blocks.1.act"],
            "blocks.2.act": ["blocks.2.conv", "add_2", "blocks.2.act"],
            "blocks.3.act": ["blocks.3.conv", "add_3", "blocks.3.act"],
        },
        ("blocks.0.act", "blocks.1.act", "blocks.2.act"),
    ),
    "bireal": (
        bireal_like,
        {
            "add": ["blocks.0.conv", "add"],
            "add_1": ["blocks.1.conv", "add_1"],
            "add_2": ["blocks.2.conv", "add_2"],
            "add_3": ["blocks.3.conv", "add_3"],
        },
        ("add", "add_1", "add_2"),
    ),
    "broadcast": (BroadcastResidual, {"act": ["conv", "add", "act"]}, ()),
    "stem": (StemNet, {"stem.3": ["stem.2", "stem.3"], "relu": ["block.conv", "add", "relu"]}, ()),
    "clamps": (Clamps, {"ht": ["a", "ht"], "relu": ["b", "relu"], "relu6": ["c", "add", "relu6"]}, ("ht", "relu")),
    **{
        f"doubled_{act}": (
            lambda act=act: Doubled(act),
            {"act": ["a", "add", "b", "add_1", "cat", "act"], "cat_1": ["c", "d", "cat_1"]},
            (),
        )
        for act in ("rprelu", "prelu1", "prelu")
    },
    "doubled_dual": (
        lambda: Doubled("rprelu", 16),
        {"act": ["a", "add", "b", "add_1", "cat", "act"], "cat_1": ["c", "d", "cat_1"]},
        ("act",),
    ),
    "two_convs": (TwoConvSum, {"act": ["a", "add", "act"]}, ()),
}


def _load(name: str, tmp_path):
    make, fusions, dual = MODELS[name]
    torch.manual_seed(7)
    model = randomise(make(), 7)
    loaded = load_model(export_model(model, tmp_path / name, name, "1", SPEC, [str(i) for i in range(5)]))
    graph = loaded.manifest.graph
    tensors, _ = read_weights(loaded.folder, loaded.manifest)
    unfused = Executor(graph.nodes, graph.output, tensors, fuse=False)
    return model, loaded, unfused, fusions, dual


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fusions_are_exact(name, tmp_path):
    model, loaded, unfused, fusions, dual = _load(name, tmp_path)
    assert loaded.executor.fusions == fusions
    assert loaded.executor.dual_outputs == dual
    summary = loaded.summary()
    assert summary["fusions"] == fusions and summary["dual_outputs"] == list(dual)
    assert unfused.fusions == {} and unfused.dual_outputs == () and unfused.packed_outputs == ()
    # every node still has its output shape in the summary
    assert all("output_shape" in layer for layer in summary["layers"])
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    x[0, :, :3] = 0.0  # exact zeros: sign +1, and sums of exact zeros
    with torch.no_grad():
        expected = model(x)
    for isa in available_isas():
        with use_isa(isa):
            got, reference = loaded.predict(x), unfused.run(x)
        assert torch.equal(got, reference), isa
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # float convs: torch's NCHW order differs


def test_a_concat_writes_its_readers_bits_only_on_whole_blocks(tmp_path):
    """The RSign after a concat of 16-channel halves is the concat's dual output; after halves of
    20 channels the RSign packs its readers' input in a step of its own."""
    _, dual, _, _, _ = _load("doubled_dual", tmp_path)
    _, plain, _, _, _ = _load("doubled_rprelu", tmp_path)
    assert dual.executor.sign_shifts["rsign2"] == "dual output of act"
    assert plain.executor.sign_shifts["rsign2"] == "packing step"
    assert plain.executor.dual_outputs == ()
