"""Where published checkpoints live, and the cache that holds them once downloaded.

PaddleClas 2.6 keeps each backbone's URL in its file's ``MODEL_URLS``: ``<host>/dygraph/legendary_models/<name>
_pretrained.pdparams`` for MobileNetV1/V3 (``legendary_models``), ``<host>/dygraph/<name>_pretrained.pdparams`` for
MobileNetV2, ShuffleNetV2 and GhostNet (``model_zoo``); ``use_ssld=True`` turns ``_pretrained`` into
``_ssld_pretrained`` (``ppcls/utils/save_load.py``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from .._cache import cache_dir, load_index
from .._cache import index_path as _index_path
from ..models.registry import ModelEntry

__all__ = ["PADDLE_HOST", "DownloadError", "cache_dir", "download", "fetch_pretrained", "load_index", "paddle_url"]

PADDLE_HOST = "https://paddle-imagenet-models-name.bj.bcebos.com"
_LEGENDARY = ("MobileNetV1", "MobileNetV3")


class DownloadError(RuntimeError):
    pass


def paddle_url(entry: ModelEntry) -> str | None:
    """PaddleClas's download URL for this published name (None: PaddleClas publishes no ``.pdparams`` for it)."""
    if entry.paddle_arch is None or (entry.weights_tag or "").endswith("int8"):
        return None
    sub = "dygraph/legendary_models" if entry.family in _LEGENDARY else "dygraph"
    suffix = "_ssld_pretrained" if entry.weights_tag == "ssld" else "_pretrained"
    host = os.environ.get("MOBILEZOO_WEIGHTS_HOST", PADDLE_HOST).rstrip("/")  # a mirror of PaddleClas's bucket
    return f"{host}/{sub}/{entry.paddle_arch}{suffix}.pdparams"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str,
    dest: Path | None = None,
    *,
    sha256: str | None = None,
    timeout: float = 10.0,
    retries: int = 2,
    progress: bool = True,
) -> Path:
    """Download ``url`` into the cache once: resumable (HTTP Range on a ``.part`` file), atomic rename, verified.

    ``sha256`` may be a full hex digest or a prefix of one. Fails within ``timeout`` seconds per attempt with a
    message naming the URL, the file to place and where.
    """
    dest = dest or cache_dir() / "checkpoints" / url.rsplit("/", 1)[-1]
    if dest.is_file() and (sha256 is None or _sha256(dest).startswith(sha256)):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_err: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout=timeout, progress=progress)
            if sha256 is not None:
                got = _sha256(part)
                if not got.startswith(sha256):  # a full digest, or a prefix (torchvision's file names)
                    part.unlink(missing_ok=True)
                    raise DownloadError(f"{url}: sha256 mismatch (got {got}, expected {sha256}); partial file removed")
            os.replace(part, dest)
            return dest
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, short reads
            last_err = e
            if isinstance(e, urllib.error.HTTPError) and e.code in (401, 403, 404, 410):
                break
            time.sleep(min(0.5 * 2**attempt, 2.0))
    raise DownloadError(
        f"could not download {url} ({type(last_err).__name__}: {last_err}).\n"
        f"  Without network: fetch that file elsewhere and place it at {dest}\n"
        f"  or pass a local file: create_model(name, weights='path/to/{dest.name}') (CLI: --ckpt PATH)."
    )


def _fetch(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "mobilezoo"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if have and resp.status != 206:
            have = 0  # server ignored the range: restart
        total = resp.headers.get("Content-Length")
        total_n = int(total) + have if total is not None else None
        mode = "ab" if have else "wb"
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total_n, initial=have, unit="B", unit_scale=True, desc=part.name[:-5], leave=False)
        try:
            with part.open(mode) as f:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    f.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total_n is not None and size != total_n:
        raise OSError(f"truncated transfer: {size} of {total_n} bytes")


def _pin(url: str, record: dict) -> None:
    idx = load_index()
    idx[url] = {**idx.get(url, {}), **record}
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".index.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(idx, indent=1, sort_keys=True))
    os.replace(tmp, path)


def fetch_pretrained(entry: ModelEntry, *, timeout: float = 10.0) -> Path:
    """The published checkpoint of ``entry`` as a safetensors file in mobilezoo's names.

    First call: download the ``.pdparams`` (resumable, size-checked, sha256-verified against the catalog or the
    digest pinned by an earlier download), convert it once to ``converted/<name>.safetensors`` and pin both digests
    in ``index.json``. Later calls verify and load the converted file without touching the network.
    """
    from . import load_weights
    from .catalog import weights_info
    from .formats import CheckpointError

    info = weights_info(entry.name)
    if info is None:
        from .choice import NoPublishedWeightsError, no_published_message

        raise NoPublishedWeightsError(no_published_message(entry))
    record = load_index().get(info.url, {})
    converted = cache_dir() / "converted" / f"{info.name}.safetensors"
    if converted.is_file() and record.get("safetensors_sha256") == _sha256(converted):
        return converted
    raw = download(info.url, sha256=info.sha256 or record.get("sha256"), timeout=timeout)
    digest = _sha256(raw)
    model = entry.builder(entry.config)
    try:
        load_weights(model, entry, raw, source="paddle")
    except CheckpointError as e:
        raw.unlink(missing_ok=True)  # never keep a file that does not load
        raise DownloadError(f"{info.url} downloaded but is not a usable checkpoint: {e}") from None
    from safetensors.torch import save_file

    converted.parent.mkdir(parents=True, exist_ok=True)
    tmp = converted.with_name(f".{converted.name}.{os.getpid()}.tmp")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"model_name": entry.name, "source_url": info.url, "source_sha256": digest})
    os.replace(tmp, converted)
    _pin(info.url, {"sha256": digest, "size": raw.stat().st_size, "safetensors_sha256": _sha256(converted)})
    return converted
