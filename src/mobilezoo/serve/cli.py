"""``mobilezoo serve``: the HTTP service on uvicorn (imports of FastAPI, uvicorn and torch happen only when it runs)."""

from __future__ import annotations

import argparse
import inspect
import os
import socket
import sys
from pathlib import Path

from .._weights_options import add_weights_options

API_KEY_ENV = "MOBILEZOO_API_KEY"


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    import ipaddress

    if not host or host in ("0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def bind_warning(host: str, api_key: str | None) -> str | None:
    if api_key or is_loopback(host):
        return None
    return (
        f"WARNING: serving on {host!r}, which is not a loopback address, WITHOUT an API key: anyone who can reach "
        f"this port can use the model. Set --api-key or the {API_KEY_ENV} environment variable, or bind to 127.0.0.1."
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from .._deps import require

    for mod in ("fastapi", "uvicorn", "multipart"):
        require(mod, "serve")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    warning = bind_warning(args.host, api_key)
    if warning:
        print(f"mobilezoo: {warning}", file=sys.stderr, flush=True)
    for flag in ("max_batch", "queue_size", "max_images", "max_concurrency", "decode_threads"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")

    import uvicorn

    from .. import runtime
    from .app import ServeConfig, create_app

    extra = {}
    if args.artifact:
        if args.model or args.ckpt or args.random_weights:
            raise ValueError("--artifact is an exported model: give it without --model, --ckpt or --random-weights")
        rt = runtime.load(args.artifact, backend=args.backend, device=args.device, threads=args.threads)
        extra["artifact"] = str(args.artifact)
    else:
        if not args.model and not args.ckpt:
            raise ValueError("give --model NAME (the published weights, --ckpt PATH or --random-weights), "
                             "--ckpt PATH alone (a checkpoint that names its model) or --artifact FILE")  # fmt: skip
        from .._weights_options import model_from_options

        model = model_from_options(args, args.model)
        if args.ckpt:
            extra["checkpoint"] = str(args.ckpt)
        else:
            extra["weights"] = "random (--random-weights)" if args.random_weights else "published"
        kw = {}
        if args.backend == "auto" and "batch_size" in inspect.signature(runtime.load).parameters:
            kw["batch_size"] = args.max_batch  # choose the backend that is fastest at the batches we will run
        rt = runtime.load(
            model, backend=args.backend, device=args.device, threads=args.threads, precision=args.precision, **kw
        )
    cfg = ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        max_concurrency=args.max_concurrency,
        decode_threads=args.decode_threads,
        api_key=api_key,
        cors_origins=tuple(args.cors_origin or ()),
        extra=extra,
    )
    app = create_app(rt, cfg)
    print(
        f"mobilezoo serve: {rt.model_name} ({rt.backend}, {rt.device}, {rt.precision}) on "
        f"http://{args.host}:{args.port}/ - max batch {cfg.max_batch}, max wait {cfg.max_wait_ms:g} ms, "
        f"queue {cfg.queue_size}" + (", API key required" if api_key else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=args.graceful_timeout,
        server_header=False,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .. import backends

    p = sub.add_parser(
        "serve",  # its one-line help: mobilezoo.cli.COMMANDS
        description="Serve one model over HTTP: POST /v1/classify, GET /v1/models, /healthz, /readyz, /metrics, "
        "/openapi.json and an upload page at /. Dynamic batching groups concurrent requests up to --max-batch "
        "images or --max-wait-ms (--max-batch 1 turns it off).",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", help="zoo model name (optional with a --ckpt that records it)")
    add_weights_options(g)
    suffixes = ", ".join(backends.get(n).suffix for n in backends.names() if backends.get(n).suffix)
    g.add_argument("--artifact", type=Path, help=f"an exported model ({suffixes})")
    g.add_argument("--backend", default="auto", choices=("auto", *backends.names()))
    g.add_argument("--device", default="cpu")
    g.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    g.add_argument("--threads", type=int, default=None, help="threads of the model's backend (default: its own)")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    g.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    g.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV})")
    g.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allow this browser origin (repeatable)")
    g.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    g.add_argument("--no-access-log", action="store_true")
    g.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds SIGTERM waits for requests in flight (default: %(default)s)",
    )
    g = p.add_argument_group("batching and limits")
    g.add_argument(
        "--max-batch", type=int, default=32, help="images per model call (1: batching off) (default: %(default)s)"
    )
    g.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill up (default: %(default)s)"
    )
    g.add_argument(
        "--queue-size",
        type=int,
        default=256,
        help="images that may wait; beyond: 503 + Retry-After (default: %(default)s)",
    )
    g.add_argument(
        "--max-body-mb", type=float, default=20.0, help="request body limit in MiB (413 beyond) (default: %(default)s)"
    )
    g.add_argument(
        "--max-pixels", type=int, default=25_000_000, help="pixels per image (413 beyond) (default: %(default)s)"
    )
    g.add_argument("--max-images", type=int, default=32, help="images per request (default: %(default)s)")
    g.add_argument(
        "--max-concurrency", type=int, default=128, help="requests handled at once; beyond: 503 (default: %(default)s)"
    )
    g.add_argument(
        "--decode-threads", type=int, default=2, help="threads decoding and preprocessing images (default: %(default)s)"
    )
    p.set_defaults(func=cmd_serve)
