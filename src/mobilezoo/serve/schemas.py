"""The service's OpenAPI document: response models, error responses, the classify request body, the bearer scheme."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from .middleware import PUBLIC_PATHS

__all__ = [
    "AUTH_RESPONSES",
    "BUSY_RESPONSES",
    "CLASSIFY_BODY",
    "CLASSIFY_RESPONSES",
    "ClassifyResponse",
    "ErrorResponse",
    "ImagePrediction",
    "ModelInfo",
    "ModelsResponse",
    "Status",
    "TopK",
    "add_bearer_scheme",
]


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
CLASSIFY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _err("undecodable, truncated or empty image, or a malformed multipart body"),
    **AUTH_RESPONSES,
    413: _err("body over the size limit, or an image over the pixel limit"),
    415: _err("unsupported Content-Type"),
    **BUSY_RESPONSES,
}

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


def add_bearer_scheme(app: FastAPI) -> None:
    """Declare the bearer key in the OpenAPI document (the check itself is :class:`~.middleware.Guard`)."""
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
