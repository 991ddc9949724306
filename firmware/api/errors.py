"""The box's errors on the wire: one Falcon handler per exception type of the one error table
(firmware/operations/errors.py), and the JSON shape of the route's face.

Native routes answer {"error": <code>, "message": <text>}; CSC routes (under /csc/) answer
{"error": <code>, "error_description": <text>} (CSC API §10.2). Which status and code a failure
gets is the table's business, not this module's, so resources stay free of try/except and every
endpoint reports the same fault the same way. Internal errors say nothing about their cause to the
caller (the log has it); nothing here ever echoes a key or PIN.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, NoReturn

import falcon

from ..csc.versions import PREFIX as CSC_PREFIX
from ..operations.errors import FAULTS, INTERNAL, Face, Fault
from ..store.storage import StorageFull, full_error

log = logging.getLogger(__name__)

_DETAIL = {Face.NATIVE: "message", Face.CSC: "error_description"}


class ApiError(falcon.HTTPError):
    """An error with its code for one face: raised by the handlers below, and by resources for
    what only HTTP knows (a missing API key, an oversized body, a wrong content type)."""

    def __init__(self, status: str | int, code: str, message: str, headers: dict[str, str] | None = None,
                 face: Face = Face.NATIVE) -> None:
        super().__init__(falcon.code_to_http_status(status), title=code, description=message, headers=headers)
        self.face = face


def face_of(req: falcon.Request) -> Face:
    return Face.CSC if req.path.startswith(CSC_PREFIX) else Face.NATIVE


def register(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """A handler per table entry (Falcon picks the most specific registered type), one for a full
    disk met outside the ledger, and a last one for everything else."""
    for exc_type, fault in FAULTS.items():
        app.add_error_handler(exc_type, _handler(fault))
    app.add_error_handler(OSError, _handle_os_error)
    app.add_error_handler(sqlite3.Error, _handle_os_error)
    app.add_error_handler(Exception, _handle_internal)
    app.set_error_serializer(_serialize)


def _handler(fault: Fault) -> Callable[[falcon.Request, falcon.Response, Exception, dict[str, Any]], None]:
    def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
        _refuse(req, fault, exc)

    return handle


def _refuse(req: falcon.Request, fault: Fault, exc: BaseException) -> NoReturn:
    face = face_of(req)
    status, code = fault.on(face)
    log.info("%s %s refused: %s: %s", req.method, req.path, code, exc)
    raise ApiError(status, code, str(exc), face=face)


def _handle_os_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    """A full disk met outside the ledger (a temporary file, the client registry) is StorageFull."""
    full = full_error(exc)
    if isinstance(full, StorageFull):
        _refuse(req, FAULTS[StorageFull], full)
    _handle_internal(req, resp, exc, params)


def _handle_internal(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> NoReturn:
    log.error("internal error on %s %s", req.method, req.path, exc_info=exc)
    face = face_of(req)
    status, code = INTERNAL.on(face)
    raise ApiError(status, code, "internal error; see the box's log", face=face)


def _serialize(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    face = face_of(req)
    if isinstance(exc, ApiError) and exc.face is face:
        code = exc.title
    elif face is Face.NATIVE:  # Falcon's own errors: 404, 405, malformed JSON, ...
        code = (exc.title or "error").lower().replace(" ", "_")
    else:  # Falcon's and the native ones on a CSC route: malformed JSON, oversized body, ...
        code = "invalid_request" if exc.status_code < 500 else "server_error"
    resp.media = {"error": code, _DETAIL[face]: exc.description or exc.title}
    resp.content_type = falcon.MEDIA_JSON
