"""POST /v1/mail and GET /v1/mail/{id}: signed, encrypted mail through the box's outbox (scope ``mail``).

202 once the message is durably queued (and the call charged and audited): delivery is the
outbox's, and GET /v1/mail/{id} tells how it went. ``encrypted: false`` means the recipient had no
certificate and got the plain notice instead of the content.
"""

from __future__ import annotations

import re

import falcon

from ..errors import InvalidRequest
from ..mail.outbox import MailUnavailable, Outbox
from ..mail.service import MailService
from ..mail.smime import Attachment
from .bodies import read_json
from .errors import ApiError
from .schema import mail_body, read_body

_SCHEMA = mail_body()
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")


def _attachments(items: list[dict[str, object]]) -> list[Attachment]:
    out = []
    for index, item in enumerate(items):
        filename, content_type, data = item["filename"], item["content_type"], item["data"]
        assert isinstance(filename, str) and isinstance(content_type, str) and isinstance(data, bytes)  # the schema's
        if not filename or any(ord(c) < 32 or c in "/\\\x7f" for c in filename):
            raise InvalidRequest(f"attachments[{index}].filename must be a file name without a path")
        if not _CONTENT_TYPE.match(content_type):
            raise InvalidRequest(f"attachments[{index}].content_type must be type/subtype, e.g. application/pdf")
        out.append(Attachment(filename, content_type.lower(), data))
    return out


class MailResource:
    scope = "mail"

    def __init__(self, service: MailService | None) -> None:
        """``service`` None: the box has no relay ([mail] relay_host), every call is a 503."""
        self._service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._service is None:
            raise MailUnavailable("this box sends no mail: [mail] relay_host is not configured")
        body = read_body(_SCHEMA, read_json(req))
        queued = self._service.send(req.context.client.id, body["to"], body["subject"], body.get("text"),
                                    body.get("html"), _attachments(body.get("attachments", [])))
        resp.status = falcon.HTTP_202
        resp.location = f"/v1/mail/{queued.id}"
        resp.media = {"id": queued.id, "encrypted": queued.encrypted}


class MailStatusResource:
    scope = "mail"

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def on_get(self, req: falcon.Request, resp: falcon.Response, mail_id: str) -> None:
        status = self._outbox.status(mail_id, req.context.client.id)
        if status is None:  # another client's message looks the same as none
            raise ApiError(falcon.HTTP_404, "not_found", "no such mail for this client")
        resp.media = {
            "id": status.id, "status": status.status, "encrypted": status.encrypted, "attempts": status.attempts,
            "created_at": status.created_at, "sent_at": status.sent_at, "last_error": status.last_error,
        }
