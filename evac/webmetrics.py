"""HTTP metrics labelled by route template: a bounded set of series, whatever clients send.

A label made from the request's path or query string grows with every distinct request
(2,000 POSTs with 2,000 query strings made 2,000 series) and publishes what was in them
(a token in a query string showed on ``/metrics``). Here the route is the template of the
route that matched (``/hooks/evacuate``, ``/slack/events``), or ``unmatched``; the method
is one of a fixed set, or ``OTHER``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from .metrics import Metrics

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route that answered (routing records it in the scope, also for
    routes an included router added), else of the first route that matches ``scope`` by
    path (a wrong method still names its route), or ``unmatched``."""
    answered = getattr(scope.get("route"), "path", None)
    if isinstance(answered, str):
        return answered
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


class RequestMetrics:
    """``evac.web.WebServer``'s ``observe``: counts each answer in :class:`Metrics`."""

    def __init__(self, routes: Sequence[BaseRoute], metrics: Metrics) -> None:
        self.routes = routes
        self.metrics = metrics

    def __call__(self, scope: Scope, status: int, seconds: float) -> None:
        method = str(scope.get("method", ""))
        self.metrics.count_request(
            route_template(self.routes, scope), method if method in METHODS else "OTHER", status, seconds
        )
