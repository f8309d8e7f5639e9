"""The HTTP service: a FastAPI app around one :class:`mobilezoo.runtime.Runtime` and a :class:`Batcher`.

Routes: ``POST /v1/classify``, ``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, the
OpenAPI document at ``/openapi.json`` (and ``/docs``), and the upload page at ``/``.

Everything a client sends is checked before it costs anything: the Content-Type (415), the body size while it is
read (413), the image itself with the project's one decoder, :func:`mobilezoo.data.decode_image` (400, or 413 over
the pixel limit); then the bounded queue (503 with ``Retry-After``). Decoding and the model run in worker threads,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..data import ImageError, decode_image
from ..runtime import Runtime
from .batcher import Batcher, QueueFullError
from .metrics import CONTENT_TYPE, Counter, Gauge, Histogram, Registry

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("uvicorn.error")  # uvicorn's logger: same output, same format as the server's own lines

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})  # no API key needed
ROUTES = ("/", "/v1/classify", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "QUERY"})
MAX_ASPECT = 64  # longer side / shorter side: beyond this the short-side resize would blow up the image
STATIC = resources.files("mobilezoo.serve") / "static"
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"; never reaches a client, only the metrics


@dataclass
class ServeConfig:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 256  # images waiting for the model; beyond: 503 + Retry-After
    max_body_bytes: int = 20 * 2**20
    max_pixels: int = 25_000_000  # per decoded image; beyond: 413
    max_images: int = 32  # per request
    max_concurrency: int = 128  # requests handled at once (each holds up to max_body_bytes); beyond: 503
    decode_threads: int = 2  # decode + preprocess threads
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # shown in /v1/models (e.g. the artifact path)


# -- image types ---------------------------------------------------------------------------------------------------
def _image_types() -> frozenset[str]:
    from PIL import Image

    Image.init()
    known = {m for m in Image.MIME.values() if m.startswith("image/")}
    aliases = {"image/jpg", "image/pjpeg", "image/x-png", "image/x-ms-bmp", "image/x-bmp", "image/x-portable-pixmap",
               "image/x-portable-graymap", "image/x-portable-bitmap", "image/x-tiff"}  # fmt: skip
    return frozenset(known | aliases)


IMAGE_TYPES = _image_types()
RAW_TYPES = IMAGE_TYPES | {"application/octet-stream"}  # octet-stream: let the decoder find the format


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# -- response models (the OpenAPI document) ------------------------------------------------------------------------
class TopK(BaseModel):
    index: int = Field(description="class index")
    name: str = Field(description="class name")
    score: float = Field(description="softmax probability")


class ImagePrediction(BaseModel):
    source: str = Field(description="the multipart file name, or 'body' for a raw upload")
    topk: list[TopK]


class ClassifyResponse(BaseModel):
    model: str
    backend: str
    predictions: list[ImagePrediction]


class ModelInfo(BaseModel):
    name: str
    backend: str
    device: str
    precision: str
    num_classes: int
    preprocess: dict[str, Any]
    batching: dict[str, Any]
    limits: dict[str, Any]
    extra: dict[str, Any] = {}


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Status(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    detail: str


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {401: _err("missing or wrong API key (when the server has one)")}
BUSY_RESPONSES: dict[int | str, dict[str, Any]] = {503: _err("queue full, too many requests, or warming up")}

_BINARY = {"schema": {"type": "string", "format": "binary"}}
CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body (an image Content-Type, or application/octet-stream), or "
        "multipart/form-data with one or more `file` fields.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["file"],
                },
                "encoding": {"file": {"contentType": "image/*"}},
            },
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "image/webp": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}


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


def _route_label(path: str) -> str:
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "unmatched"  # bounded label set, whatever clients send


# -- ASGI middleware --------------------------------------------------------------------------------------------
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _Observe:
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
            route = _route_label(scope["path"])
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.inc(route=route, method=method, status=str(status["code"]))
            self.metrics.latency.observe(time.perf_counter() - t0, route=route)


async def _send_json(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    await send({"type": "http.response.start", "status": status, "headers": body.raw_headers})
    await send({"type": "http.response.body", "body": body.body})


class _Guard:
    """API key (every route but the health checks) and a cap on requests handled at once (bounded memory)."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_concurrency: int) -> None:
        self.app, self.max_concurrency = app, max_concurrency
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
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


# -- the app ------------------------------------------------------------------------------------------------------
class _ClientGone(Exception):
    pass


