"""The one artifact format: what every exported or quantized file carries and how it is found, sized and checked.

- **Metadata** (model name, class names, num_classes, preprocessing, precision, and for int8 how it was quantized):
  inside the file where the format has a place for it (ONNX ``metadata_props``, key ``mobilezoo``; an engine's
  :meth:`~mobilezoo.backends.base.Backend.embedded_metadata` for its own format: LiteRT's flatbuffer metadata), else
  in a sidecar ``<artifact>.json``.
- **Companion files**: OpenVINO's ``.bin`` beside the ``.xml``, ncnn's ``.ncnn.bin`` beside the ``.ncnn.param``.
- **Suffix -> engine**: each engine declares its suffix (:attr:`mobilezoo.backends.base.Backend.suffix`);
  :func:`engine_for` asks the registry.
- **Content checks** (:func:`check_content`): a file is looked at before it is handed to an engine, so a JPEG named
  ``.onnx`` or a truncated file gets a one-line error instead of the engine's parser error (formats of engines
  that check their own files: :meth:`~mobilezoo.backends.base.Backend.check_file`).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

__all__ = [
    "META_KEY",
    "ArtifactError",
    "artifact_bytes",
    "artifact_digest",
    "artifact_metadata",
    "check_content",
    "companions",
    "engine_for",
    "find_artifact",
    "is_artifact",
    "read_metadata",
    "set_onnx_metadata",
    "sidecar",
    "write_sidecar",
]

META_KEY = "mobilezoo"


class ArtifactError(ValueError):
    """A file or folder that is not a usable model artifact (one line, naming it)."""


def artifact_metadata(model: Any, class_names: list[str] | None = None, precision: str = "fp32") -> dict:
    """What every exported artifact carries: model name, classes, preprocessing, precision, and the deployment
    rewrites (:mod:`mobilezoo.models.rewrite`) its graph was built with."""
    from ..data.transforms import eval_preprocess
    from ..models.base import min_input_size
    from ..models.rewrite import applied
    from ..reference import class_names_for

    pre = eval_preprocess(getattr(model, "default_cfg", None))
    return {
        "model_name": getattr(model, "model_name", type(model).__name__),
        "class_names": class_names or class_names_for(model),
        "num_classes": getattr(model, "num_classes", None),
        "preprocess": pre.as_dict(),
        "precision": precision,
        "min_input_size": min_input_size(model),
        "rewrites": applied(model) if hasattr(model, "modules") else [],
    }


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it: a crash leaves the old file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_sidecar(path: str | Path, meta: dict) -> Path:
    """Write ``<artifact>.json`` atomically."""
    return write_atomic(sidecar(path), json.dumps(meta, indent=1).encode())


def set_onnx_metadata(proto: Any, meta: dict) -> Any:
    """Replace the ``mobilezoo`` metadata entry of an ONNX ModelProto (in place; returns it)."""
    keep = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    return proto


def read_metadata(path: str | Path) -> dict:
    """The artifact's metadata (``{}`` if it has none)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        for p in proto.metadata_props:
            if p.key == META_KEY:
                return json.loads(p.value)
        return {}
    inside = _embedded(path)
    if inside is not None:
        return inside
    p = sidecar(path)
    return json.loads(p.read_text()) if p.is_file() else {}


def _embedded(path: Path) -> dict | None:
    """Metadata kept inside the file by its engine (:meth:`~mobilezoo.backends.base.Backend.embedded_metadata`)."""
    from . import get

    try:
        engine = engine_for(path)
    except ArtifactError:
        return None
    return get(engine).embedded_metadata(path) if path.exists() else None


def companions(path: str | Path) -> list[Path]:
    """Files that belong to the artifact besides itself (weights, sidecar), those that exist."""
    path = Path(path)
    out = []
    if path.suffix == ".xml":
        out.append(path.with_suffix(".bin"))
    elif path.name.endswith(".ncnn.param"):
        out.append(path.with_name(path.name.removesuffix(".param") + ".bin"))
    out.append(sidecar(path))
    return [p for p in out if p.is_file()]


