"""Reading request bodies with size limits and turning JSON fields into typed values."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import falcon

from ..errors import InvalidRequest
from .errors import ApiError


def too_large(limit: int) -> ApiError:
    return ApiError(falcon.HTTP_413, "too_large", f"request body over {limit} bytes")


def check_length(req: falcon.Request, limit: int) -> None:
    """Refuse an oversized body before reading it."""
    if req.content_length is not None and req.content_length > limit:
        raise too_large(limit)


def read_json(req: falcon.Request) -> dict[str, Any]:
    """The JSON object in the body; size and nesting are bounded by the app's JSON handler (json_media)."""
    if req.content_type is None or not req.content_type.startswith("application/json"):
        raise InvalidRequest("send a JSON body with Content-Type: application/json")
    body = req.get_media()
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON body must be an object")
    return body


def b64decode(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"field {name!r} is not valid base64") from exc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
