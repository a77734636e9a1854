"""Straight-through-estimator gradients, and the module's train/eval equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from service.kernel import BinaryConv2d, BinaryConv2dForward, binary_conv2d, pack_weights, sign


def surrogate(x, w, stride, padding, dilation, pad_value=0):
    """Float surrogate with the same gradients: sign with an identity/clipped backward."""
    sx = x + (sign(x) - x).detach()
    sw = w + (sign(w) - w).detach()
    # d/dx is zeroed where |x| > 1 (hardtanh's derivative).
    sx = sx - (x - torch.clamp(x, -1, 1)) + (x - torch.clamp(x, -1, 1)).detach()
    ph, pw = padding
    if pad_value:
        sx = F.pad(sx, (pw, pw, ph, ph), value=float(pad_value))
        ph = pw = 0
    return F.conv2d(sx, sw, stride=stride, padding=(ph, pw), dilation=dilation)


@pytest.mark.parametrize("pad_value", [0, 1, -1])
@pytest.mark.parametrize(("stride", "padding", "dilation"), [((1, 1), (1, 1), (1, 1)), ((2, 1), (0, 2), (1, 2))])
def test_gradients_match_float_surrogate(stride, padding, dilation, pad_value):
    x0 = torch.randn(2, 5, 9, 8, dtype=torch.float64) * 1.5
    w0 = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    x1, w1 = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    x2, w2 = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    g = torch.randn_like(surrogate(x0, w0, stride, padding, dilation, pad_value))
    out = binary_conv2d(x1, w1, stride, padding, dilation, pad_value)
    ref = surrogate(x2, w2, stride, padding, dilation, pad_value)
    assert torch.equal(out.double(), ref)
    (out * g.float()).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-5)
    assert (x1.grad[x0.abs() > 1] == 0).all()


def test_reference_signature_function_backward():
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    w = torch.randn(3, 4, 3, 3, requires_grad=True)
    out = BinaryConv2dForward.apply(x, w, 3, 36, 36, 3, 1, 1, 1, 6)
    out.sum().backward()
    assert x.grad is not None and w.grad is not None
    x2 = x.detach().clone().requires_grad_()
    w2 = w.detach().clone().requires_grad_()
    surrogate(x2, w2, (1, 1), (1, 1), (1, 1)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(w.grad, w2.grad)


def test_packed_weights_give_input_gradients():
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    w = torch.randn(3, 4, 3, 3)
    binary_conv2d(x, pack_weights(w), padding=1).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    surrogate(x2, w, (1, 1), (1, 1), (1, 1)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_module_train_and_eval_forward_agree(scale, bias):
    torch.manual_seed(0)
    m = BinaryConv2d(70, 20, 3, stride=(1, 2), padding=1, scale=scale, bias=bias)
    if bias:
        torch.nn.init.normal_(m.bias)
    x = torch.randn(2, 70, 10, 11)
    train_out = m(x)
    m.eval()
    with torch.no_grad():
        eval_out = m(x)
    assert torch.equal(train_out.detach(), eval_out)


def test_module_packs_once_and_repacks_after_update():
    m = BinaryConv2d(8, 4, 3, padding=1).eval()
    first = m.packed_weights()
    assert m.packed_weights() is first
    with torch.no_grad():
        m.weight.neg_()
    assert m.packed_weights() is not first
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(m(x), F.conv2d(sign(x), sign(m.weight), padding=1))


def test_module_is_a_drop_in_for_conv2d_in_a_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
        BinaryConv2d(16, 32, 3, padding=1, scale=True), torch.nn.BatchNorm2d(32),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before = model[2].weight.detach().clone()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert not torch.equal(before, model[2].weight)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (8, 10)


def test_layer_built_under_inference_mode_works_and_sees_weight_changes():
    """Inference tensors have no version counter: a layer made in inference_mode must still run, and
    an in-place change of its weights must show in the next call (no stale packed copy)."""
    with torch.inference_mode():
        layer = BinaryConv2d(5, 7, 3, padding=1).eval()
        x = torch.randn(2, 5, 6, 6)
        assert torch.equal(layer(x), F.conv2d(sign(x), sign(layer.weight), padding=1))
        layer.weight.mul_(-1)
        assert torch.equal(layer(x), F.conv2d(sign(x), sign(layer.weight), padding=1))
