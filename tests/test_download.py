"""The real download path of ``pretrained=True``, against a local HTTP server on loopback.

The server serves ``.pdparams`` that PaddleClas made with random weights (the parity fixture), at the URL layout of
PaddleClas's bucket (``MOBILEZOO_WEIGHTS_HOST`` points the catalog at it), and can misbehave on purpose.
"""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mobilezoo as mz
from mobilezoo.weights.catalog import weights_info
from mobilezoo.weights.hub import DownloadError, load_index

NAME = "ShuffleNetV2_x0_5"


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    mode: dict
    hits: list

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.hits.append((self.path, self.headers.get("Range")))
        f = self.root / self.path.lstrip("/")
        if not f.is_file():
            self.send_error(404)
            return
        body = f.read_bytes()
        if self.mode.get("corrupt"):
            body = b"this is not a checkpoint" * 100
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.mode.get("ignore_range"):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.mode.pop("truncate_once", None)  # send part of the body, then drop the connection
        self.wfile.write(body[start:cut] if cut else body[start:])
        if cut:
            self.close_connection = True


@pytest.fixture
def server(tmp_path, paddle_refs, monkeypatch):
    root = tmp_path / "www"
    info = weights_info(NAME)
    path_in_bucket = info.url.split(".com/", 1)[1]
    (root / path_in_bucket).parent.mkdir(parents=True)
    shutil.copyfile(paddle_refs(NAME) / "model.pdparams", root / path_in_bucket)
    handler = type("H", (_Handler,), {"root": root, "mode": {}, "hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MOBILEZOO_WEIGHTS_HOST", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "cache"))
    from mobilezoo.weights import catalog

    catalog._catalog.cache_clear()  # URLs follow the mirror variable
    yield handler, root / path_in_bucket, tmp_path / "cache"
    httpd.shutdown()
    catalog._catalog.cache_clear()


def _logits(model, ref_dir):
    io = np.load(ref_dir / "io.npz")
    with torch.no_grad():
        return model.eval()(torch.from_numpy(io["x"])).numpy(), io["logits"]


def test_download_convert_once_then_offline(server, paddle_refs):
    handler, _, cache = server
    m = mz.create_model(NAME, pretrained=True)
    out, ref = _logits(m, paddle_refs(NAME))
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-4
    assert len(handler.hits) == 1
    url = weights_info(NAME).url
    rec = load_index()[url]
    assert len(rec["sha256"]) == 64 and rec["size"] > 0 and "safetensors_sha256" in rec
    assert (cache / "converted" / f"{NAME}.safetensors").is_file()
    assert not list(cache.rglob("*.part")) and not list(cache.rglob("*.tmp"))
    m2 = mz.create_model(NAME, pretrained=True, num_classes=10)  # second time: no request, classifier re-initialised
    assert len(handler.hits) == 1 and m2.head.fc.out_features == 10


def test_truncated_transfer_resumes(server, paddle_refs):
    handler, served, _ = server
    handler.mode["truncate_once"] = served.stat().st_size // 3
    m = mz.create_model(NAME, pretrained=True)
    out, ref = _logits(m, paddle_refs(NAME))
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-4
    assert handler.hits[0][1] is None and handler.hits[1][1] == f"bytes={served.stat().st_size // 3}-"


def test_corrupted_file_is_refused_and_not_kept(server):
    handler, _, cache = server
    handler.mode["corrupt"] = True
    with pytest.raises(DownloadError, match="not a usable checkpoint"):
        mz.create_model(NAME, pretrained=True)
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".pdparams", ".safetensors", ".part")]


def test_pinned_digest_catches_a_changed_file(server):
    _, served, cache = server
    mz.create_model(NAME, pretrained=True)
    (cache / "converted" / f"{NAME}.safetensors").unlink()
    (cache / "checkpoints" / served.name).write_bytes(b"tampered")  # cached file no longer matches its pin
    served.write_bytes(served.read_bytes() + b"\0")  # and the server now serves different bytes
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        mz.create_model(NAME, pretrained=True)


def test_404_fails_fast_with_instructions(server):
    _, served, _ = server
    served.unlink()
    t = time.monotonic()
    with pytest.raises(DownloadError) as ei:
        mz.create_model(NAME, pretrained=True)
    assert time.monotonic() - t < 5
    msg = str(ei.value)
    assert weights_info(NAME).url in msg and "place it at" in msg and "weights='path/to/" in msg


def test_no_server_fails_fast(tmp_path, monkeypatch):
    import socket

    from mobilezoo.weights import catalog

    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MOBILEZOO_WEIGHTS_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path))
    catalog._catalog.cache_clear()
    t = time.monotonic()
    with pytest.raises(DownloadError, match="could not download"):
        mz.create_model(NAME, pretrained=True)
    assert time.monotonic() - t < 10
    catalog._catalog.cache_clear()


def test_no_published_checkpoint():
    from mobilezoo.weights import NoPublishedWeightsError

    msg = r"ShuffleNetV1_g3_x1_0 has no published weights \(PaddleClas has no ShuffleNetV1\): pass weights='random'"
    for kw in ({}, {"pretrained": True}, {"weights": "published"}):  # the default is the published weights
        with pytest.raises(NoPublishedWeightsError, match=msg):
            mz.create_model("ShuffleNetV1_g3_x1_0", **kw)
