"""API-key authentication: ``Authorization: Bearer <key>`` on every non-public resource."""

from __future__ import annotations

import falcon

from ..store.clients import ClientRegistry
from .errors import ApiError


class ApiKeyAuth:
    """Falcon middleware; resources opt out with a class attribute ``public = True``."""

    def __init__(self, clients: ClientRegistry) -> None:
        self._clients = clients

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
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
