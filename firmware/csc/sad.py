"""Signature Activation Data (SAD): single-use permissions to sign exactly the authorised hashes.

The box declares SCAL 2: ``credentials/authorize`` binds a SAD to one client, one credential and
the hashes (and, when named, the hash algorithm) it will be used for. A signing call spends the
SAD, whatever its outcome, once its own client presents it — so a SAD cannot be replayed, nor
probed with other hashes until one passes. Another client presenting it is refused without
spending it, so it cannot be used to cancel someone else's authorisation either. Like access
tokens, SADs are kept in memory and only as SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

DEFAULT_TTL_S = 300.0
MAX_OUTSTANDING = 1000  # per client: unspent SADs are memory a client could otherwise grow at will


class SadRefused(Exception):
    """The SAD does not authorise this signing request."""


@dataclass(frozen=True)
class _Grant:
    client_id: str
    credential_id: str
    hash_algorithm: str | None  # None: v1 names no algorithm; the digests' lengths still bind it
    digests: Counter
    expires_at: float


def _digest(sad: str) -> bytes:
    return hashlib.sha256(sad.encode()).digest()


class SadStore:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[bytes, _Grant] = {}

    def issue(
        self, client_id: str, credential_id: str, digests: list[bytes], hash_algorithm: str | None = None
    ) -> tuple[str, int]:
        """A SAD for exactly ``digests`` (a multiset) and its lifetime in seconds."""
        sad = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._grants = {k: g for k, g in self._grants.items() if g.expires_at > now}
            if sum(g.client_id == client_id for g in self._grants.values()) >= MAX_OUTSTANDING:
                raise SadRefused(f"{MAX_OUTSTANDING} unspent SADs are outstanding; use or let them expire first")
            self._grants[_digest(sad)] = _Grant(
                client_id, credential_id, hash_algorithm, Counter(digests), now + self._ttl_s
            )
        return sad, int(self._ttl_s)

    def consume(self, sad: str, client_id: str, credential_id: str, digests: list[tuple[str, bytes]]) -> None:
        """Spend the SAD on ``digests`` as (hash algorithm, digest) pairs; raises SadRefused."""
        key = _digest(sad)
        with self._lock:
            grant = self._grants.get(key)
            if grant is None or grant.client_id != client_id:
                raise SadRefused("Invalid parameter SAD")
            del self._grants[key]
        if grant.expires_at <= self._clock():
            raise SadRefused("SAD expired")
        if grant.credential_id != credential_id:
            raise SadRefused("the SAD was issued for another credential")
        if any(grant.hash_algorithm not in (None, algorithm) for algorithm, _ in digests):
            raise SadRefused(f"the SAD was issued for {grant.hash_algorithm} hashes")
        wanted = Counter(digest for _, digest in digests)
        if any(count > grant.digests[digest] for digest, count in wanted.items()):
            raise SadRefused("Hash is not authorized by the SAD")
