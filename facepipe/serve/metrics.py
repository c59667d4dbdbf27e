"""Prometheus metrics of one server process (`GET /metrics`): requests by route and status, latency, the
engine queue and shed requests. Each app has its own registry; with `--workers N` each worker reports its own."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

API_PREFIX = "/v1"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("facepipe_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("facepipe_http_request_seconds", "Time to answer a request", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.shed = Counter("facepipe_shed_requests", "Requests refused with 503: no engine turn",
                            registry=self.registry)
        self.queue_depth = Gauge("facepipe_engine_queue_depth", "Requests waiting for an engine turn",
                                 registry=self.registry)
        self.running = Gauge("facepipe_engine_running", "Engine calls running", registry=self.registry)

    def watch(self, admission) -> None:
        self.queue_depth.set_function(lambda: admission.waiting)
        self.running.set_function(lambda: admission.running)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: counts every answer under its route template (never the raw path: names stay out)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")  # set by the router; under the /v1 router its path lacks the prefix
            if route is not None and getattr(route, "path", None):
                label = route.path
                if scope["path"].startswith(API_PREFIX + "/") and not label.startswith(API_PREFIX + "/"):
                    label = API_PREFIX + label
            else:
                label = "/static" if scope["path"].startswith("/static") else "unmatched"
            self.metrics.requests.labels(scope["method"], label, str(status[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
