"""The certificate directory's ties to the mailer and to its other faces: inbound mail and LDAP.

The directory service (firmware/directory) knows one way in — ``submit`` — and one way out —
``published``; the mailer (firmware/mail), the one-time codes (firmware/otp), the inbound SMTP
listener (firmware/inbound) and the LDAP responder (firmware/ldap) each name a small seam of their
own. These adapters connect them, so that no part restates another's rule: a certificate mailed
in goes through the same checks and proof of mailbox control as one posted to the API, LDAP
serves exactly what a lookup would, and mail is encrypted to exactly the published certificates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from asn1crypto import x509

from ..directory import AddressInvalid, CertificateRefused, DirectoryService, ProofSecret, normalise
from ..errors import InvalidRequest
from ..mail.service import MailService
from ..store import Database, immediate

__all__ = ["CodeByMail", "DirectoryRecipients", "InboundSubmissions", "LdapDirectory", "ProofByMail"]

_LDAP_SCHEMA = """
CREATE TABLE IF NOT EXISTS ldap_lookups (
    peer    TEXT NOT NULL,
    minute  INTEGER NOT NULL,     -- Unix time // 60
    count   INTEGER NOT NULL,
    PRIMARY KEY (peer, minute)
);
"""


class DirectoryRecipients:
    """firmware.mail's ``RecipientDirectory``: the published certificates of the normalised address."""

    def __init__(self, directory: DirectoryService, db: Database) -> None:
        self._directory = directory
        self._db = db

    def lookup(self, address: str) -> Sequence[x509.Certificate]:
        try:
            normalised = normalise(address)
        except AddressInvalid:
            return ()
        rows = self._directory.published(self._db.connect(), normalised)
        return [x509.Certificate.load(row.certificate) for row in rows]


class ProofByMail:
    """firmware.directory's ``ProofSender``: the proof goes encrypted to the very certificate that
    waits to be published (only its key holder can read it), signed by the box."""

    def __init__(self, mail: MailService) -> None:
        self._mail = mail

    def send_proof(self, address: str, certificate: bytes, link_or_code: ProofSecret) -> None:
        action = "publish" if link_or_code.purpose == "publish" else "remove"
        steps = [f"To {action} your e-mail encryption certificate in our directory, confirm that this mailbox is yours."]
        if link_or_code.link:
            steps.append(f"Open this page and confirm: {link_or_code.link}")
        steps.append(f"Or enter this code with your address: {link_or_code.code}")
        steps.append(f"It works once, until {link_or_code.expires_at:%Y-%m-%d %H:%M} UTC. If you did not ask for"
                     " this, ignore this message: nothing changes.")
        self._mail.send_box_message(None, address, f"Confirm your certificate ({action})", "\n\n".join(steps) + "\n",
                                    certificates=[x509.Certificate.load(certificate)])


class CodeByMail:
    """firmware.otp's ``CodeSender``: the code encrypted to the person's directory certificate, or
    plain where the client allows it; charged to the client as one mail unless ``charged`` is off
    (an envelope's codes are part of the envelope, which is charged once)."""

    def __init__(self, mail: MailService, charged: bool = True) -> None:
        self._mail = mail
        self._charged = charged

    def send_code(self, client_id: str, address: str, code: str, allow_plain: bool) -> bool:
        text = f"Your one-time code: {code}\n\nIt works once and expires soon. Never tell it to anyone who asks.\n"
        return self._mail.send_box_message(client_id if self._charged else None, address, "Your one-time code", text,
                                           allow_plain=allow_plain).encrypted


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
