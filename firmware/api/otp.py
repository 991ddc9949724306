"""POST /v1/otp and POST /v1/otp/verify: one-time codes by encrypted e-mail (scope ``mail``).

The SMS replacement: the code goes encrypted to the person's directory certificate (plain only
where the client allows it) and is checked once. A failed check is an answer, not an error:
``{"valid": false, "reason": …}`` with 200, so a client tells "wrong code" from a fault.
"""

from __future__ import annotations

import falcon

from ..directory import normalise
from ..mail.outbox import MailUnavailable
from ..otp import OtpCodes
from .bodies import read_json
from .schema import otp_body, otp_verify_body, read_body

__all__ = ["OtpResource", "OtpVerifyResource"]

_ISSUE, _VERIFY = otp_body(), otp_verify_body()


def _available(codes: OtpCodes | None) -> OtpCodes:
    if codes is None:
        raise MailUnavailable("this box sends no mail: [mail] relay_host is not configured")
    return codes


class OtpResource:
    scope = "mail"

    def __init__(self, codes: OtpCodes | None) -> None:
        """``codes`` None: the box sends no mail ([mail] relay_host), every call is a 503."""
        self._codes = codes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        codes = _available(self._codes)
        body = read_body(_ISSUE, read_json(req))
        issued = codes.issue(req.context.client.id, normalise(body["to"]), body["allow_plain"])
        resp.status = falcon.HTTP_201
        resp.media = {"id": issued.id, "expires_in": issued.expires_in_s, "encrypted": issued.encrypted}


class OtpVerifyResource:
    scope = "mail"

    def __init__(self, codes: OtpCodes | None) -> None:
        self._codes = codes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        codes = _available(self._codes)
        body = read_body(_VERIFY, read_json(req))
        verdict = codes.verify(req.context.client.id, body["id"], body["code"])
        resp.media = {"valid": verdict.valid, "reason": verdict.reason}
