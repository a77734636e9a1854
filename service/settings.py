"""Every setting of the service and its kernel, in one place: each can be set from the environment
as ``BNN_<NAME>`` (docs/settings.md lists them). Reading them has no effect; :func:`configure`
applies the process-wide ones (kernel path and threads, torch's threads) once at start-up."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _cgroup_memory_limit() -> int | None:
    """The container's memory limit in bytes (cgroup v2 ``memory.max``, else v1), or None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 reports "no limit" as a huge number
            return int(text)
    return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by the container's CPU quota (cgroup v2
    ``cpu.max``, else v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota: float | None = None
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if limit_us > 0 and period_us > 0:
                quota = limit_us / period_us
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


# Resident memory of one worker at rest serving the shipped model: 297 MiB measured
# (bench/load_predict.py's memory line, bench/RESULTS_SERVICE.md), rounded up.
WORKER_RSS_BYTES = 320 << 20


def default_workers() -> int:
    """One worker per available CPU; in a container with a memory limit, no more than fit in the half
    of it that the memory budget leaves (WORKER_RSS_BYTES each), so the default never invites the OOM
    killer."""
    workers = available_cpus()
    limit = _cgroup_memory_limit()
    if limit is not None:
        workers = min(workers, max(1, (limit // 2) // WORKER_RSS_BYTES))
    return workers


def default_memory_budget() -> int:
    """Half of the container's memory limit when there is one, else a quarter of the machine's
    memory, at most 2 GiB; never below 256 MiB. What in-flight requests may allocate together."""
    limit = _cgroup_memory_limit()
    if limit is not None:
        return max(256 << 20, limit // 2)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return max(256 << 20, min(2 << 30, total // 4))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BNN_", extra="ignore", protected_namespaces=())

    model_store: Path = Field(
        Path("model_store"), description="Folder with one subfolder per model (relative: to the working directory)."
    )
    allow_empty_store: bool = Field(
        False,
        description="Start even when the model store is missing or holds no model folder (not ready until "
        "one is added); by default that stops start-up.",
    )
    model_control: Literal["explicit", "poll", "none"] = Field(
        "explicit",
        description="How the served models may change without a restart: explicit (the repository API's load and "
        "unload), poll (that, and the store scanned every repository_poll_s for folders added, changed or "
        "removed), none (only what start-up loaded).",
    )
    repository_poll_s: float = Field(
        5.0, gt=0, description="Seconds between two scans of the model store (model_control=poll)."
    )
    default_model: str | None = Field(None, description="Model used when a request names none (default: the only one).")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Server processes behind the one port, each with its own event loop, batchers and kernel "
        "threads (default: the CPUs available to the process, cgroup quota respected, and no more than fit in "
        "half the container's memory limit at 320 MiB each). A worker that dies is replaced; /metrics and "
        "readiness cover all of them.",
    )
    kernel_threads: int | None = Field(
        None,
        ge=1,
        description="Threads of the binary kernel and of torch's float ops, per worker (default: the available "
        "CPUs divided among the workers, at least 1).",
    )
    kernel_isa: Literal["auto", "avx512", "avx2", "neon", "portable"] = Field(
        "auto", description="Instruction-set path of the kernel (default: the best this CPU supports)."
    )
    kernel_pool: Literal["auto", "openmp", "own"] = Field(
        "auto",
        description="Threads the binary kernel runs on: openmp, the OpenMP team torch's float ops run on (one "
        "set of threads for the whole forward pass), or own, the kernel's own workers (default auto: openmp "
        "when torch's OpenMP runtime is loaded).",
    )
    omp_wait_policy: Literal["passive", "active"] = Field(
        "passive",
        description="OMP_WAIT_POLICY given to torch's OpenMP when the environment sets none: passive idle "
        "threads sleep instead of spinning against the kernel's pool. Read by bnn-serve before torch loads.",
    )

    warmup_batches: int = Field(
        2,
        ge=0,
        le=64,
        description="Zero batches run through each model at load, before it is reported ready (alternately one "
        "image and a full batch), so the first requests are not the slow ones.",
    )
    max_batch_size: int = Field(32, ge=1, description="Most images one model call takes; 1 turns batching off.")
    max_queue_delay_ms: float = Field(
        2.0, ge=0, description="How long a batch waits to fill once its first image arrived."
    )
    max_queue_size: int = Field(512, ge=1, description="Images waiting per model before requests get 503.")
    request_timeout_s: float = Field(30.0, gt=0, description="Longest a request waits for its results (504 after).")
    graceful_shutdown_s: float = Field(
        10.0, gt=0, description="On SIGTERM, how long in-flight requests may take to finish before the server exits."
    )

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body (413 above).")
    max_image_pixels: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest decoded image, width x height (413 above)."
    )
    max_conv_elements: int = Field(16 * 1024 * 1024, ge=1, description="Largest tensor /conv accepts or returns.")
    max_conv_ops: int = Field(2**36, ge=1, description="Largest /conv work: output elements x C x KH x KW.")
    max_json_values: int = Field(
        1 << 18,
        ge=16,
        description="Most numbers in a JSON request or response body (parsing 2^18 takes ~25 ms, "
        "holding the interpreter); larger tensors go as b64 "
        "(/conv) or binary tensor data (/v2).",
    )
    max_response_bytes: int = Field(
        64 << 20, ge=1024, description="Largest response body a request may cause (413 above)."
    )
    max_request_pixels: int = Field(
        64 << 20,
        ge=1,
        description="Most decoded pixels (width x height, summed over its images) one /predict request may cost.",
    )
    memory_budget_bytes: int = Field(
        default_factory=default_memory_budget,
        ge=1 << 20,
        description="Bytes in-flight requests may allocate together, over all workers (each holds an equal "
        "share; default: half the container's memory limit, else a quarter of the machine's, at most 2 GiB); a "
        "request waits for its share or gets 503.",
    )
    memory_wait_s: float = Field(
        2.0, ge=0, description="Longest a request waits for its share of the memory budget (503 after)."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Longest a client may take to send a request's headers (408)."
    )
    body_timeout_s: float = Field(60.0, gt=0, description="Longest a client may take to send a request's body (408).")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="How long an idle keep-alive connection stays open.")
    max_connections: int = Field(
        512, ge=1, description="Most open client connections per worker; more get 503 and are closed."
    )

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0: every interface).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    grpc_port: int | None = Field(
        8001, ge=0, le=65535, description="TCP port of the gRPC Open Inference Protocol (0 or unset: no gRPC)."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Least severe log level written."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="Every stderr line as JSON (for log collectors), or as text (for a terminal)."
    )
    api_key: SecretStr | None = Field(None, description="When set, required as X-API-Key or Bearer token.")

    @property
    def worker_count(self) -> int:
        """How many worker processes serve: ``workers``, else :func:`default_workers`."""
        return self.workers if self.workers is not None else default_workers()

    @property
    def threads_per_worker(self) -> int:
        """Kernel (and torch) threads of each worker: ``kernel_threads``, else the CPUs shared out."""
        if self.kernel_threads is not None:
            return self.kernel_threads
        return max(1, available_cpus() // self.worker_count)

    def as_environment(self) -> dict[str, str]:
        """Every setting given explicitly (by flag, variable or argument) as its ``BNN_<NAME>`` variable,
        such that ``Settings()`` in a process with this environment reads back the same values and the
        same ``model_fields_set``: how ``bnn-serve`` hands its flags to its worker processes. A setting
        given as None is left out (its default is None), except ``grpc_port`` (0: off)."""
        env = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif value is None:
                if name != "grpc_port":
                    continue
                value = 0
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"BNN_{name.upper()}"] = str(value)
        return env

    def model_store_problem(self) -> str | None:
        """Why the model store cannot be served (missing, or no model folder in it), or None. Like
        Triton, a store with nothing to serve stops start-up, unless ``allow_empty_store``."""
        root = self.model_store
        if not root.is_dir():
            return f"model store {root} is not a directory (set --model-store / BNN_MODEL_STORE)"
        if not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
            return f"model store {root} holds no model folder"
        return None

    @field_validator(
        "kernel_isa", "kernel_pool", "omp_wait_policy", "log_level", "log_format", "model_control", mode="before"
    )
    @classmethod
    def _lower_case(cls, value: object) -> object:
        """Named choices are case-insensitive (BNN_LOG_LEVEL=DEBUG means debug)."""
        return value.lower() if isinstance(value, str) else value


def configure(settings: Settings) -> None:
    """Apply the process-wide settings: the kernel's instruction set and threads, and torch's
    threads (the graph's float ops run on torch's pool, the binary convolutions on the kernel's, one
    at a time, so one count serves both). Raises ValueError for a path this CPU lacks."""
    import torch

    from service import kernel

    threads = settings.threads_per_worker
    kernel.configure(threads=threads, isa=settings.kernel_isa, pool=settings.kernel_pool)
    torch.set_num_threads(threads)
