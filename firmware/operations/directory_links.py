"""The certificate directory's ties to its other faces: inbound mail and LDAP.

The directory service (firmware/directory) knows one way in — ``submit`` — and one way out —
``published``; the inbound SMTP listener (firmware/inbound) and the LDAP responder
(firmware/ldap) each name a small seam of their own. These adapters connect them, so that
neither face restates a directory rule: a certificate mailed in goes through the same checks and
proof of mailbox control as one posted to the API, and LDAP serves exactly what a lookup would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asn1crypto import x509

from ..directory import AddressInvalid, CertificateRefused, DirectoryService, normalise
from ..errors import InvalidRequest
from ..store import Database, immediate

__all__ = ["InboundSubmissions", "LdapDirectory"]

_LDAP_SCHEMA = """
CREATE TABLE IF NOT EXISTS ldap_lookups (
    peer    TEXT NOT NULL,
    minute  INTEGER NOT NULL,     -- Unix time // 60
    count   INTEGER NOT NULL,
    PRIMARY KEY (peer, minute)
);
"""


class InboundSubmissions:
    """firmware.inbound's ``Submissions``: a certificate from a signed e-mail is submitted as
    source "mail"; a refusal becomes the SMTP answer (ValueError), an outage of the revocation
    servers stays an exception (the listener answers 451: try again later)."""

    def __init__(self, directory: DirectoryService) -> None:
        self._directory = directory

    def submit_received(self, address: str, certificate: x509.Certificate, chain: list[x509.Certificate]) -> None:
        try:
            self._directory.submit(address, certificate.dump(), [c.dump() for c in chain], source="mail",
                                   actor="mail")
        except (CertificateRefused, AddressInvalid, InvalidRequest) as exc:
            raise ValueError(str(exc)) from exc


class LdapDirectory:
    """firmware.ldap's ``PublishedCertificates``: the published certificates of one normalised
    address, and a per-peer rate counted in SQLite (exact across worker processes; mail clients
    bind anonymously, so the peer's address is all there is to count by)."""

    def __init__(self, directory: DirectoryService, db: Database, lookups_per_minute: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._directory = directory
        self._db = db
        self._per_minute = lookups_per_minute
        self._clock = clock
        db.connect().executescript(_LDAP_SCHEMA)

    def lookup(self, address: str) -> list[bytes]:
        try:
            normalised = normalise(address)
        except AddressInvalid:
            return []
        return [row.certificate for row in self._directory.published(self._db.connect(), normalised)]

    def allow(self, peer: str) -> bool:
        minute = int(self._clock() // 60)
        conn = self._db.connect()
        with immediate(conn):
            conn.execute("DELETE FROM ldap_lookups WHERE minute < ?", (minute - 1,))
            count = conn.execute(
                "INSERT INTO ldap_lookups(peer, minute, count) VALUES (?, ?, 1)"
                " ON CONFLICT(peer, minute) DO UPDATE SET count = count + 1 RETURNING count",
                (peer, minute),
            ).fetchone()[0]
        return bool(count <= self._per_minute)
