"""GET /v1/usage: a client's own quota and signatures per endpoint per day."""

from __future__ import annotations

import falcon

from ..operations import reports
from ..store.clients import ClientRegistry
from ..store.db import Database
from .schema import query_params, read_query, usage_query

_QUERY = usage_query()


class UsageResource:
    def __init__(self, db: Database, clients: ClientRegistry) -> None:
        self._db = db
        self._clients = clients

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        days = read_query(_QUERY, query_params(req))["days"]
        client = self._clients.get(req.context.client.id)
        resp.media = {
            "client": {
                "id": client.id, "name": client.name, "scopes": list(client.scopes),
                "calls_purchased": client.calls_purchased, "calls_used": client.calls_used,
                "calls_left": client.calls_left, "rate_per_minute": client.rate_per_minute,
                "rate_per_day": client.rate_per_day,
            },
            "usage": [
                {"endpoint": row.endpoint, "day": row.day, "signatures": row.signatures}
                for row in reports.usage(self._db, client.id, days)
            ],
        }
