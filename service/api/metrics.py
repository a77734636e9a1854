"""Prometheus metrics, in a registry of the app's own (so several apps in one process never collide),
and each model version's inference statistics (Triton's statistics extension), which both
``GET /v2/models/.../stats`` and the Triton-named ``nv_inference_*`` series read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import Metric, UnknownMetricFamily

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class DurationStat:
    """How often something happened and its cumulative duration (Triton's ``$duration_stat``)."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += round(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStat:
    """Model executions of one batch size."""

    batch_size: int
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)


class ModelStats:
    """One model version's inference statistics, as Triton counts them: requests (success, fail:
    counted by the inference route, with their duration there), and per request the time queued and
    computing (counted by the batcher; a request split over several model calls counts once per
    call), inferences (images), executions (model calls) and executions per batch size.

    Updated and read on the event loop only (routes, the batcher's worker, the metrics route): no lock.
    """

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        self.success = DurationStat()
        self.fail = DurationStat()
        self.queue = DurationStat()
        self.compute_input = DurationStat()
        self.compute_infer = DurationStat()
        self.compute_output = DurationStat()
        self.batches: dict[int, BatchStat] = {}

    def request_done(self, ok: bool, seconds: float) -> None:
        (self.success if ok else self.fail).add(seconds)

    def executed(self, queued_s: list[float], rows: int, input_s: float, infer_s: float, output_s: float) -> None:
        """One model call on ``rows`` images from ``len(queued_s)`` requests, each queued for its time
        there; every request in the call is charged the call's compute times (as Triton does)."""
        requests = len(queued_s)
        for seconds in queued_s:
            self.queue.add(seconds)
        self.compute_input.add(input_s * requests, requests)
        self.compute_infer.add(infer_s * requests, requests)
        self.compute_output.add(output_s * requests, requests)
        self.inference_count += rows
        self.execution_count += 1
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = BatchStat(rows)
        batch.compute_input.add(input_s)
        batch.compute_infer.add(infer_s)
        batch.compute_output.add(output_s)
        self.last_inference_ms = int(time.time() * 1000)

    def as_dict(self) -> dict[str, Any]:
        """Triton's ``$model_stat`` object."""
        none = DurationStat().as_dict()  # no response cache: its hits and misses stay zero
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": none,
                "cache_miss": none,
            },
            "batch_stats": [
                {
                    "batch_size": b.batch_size,
                    "compute_input": b.compute_input.as_dict(),
                    "compute_infer": b.compute_infer.as_dict(),
                    "compute_output": b.compute_output.as_dict(),
                }
                for _, b in sorted(self.batches.items())
            ],
        }


# Triton's per-model series (docs/user_guide/metrics.md in triton-inference-server/server): name,
# help, and the value read from a ModelStats. Triton's counters carry no _total suffix, which
# prometheus_client's text format would add to a counter, so these are exposed untyped under
# Triton's exact names (rate() and increase() work on them the same).
_TRITON_SERIES: tuple[tuple[str, str, Any], ...] = (
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes.",
        lambda s: s.success.count,
    ),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes.", lambda s: s.fail.count),
    ("nv_inference_count", "Number of inferences performed (a batch of n counts n).", lambda s: s.inference_count),
    ("nv_inference_exec_count", "Number of model executions performed (batches).", lambda s: s.execution_count),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (successful requests).",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative time requests waited in the batch queue, in microseconds.",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative time requests spent preparing inputs for the model, in microseconds.",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative time requests spent executing the model, in microseconds.",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative time requests spent extracting outputs from the model, in microseconds.",
        lambda s: s.compute_output.ns // 1000,
    ),
)
TRITON_LABELS = ("model", "version")


class _TritonSeries:
    """A Prometheus collector that reads the models' statistics at scrape time."""

    def __init__(self, stats: dict[tuple[str, str], ModelStats]) -> None:
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        for name, documentation, _ in _TRITON_SERIES:
            yield UnknownMetricFamily(name, documentation, labels=TRITON_LABELS)

    def collect(self) -> Iterator[Metric]:
        for name, documentation, value in _TRITON_SERIES:
            family = UnknownMetricFamily(name, documentation, labels=TRITON_LABELS)
            for stats in self._stats.values():
                family.add_metric([stats.name, stats.version], value(stats))
            yield family


class ServiceMetrics:
    def __init__(self) -> None:
        # No <name>_created series beside every counter and histogram: dashboards never read them. The
        # switch is prometheus_client's, process-wide.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bnn_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_failures = Counter(
            "bnn_http_request_failures",
            "HTTP requests that ended in a 4xx or 5xx status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "bnn_http_request_duration_seconds",
            "Time from request start to the last response byte.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inferences = Counter("bnn_inference_images", "Images classified, per model.", ["model"], registry=r)
        self.inference_failures = Counter(
            "bnn_inference_failures",
            "Images whose inference failed, timed out or was refused, per model.",
            ["model", "reason"],
            registry=r,
        )
        self.queue_time = Histogram(
            "bnn_queue_seconds",
            "Time an image waited in the batch queue, per model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_time = Histogram(
            "bnn_compute_seconds",
            "Wall time of one model call on a batch, per model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "bnn_batch_size",
            "Images per model call (its _count is the number of model calls), per model.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "bnn_queue_depth", "Images waiting in the batch queue, per model.", ["model"], registry=r
        )
        self.connection_refusals = Counter(
            "bnn_http_connection_refusals",
            "Connections answered and closed by the HTTP protocol layer, before the "
            "app: header timeout, connection cap, unparseable request.",
            ["reason"],
            registry=r,
        )
        self.memory_reserved = Gauge(
            "bnn_memory_reserved_bytes",
            "Bytes of the memory budget that in-flight requests hold.",
            registry=r,
        )
        self.model_ready = Gauge(
            "bnn_model_ready", "1 when the model is loaded and serving, else 0.", ["model"], registry=r
        )
        self._model_stats: dict[tuple[str, str], ModelStats] = {}
        r.register(_TritonSeries(self._model_stats))
        self._http_series: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def http_series(self, route: str, method: str, status: int) -> tuple[Any, Any | None, Any]:
        """The request counter, failure counter (None below 400) and latency histogram of one
        (route, method, status), looked up once: ``labels()`` costs a few microseconds per call,
        three times per request (issue 15). Bounded as the series themselves are."""
        series = self._http_series.get((route, method, status))
        if series is None:
            code = str(status)
            series = self._http_series[(route, method, status)] = (
                self.requests.labels(route, method, code),
                self.request_failures.labels(route, method, code) if status >= 400 else None,
                self.request_latency.labels(route, method),
            )
        return series

    def model_stats(self, name: str, version: str) -> ModelStats:
        """The statistics of a model version, created on first use."""
        stats = self._model_stats.get((name, version))
        if stats is None:
            stats = self._model_stats[(name, version)] = ModelStats(name, version)
        return stats
