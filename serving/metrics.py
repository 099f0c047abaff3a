"""Prometheus metrics of the scorer, on a registry per app (never the process-global default).

Per-app registries let tests (and a process embedding two apps) build several apps without "Duplicated
timeseries" errors, and make every number on ``/metrics`` belong to exactly one scorer.

What is measured, and where:

* ``ltrr_http_request_duration_seconds{endpoint,method,status}``: a histogram per route template, timed by
  :class:`MetricsMiddleware` around the whole ASGI call (validation, the scorer, serialisation);
* ``ltrr_http_errors_total{endpoint,kind}``: 4xx/5xx by endpoint (``kind`` = ``client``/``server``);
* ``ltrr_degraded_responses_total``: ``/rank`` answers that used default features;
* ``ltrr_model_version_info{family,version}``: 1 for each champion being served (one series per family);
* ``ltrr_reloads_total{outcome}`` and ``ltrr_champion_load_failures_total{family}``: reload outcomes
  (``ok``, ``kept_previous`` when some family kept its old champion, ``failed`` when the reload raised).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Milliseconds matter here (target: p99 < 25 ms): finer buckets below 50 ms than the client's defaults.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0)
NO_FAMILY_VERSION = "none"


class ServingMetrics:
    """The scorer's metrics, all registered on ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram("ltrr_http_request_duration_seconds", "HTTP request latency by route template.",
                                 ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("ltrr_http_errors_total", "HTTP responses with status >= 400 by route.",
                              ["endpoint", "kind"], registry=r)
        self.degraded = Counter("ltrr_degraded_responses_total",
                                "/rank responses served with default features (online store failed).", registry=r)
        self.model_version = Gauge("ltrr_model_version_info",
                                   "1 for the version of each family being served ('none': cold start).",
                                   ["family", "version"], registry=r)
        self.reloads = Counter("ltrr_reloads_total", "Champion (re)loads by outcome.", ["outcome"], registry=r)
        self.load_failures = Counter("ltrr_champion_load_failures_total",
                                     "Champion loads that failed and kept the previous version (or none).",
                                     ["family"], registry=r)

    def set_versions(self, versions: Mapping[str, str | None]) -> None:
        """Replace the version series: exactly one per family, for what is served now."""
        self.model_version.clear()
        for family, version in versions.items():
            self.model_version.labels(family=family, version=version or NO_FAMILY_VERSION).set(1)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware (no ``BaseHTTPMiddleware``: that one copies every body through a task group).

    Labels by the matched route's template (``/rank``), never the raw path, so a scan of random URLs cannot
    blow up the number of series: a request that matched no route (rejected by an inner middleware first, e.g.
    a 413) is labelled by its path when that is one of ``known_paths``, else ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, known_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None)
            if endpoint is None:
                endpoint = scope.get("path") if scope.get("path") in self.known_paths else "unmatched"
            code = status[0]
            self.metrics.latency.labels(endpoint=endpoint, method=scope.get("method", ""),
                                        status=str(code)).observe(time.perf_counter() - t0)
            if code >= 400:
                self.metrics.errors.labels(endpoint=endpoint, kind="server" if code >= 500 else "client").inc()
