"""Prometheus metrics, in a registry of the app's own (so several apps in one process never collide),
and each model version's inference statistics (Triton's statistics extension), which both
``GET /v2/models/.../stats`` and the Triton-named ``nv_inference_*`` series read."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import Metric, UnknownMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_PER_BATCH = ("compute_input", "compute_infer", "compute_output")
_TOTAL = ""  # the batch_size label of a model's totals


class ModelStats:
    """One model version's inference statistics, as Triton counts them: requests (success, fail:
    counted by the inference route, with their duration there), and per request the time queued and
    computing (counted by the batcher; a request split over several model calls counts once per
    call), inferences (images), executions (model calls) and executions per batch size.

    The numbers live in one labelled gauge of the app's registry (summed over the worker processes
    when several serve: prometheus_client's multiprocess files), so ``as_dict`` and the Triton series
    report the whole server. Counts and nanoseconds are float64 there: exact below 2^53 (104 days of
    cumulative nanoseconds)."""

    def __init__(self, name: str, version: str, stat: Gauge, last: Gauge, read: Any) -> None:
        self.name = name
        self.version = version
        self._stat = stat
        self._last = last.labels(name, version)
        self._read = read  # () -> {(model, version): {(stat, batch_size): value}}, the whole server's
        self._children: dict[tuple[str, str], Any] = {}

    def _child(self, stat: str, batch: str = _TOTAL) -> Any:
        child = self._children.get((stat, batch))
        if child is None:
            child = self._children[(stat, batch)] = self._stat.labels(self.name, self.version, stat, batch)
        return child

    def _add(self, what: str, seconds: float, count: int = 1, batch: str = _TOTAL) -> None:
        self._child(what + "_count", batch).inc(count)
        self._child(what + "_ns", batch).inc(round(seconds * 1e9))

    def request_done(self, ok: bool, seconds: float) -> None:
        self._add("success" if ok else "fail", seconds)

    def executed(self, queued_s: list[float], rows: int, input_s: float, infer_s: float, output_s: float) -> None:
        """One model call on ``rows`` images from ``len(queued_s)`` requests, each queued for its time
        there; every request in the call is charged the call's compute times (as Triton does)."""
        requests = len(queued_s)
        self._add("queue", sum(queued_s), requests)
        self._add("compute_input", input_s * requests, requests)
        self._add("compute_infer", infer_s * requests, requests)
        self._add("compute_output", output_s * requests, requests)
        self._child("inference_count").inc(rows)
        self._child("execution_count").inc()
        batch = str(rows)
        self._add("compute_input", input_s, batch=batch)
        self._add("compute_infer", infer_s, batch=batch)
        self._add("compute_output", output_s, batch=batch)
        self._last.set(int(time.time() * 1000))

    def as_dict(self) -> dict[str, Any]:
        """Triton's ``$model_stat`` object."""
        values = self._read().get((self.name, self.version), {})

        def duration(what: str, batch: str = _TOTAL) -> dict[str, int]:
            return {
                "count": int(values.get((what + "_count", batch), 0)),
                "ns": int(values.get((what + "_ns", batch), 0)),
            }

        none = {"count": 0, "ns": 0}  # no response cache: its hits and misses stay zero
        sizes = sorted({int(batch) for _, batch in values if batch != _TOTAL})
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": int(values.get(("last_inference_ms", _TOTAL), 0)),
            "inference_count": int(values.get(("inference_count", _TOTAL), 0)),
            "execution_count": int(values.get(("execution_count", _TOTAL), 0)),
            "inference_stats": {
                **{what: duration(what) for what in _DURATIONS},
                "cache_hit": none,
                "cache_miss": none,
            },
            "batch_stats": [
                {"batch_size": size, **{what: duration(what, str(size)) for what in _PER_BATCH}} for size in sizes
            ],
        }


