"""CSC service access tokens: short-lived, opaque, bound to one API client, kept only as SHA-256.

A token stands in for the API key on every CSC call, so a leaked token is worth an hour of that
client's access and nothing more. Only the hash is held (in memory: a restart logs everyone out,
which is what a token store of an appliance should do), so not even a memory dump of the box
yields a usable token. Expired tokens are told apart from unknown ones for clients' sake.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

DEFAULT_TTL_S = 3600.0


class InvalidAccessToken(Exception):
    """The access token is unknown, revoked, or (when ``expired``) past its lifetime."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class _Grant:
    client_id: str
    expires_at: float


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AccessTokens:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[bytes, _Grant] = {}

    def issue(self, client_id: str) -> tuple[str, int]:
        """A new token for ``client_id`` and its lifetime in seconds."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._grants = {k: g for k, g in self._grants.items() if g.expires_at > now}
            self._grants[_digest(token)] = _Grant(client_id, now + self._ttl_s)
        return token, int(self._ttl_s)

    def client_id(self, token: str) -> str:
        """The client the token was issued to; raises InvalidAccessToken."""
        with self._lock:
            grant = self._grants.get(_digest(token))
        if grant is None:
            raise InvalidAccessToken("the access token is not valid")
        if grant.expires_at <= self._clock():
            raise InvalidAccessToken("the access token has expired; log in again", expired=True)
        return grant.client_id

    def revoke(self, token: str, client_id: str) -> None:
        """Forget ``token`` if it is ``client_id``'s; anything else is ignored, as RFC 7009 asks."""
        key = _digest(token)
        with self._lock:
            grant = self._grants.get(key)
            if grant is not None and grant.client_id == client_id:
                del self._grants[key]
