"""Prometheus metrics, in a registry of the app's own (so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self) -> None:
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