def create_app(rt: Runtime, config: ServeConfig | None = None) -> FastAPI:
    """The service for one runtime. Start it with uvicorn (``mobilezoo serve`` does)."""
    cfg = config or ServeConfig()
    names = rt.class_names
    state: dict[str, Any] = {"ready": False, "batcher": None, "status": "warming up"}
    metrics = ServeMetrics(lambda: state["batcher"], cfg.queue_size, rt)
    decode_pool = ThreadPoolExecutor(max(1, cfg.decode_threads), thread_name_prefix="mobilezoo-decode")
    pre = rt.preprocess

    def run_batch(items: list[tuple[torch.Tensor, int]]) -> list[tuple[list[int], list[float]]]:
        """On the model thread: one forward pass for the whole batch, then softmax and each item's own top-k."""
        x = torch.stack([t for t, _ in items])
        probs = torch.softmax(rt(x).float(), dim=1)
        k = min(max(k for _, k in items), probs.shape[1])
        scores, idx = probs.topk(k, dim=1)
        scores, idx = scores.tolist(), idx.tolist()
        return [(idx[i][:k_i], scores[i][:k_i]) for i, (_, k_i) in enumerate(items)]

    batcher = Batcher(run_batch, max_batch=cfg.max_batch, max_wait_s=cfg.max_wait_ms / 1000, queue_size=cfg.queue_size,
                      on_batch=metrics.on_batch, on_dropped=metrics.on_dropped)  # fmt: skip

    def warm_up() -> None:
        with torch.inference_mode():
            for n in sorted({1, cfg.max_batch}):
                rt(torch.zeros(n, 3, pre.crop_size, pre.crop_size))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        state["batcher"] = batcher

        async def warm() -> None:
            await batcher.run_in_worker(warm_up)
            state["ready"] = True
            metrics.ready.set(1)
            log.info("mobilezoo: %s (%s, %s) is warmed up and ready", rt.model_name, rt.backend, rt.device)

        task = asyncio.create_task(warm())
        try:
            yield
        finally:
            state["ready"], state["status"] = False, "shutting down"
            metrics.ready.set(0)
            task.cancel()
            await batcher.stop()
            decode_pool.shutdown(wait=True)

    app = FastAPI(
        title="mobilezoo serve",
        version=_version(),
        description=f"Image classification with **{rt.model_name}** ({rt.backend}, {rt.device}); "
        f"dynamic batching up to {cfg.max_batch} images or {cfg.max_wait_ms:g} ms.",
        lifespan=lifespan,
    )

    # ---- decoding ----------------------------------------------------------------------------------------------
    def decode_one(data: bytes, source: str) -> torch.Tensor:
        try:
            img = decode_image(data, source, cfg.max_pixels)
        except ImageError as e:
            raise HTTPException(413 if _over_pixels(data, cfg.max_pixels) else 400, str(e)) from None
        except Exception as e:  # a decoder bug on a hostile file is still the file's fault: 400, and logged
            log.warning("decoding %s raised %s: %s (answered 400)", source, type(e).__name__, e, exc_info=True)
            raise HTTPException(400, f"{source}: cannot decode image ({type(e).__name__})") from None
        w, h = img.size
        if max(w, h) > MAX_ASPECT * min(w, h):
            raise HTTPException(400, f"{source}: {w}x{h} has an aspect ratio over {MAX_ASPECT}:1")
        return pre(img)

    def decode_all(blobs: list[tuple[str, bytes]]) -> list[torch.Tensor]:
        return [decode_one(data, src) for src, data in blobs]

    async def read_body(request: Request) -> bytes:
        limit = cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def parse_multipart(request: Request, body: bytes) -> list[tuple[str, bytes]]:
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        form_request = Request(request.scope, replay)
        try:
            form = await form_request.form(max_files=cfg.max_images, max_fields=cfg.max_images + 16)
        except StarletteHTTPException as e:  # Starlette's parser reports a malformed body this way
            raise HTTPException(400, f"multipart body: {e.detail}") from None
        except (ValueError, KeyError, AssertionError) as e:  # python-multipart's own errors on a malformed body
            raise HTTPException(400, f"malformed multipart body ({type(e).__name__}: {e})") from None
        try:
            blobs = []
            for i, part in enumerate(form.getlist("file")):
                if not isinstance(part, UploadFile):
                    raise HTTPException(400, "each 'file' field must be a file upload, not a text field")
                ctype = _media_type(part.content_type)
                src = part.filename or f"file[{i}]"
                if ctype and ctype not in RAW_TYPES:
                    raise HTTPException(415, f"{src}: unsupported type {ctype!r}; send an image (e.g. image/jpeg)")
                blobs.append((src, await part.read()))
            if not blobs:
                raise HTTPException(400, "multipart body has no 'file' field")
            return blobs
        finally:
            await form.close()

    async def wait_or_disconnect(request: Request, futures: list[asyncio.Future]) -> list[Any]:
        gathered = asyncio.gather(*futures)

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(disconnected())
        try:
            done, _ = await asyncio.wait({gathered, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            gathered.cancel()
            raise
        finally:
            watcher.cancel()
        if gathered in done:
            return gathered.result()
        gathered.cancel()  # the batcher skips these items: a client that left costs no model time
        raise _ClientGone

    # ---- routes ----------------------------------------------------------------------------------------------
    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        summary="Classify one or more images",
        openapi_extra=CLASSIFY_BODY,
        responses={
            400: _err("undecodable, truncated or empty image, or a malformed multipart body"),
            **AUTH_RESPONSES,
            413: _err("body over the size limit, or an image over the pixel limit"),
            415: _err("unsupported Content-Type"),
            **BUSY_RESPONSES,
        },
    )
    async def classify(request: Request, topk: int = Query(5, ge=1, le=1000, description="classes per image")):
        if not state["ready"]:
            raise HTTPException(503, f"not ready: {state['status']}", headers={"Retry-After": "1"})
        ctype = _media_type(request.headers.get("content-type"))
        if ctype != "multipart/form-data" and ctype not in RAW_TYPES:
            shown = ctype or "none"
            raise HTTPException(415, f"unsupported Content-Type {shown!r}: send an image (e.g. image/jpeg) or "
                                "multipart/form-data with 'file' fields")  # fmt: skip
        if batcher.pending >= batcher.queue_size:  # already full: refuse before reading or decoding anything
            metrics.rejected.inc()
            raise HTTPException(503, f"queue full ({batcher.pending} images waiting); retry later",
                                headers={"Retry-After": str(batcher.retry_after())})  # fmt: skip
        try:
            body = await read_body(request)
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED)
        blobs = await parse_multipart(request, body) if ctype == "multipart/form-data" else [("body", body)]
        del body
        tensors = await asyncio.get_running_loop().run_in_executor(decode_pool, decode_all, blobs)
        sources = [src for src, _ in blobs]
        del blobs
        try:
            futures = batcher.submit([(t, topk) for t in tensors])
        except QueueFullError as e:
            metrics.rejected.inc()
            raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        del tensors
        try:
            results = await wait_or_disconnect(request, futures)
        except _ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        predictions = [
            {"source": src, "topk": [{"index": i, "name": _name(names, i), "score": s} for i, s in zip(idx, sc)]}
            for src, (idx, sc) in zip(sources, results)
        ]
        return {"model": rt.model_name, "backend": rt.backend, "predictions": predictions}

    @app.get("/v1/models", response_model=ModelsResponse, summary="The model being served", responses=AUTH_RESPONSES)
    async def models() -> dict[str, Any]:
        info = {
            "name": rt.model_name,
            "backend": rt.backend,
            "device": rt.device,
            "precision": rt.precision,
            "num_classes": len(names),
            "preprocess": pre.as_dict(),
            "batching": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms, "queue_size": cfg.queue_size},
            "limits": {
                "max_body_bytes": cfg.max_body_bytes,
                "max_pixels": cfg.max_pixels,
                "max_images_per_request": cfg.max_images,
                "max_aspect_ratio": MAX_ASPECT,
            },
            "extra": cfg.extra,
        }
        return {"models": [info]}

    @app.get("/healthz", response_model=Status, summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        response_model=Status,
        summary="Readiness: the model is loaded and warmed up",
        responses={503: {"model": Status, "description": "not ready yet (or shutting down)"}},
    )
    async def readyz():
        if state["ready"]:
            return {"status": "ready"}
        return JSONResponse({"status": state["status"]}, status_code=503, headers={"Retry-After": "1"})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        summary="Prometheus metrics (text format 0.0.4)",
        responses={200: {"content": {"text/plain": {}}}, **AUTH_RESPONSES},
    )
    async def prometheus() -> Response:
        return Response(metrics.registry.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    if cfg.api_key:
        _add_bearer_scheme(app)
    # middleware: the last added is the outermost
    app.add_middleware(_Guard, api_key=cfg.api_key, max_concurrency=cfg.max_concurrency)
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"])  # fmt: skip
    app.add_middleware(_Observe, metrics=metrics)
    app.state.metrics = metrics
    app.state.batcher = batcher
    return app


def _name(names: list[str], i: int) -> str:
    return names[i] if i < len(names) else str(i)


def _over_pixels(data: bytes, max_pixels: int) -> bool:
    from PIL import Image

    try:
        w, h = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError:  # over Pillow's own limit, far beyond ours
        return True
    except Exception:
        return False
    return w * h > max_pixels


def _version() -> str:
    from .. import __version__

    return __version__


PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'"


def _add_bearer_scheme(app: FastAPI) -> None:
    """Declare the bearer key in the OpenAPI document (the check itself is :class:`_Guard`)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, ops in schema["paths"].items():
            if path not in PUBLIC_PATHS:
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
