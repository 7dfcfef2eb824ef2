"""Prometheus metrics of the API.

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before starting
the server: each worker then writes its values there and ``/metrics`` sums them over all workers
(without it, a scrape sees only the worker that answered it).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from aimq_serving.loaded_models import LoadedModel

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Predictions take tens of microseconds; the default buckets start at 5 ms and would hide them.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """One registry per app, so tests can build several apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "aimq_http_request_duration_seconds",
            "Requests by endpoint (route template), method and status; _count is the request count.",
            ["endpoint", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "aimq_predictions",
            "Records priced, by model group, model version and backend.",
            ["group", "version", "backend"],
            registry=self.registry,
        )
        self.model_loads = Counter(
            "aimq_model_loads",
            "Model versions loaded (at start-up and on every promotion).",
            ["group", "version"],
            registry=self.registry,
        )
        self.loaded_version = Gauge(
            "aimq_model_loaded_version",
            "The model version each group currently serves.",
            ["group"],
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        # labels() takes a lock and builds a tuple on every call; the hot path looks children up here.
        self._request_children: dict[tuple[str, str, int], object] = {}
        self._prediction_children: dict[tuple[str, int, str], object] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(endpoint, method, str(status))
        child.observe(seconds)  # type: ignore[attr-defined]

    def count_predictions(self, group: str, version: int, backend: str, n: int) -> None:
        key = (group, version, backend)
        child = self._prediction_children.get(key)
        if child is None:
            child = self._prediction_children[key] = self.predictions.labels(group, str(version), backend)
        child.inc(n)  # type: ignore[attr-defined]

    def model_loaded(self, model: LoadedModel) -> None:
        """The ModelCache's ``on_load`` callback (runs on the watcher thread)."""
        self.model_loads.labels(model.group, str(model.version)).inc()
        self.loaded_version.labels(model.group).set(model.version)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
