"""``bnn::binary_conv2d`` as a torch op: torch.library's own checks, export, and torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.library import opcheck

from service import kernel
from service.kernel import BinaryConv2d, binary_conv2d, sign

OP = torch.ops.bnn.binary_conv2d.default
CASES = [  # (input shape, weight shape, stride, padding, dilation, pad_value, channels_last)
    ((2, 16, 9, 9), (8, 16, 3, 3), [1, 1], [1, 1], [1, 1], 0, False),
    ((1, 70, 7, 6), (5, 70, 3, 2), [2, 1], [1, 0], [1, 2], -1, True),
    ((3, 3, 5, 5), (4, 3, 1, 1), [1, 1], [0, 0], [1, 1], 1, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-pad{c[5]}-cl{int(c[6])}")
def test_opcheck(case):
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch with dynamic
    shapes, as torch.library checks them."""
    x_shape, w_shape, stride, padding, dilation, pad_value, channels_last = case
    torch.manual_seed(0)
    x = torch.randn(x_shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(w_shape)
    for grad in (False, True):
        args = (x.clone().requires_grad_(grad), w.clone().requires_grad_(grad), stride, padding, dilation, pad_value)
        opcheck(OP, args)


def test_the_op_is_the_float_path_and_exact():
    torch.manual_seed(1)
    x, w = torch.randn(2, 16, 8, 8), torch.randn(8, 16, 3, 3)
    out = OP(x, w, [1, 1], [1, 1], [1, 1], 0)
    assert torch.equal(out, F.conv2d(sign(x), sign(w), padding=1))
    assert torch.equal(binary_conv2d(x, w, padding=1), out)


def test_the_op_raises_the_kernels_errors():
    with pytest.raises(ValueError, match="channel mismatch"):
        OP(torch.randn(1, 3, 5, 5), torch.randn(2, 4, 3, 3), [1, 1], [0, 0], [1, 1], 0)
    with pytest.raises(ValueError, match="pad_value"):
        OP(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), [1, 1], [0, 0], [1, 1], 2)


def _network() -> nn.Module:
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        BinaryConv2d(16, 32, 3, padding=1, scale=True, bias=True),
        nn.BatchNorm2d(32),
        nn.Hardtanh(),
        BinaryConv2d(32, 32, 3, stride=2, padding=1, pad_value=-1),
        BinaryConv2d(32, 32, 3, padding=2, dilation=2, groups=2, pad_value=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.running_mean)
            nn.init.uniform_(m.running_var, 0.5, 2)
        if isinstance(m, BinaryConv2d) and m.bias is not None:
            nn.init.normal_(m.bias)
    return net


def test_export_sees_each_binary_layer_as_one_op():
    net = _network().eval()
    program = torch.export.export(net, (torch.randn(2, 3, 12, 12),))
    ops = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert ops.count(OP) == 4  # two plain layers, and the grouped one as two groups
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(program.module()(x), net(x))


@pytest.mark.slow
# inductor's own code uses torch.jit.script_method, deprecated in this torch
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_network_matches_eager_exactly():
    """torch.compile of a network of BinaryConv2d layers (scale, bias, pad values, dilation, groups)
    runs without a graph break and gives eager mode's outputs bit for bit, in eval and in training."""
    torch._dynamo.reset()
    net = _network().eval()
    x = torch.randn(4, 3, 16, 16)
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), net(x))
        x_cl = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(compiled(x_cl), net(x_cl))

    net.train()
    xs = x.clone().requires_grad_()
    eager_out = net(xs)
    eager_out.sum().backward()
    eager_grads = [p.grad.clone() for p in net.parameters()], xs.grad.clone()
    net.zero_grad()
    xc = x.clone().requires_grad_()
    out = compiled(xc)
    out.sum().backward()
    assert torch.allclose(out, eager_out, rtol=1e-5, atol=1e-5)
    for p, g in zip(net.parameters(), eager_grads[0]):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-4)
    assert torch.allclose(xc.grad, eager_grads[1], rtol=1e-4, atol=1e-4)


def test_kernel_threads_default_to_torchs_without_configure():
    """A program that never calls configure() gets torch's thread count from its first conv on."""
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(2); from service import kernel;"
        "kernel.binary_conv2d(torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3));"
        "print(kernel.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"
    assert kernel.get_num_threads() >= 1
