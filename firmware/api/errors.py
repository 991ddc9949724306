"""One JSON error shape for every failure: {"error": <code>, "message": <text>}.

Domain exceptions are mapped to status codes here, in one table, so resources stay free of
try/except and every endpoint reports the same fault the same way. Internal errors say nothing
about their cause to the caller (the log has it); nothing here ever echoes a key or PIN.
"""

from __future__ import annotations

import logging

import falcon

from hsm import KeyNotFound, TokenError, TokenUnavailable, UnsupportedDigest

from ..errors import InvalidRequest
from ..signing.clock import ClockSkewed
from ..signing.revocation import CertificateRevoked, RevocationUnavailable
from ..signing.timestamps import TimestampUnavailable
from ..store.clients import ClientError
from ..store.metering import QuotaExhausted, RateLimited, Refusal
from ..store.storage import StorageFull, full_error

log = logging.getLogger(__name__)


class ApiError(falcon.HTTPError):
    def __init__(self, status: str, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(status, title=code, description=message, headers=headers)

    def to_dict(self, obj_type=dict):
        return obj_type(error=self.title, message=self.description)


# exception type -> (HTTP status, error code); the first matching entry wins.
_MAPPING: list[tuple[type[Exception], str, str]] = [
    (InvalidRequest, falcon.HTTP_400, "invalid_request"),
    (ClientError, falcon.HTTP_400, "invalid_request"),
    (QuotaExhausted, falcon.HTTP_402, QuotaExhausted.code),
    (RateLimited, falcon.HTTP_429, RateLimited.code),
    (Refusal, falcon.HTTP_403, "scope_denied"),
    (UnsupportedDigest, falcon.HTTP_400, "invalid_hash"),
    (TimestampUnavailable, falcon.HTTP_503, "timestamp_unavailable"),
    (ClockSkewed, falcon.HTTP_503, "clock_skewed"),
    (RevocationUnavailable, falcon.HTTP_503, "revocation_unavailable"),
    (CertificateRevoked, falcon.HTTP_503, "signing_certificate_revoked"),
    (TokenUnavailable, falcon.HTTP_503, "token_unavailable"),
    (KeyNotFound, falcon.HTTP_503, "signing_key_missing"),
    (TokenError, falcon.HTTP_500, "token_error"),
    (StorageFull, falcon.HTTP_503, "storage_full"),
]


def register(app: falcon.App, extra: list[tuple[type[Exception], str, str]] = ()) -> None:
    table = [*extra, *_MAPPING]

    def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict) -> None:
        if isinstance(exc, falcon.HTTPError):
            raise exc
        exc = full_error(exc)  # a full disk met outside the ledger (a temporary file, the client registry)
        for exc_type, status, code in table:
            if isinstance(exc, exc_type):
                log.info("%s %s refused: %s: %s", req.method, req.path, code, exc)
                raise ApiError(status, code, str(exc))
        log.exception("internal error on %s %s", req.method, req.path)
        raise ApiError(falcon.HTTP_500, "internal_error", "internal error; see the box's log")

    app.add_error_handler(Exception, handle)
    app.set_error_serializer(_serialize)


def _serialize(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    if isinstance(exc, ApiError):
        body = exc.to_dict()
    else:  # Falcon's own errors: 404, 405, malformed JSON, ...
        code = (exc.title or "error").lower().replace(" ", "_")
        body = {"error": code, "message": exc.description or exc.title}
    resp.media = body
    resp.content_type = falcon.MEDIA_JSON