# Triton's per-model series (docs/user_guide/metrics.md in triton-inference-server/server): name,
# help, the statistic it reads and its unit's divisor (ns to us). Triton's counters carry no _total
# suffix, which prometheus_client's text format would add to a counter, so these are exposed untyped
# under Triton's exact names (rate() and increase() work on them the same).
_TRITON_SERIES: tuple[tuple[str, str, str, int], ...] = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes.", "success_count", 1),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes.", "fail_count", 1),
    ("nv_inference_count", "Number of inferences performed (a batch of n counts n).", "inference_count", 1),
    ("nv_inference_exec_count", "Number of model executions performed (batches).", "execution_count", 1),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (successful requests).",
        "success_ns",
        1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative time requests waited in the batch queue, in microseconds.",
        "queue_ns",
        1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative time requests spent preparing inputs for the model, in microseconds.",
        "compute_input_ns",
        1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative time requests spent executing the model, in microseconds.",
        "compute_infer_ns",
        1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative time requests spent extracting outputs from the model, in microseconds.",
        "compute_output_ns",
        1000,
    ),
)
TRITON_LABELS = ("model", "version")
_STAT_NAME = "bnn_model_stat"  # the statistics' store, read back, never exposed as such
_LAST_NAME = "bnn_model_last_inference_ms"

StatValues = dict[tuple[str, str], dict[tuple[str, str], float]]


def _stat_values(families: Iterable[Metric]) -> StatValues:
    """The statistics' gauges among collected ``families``: (model, version) -> (stat, batch size) -> value."""
    values: StatValues = {}
    for family in families:
        if family.name not in (_STAT_NAME, _LAST_NAME):
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels["model"], labels["version"])
            stat = (labels["stat"], labels["batch_size"]) if family.name == _STAT_NAME else ("last_inference_ms", "")
            values.setdefault(key, {})[stat] = sample.value
    return values


class _Exposed:
    """What /metrics shows: every family of ``source`` (the app's registry, or every worker's files
    read together), with the statistics' store replaced by Triton's series computed from it."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        stats: list[Metric] = []
        for family in self._source.collect():
            if family.name in (_STAT_NAME, _LAST_NAME):
                stats.append(family)
            else:
                yield family
        values = _stat_values(stats)
        for name, documentation, stat, divisor in _TRITON_SERIES:
            series = UnknownMetricFamily(name, documentation, labels=TRITON_LABELS)
            for (model, version), numbers in sorted(values.items()):
                series.add_metric([model, version], int(numbers.get((stat, ""), 0)) // divisor)
            yield series


class ServiceMetrics:
    """The service's metrics. ``multiprocess_dir``: the folder where every worker process of one
    server keeps its values (prometheus_client's multiprocess mode, chosen by PROMETHEUS_MULTIPROC_DIR
    before it is imported); then /metrics and the statistics read all workers' values together, and
    each gauge says how its workers' values combine."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # No <name>_created series beside every counter and histogram: dashboards never read them. The
        # switch is prometheus_client's, process-wide.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Where values are read back from: this registry, or every worker's files.
        self._source: Any = r if multiprocess_dir is None else MultiProcessCollector(None, multiprocess_dir)
        self._exposed = CollectorRegistry(auto_describe=False)
        self._exposed.register(_Exposed(self._source))
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
            "bnn_queue_depth",
            "Images waiting in the batch queue, per model.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
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
            multiprocess_mode="livesum",
        )
        self.model_ready = Gauge(
            "bnn_model_ready",
            "1 when the model is loaded and serving (in every worker), else 0.",
            ["model"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.workers_ready = Gauge(
            "bnn_workers_ready",
            "Worker processes that are ready to serve.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._stat = Gauge(
            _STAT_NAME,
            "Inference statistics (read back as Triton's nv_* series).",
            ["model", "version", "stat", "batch_size"],
            registry=r,
            multiprocess_mode="sum",  # cumulative: a worker that exited still counts
        )
        self._last = Gauge(
            _LAST_NAME,
            "Time of the latest inference, ms since the epoch.",
            list(TRITON_LABELS),
            registry=r,
            multiprocess_mode="max",
        )
        self._model_stats: dict[tuple[str, str], ModelStats] = {}
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
            stats = self._model_stats[(name, version)] = ModelStats(
                name, version, self._stat, self._last, self.stat_values
            )
        return stats

    def stat_values(self) -> StatValues:
        """Every model version's statistics, the whole server's."""
        return _stat_values(self._source.collect())

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, the whole server's."""
        return generate_latest(self._exposed)
