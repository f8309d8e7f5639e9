"""The HTTP service: a FastAPI app around one :class:`mobilezoo.runtime.Runtime` and a :class:`Batcher`.

Routes: ``POST /v1/classify``, ``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, the
OpenAPI document at ``/openapi.json`` (and ``/docs``), and the upload page at ``/``.

Everything a client sends is checked before it costs anything: the Content-Type (415), the body size while it is
read (413), the image itself with the project's one decoder, :func:`mobilezoo.data.decode_image` (400, or 413 over
the pixel limit); then the bounded queue (503 with ``Retry-After``). Decoding and the model run in worker threads,
never on the event loop.

The pieces: :mod:`.schemas` (the OpenAPI document), :mod:`.middleware` (request ids, metrics, API key, concurrency
cap), :mod:`.upload` (reading and decoding what a client sends); this module wires them into the routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from ..data import EvalPreprocess
from ..runtime import Runtime
from .batcher import Batcher, QueueFullError
from .metrics import CONTENT_TYPE
from .middleware import ServeMetrics, add_middleware
from .schemas import (
    AUTH_RESPONSES,
    CLASSIFY_BODY,
    CLASSIFY_RESPONSES,
    ClassifyResponse,
    ModelsResponse,
    Status,
    add_bearer_scheme,
)
from .upload import (
    MAX_ASPECT,
    RAW_TYPES,
    ClientGone,
    decode_all,
    media_type,
    parse_multipart,
    read_body,
    wait_or_disconnect,
)

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("uvicorn.error")  # uvicorn's logger: same output, same format as the server's own lines

STATIC = resources.files("mobilezoo.serve") / "static"
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"; never reaches a client, only the metrics
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'"


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


@dataclass
class _Service:
    """What the routes share: the runtime, the settings, readiness, metrics, the batcher and the decode threads."""

    rt: Runtime
    cfg: ServeConfig
    pre: EvalPreprocess
    state: dict[str, Any]
    metrics: ServeMetrics
    batcher: Batcher
    decode_pool: ThreadPoolExecutor


def create_app(rt: Runtime, config: ServeConfig | None = None) -> FastAPI:
    """The service for one runtime. Start it with uvicorn (``mobilezoo serve`` does)."""
    cfg = config or ServeConfig()
    svc = _service(rt, cfg)
    app = FastAPI(
        title="mobilezoo serve",
        version=_version(),
        description=f"Image classification with **{rt.model_name}** ({rt.backend}, {rt.device}); "
        f"dynamic batching up to {cfg.max_batch} images or {cfg.max_wait_ms:g} ms.",
        lifespan=_lifespan(svc),
    )
    _add_classify_route(app, svc)
    _add_info_routes(app, svc)
    _add_page(app)
    if cfg.api_key:
        add_bearer_scheme(app)
    add_middleware(app, svc.metrics, cfg.api_key, cfg.max_concurrency, cfg.cors_origins)
    app.state.metrics = svc.metrics
    app.state.batcher = svc.batcher
    return app


def _service(rt: Runtime, cfg: ServeConfig) -> _Service:
    state: dict[str, Any] = {"ready": False, "batcher": None, "status": "warming up"}
    metrics = ServeMetrics(lambda: state["batcher"], cfg.queue_size, rt)
    decode_pool = ThreadPoolExecutor(max(1, cfg.decode_threads), thread_name_prefix="mobilezoo-decode")
    batcher = Batcher(_batch_runner(rt), max_batch=cfg.max_batch, max_wait_s=cfg.max_wait_ms / 1000,
                      queue_size=cfg.queue_size, on_batch=metrics.on_batch, on_dropped=metrics.on_dropped)  # fmt: skip
    return _Service(rt, cfg, rt.preprocess, state, metrics, batcher, decode_pool)


def _batch_runner(rt: Runtime) -> Callable[[list[tuple[torch.Tensor, int]]], list[tuple[list[int], list[float]]]]:
    def run_batch(items: list[tuple[torch.Tensor, int]]) -> list[tuple[list[int], list[float]]]:
        """On the model thread: one forward pass for the whole batch, then softmax and each item's own top-k."""
        x = torch.stack([t for t, _ in items])
        probs = torch.softmax(rt(x).float(), dim=1)
        k = min(max(k for _, k in items), probs.shape[1])
        scores, idx = probs.topk(k, dim=1)
        scores, idx = scores.tolist(), idx.tolist()
        return [(idx[i][:k_i], scores[i][:k_i]) for i, (_, k_i) in enumerate(items)]

    return run_batch