def artifact_bytes(path: str | Path) -> int:
    """Bytes of a model artifact on disk, with its weights file (OpenVINO ``.bin``, ncnn ``.bin``) counted; a folder
    artifact (Core ML's ``.mlpackage``): every file in it."""
    path = Path(path)
    own = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return own + sum(p.stat().st_size for p in companions(path) if p.suffix == ".bin")


def artifact_digest(path: str | Path) -> str:
    """The first 16 hex digits of the sha256 of the artifact's bytes, its weights file and sidecar included (a
    folder artifact: every file in it, in name order): what a results row names the artifact it measured by."""
    import hashlib

    h = hashlib.sha256()
    for f in [Path(path), *companions(path)]:
        for q in sorted(f.rglob("*")) if f.is_dir() else [f]:
            if q.is_file():
                h.update(q.read_bytes())
    return h.hexdigest()[:16]


def _suffixes() -> dict[str, str]:
    from . import get, names

    return {get(n).suffix: n for n in names() if get(n).suffix}


def is_artifact(path: str | Path) -> bool:
    return any(Path(path).name.endswith(s) for s in _suffixes())


def engine_for(path: str | Path) -> str:
    """The engine that runs the artifact at ``path``, by its suffix."""
    name = Path(path).name
    for suffix, engine in sorted(_suffixes().items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return engine
    known = ", ".join(sorted(_suffixes()))
    raise ArtifactError(f"{path}: not a model artifact (known: {known})")


def find_artifact(path: str | Path) -> Path:
    """``path`` itself if it is an artifact (a file, or a folder artifact such as a Core ML ``.mlpackage``), or the
    one artifact inside an export directory."""
    path = Path(path)
    if path.is_dir() and not is_artifact(path):
        found = sorted(p for p in path.iterdir() if is_artifact(p) and not p.name.startswith("."))
        if len(found) == 1:
            return found[0]
        if not found:
            raise ArtifactError(f"{path}: no model artifact in this folder (known: {', '.join(sorted(_suffixes()))})")
        listed = ", ".join(p.name for p in found)
        raise ArtifactError(f"{path}: {len(found)} artifacts in this folder; name one: {listed}")
    if not path.exists():
        raise FileNotFoundError(f"no such exported model: {path}")
    engine_for(path)  # raises for an unknown suffix
    return path


def check_content(path: str | Path) -> None:
    """Raise :class:`ArtifactError` (one line) unless ``path`` looks like the format its suffix names, with its
    companion weights file present."""
    from . import get

    path = Path(path)
    engine = engine_for(path)
    if path.is_dir() != get(engine).folder:  # Core ML's .mlpackage is a folder; every other artifact a file
        raise ArtifactError(f"{path}: a {'folder' if path.is_dir() else 'file'}, not a {engine} artifact")
    head = path.read_bytes()[:64] if path.is_file() else b""
    if not head and not path.is_dir():
        raise ArtifactError(f"{path}: empty file")
    if engine == "onnxruntime":
        import onnx
        from google.protobuf.message import DecodeError

        try:
            onnx.load(str(path), load_external_data=False)
        except (DecodeError, ValueError, RuntimeError, OSError) as e:
            raise ArtifactError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    elif engine == "openvino":
        if not head.lstrip().startswith((b"<?xml", b"<net")):
            raise ArtifactError(f"{path}: not an OpenVINO IR (.xml)")
        if not path.with_suffix(".bin").is_file():
            raise ArtifactError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing")
    elif engine == "ncnn":
        if not head.startswith(b"7767517"):
            raise ArtifactError(f"{path}: not an ncnn .param file (no 7767517 magic)")
        weights = path.with_name(path.name.removesuffix(".param") + ".bin")
        if not weights.is_file():
            raise ArtifactError(f"{path}: its weights file {weights.name} is missing")
    elif engine == "torchscript" and not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path}: not a TorchScript archive")
    problem = get(engine).check_file(path)  # the engine's own look at its format
    if problem:
        raise ArtifactError(f"{path}: {problem}")
