"""POST /v1/pdf/sign and /v1/pdf/verify: the raw PDF is the body, options are query parameters."""

from __future__ import annotations

import dataclasses
import enum
import io
from datetime import datetime
from typing import Any

import falcon

from ..errors import InvalidRequest
from ..signing.levels import Level
from ..signing.pdf_etsi_report import etsi_report
from ..signing.pdf_fields import Stamp
from ..signing.pdf_signing import PdfSigningService, PdfSignOptions
from ..signing.pdf_verify import verify_pdf
from ..signing.revocation import RevocationService
from .bodies import check_length, too_large
from .errors import ApiError
from .schema import pdf_sign_query, pdf_verify_query, query_params, read_query


def _read_pdf_body(req: falcon.Request, limit: int) -> bytes:
    """The body as bytes; 413 before reading if declared too large, or once it runs past ``limit``."""
    check_length(req, limit)
    if req.content_type is None or req.content_type.split(";")[0].strip() != "application/pdf":
        raise ApiError(falcon.HTTP_415, "unsupported_media_type", "send the PDF as Content-Type: application/pdf")
    data = req.bounded_stream.read(limit + 1)  # chunked bodies have no Content-Length to check
    if len(data) > limit:
        raise too_large(limit)
    return data


def _box(value: str) -> tuple[float, float, float, float]:
    parts = value.split(",")
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise InvalidRequest("stamp_box must be four numbers x1,y1,x2,y2 (points)") from None
    return x1, y1, x2, y2


def _sign_options(options: dict[str, Any]) -> PdfSignOptions:
    """``options``: the query read by its schema (schema.pdf_sign_query)."""
    stamp = None
    if "stamp_box" in options:
        stamp = Stamp(page=options.get("stamp_page", 1), box=_box(options["stamp_box"]))
    elif "stamp_page" in options:
        raise InvalidRequest("stamp_page places a new stamp, which needs stamp_box=x1,y1,x2,y2")
    return PdfSignOptions(
        level=Level(options["level"]),
        reason=options.get("reason"),
        location=options.get("location"),
        field_name=options.get("field"),
        certify=options["certify"],
        docmdp=options.get("docmdp"),
        stamp=stamp,
        stamp_text=options.get("stamp_text") or None,
    )


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class PdfSignResource:
    scope = "pdf"

    def __init__(self, service: PdfSigningService, default_level: str) -> None:
        """The default level comes from box.toml's [signing] section (set in the admin console);
        the stamp's default text and look belong to the signing service."""
        self._service = service
        self._schema = pdf_sign_query(Level(default_level))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        options = _sign_options(read_query(self._schema, query_params(req)))
        pdf = _read_pdf_body(req, self._service.max_pdf_bytes)
        signed = self._service.sign(req.context.client.id, pdf, options)
        resp.content_type = "application/pdf"
        resp.set_header("X-Signature-Level", signed.level.value)
        resp.set_header("X-Signature-Field", signed.field_name)
        # A stream lets waitress send from it directly (wsgi.file_wrapper) instead of copying
        # a PDF of many megabytes into its output buffer first.
        resp.set_stream(io.BytesIO(signed.pdf), len(signed.pdf))


_VERIFY_QUERY = pdf_verify_query()


def _verify_format(req: falcon.Request) -> str:
    """``format=json|etsi``; without it, an Accept header that prefers XML to JSON asks for ETSI."""
    chosen = read_query(_VERIFY_QUERY, query_params(req)).get("format")
    if chosen is not None:
        return str(chosen)
    preferred = req.client_prefers([falcon.MEDIA_JSON, falcon.MEDIA_XML]) if req.accept != "*/*" else None
    return "etsi" if preferred == falcon.MEDIA_XML else "json"


class PdfVerifyResource:
    """Authenticated but free: verifying signs nothing, so it has no scope and uses no quota.

    JSON (the box's own report) by default; ``format=etsi`` or ``Accept: application/xml`` gives
    the ETSI TS 119 102-2 validation report EU validators produce.
    """

    def __init__(self, revocation: RevocationService, max_pdf_bytes: int) -> None:
        self._revocation = revocation
        self._max_pdf_bytes = max_pdf_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        fmt = _verify_format(req)
        pdf = _read_pdf_body(req, self._max_pdf_bytes)
        if fmt == "etsi":
            resp.content_type = falcon.MEDIA_XML
            resp.data = etsi_report(pdf, self._revocation, self._max_pdf_bytes)
            return
        report = verify_pdf(pdf, self._revocation, self._max_pdf_bytes)
        resp.media = _jsonable(dataclasses.asdict(report))
