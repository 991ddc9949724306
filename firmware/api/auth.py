"""Who may call what: API-key authentication, then the client's scope.

Resources opt out of authentication with ``public = True`` and name the scope they need with
``scope = "hash" | "pdf"``. Quotas are the services' business: only they know how many
signatures a request asks for (they call ``SignatureLedger.admit`` before touching the token).
"""

from __future__ import annotations

import logging
from typing import Any

import falcon

from ..store.clients import ClientRegistry
from ..store.ledger import SignatureLedger
from ..store.metering import require_scope
from ..store.storage import StorageFull
from .errors import ApiError

log = logging.getLogger(__name__)


class ApiKeyAuth:
    def __init__(self, clients: ClientRegistry) -> None:
        self._clients = clients

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        challenge = {"WWW-Authenticate": 'Bearer realm="esignbox"'}
        header = req.get_header("Authorization") or ""
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(falcon.HTTP_401, "missing_api_key", "send Authorization: Bearer <API key>", challenge)
        client = self._clients.authenticate(key.strip())
        if client is None:
            raise ApiError(falcon.HTTP_401, "invalid_api_key", "the API key is unknown or disabled", challenge)
        req.context.client = client
        scope = getattr(resource, "scope", None)
        if scope is not None:
            require_scope(client.scopes, scope)


class RefusalAudit:
    """Every refused call on an authenticated endpoint is audited: a known client's as an entry
    each, a caller's without a valid key counted per peer and window (store/refusals.py).

    Resources that authenticate callers themselves (CSC) are public to ApiKeyAuth but opt in
    here with ``audit_refusals = True`` and put the caller in ``req.context.client``.
    """

    def __init__(self, ledger: SignatureLedger) -> None:
        self._ledger = ledger

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        if resource is None or resp.status_code < 400:
            return
        if getattr(resource, "public", False) and not getattr(resource, "audit_refusals", False):
            return
        client = getattr(req.context, "client", None)
        body = resp.media if isinstance(resp.media, dict) else {}
        try:
            self._ledger.refuse(
                client.id if client else None,
                {"method": req.method, "path": req.path, "status": resp.status_code,
                 "error": body.get("error"), "message": body.get("message") or body.get("error_description"),
                 "peer": req.context.client_ip},
            )
        except StorageFull as exc:  # the caller still gets its refusal; the operator gets the log line
            log.error("refusal of %s %s not audited: %s", req.method, req.path, exc)
