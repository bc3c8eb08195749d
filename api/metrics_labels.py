"""Bounded `endpoint` labels for BentoML's request metrics.

BentoML 1.4's `RunnerTrafficMetricsMiddleware` labels its request counter, duration
histogram and in-progress gauge with the raw request path. Every path a client makes up
(a scanner, a typo, a random 404) adds series that live as long as the process, and with
Prometheus's multiprocess mode their files on disk as well: 3,000 random paths took
/metrics from 1.4 to 15.8 MB and 6.5 s to render. Here a path the service routes keeps its
own label and every other path shares `UNMATCHED_ENDPOINT`, so the number of series is
bounded by the service's routes whatever clients send.

The routes are read from the Starlette application the request is for (`scope["app"]`,
set before its middleware runs), once per middleware instance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

UNMATCHED_ENDPOINT = "<unmatched>"


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


# Where the request's own scope travels while the metrics middleware reads a relabelled copy.
_ORIGINAL_SCOPE = "credit_platform.original_scope"


def bound_endpoint_labels() -> bool:
    """Install the bound (idempotent); False when this BentoML's middleware has another
    shape, in which case nothing is changed.

    The middleware reads the label from `scope["path"]` and hands the same scope on. For a
    path no route serves it gets a copy whose path is `UNMATCHED_ENDPOINT`, and the
    application it wraps is given the request's own scope back; a routed path (every
    prediction) goes through untouched, at the cost of one set lookup."""
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
        routed = self.__dict__.get("_routed_paths")
        if routed is None:
            if scope.get("app") is None:  # not under Starlette: nothing to read routes from
                await original_call(self, scope, receive, send)
                return
            routed = self._routed_paths = RoutedPaths(getattr(scope["app"], "routes", ()))
            wrapped = self.app

            async def with_original_scope(scope: Any, receive: Any, send: Any) -> None:
                await wrapped(scope.get(_ORIGINAL_SCOPE, scope), receive, send)

            self.app = with_original_scope
        path = scope.get("path")
        if path is None or path in routed.exact:
            await original_call(self, scope, receive, send)
            return
        label = routed.label(path)
        if label != path:
            scope = {**scope, "path": label, _ORIGINAL_SCOPE: scope}
        await original_call(self, scope, receive, send)

    middleware.__call__ = call  # type: ignore[method-assign]
    middleware._credit_bounded = True  # type: ignore[attr-defined]
    return True
