"""Pure ASGI middleware: request metrics, the shared rate limit and the body-size limit.

Pure ASGI rather than BaseHTTPMiddleware: the latter wraps every request in extra tasks and streams,
which costs more than a whole one-row prediction.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aimq_serving.api.errors import RETRY_AFTER_UNAVAILABLE_S, BodyTooLarge, too_large_body
from aimq_serving.api.metrics import ApiMetrics
from aimq_serving.api.ratelimit import LimiterUnavailable, RateLimiter

# Probes and scrapes must keep working for a client that is being limited.
RATE_LIMIT_EXEMPT = frozenset({"/health", "/ready", "/metrics"})
# Set by the API-key middleware (aimq_serving/api/auth.py): the name of the request's key.
SCOPE_API_KEY = "aimq.api_key"


def address_key(scope: Scope) -> str:
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


async def send_json(send: Send, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class RouteTemplates:
    """The route's path template (``/predict/onnx``) of a request, never its raw path: metric
    labels must not grow with whatever paths clients send."""

    def __init__(self) -> None:
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return route.path
        # Answered before routing (429, 413) or by no route at all: match the documented paths.
        if self._patterns is None:
            paths = scope["app"].openapi()["paths"] if "app" in scope else {}
            self._patterns = [(compile_path(path)[0], path) for path in paths]
        for pattern, path in self._patterns:
            if pattern.match(scope["path"]):
                return path
        return "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics
        self.route_template = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.observe_request(
                self.route_template(scope), scope["method"], status, time.perf_counter() - start
            )


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: RateLimiter, key_header: str | None):
        self.app = app
        self.limiter = limiter
        self.key_header = key_header.lower().encode() if key_header else None

    def client_key(self, scope: Scope) -> str:
        # An authenticated request counts against its key's budget, by name: all clients sharing
        # a key share its budget, wherever they come from, and the key itself never reaches Redis.
        api_key = scope.get(SCOPE_API_KEY)
        if api_key is not None:
            return "key:" + api_key
        if self.key_header is not None:
            for name, value in scope["headers"]:
                if name == self.key_header:
                    return "h:" + value.decode("latin-1")
        return address_key(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in RATE_LIMIT_EXEMPT:
            await self.app(scope, receive, send)
            return
        try:
            wait_s = await self.limiter.check(self.client_key(scope))
        except LimiterUnavailable as exc:
            await send_json(send, 503, {"detail": str(exc)}, {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})
            return
        if wait_s is not None:
            retry = self.limiter.retry_after(wait_s)
            api_key = scope.get(SCOPE_API_KEY)
            who = f"API key {api_key!r}" if api_key is not None else "client"
            body = {
                "detail": f"rate limit exceeded: at most {self.limiter.limit} requests per "
                f"{self.limiter.window_s:g} s per {who}; retry in {retry} s",
                "retry_after_s": retry,
            }
            await send_json(send, 429, body, {"Retry-After": str(retry)})
            return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` (413): at once from Content-Length, else while reading.

    ``path_limits`` maps path prefixes to their own limit (an upload route takes files bigger than
    any prediction request)."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = sorted((path_limits or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.path_limits:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"]) if self.path_limits else self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_json(send, 400, {"detail": "Content-Length is not a number"})
                    return
                if declared > limit:
                    await send_json(send, 413, too_large_body(limit))
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the handler that reads the body; the app's handler answers 413.
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
