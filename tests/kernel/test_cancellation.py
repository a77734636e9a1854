"""Cancellation: a token bound to a thread stops that thread's kernel calls within one work item
of ``cancel()`` or of its timeout, the call raises ``kernel.Cancelled``, and the kernel is as
good as new afterwards. Timing bounds are loose (a cancelled call must return in well under half
of the uncancelled time): shared machines are noisy."""

from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn.functional as F

from service import kernel

# A long convolution: 5x5 taps over 512 channels, ~0.15 s per image on one AVX2 core.
C, O, SIZE, K = 512, 512, 64, 5
LONG_CALL_S = 0.5  # the uncancelled call takes at least this long (the batch grows until it does)


def reference(x: torch.Tensor, w: torch.Tensor, padding: int) -> torch.Tensor:
    return F.conv2d(kernel.sign(x), kernel.sign(w), padding=padding)


@pytest.fixture
def num_threads(request):
    previous = kernel.get_num_threads()
    kernel.set_num_threads(request.param)
    yield request.param
    kernel.set_num_threads(previous)


@pytest.fixture(scope="module")
def weights() -> kernel.PackedWeights:
    g = torch.Generator().manual_seed(0)
    return kernel.pack_weights(torch.randn(O, C, K, K, generator=g))


_calibrated: dict[tuple[int, str], tuple[torch.Tensor, float]] = {}


