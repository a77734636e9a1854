"""The kernel's process-wide choices: instruction-set path, threads, thread pool, and cancellation.

Nothing here runs at import. :func:`configure` applies the choices explicitly (the service calls it
once at start-up from its settings). A program that never calls it gets the defaults: the best path
this CPU supports (the core's own choice) and, from the first convolution on,
``torch.get_num_threads()`` threads on torch's own OpenMP team (see :func:`set_thread_pool`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from service import _core

ISAS = ("avx512", "avx2", "neon", "portable")
POOLS = ("openmp", "own")

# Cancellation: a token bound to a thread stops that thread's packing and convolutions within one
# work item (a row of output) of ``token.cancel()`` (from any thread) or of its ``timeout_s``
# passing; the call then raises Cancelled and returns no partial output. A call waiting for the
# kernel behind another thread's call gives up too.
CancelToken = _core.CancelToken
Cancelled = _core.Cancelled  # a RuntimeError

_threads_chosen = False  # set_num_threads or configure has run
_pool_chosen = False  # set_thread_pool or configure has run


def available_isas() -> list[str]:
    """Instruction-set paths this CPU and build support, best first (e.g. avx512, avx2, portable)."""
    return list(_core.available_isas())


def active_isa() -> str:
    """The path in use: the best supported one, or the one chosen by :func:`configure` / :func:`set_isa`."""
    return _core.active_isa()


def set_isa(name: str) -> None:
    if name not in ISAS:
        raise ValueError(f"unknown instruction set {name!r}: expected 'avx512', 'avx2', 'neon' or 'portable'")
    if name not in available_isas():
        raise ValueError(f"instruction set {name!r} is not supported here; available: {available_isas()}")
    _core.set_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Temporarily force one path (the tests run every supported path through this)."""
    previous = active_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def set_num_threads(n: int) -> None:
    """Threads the kernel uses (the caller's thread included); respected exactly."""
    global _threads_chosen
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads must be an integer >= 1, got {n!r}")
    _core.set_num_threads(n)
    _threads_chosen = True


def get_num_threads() -> int:
    ensure_configured()
    return _core.get_num_threads()


def set_thread_pool(name: str) -> None:
    """Which threads run the kernel's parallel work: ``"openmp"``, the team of the OpenMP runtime
    torch loaded (the threads that run torch's own ops, so a model's binary convs and its float ops
    share one set of threads instead of two sets alternating on the same cores), or ``"own"``, the
    kernel's own workers. ``"auto"``: openmp when an OpenMP runtime is loaded, else own."""
    global _pool_chosen
    if name not in (*POOLS, "auto"):
        raise ValueError(f"unknown thread pool {name!r}: expected 'auto', 'openmp' or 'own'")
    if name == "auto":
        name = "openmp" if _core.openmp_loaded() else "own"
    if not _core.set_thread_pool(name):
        raise ValueError("thread pool 'openmp' needs an OpenMP runtime in the process; none is loaded")
    _pool_chosen = True


def thread_pool() -> str:
    """The threads the kernel runs on: ``"openmp"`` (torch's OpenMP team) or ``"own"``."""
    ensure_configured()
    return _core.thread_pool()


def configure(threads: int | None = None, isa: str | None = None, pool: str | None = None) -> None:
    """Apply the kernel's choices: ``threads`` (None: ``torch.get_num_threads()``, the size of
    torch's pool, which is idle while the kernel runs, so sharing it never oversubscribes),
    ``isa`` (None or ``"auto"``: the best path this CPU supports) and ``pool`` (None or ``"auto"``:
    see :func:`set_thread_pool`). A bad choice raises ValueError naming it and changes nothing."""
    if isa is not None and isa != "auto":
        if isa not in ISAS:
            raise ValueError(
                f"unknown instruction set {isa!r}: expected 'auto', 'avx512', 'avx2', 'neon' or 'portable'"
            )
        if isa not in available_isas():
            raise ValueError(f"instruction set {isa!r} is not supported here; available: {available_isas()}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"num_threads must be an integer >= 1, got {threads!r}")
    if pool not in (None, "auto", *POOLS):
        raise ValueError(f"unknown thread pool {pool!r}: expected 'auto', 'openmp' or 'own'")
    if pool == "openmp" and not _core.openmp_loaded():
        raise ValueError("thread pool 'openmp' needs an OpenMP runtime in the process; none is loaded")
    set_isa(available_isas()[0] if isa in (None, "auto") else isa)
    set_thread_pool(pool or "auto")
    set_num_threads(max(1, torch.get_num_threads()) if threads is None else threads)


def ensure_configured() -> None:
    """The defaults, the first time the kernel runs unconfigured (then two bool tests)."""
    if not _pool_chosen:
        set_thread_pool("auto")
    if not _threads_chosen:
        set_num_threads(max(1, torch.get_num_threads()))


@contextlib.contextmanager
def cancellable(token: CancelToken | None) -> Iterator[CancelToken | None]:
    """Bind ``token`` to the kernel calls this thread makes inside the block (None: no token),
    then restore the previous one. Enter it in the thread that runs the calls (e.g. inside the
    function given to an executor): the binding is per thread.

    ::

        token = kernel.CancelToken(timeout_s=0.5)
        with kernel.cancellable(token):
            kernel.binary_conv2d(x, w, padding=1)  # Cancelled once token.cancel() or 0.5 s
    """
    previous = _core.set_cancel_token(token)
    try:
        yield token
    finally:
        _core.set_cancel_token(previous)
