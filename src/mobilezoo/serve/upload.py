"""Reading what a client sends to ``/v1/classify``: the accepted Content-Types, the size-capped body, multipart
parts, decoding with the project's one decoder (:func:`mobilezoo.data.decode_image`), and waiting for the batch
results while watching for the client to leave. Every refusal is an :class:`~fastapi.HTTPException` (400/413/415).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from typing import Any

import torch
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data import ImageError, decode_image
from .middleware import Message

__all__ = [
    "IMAGE_TYPES",
    "MAX_ASPECT",
    "RAW_TYPES",
    "ClientGone",
    "decode_all",
    "media_type",
    "parse_multipart",
    "read_body",
    "wait_or_disconnect",
]

log = logging.getLogger("uvicorn.error")  # uvicorn's logger: same output, same format as the server's own lines

MAX_ASPECT = 64  # longer side / shorter side: beyond this the short-side resize would blow up the image


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


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# -- the body ------------------------------------------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is (or is declared) over ``limit`` bytes."""
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


async def parse_multipart(request: Request, body: bytes, max_images: int) -> list[tuple[str, bytes]]:
    """``(source, bytes)`` of each ``file`` part of a multipart body already read."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request(request.scope, replay)
    try:
        form = await form_request.form(max_files=max_images, max_fields=max_images + 16)
    except StarletteHTTPException as e:  # Starlette's parser reports a malformed body this way
        raise HTTPException(400, f"multipart body: {e.detail}") from None
    except (ValueError, KeyError, AssertionError) as e:  # python-multipart's own errors on a malformed body
        raise HTTPException(400, f"malformed multipart body ({type(e).__name__}: {e})") from None
    try:
        blobs = []
        for i, part in enumerate(form.getlist("file")):
            if not isinstance(part, UploadFile):
                raise HTTPException(400, "each 'file' field must be a file upload, not a text field")
            ctype = media_type(part.content_type)
            src = part.filename or f"file[{i}]"
            if ctype and ctype not in RAW_TYPES:
                raise HTTPException(415, f"{src}: unsupported type {ctype!r}; send an image (e.g. image/jpeg)")
            blobs.append((src, await part.read()))
        if not blobs:
            raise HTTPException(400, "multipart body has no 'file' field")
        return blobs
    finally:
        await form.close()


# -- decoding (in worker threads) ------------------------------------------------------------------------------------
def decode_one(data: bytes, source: str, pre: Callable[[Any], torch.Tensor], max_pixels: int) -> torch.Tensor:
    try:
        img = decode_image(data, source, max_pixels)
    except ImageError as e:
        raise HTTPException(413 if _over_pixels(data, max_pixels) else 400, str(e)) from None
    except Exception as e:  # a decoder bug on a hostile file is still the file's fault: 400, and logged
        log.warning("decoding %s raised %s: %s (answered 400)", source, type(e).__name__, e, exc_info=True)
        raise HTTPException(400, f"{source}: cannot decode image ({type(e).__name__})") from None
    w, h = img.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise HTTPException(400, f"{source}: {w}x{h} has an aspect ratio over {MAX_ASPECT}:1")
    return pre(img)


def decode_all(
    blobs: list[tuple[str, bytes]], pre: Callable[[Any], torch.Tensor], max_pixels: int
) -> list[torch.Tensor]:
    return [decode_one(data, src, pre, max_pixels) for src, data in blobs]


def _over_pixels(data: bytes, max_pixels: int) -> bool:
    from PIL import Image

    try:
        w, h = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError:  # over Pillow's own limit, far beyond ours
        return True
    except Exception:
        return False
    return w * h > max_pixels


# -- waiting for the batch -------------------------------------------------------------------------------------------
class ClientGone(Exception):
    pass


async def wait_or_disconnect(request: Request, futures: list[asyncio.Future]) -> list[Any]:
    """The batch results, or :class:`ClientGone` (and the items cancelled) if the client disconnects first."""
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
    raise ClientGone