def _lifespan(svc: _Service):
    """Start the batcher, warm the model up in the background (then ready), and stop everything at shutdown."""
    rt, batcher, state, metrics = svc.rt, svc.batcher, svc.state, svc.metrics

    def warm_up() -> None:
        with torch.inference_mode():
            for n in sorted({1, svc.cfg.max_batch}):
                rt(torch.zeros(n, 3, svc.pre.crop_size, svc.pre.crop_size))

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
            svc.decode_pool.shutdown(wait=True)

    return lifespan


# -- routes ------------------------------------------------------------------------------------------------------
def _admit(svc: _Service, ctype: str) -> None:
    """Refuse before reading anything: not ready (503), a wrong Content-Type (415), a full queue (503)."""
    state, batcher = svc.state, svc.batcher
    if not state["ready"]:
        raise HTTPException(503, f"not ready: {state['status']}", headers={"Retry-After": "1"})
    if ctype != "multipart/form-data" and ctype not in RAW_TYPES:
        shown = ctype or "none"
        raise HTTPException(415, f"unsupported Content-Type {shown!r}: send an image (e.g. image/jpeg) or "
                            "multipart/form-data with 'file' fields")  # fmt: skip
    if batcher.pending >= batcher.queue_size:  # already full: refuse before reading or decoding anything
        svc.metrics.rejected.inc()
        raise HTTPException(503, f"queue full ({batcher.pending} images waiting); retry later",
                            headers={"Retry-After": str(batcher.retry_after())})  # fmt: skip


def _add_classify_route(app: FastAPI, svc: _Service) -> None:
    cfg, batcher, names = svc.cfg, svc.batcher, svc.rt.class_names

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        summary="Classify one or more images",
        openapi_extra=CLASSIFY_BODY,
        responses=CLASSIFY_RESPONSES,
    )
    async def classify(request: Request, topk: int = Query(5, ge=1, le=1000, description="classes per image")):
        ctype = media_type(request.headers.get("content-type"))
        _admit(svc, ctype)
        try:
            body = await read_body(request, cfg.max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED)
        if ctype == "multipart/form-data":
            blobs = await parse_multipart(request, body, cfg.max_images)
        else:
            blobs = [("body", body)]
        del body
        loop = asyncio.get_running_loop()
        tensors = await loop.run_in_executor(svc.decode_pool, decode_all, blobs, svc.pre, cfg.max_pixels)
        sources = [src for src, _ in blobs]
        del blobs
        try:
            futures = batcher.submit([(t, topk) for t in tensors])
        except QueueFullError as e:
            svc.metrics.rejected.inc()
            raise HTTPException(503, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        del tensors
        try:
            results = await wait_or_disconnect(request, futures)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        predictions = [
            {"source": src, "topk": [{"index": i, "name": _name(names, i), "score": s} for i, s in zip(idx, sc)]}
            for src, (idx, sc) in zip(sources, results)
        ]
        return {"model": svc.rt.model_name, "backend": svc.rt.backend, "predictions": predictions}


def _model_info(svc: _Service) -> dict[str, Any]:
    rt, cfg = svc.rt, svc.cfg
    return {
        "name": rt.model_name,
        "backend": rt.backend,
        "device": rt.device,
        "precision": rt.precision,
        "num_classes": len(rt.class_names),
        "preprocess": svc.pre.as_dict(),
        "batching": {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms, "queue_size": cfg.queue_size},
        "limits": {
            "max_body_bytes": cfg.max_body_bytes,
            "max_pixels": cfg.max_pixels,
            "max_images_per_request": cfg.max_images,
            "max_aspect_ratio": MAX_ASPECT,
        },
        "extra": cfg.extra,
    }


def _add_info_routes(app: FastAPI, svc: _Service) -> None:
    """``/v1/models``, the health checks and ``/metrics``."""
    state = svc.state

    @app.get("/v1/models", response_model=ModelsResponse, summary="The model being served", responses=AUTH_RESPONSES)
    async def models() -> dict[str, Any]:
        return {"models": [_model_info(svc)]}

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
        return Response(svc.metrics.registry.render(), media_type=CONTENT_TYPE)


def _add_page(app: FastAPI) -> None:
    """The upload page at ``/`` and its files under ``/static``."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")


def _name(names: list[str], i: int) -> str:
    return names[i] if i < len(names) else str(i)


def _version() -> str:
    from .. import __version__

    return __version__
