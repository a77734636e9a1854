"""Small random models and exported copies of them for the model-store tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from service.export import export_model
from service.kernel import BinaryConv2d, sign
from service.model.layers import BinaryLinear, RPReLU, RSign

SPEC = {"channels": 3, "height": 16, "width": 16, "resize": "stretch", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "invert": False}
LABELS = ["a", "b", "c", "d", "e"]


class BiRealDown(nn.Module):
    """Bi-Real-Net downsampling block: binary conv stride 2, shortcut avgpool + 1x1 float conv + BN."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = BinaryConv2d(cin, cout, 3, stride=2, padding=1, scale=True, pad_value=1)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.bn(self.conv(x)) + self.shortcut(x)


class EveryOp(nn.Module):
    """Touches every op of the format at least once."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=True)         # conv2d (+ folded BN)
        self.stem_bn = nn.BatchNorm2d(16)
        self.act0 = nn.Hardtanh(-1.5, 1.5)                              # hardtanh
        self.bconv = BinaryConv2d(16, 70, 3, padding=1, bias=True)    # binary_conv2d, 70 > 64 channels: 2 words
        self.bn1 = nn.BatchNorm2d(70)
        self.prelu = nn.PReLU(70)                                       # prelu
        self.pool = nn.MaxPool2d(2)                                     # max_pool2d
        self.down = BiRealDown(70, 32)                                  # binary conv stride 2, avgpool, 1x1 conv, add
        self.bn_standalone = nn.BatchNorm2d(32)                         # batch_norm (after an add: not folded)
        self.bconv2 = BinaryConv2d(32, 32, 3, padding=2, dilation=2)    # dilation, pad_value 0
        self.relu = nn.ReLU()                                           # relu
        self.rsign = RSign(32)                                          # rsign, read by two binary convs
        self.bconv3 = BinaryConv2d(32, 16, 1)
        self.bconv4 = BinaryConv2d(32, 16, 1, scale=True)
        self.rprelu = RPReLU(32)                                        # rprelu, after a concat
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)                              # adaptive_avg_pool2d
        self.flatten = nn.Flatten()                                     # flatten
        self.blin = BinaryLinear(32, 24, scale=True)                   # binary_linear (+ folded BN1d)
        self.bn_lin = nn.BatchNorm1d(24)
        self.drop = nn.Dropout(0.5)                                     # removed at export
        self.fc = nn.Linear(24, len(LABELS))                            # linear

    def forward(self, x):
        x = self.act0(self.stem_bn(self.stem(x)))
        x = self.pool(self.prelu(self.bn1(self.bconv(x))))
        x = self.bn_standalone(self.down(x))
        x = self.relu(self.bconv2(sign(x)) + x)                         # sign (function), residual add
        s = self.rsign(x)
        x = self.rprelu(torch.cat([self.bconv3(s), self.bconv4(s)], dim=1)) + x   # concat
        x = torch.flatten(self.gap(self.avg(x)), 1)
        x = self.flatten(x)
        return self.fc(self.drop(torch.relu(self.bn_lin(self.blin(x)))))


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, PReLU slopes and RSign/RPReLU parameters, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 3 + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
        if isinstance(m, nn.PReLU):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g))
        if isinstance(m, RSign):
            m.shift.data.copy_(torch.randn(m.channels, generator=g) * 0.5)
        if isinstance(m, RPReLU):
            m.shift_in.data.copy_(torch.randn(m.channels, generator=g) * 0.5)
            m.slope.data.copy_(torch.rand(m.channels, generator=g))
            m.shift_out.data.copy_(torch.randn(m.channels, generator=g) * 0.5)
    return model.eval()


def make_every_op(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomise(EveryOp(), seed)


@pytest.fixture
def every_op_model() -> nn.Module:
    return make_every_op()


@pytest.fixture
def exported(tmp_path, every_op_model):
    """(torch model, folder) with the model exported as tmp_path/store/good."""
    folder = export_model(every_op_model, tmp_path / "store" / "good", "good", "1.2.3", SPEC, LABELS)
    return every_op_model, folder
