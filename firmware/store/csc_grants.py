"""CSC access tokens and SADs in SQLite, bound to the client's key and state, kept only as SHA-256.

An access token stands in for the API key on every CSC call, so it must not outlive what the key
itself may do: it records the key hash it was issued under and the audit log's head at login, and
it is refused once the client is disabled, its key changed, or a ``client.disable`` or
``client.rotate`` was audited after that login (so enabling the client again does not bring old
tokens back, and a rotation racing a login still ends the token). The check is one join on every
call, so it holds whichever process made the change.

A SAD (Signature Activation Data, SCAL 2) is a single-use permission to sign exactly the hashes
(and, when named, the hash algorithm) authorised, with one credential. It belongs to the access
token it was obtained with: it is spent by one conditional DELETE, which only that token can
perform, whatever the signing's outcome (no replay, no probing with other hashes until one
passes), and it dies with that token. Anyone else presenting it is refused without spending it.

Only hashes of tokens and SADs are stored, so a copy of box.db yields nothing usable. Rows stay
until they expire (a restart logs nobody out; every serving process sees the same grants).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable

from . import audit
from .clients import Client
from .db import Database, immediate

TOKEN_TTL_S = 3600.0
SAD_TTL_S = 300.0
MAX_OUTSTANDING_SADS = 1000  # per client: unspent SADs are rows a client could otherwise grow at will

# A token is live while its client is enabled, holds the key it was issued under, and was neither
# disabled nor given a new key since the login (t: csc_tokens, c: clients).
_BOUND = (
    "c.disabled_at IS NULL AND c.key_hash = t.key_hash AND NOT EXISTS ("
    " SELECT 1 FROM audit_log a WHERE a.client_id = t.client_id"
    " AND a.action IN ('client.disable', 'client.rotate') AND a.seq > t.since_seq)"
)


class InvalidAccessToken(Exception):
    """The access token is unknown, revoked, no longer bound, or (when ``expired``) past its lifetime."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class SadRefused(Exception):
    """The SAD does not authorise this signing request."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class _Grants:
    """What tokens and SADs share: a random secret handed out once and kept as a hash in ``table``,
    alive for ``ttl_s``; each new grant sweeps the table's expired rows in the same transaction."""

    table: str

    def __init__(self, db: Database, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._clock = clock

    def _new(self, conn: sqlite3.Connection) -> tuple[str, float]:
        """A fresh secret and its expiry; call inside the transaction that inserts its row."""
        now = self._clock()
        conn.execute(f"DELETE FROM {self.table} WHERE expires_at <= ?", (now,))
        return secrets.token_urlsafe(32), now + self._ttl_s


class AccessTokens(_Grants):
    table = "csc_tokens"

    def __init__(self, db: Database, ttl_s: float = TOKEN_TTL_S, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db, ttl_s, clock)

    def checkpoint(self) -> int:
        """Take this before checking the API key: changes audited after it end the token issued."""
        return audit.head(self._db.connect())[0]

    def issue(self, client_id: str, since: int) -> tuple[str, int]:
        """A new token for ``client_id``, authenticated at ``checkpoint()`` ``since``; and its lifetime."""
        conn = self._db.connect()
        with immediate(conn):
            token, expires_at = self._new(conn)
            conn.execute(
                "INSERT INTO csc_tokens(token_hash, client_id, key_hash, since_seq, expires_at)"
                " SELECT ?, id, key_hash, ?, ? FROM clients WHERE id = ?",
                (_digest(token), since, expires_at, client_id),
            )
        return token, int(self._ttl_s)

    def client(self, token: str) -> Client:
        """The client the token was issued to, as it is now; raises InvalidAccessToken."""
        row = self._db.connect().execute(
            f"SELECT c.*, t.expires_at > ? AS live, {_BOUND} AS bound"
            " FROM csc_tokens t JOIN clients c ON c.id = t.client_id WHERE t.token_hash = ?",
            (self._clock(), _digest(token)),
        ).fetchone()
        if row is None:
            raise InvalidAccessToken("the access token is not valid")
        if not row["bound"]:
            raise InvalidAccessToken("the client was disabled or its API key changed; log in again")
        if not row["live"]:
            raise InvalidAccessToken("the access token has expired; log in again", expired=True)
        return Client.from_row(row)

    def revoke(self, token: str, client_id: str) -> None:
        """Forget ``token`` (and its SADs) if it is ``client_id``'s; anything else is ignored (RFC 7009)."""
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("DELETE FROM csc_tokens WHERE token_hash = ? AND client_id = ?", (_digest(token), client_id))


class SadStore(_Grants):
    table = "csc_sads"

    def __init__(self, db: Database, ttl_s: float = SAD_TTL_S, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db, ttl_s, clock)

    def issue(
        self, token: str, credential_id: str, digests: list[bytes], hash_algorithm: str | None = None
    ) -> tuple[str, int]:
        """A SAD for exactly ``digests`` (a multiset), usable with access ``token``; and its lifetime.

        ``hash_algorithm`` None: v1 names no algorithm; the digests' lengths still bind it.
        """
        conn = self._db.connect()
        with immediate(conn):
            sad, expires_at = self._new(conn)
            outstanding = conn.execute(
                "SELECT COUNT(*) FROM csc_sads"
                " WHERE client_id = (SELECT client_id FROM csc_tokens WHERE token_hash = ?)",
                (_digest(token),),
            ).fetchone()[0]
            if outstanding >= MAX_OUTSTANDING_SADS:
                raise SadRefused(f"{MAX_OUTSTANDING_SADS} unspent SADs are outstanding; use or let them expire first")
            inserted = conn.execute(
                "INSERT INTO csc_sads(sad_hash, token_hash, client_id, credential_id, hash_algorithm, digests,"
                " expires_at) SELECT ?, token_hash, client_id, ?, ?, ?, ? FROM csc_tokens WHERE token_hash = ?",
                (_digest(sad), credential_id, hash_algorithm, json.dumps([d.hex() for d in digests]),
                 expires_at, _digest(token)),
            ).rowcount
            if not inserted:
                raise SadRefused("the access token was revoked meanwhile")
        return sad, int(self._ttl_s)

    def consume(self, sad: str, token: str, credential_id: str, digests: list[tuple[str, bytes]]) -> None:
        """Spend the SAD on ``digests`` as (hash algorithm, digest) pairs; raises SadRefused."""
        conn = self._db.connect()
        with immediate(conn):
            spent = conn.execute(
                "DELETE FROM csc_sads WHERE sad_hash = ? AND token_hash = ?"
                " RETURNING credential_id, hash_algorithm, digests, expires_at > ? AS live",
                (_digest(sad), _digest(token), self._clock()),
            ).fetchall()
        if not spent:
            raise SadRefused("Invalid parameter SAD")
        grant = spent[0]
        if not grant["live"]:
            raise SadRefused("SAD expired")
        if grant["credential_id"] != credential_id:
            raise SadRefused("the SAD was issued for another credential")
        if any(grant["hash_algorithm"] not in (None, algorithm) for algorithm, _ in digests):
            raise SadRefused(f"the SAD was issued for {grant['hash_algorithm']} hashes")
        authorised = Counter(bytes.fromhex(d) for d in json.loads(grant["digests"]))
        wanted = Counter(digest for _, digest in digests)
        if any(count > authorised[digest] for digest, count in wanted.items()):
            raise SadRefused("Hash is not authorized by the SAD")
