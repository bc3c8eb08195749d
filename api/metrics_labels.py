"""Bounded `endpoint` labels for BentoML's request metrics.

BentoML 1.4's `RunnerTrafficMetricsMiddleware` labels its request counter, duration
histogram and in-progress gauge with the raw request path. Every path a client makes up
(a scanner, a typo, a random 404) adds series that live as long as the process, and with
Prometheus's multiprocess mode their files on disk as well: 3,000 random paths took
/metrics from 1.4 to 15.8 MB and 6.5 s to render. Here a path the service routes keeps its
own label and every other path shares `UNMATCHED_ENDPOINT`, so the number of series is
bounded by the service's routes whatever clients send.

The routes are read from the Starlette application the request is for (`scope["app"]`,
set before its middleware runs), once per application.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

UNMATCHED_ENDPOINT = "<unmatched>"
# The metrics of the middleware labelled by endpoint (set up by its `_setup`).
_LABELLED_METRICS = (
    "metrics_request_duration",
    "metrics_request_total",
    "metrics_request_in_progress",
    "metrics_websocket_connections",
    "metrics_websocket_data_received",
    "metrics_websocket_data_sent",
)


class RoutedPaths:
    """The paths an application routes: exact ones, and patterns for routes with
    parameters. Mounted applications' routes are included under their mount path; a mount
    whose application has no routes (static files) is not: its paths are unbounded."""

    def __init__(self, routes: Iterable[Any]) -> None:
        self.exact: set[str] = set()
        self.patterns: list[re.Pattern[str]] = []
        self._collect(routes, "")

    def _collect(self, routes: Iterable[Any], prefix: str) -> None:
        for route in routes:
            path = getattr(route, "path", None)
            if not isinstance(path, str):
                continue
            sub_routes = getattr(getattr(route, "app", None), "routes", None)
            if hasattr(route, "app") and not hasattr(route, "endpoint"):  # a mount
                if sub_routes is not None:
                    self._collect(sub_routes, prefix + path.rstrip("/"))
                continue
            full = prefix + path
            if "{" in full:
                self.patterns.append(re.compile(_pattern(full)))
            else:
                self.exact.add(full)

    def label(self, path: str) -> str:
        if path in self.exact:
            return path
        for pattern in self.patterns:
            if pattern.fullmatch(path):
                return pattern.pattern
        return UNMATCHED_ENDPOINT


def _pattern(path: str) -> str:
    """A route path with parameters as a regular expression (one path segment each)."""
    parts = re.split(r"(\{[^}]*\})", path)
    return "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)


class _EndpointBounded:
    """A labelled metric whose `endpoint` label is the route's, never a client's path."""

    def __init__(self, metric: Any, routed: RoutedPaths) -> None:
        self._metric = metric
        self._routed = routed

    def labels(self, *args: Any, **labels: Any) -> Any:
        endpoint = labels.get("endpoint")
        if endpoint is not None:
            labels["endpoint"] = self._routed.label(endpoint)
        return self._metric.labels(*args, **labels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


def bound_endpoint_labels() -> bool:
    """Install the bound (idempotent); False when this BentoML's middleware has another
    shape, in which case nothing is changed."""
    try:
        from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
    except ImportError:
        return False
    middleware = RunnerTrafficMetricsMiddleware
    if getattr(middleware, "_credit_bounded", False):
        return True
    if not hasattr(middleware, "_setup"):
        return False
    original_call = middleware.__call__

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if getattr(self, "_routed_paths", None) is None and scope.get("app") is not None:
            routed = RoutedPaths(getattr(scope["app"], "routes", ()))
            if not self._is_setup:
                self._setup()
            for name in _LABELLED_METRICS:
                metric = getattr(self, name, None)
                if metric is not None and not isinstance(metric, _EndpointBounded):
                    setattr(self, name, _EndpointBounded(metric, routed))
            self._routed_paths = routed
        await original_call(self, scope, receive, send)

    middleware.__call__ = call  # type: ignore[method-assign]
    middleware._credit_bounded = True  # type: ignore[attr-defined]
    return True
