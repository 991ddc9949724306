"""The CSC error shape, {"error": <code>, "error_description": <text>} (CSC API §10.2).

CSC clients parse this shape, not the box's {"error", "message"}, so CSC resources translate every
failure here, in one table. CscError is an ApiError, so the box-wide handler passes it through
untouched and the box's serializer uses its ``to_dict``. Statuses follow the box's table (400 for
bad input, 503 when the token or a TSA/revocation service is unavailable — nothing signed); codes
are the spec's where it has one.
"""

from __future__ import annotations

import logging

import falcon

from hsm import KeyNotFound, TokenError, TokenUnavailable, UnsupportedDigest

from ..api.errors import ApiError
from ..errors import InvalidRequest
from ..signing.clock import ClockSkewed
from ..signing.revocation import CertificateRevoked, RevocationUnavailable
from ..signing.timestamps import TimestampUnavailable
from ..store.csc_grants import SadRefused
from ..store.metering import Refusal
from ..store.storage import StorageFull

log = logging.getLogger(__name__)


class CscError(ApiError):
    def to_dict(self, obj_type=dict):
        return obj_type(error=self.title, error_description=self.description)


# exception type -> (HTTP status, CSC error code); the first matching entry wins.
_MAPPING: list[tuple[type[Exception], str, str]] = [
    (InvalidRequest, falcon.HTTP_400, "invalid_request"),
    (UnsupportedDigest, falcon.HTTP_400, "invalid_request"),
    (SadRefused, falcon.HTTP_400, "invalid_request"),
    (CertificateRevoked, falcon.HTTP_400, "invalid_request"),  # the spec's "credential unusable" case
    (TimestampUnavailable, falcon.HTTP_503, "temporarily_unavailable"),
    (StorageFull, falcon.HTTP_503, "temporarily_unavailable"),
    (ClockSkewed, falcon.HTTP_503, "temporarily_unavailable"),
    (RevocationUnavailable, falcon.HTTP_503, "temporarily_unavailable"),
    (TokenUnavailable, falcon.HTTP_503, "temporarily_unavailable"),
    (KeyNotFound, falcon.HTTP_503, "temporarily_unavailable"),
    (TokenError, falcon.HTTP_500, "server_error"),
]


def to_csc_error(req: falcon.Request, exc: Exception) -> CscError:
    """The CSC error for any exception a CSC resource raised; internal faults say nothing more."""
    if isinstance(exc, CscError):
        return exc
    if isinstance(exc, Refusal):  # quota, rate, scope: the box's own codes, as on its other endpoints
        return CscError(exc.status, exc.code, str(exc))
    if isinstance(exc, falcon.HTTPError):  # Falcon's and the box's: malformed JSON, oversized body, ...
        code = "invalid_request" if exc.status_code < 500 else "server_error"
        return CscError(exc.status, code, exc.description or exc.title, exc.headers)
    for exc_type, status, code in _MAPPING:
        if isinstance(exc, exc_type):
            log.info("%s %s refused: %s: %s", req.method, req.path, code, exc)
            return CscError(status, code, str(exc))
    log.error("internal error on %s %s", req.method, req.path, exc_info=exc)
    return CscError(falcon.HTTP_500, "server_error", "internal error; see the box's log")