def long_conv(weights: kernel.PackedWeights) -> tuple[torch.Tensor, float]:
    """An input whose convolution takes >= LONG_CALL_S uncancelled on the current thread count and
    path, and that duration."""
    key = (kernel.get_num_threads(), kernel.active_isa())
    if key not in _calibrated:
        g = torch.Generator().manual_seed(1)
        for n in (1, 2, 4, 8, 16, 32):
            x = torch.randn(n, C, SIZE, SIZE, generator=g)
            start = time.perf_counter()
            kernel.binary_conv2d(x, weights, padding=K // 2)
            elapsed = time.perf_counter() - start
            if elapsed >= LONG_CALL_S:
                break
        _calibrated[key] = (x, elapsed)
    return _calibrated[key]


def run_cancelled(token: kernel.CancelToken, call) -> float:
    """Runs call() with the token bound, expects Cancelled, and returns when it raised."""
    with kernel.cancellable(token), pytest.raises(kernel.Cancelled):
        call()
    return time.perf_counter()


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)
def test_cancel_from_another_thread_stops_a_long_conv(weights, num_threads):
    x, uncancelled = long_conv(weights)
    token = kernel.CancelToken()
    cancelled_at: list[float] = []

    def cancel_soon() -> None:
        time.sleep(0.05)
        cancelled_at.append(time.perf_counter())
        token.cancel()

    canceller = threading.Thread(target=cancel_soon)
    start = time.perf_counter()
    canceller.start()
    raised_at = run_cancelled(token, lambda: kernel.binary_conv2d(x, weights, padding=K // 2))
    canceller.join()
    assert token.cancelled
    assert raised_at - start < 0.5 * uncancelled, (raised_at - start, uncancelled)
    assert raised_at - cancelled_at[0] < 0.4 * uncancelled  # ~1 ms here; a work item is one output row


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True)
def test_deadline_stops_a_long_conv(weights, num_threads):
    x, uncancelled = long_conv(weights)
    start = time.perf_counter()
    token = kernel.CancelToken(timeout_s=0.05)
    raised_at = run_cancelled(token, lambda: kernel.binary_conv2d(x, weights, padding=K // 2))
    assert token.cancelled
    assert 0.05 <= raised_at - start < 0.5 * uncancelled, (raised_at - start, uncancelled)


def test_cancelled_token_stops_every_entry_point_at_once():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(2, 70, 9, 9, generator=g), torch.randn(20, 70, 3, 3, generator=g)
    layer = kernel.InferenceConv(kernel.pack_weights(w), padding=1)
    packed = kernel.pack_activations(x, 1)
    calls = {
        "binary_conv2d": lambda: kernel.binary_conv2d(x, w, padding=1),
        "channels_last": lambda: kernel.binary_conv2d(x.contiguous(memory_format=torch.channels_last), w, padding=1),
        "pack_activations": lambda: kernel.pack_activations(x, 1),
        "InferenceConv": lambda: layer(x),
        "InferenceConv packed": lambda: layer(packed),
        "sign_packed": lambda: layer.sign_packed(packed, 1),
        "module": lambda: kernel.BinaryConv2d(70, 20, 3, padding=1).eval()(x),
    }
    cancelled = kernel.CancelToken()
    cancelled.cancel()
    for token in (cancelled, kernel.CancelToken(timeout_s=0)):
        assert token.cancelled
        for name, call in calls.items():
            start = time.perf_counter()
            run_cancelled(token, call)
            assert time.perf_counter() - start < 0.5, name
    for call in calls.values():  # and without a token, all of them still work
        call()


def test_packing_is_cancellable_while_it_runs():
    """A deadline of a tenth of a large pack's duration stops it."""
    x = torch.randn(16, 64, 112, 112, generator=torch.Generator().manual_seed(3))
    durations = []
    for _ in range(3):
        start = time.perf_counter()
        kernel.pack_activations(x, 1)
        durations.append(time.perf_counter() - start)
    run_cancelled(kernel.CancelToken(timeout_s=min(durations) / 10), lambda: kernel.pack_activations(x, 1))


@pytest.mark.parametrize("isa", kernel.available_isas())
def test_exact_after_cancelled_calls(weights, isa):
    """A cancel in the middle of a job leaves no trace: every path, 1 and 2 threads, stays exact."""
    previous_threads = kernel.get_num_threads()
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(2, 100, 13, 17, generator=g), torch.randn(24, 100, 3, 3, generator=g)
    big = torch.randn(4, C, SIZE, SIZE, generator=g)  # > 0.1 s: the deadline passes mid-job
    expected = {pad_value: F.conv2d(F.pad(kernel.sign(x), (1, 1, 1, 1), value=float(pad_value)), kernel.sign(w),
                                    stride=(1, 2))
                for pad_value in (0, 1, -1)}
    try:
        with kernel.use_isa(isa):
            for threads in (2, 1, 2):
                kernel.set_num_threads(threads)
                run_cancelled(kernel.CancelToken(timeout_s=0.01), lambda: kernel.binary_conv2d(big, weights, padding=2))
                for pad_value, want in expected.items():
                    got = kernel.binary_conv2d(x, w, padding=1, pad_value=pad_value, stride=(1, 2))
                    assert torch.equal(got, want), (isa, threads, pad_value)
                # and with a live token bound, which is never cancelled
                with kernel.cancellable(kernel.CancelToken(timeout_s=600)):
                    got = kernel.binary_conv2d(x, w, padding=1, stride=(1, 2))
                    assert torch.equal(got, expected[0]), (isa, threads)
    finally:
        kernel.set_num_threads(previous_threads)


def test_token_binds_to_one_thread_only():
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(1, 64, 10, 10, generator=g), torch.randn(16, 64, 3, 3, generator=g)
    bound, release = threading.Event(), threading.Event()
    outcome: list[str] = []

    def other_thread() -> None:
        token = kernel.CancelToken()
        token.cancel()
        with kernel.cancellable(token):
            bound.set()
            release.wait(10)
            try:
                kernel.binary_conv2d(x, w, padding=1)
                outcome.append("ran")
            except kernel.Cancelled:
                outcome.append("cancelled")

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert bound.wait(10)
    # The other thread's cancelled token is bound there, not here.
    assert torch.equal(kernel.binary_conv2d(x, w, padding=1), reference(x, w, 1))
    release.set()
    thread.join()
    assert outcome == ["cancelled"]
    assert torch.equal(kernel.binary_conv2d(x, w, padding=1), reference(x, w, 1))


def test_queued_call_gives_up_at_its_deadline(weights):
    """A call waiting for the kernel behind another thread's long call stops waiting when its own
    token is cancelled; the long call is unaffected."""
    x, uncancelled = long_conv(weights)
    layer = kernel.InferenceConv(weights, padding=K // 2)
    packed = kernel.pack_activations(x, K // 2)  # so the long call is one job, with no gap to slip into
    started = threading.Event()
    results: list[torch.Tensor] = []

    def long_call() -> None:
        started.set()
        results.append(layer(packed))

    thread = threading.Thread(target=long_call)
    thread.start()
    assert started.wait(10)
    time.sleep(0.02)
    start = time.perf_counter()
    # (as long as the other call: if it has not started yet, this one is cancelled while running)
    raised_at = run_cancelled(kernel.CancelToken(timeout_s=0.05), lambda: kernel.binary_conv2d(x, weights, padding=K // 2))
    thread.join()
    assert raised_at - start < 0.5 * uncancelled, (raised_at - start, uncancelled)
    assert len(results) == 1 and results[0].shape == (x.shape[0], O, SIZE, SIZE)


def test_cancellable_restores_the_previous_token():
    g = torch.Generator().manual_seed(6)
    x, w = torch.randn(1, 8, 6, 6, generator=g), torch.randn(4, 8, 3, 3, generator=g)
    outer, inner = kernel.CancelToken(), kernel.CancelToken()
    inner.cancel()
    with kernel.cancellable(outer) as bound:
        assert bound is outer
        with pytest.raises(kernel.Cancelled), kernel.cancellable(inner):
            kernel.binary_conv2d(x, w)
        kernel.binary_conv2d(x, w)  # outer again, not cancelled
        with kernel.cancellable(None):
            kernel.binary_conv2d(x, w)
    kernel.binary_conv2d(x, w)


def test_cancelled_is_a_runtime_error_and_tokens_are_checked():
    assert issubclass(kernel.Cancelled, RuntimeError)
    token = kernel.CancelToken()
    assert not token.cancelled
    token.cancel()
    token.cancel()  # idempotent
    assert token.cancelled
    assert not kernel.CancelToken(timeout_s=600).cancelled
    for bad in (-1.0, float("nan"), float("inf"), 1e10):
        with pytest.raises(ValueError, match="timeout_s"):
            kernel.CancelToken(timeout_s=bad)
