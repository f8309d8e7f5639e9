"""The service's ASGI middleware and its metrics: request ids, security headers and Prometheus metrics
(:class:`Observe`, outermost), CORS (optional), then the API key and the cap on requests at once (:class:`Guard`)."""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .metrics import Counter, Gauge, Histogram, Registry

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .batcher import Batcher

__all__ = ["METHODS", "PUBLIC_PATHS", "ROUTES", "Guard", "Observe", "ServeMetrics", "add_middleware", "route_label"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/"})  # no API key needed (the page is static: it asks for the key)
PUBLIC_PREFIXES = ("/static/",)  # the page's script and style sheet
ROUTES = ("/", "/v1/classify", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "QUERY"})


# -- metrics --------------------------------------------------------------------------------------------------------
class ServeMetrics:
    def __init__(self, batcher_ref: Callable[[], Batcher | None], queue_size: int, rt: Runtime) -> None:
        r = self.registry = Registry()

        def depth() -> float:
            b = batcher_ref()
            return b.pending if b else 0

        self.requests = r.add(Counter("mobilezoo_http_requests_total", "HTTP requests by route, method and status",
                                      ("route", "method", "status")))  # fmt: skip
        self.latency = r.add(
            Histogram(
                "mobilezoo_http_request_duration_seconds",
                "time from the request's arrival to the end of its response, by route",
                (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                ("route",),
            )
        )
        self.batch_size = r.add(Histogram("mobilezoo_batch_size", "images per model call (dynamic batching)",
                                          (1, 2, 4, 8, 16, 32, 64, 128, 256)))  # fmt: skip
        self.inference = r.add(
            Histogram(
                "mobilezoo_inference_duration_seconds",
                "model time per batch (stack, forward, softmax, top-k)",
                (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            )
        )
        self.images = r.add(Counter("mobilezoo_images_total", "images by outcome: classified, or dropped because "
                                    "the client went away before its batch ran", ("outcome",)))  # fmt: skip
        self.rejected = r.add(Counter("mobilezoo_queue_rejected_total", "requests refused with 503: queue full"))
        r.add(Gauge("mobilezoo_queue_depth", "images waiting for the model", fn=depth))
        r.add(Gauge("mobilezoo_queue_capacity", "the most images that may wait", fn=lambda: queue_size))
        self.in_flight = r.add(Gauge("mobilezoo_http_requests_in_flight", "requests being handled now"))
        self.ready = r.add(Gauge("mobilezoo_ready", "1 once the model is loaded and warmed up"))
        info = r.add(
            Gauge("mobilezoo_model_info", "the model being served", ("model", "backend", "device", "precision"))
        )
        info.set(1, model=rt.model_name, backend=rt.backend, device=rt.device, precision=rt.precision)
        for outcome in ("classified", "dropped"):
            self.images.inc(0, outcome=outcome)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.images.inc(size, outcome="classified")

    def on_dropped(self, n: int) -> None:
        self.images.inc(n, outcome="dropped")


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "unmatched"  # bounded label set, whatever clients send


# -- ASGI middleware --------------------------------------------------------------------------------------------
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Observe:
    """Outermost: request id (echoes a sane ``X-Request-ID`` or makes one), metrics, security headers."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", rid.encode("latin-1")),
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        self.active += 1
        self.metrics.in_flight.set(self.active)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.active -= 1
            self.metrics.in_flight.set(self.active)
            route = route_label(scope["path"])
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.inc(route=route, method=method, status=str(status["code"]))
            self.metrics.latency.observe(time.perf_counter() - t0, route=route)


async def _send_json(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    await send({"type": "http.response.start", "status": status, "headers": body.raw_headers})
    await send({"type": "http.response.body", "body": body.body})


class Guard:
    """API key (every route but the health checks) and a cap on requests handled at once (bounded memory)."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_concurrency: int) -> None:
        self.app, self.max_concurrency = app, max_concurrency
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIXES):
            return await self.app(scope, receive, send)
        if self.expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                msg = "missing API key: send Authorization: Bearer <key>" if not given else "wrong API key"
                return await _send_json(send, 401, msg, {"WWW-Authenticate": "Bearer"})
        if self.active >= self.max_concurrency:
            return await _send_json(send, 503, f"server busy ({self.active} requests in progress); retry later",
                                    {"Retry-After": "1"})  # fmt: skip
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def add_middleware(
    app: FastAPI, metrics: ServeMetrics, api_key: str | None, max_concurrency: int, cors_origins: Sequence[str]
) -> None:
    """Guard innermost, then CORS (when origins are given), then Observe outermost (the last added is outermost)."""
    app.add_middleware(Guard, api_key=api_key, max_concurrency=max_concurrency)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"])  # fmt: skip
    app.add_middleware(Observe, metrics=metrics)
