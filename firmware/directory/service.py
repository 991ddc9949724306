"""The certificate directory: submit → prove mailbox control → publish; look up; unpublish; re-check.

Every state change is audited in the transaction that makes it (actions directory.submit,
directory.refuse, directory.publish, directory.supersede, directory.unpublish,
directory.lookup). The audit log names an address only by its HMAC-SHA-256 under a key kept in
the database (directory_keys), never in clear: the log is append-only and hash-chained, so an
address written there could never be erased, and it is exported to auditors; a plain SHA-256
of an address is reversed by hashing candidate addresses. Whoever holds the box can still find
an address's entries (the box computes the hash), and destroying the key makes the old entries
unlinkable without breaking the chain. Fingerprints of certificates are public data and are logged.

Lookups are metered calls of the client (quota, and its signature-call rates, through the
metered_calls view) and limited per client and per looked-up address, counted in the audit log
inside the lookup's own write transaction: exact across worker processes, nothing in memory.
A certificate waiting for its proof and no certificate at all look the same to every lookup.

Seams for what comes later: a `ProofSender` delivers the proof (the S/MIME mailer implements
it); `submit(source=...)` takes certificates from the inbound-mail listener and the console
alike; `published(address)` is what an LDAP front serves, after `admit_lookup`.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509

from ..config import DirectorySettings
from ..errors import InvalidRequest
from ..signing.revocation import RevocationService, RevocationUnavailable
from ..store import audit, metering
from ..store.db import Database, immediate
from ..store.metering import RateLimited
from .addresses import normalise
from .checks import CertificateRefused, CheckedCertificate, check_certificate, check_revocation, fingerprint
from .store import CertificateRow, DirectoryStore, ProofRow, Purpose, Status

__all__ = ["PROOF_PATH", "DirectoryService", "NoCertificate", "ProofInvalid", "ProofSecret", "ProofSender",
           "RecheckChange", "UndeliveredProofs"]

log = logging.getLogger(__name__)

# Where a proof link points, under [directory] public_base_url: the confirmation page (a GET shows
# a question and a button; only its POST acts, so a mail scanner fetching links proves nothing).
PROOF_PATH = "/directory/confirm/{token}"
LOOKUP_WINDOW = timedelta(minutes=1)
PROOF_MAIL_WINDOW = timedelta(hours=1)


class NoCertificate(Exception):
    """No published certificate for the address (none at all, or none proven yet: the same answer)."""


class ProofInvalid(Exception):
    """The link or code is unknown, expired, used, or its attempts are spent."""


@dataclass(frozen=True)
class ProofSecret:
    """What the owner gets, encrypted to the certificate: a link to follow, and a code to type instead."""

    purpose: Purpose  # publish or unpublish
    link: str | None  # None unless [directory] public_base_url is set
    code: str  # eight digits, for POST /v1/directory/proofs with the address
    expires_at: datetime

    def __str__(self) -> str:
        return self.link or self.code


class ProofSender(Protocol):
    """Delivers a proof of mailbox control to ``address``, encrypted to ``certificate`` (DER), so
    that only the key's holder can read it. The S/MIME mailer implements this (it queues durably
    and returns; a failure to queue raises). Never logs ``link_or_code``."""

    def send_proof(self, address: str, certificate: bytes, link_or_code: ProofSecret) -> None: ...


class UndeliveredProofs:
    """The sender while no mailer is wired in: logs that a proof could not be sent (not the secret)."""

    def send_proof(self, address: str, certificate: bytes, link_or_code: ProofSecret) -> None:
        log.warning("directory: no mailer configured, a %s proof for certificate %s was not sent",
                    link_or_code.purpose, fingerprint(certificate)[:16])


@dataclass(frozen=True)
class RecheckChange:
    address: str
    fingerprint: str
    reason: str  # unproven, expired, revoked, chain


class DirectoryService:
    def __init__(self, db: Database, revocation: RevocationService, settings: DirectorySettings,
                 sender: ProofSender, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = DirectoryStore(db)
        self._db = db
        self._revocation = revocation
        self._settings = settings
        self.sender = sender
        self._clock = clock

    # -- submission and proof ---------------------------------------------------------------------

    def submit(self, address: str, certificate: bytes, chain: Sequence[bytes] = (), *, source: str, actor: str,
               client_id: str | None = None) -> CertificateRow:
        """Check ``certificate`` for ``address`` and keep it pending, mailing the owner a proof;
        raises AddressInvalid, InvalidRequest (no certificate), CertificateRefused (audited as
        directory.refuse) or RevocationUnavailable. A certificate already published is returned as it is."""
        address = normalise(address)
        _parse(certificate, "certificate")
        for i, item in enumerate(chain):
            _parse(item, f"chain[{i}]")
        checked = self._checked(address, certificate, chain, actor, client_id, source)
        now = self._clock()
        conn = self._db.connect()
        with immediate(conn):
            existing = self._store.find(conn, address, checked.fingerprint)
            if existing is not None and existing.status == "published":
                return existing
            self._admit_proof_mail(conn, address, now)
            if client_id is not None:
                metering.charge(conn, client_id, 1)
            certificate_id = self._store.put_pending(conn, address, checked.fingerprint, certificate, checked.chain,
                                                     source, checked.not_before, checked.not_after, now)
            secret = self._new_proof(conn, certificate_id, "publish", now)
            audit.append(conn, [self._entry(actor, "directory.submit", client_id, address, checked.fingerprint,
                                            source=source, kind="directory.submit")])
            row = self._store.get(conn, certificate_id)
        self.sender.send_proof(address, certificate, secret)
        return row

    def request_unpublish(self, address: str, certificate_fingerprint: str, *, actor: str,
                          client_id: str | None = None) -> None:
        """The owner's way out: mail a proof whose confirmation unpublishes the certificate."""
        address = normalise(address)
        conn = self._db.connect()
        with immediate(conn):
            row = self._store.find(conn, address, certificate_fingerprint)
            if row is None or row.status != "published":
                raise NoCertificate(f"no published certificate {certificate_fingerprint} for this address")
            self._admit_proof_mail(conn, address, self._clock())
            secret = self._new_proof(conn, row.id, "unpublish", self._clock())
            audit.append(conn, [self._entry(actor, "directory.unpublish_requested", client_id, address, row.fingerprint)])
        self.sender.send_proof(address, row.certificate, secret)

    def confirm(self, token: str) -> CertificateRow:
        """Follow a proof link: publishes (or unpublishes) its certificate; raises ProofInvalid,
        CertificateRefused if the certificate no longer passes, or RevocationUnavailable."""
        proof = self._store.proof_by_token(self._db.connect(), token)
        if proof is None:
            raise ProofInvalid("this link is unknown, expired or already used")
        return self._apply(proof)

    def proof_target(self, token: str) -> tuple[Purpose, CertificateRow]:
        """What a proof link would do, without doing it (the confirmation page's question);
        raises ProofInvalid as ``confirm`` would for an unknown, used or expired link."""
        proof = self._store.proof_by_token(self._db.connect(), token)
        if proof is None or proof.used or proof.expires_at <= self._clock():
            raise ProofInvalid("this link is unknown, expired or already used")
        return proof.purpose, self._store.get(self._db.connect(), proof.certificate_id)

    def confirm_code(self, address: str, code: str) -> CertificateRow:
        """Type the mailed code instead of following the link; wrong codes count against the
        address's open proofs, which are used up after [directory] proof_max_attempts."""
        address = normalise(address)
        now = self._clock()
        wanted = self._store.code_hash(code.strip())
        conn = self._db.connect()
        with immediate(conn):
            candidates = self._store.open_proofs(conn, address, now)
            match = next((proof for proof, code_hash in candidates if hmac.compare_digest(code_hash, wanted)), None)
            if match is None:
                for proof, _ in candidates:
                    self._store.count_attempt(conn, proof.id, self._settings.proof_max_attempts, now)
        if match is None:
            raise ProofInvalid("this code is wrong, expired or already used")
        return self._apply(match)

    def _apply(self, proof: ProofRow) -> CertificateRow:
        now = self._clock()
        if proof.used or proof.expires_at <= now:
            raise ProofInvalid("this link is unknown, expired or already used")
        conn = self._db.connect()
        row = self._store.get(conn, proof.certificate_id)
        actor = "owner"
        if proof.purpose == "publish":  # it must still pass: revoked or expired since submission?
            self._checked(row.address, row.certificate, row.chain, actor, None, row.source)
        with immediate(conn):
            fresh = self._store.get(conn, proof.certificate_id)
            still = self._store.proof(conn, proof.id)
            if still is None or still.used or fresh.status != ("pending" if proof.purpose == "publish" else "published"):
                raise ProofInvalid("this link is unknown, expired or already used")
            self._store.use_proof(conn, proof.id, now)
            if proof.purpose == "unpublish":
                self._store.end(conn, fresh.id, "unpublished", "owner", now)
                audit.append(conn, [self._entry(actor, "directory.unpublish", None, fresh.address, fresh.fingerprint,
                                                reason="owner")])
            else:
                audit.append(conn, self._publish(conn, fresh, now))
            return self._store.get(conn, fresh.id)

    def _publish(self, conn: sqlite3.Connection, row: CertificateRow, now: datetime) -> list[audit.AuditEntry]:
        """Publish ``row``; the newest certificate of the address (by notBefore) supersedes the others."""
        entries = []
        newer = False
        for other in self._store.by_status(conn, row.address, "published"):
            if (other.not_before, other.id) > (row.not_before, row.id):
                newer = True
                continue
            self._store.end(conn, other.id, "superseded", "superseded", now)
            entries.append(self._entry("owner", "directory.supersede", None, row.address, other.fingerprint,
                                       by=row.fingerprint))
        self._store.publish(conn, row.id, now)
        entries.insert(0, self._entry("owner", "directory.publish", None, row.address, row.fingerprint))
        if newer:  # proven, but a newer certificate is already published: kept as superseded
            self._store.end(conn, row.id, "superseded", "superseded", now)
            entries.append(self._entry("owner", "directory.supersede", None, row.address, row.fingerprint, by="newer"))
        return entries

    # -- administration ---------------------------------------------------------------------------

    def unpublish(self, address: str, certificate_fingerprint: str, *, actor: str, reason: str = "admin") -> None:
        """Take a published (or pending) certificate out of the directory; raises NoCertificate."""
        address = normalise(address)
        conn = self._db.connect()
        with immediate(conn):
            row = self._store.find(conn, address, certificate_fingerprint)
            if row is None or row.status not in ("published", "pending"):
                raise NoCertificate(f"no published or pending certificate {certificate_fingerprint} for this address")
            self._store.end(conn, row.id, "unpublished", reason, self._clock())
            audit.append(conn, [self._entry(actor, "directory.unpublish", None, address, row.fingerprint, reason=reason)])

    def certificates(self, address: str, *, actor: str) -> list[CertificateRow]:
        """Every certificate of one exact address (normalised; raises AddressInvalid), whatever its
        status, newest first: what an administrator sees. Not a lookup (not metered, not
        rate-limited), but audited as ``actor``'s search: who looked at whose certificates is on record."""
        address = normalise(address)
        conn = self._db.connect()
        with immediate(conn):
            found = self._store.by_address(conn, address)
            audit.append(conn, [audit.AuditEntry(actor, "directory.search", None, {
                "address": self._store.address_hash(address), "found": len(found)})])
        return found

    def counts(self) -> dict[Status, int]:
        """How many certificates the directory holds in each status."""
        return self._store.counts(self._db.connect())

    def recheck(self, now: datetime | None = None) -> list[RecheckChange]:
        """The nightly re-check: drop pending certificates whose owner never proved the mailbox,
        unpublish expired certificates (at ``now``), and revoked ones or ones no longer under the
        trust roots (checked live). A certificate whose revocation status
        cannot be had now stays published and is logged; the next run asks again."""
        now = now or self._clock()
        changes = self._drop_unproven(now)
        for row in self._store.all_published(self._db.connect()):
            reason = None
            if row.not_after <= now:
                reason = "expired"
            else:
                try:
                    check_revocation(row.certificate, row.chain, self._revocation)
                except CertificateRefused as refused:
                    reason = "revoked" if refused.check == "revocation" else refused.check
                except RevocationUnavailable as exc:
                    log.warning("directory re-check: %s kept, revocation status unknown: %s", row.fingerprint[:16], exc)
            if reason is None:
                continue
            conn = self._db.connect()
            with immediate(conn):
                current = self._store.get(conn, row.id)
                if current.status != "published":
                    continue
                self._store.end(conn, row.id, "unpublished", reason, now)
                audit.append(conn, [self._entry("box", "directory.unpublish", None, row.address, row.fingerprint,
                                                reason=reason)])
            changes.append(RecheckChange(row.address, row.fingerprint, reason))
        return changes

    def _drop_unproven(self, now: datetime) -> list[RecheckChange]:
        """End the pending certificates whose last proof expired unanswered (reason "unproven"):
        the directory keeps nobody's certificate on an unconfirmed claim. Submitting it again starts over."""
        changes = []
        conn = self._db.connect()
        with immediate(conn):
            for row in self._store.unproven(conn, now):
                self._store.end(conn, row.id, "unpublished", "unproven", now)
                audit.append(conn, [self._entry("box", "directory.unpublish", None, row.address, row.fingerprint,
                                                reason="unproven")])
                changes.append(RecheckChange(row.address, row.fingerprint, "unproven"))
        return changes

    # -- lookups ----------------------------------------------------------------------------------

    def lookup(self, address: str, client_id: str) -> list[CertificateRow]:
        """The address's published, unexpired certificates, newest first; a metered, rate-limited call."""
        address = normalise(address)
        conn = self._db.connect()
        with immediate(conn):
            found = self.published(conn, address)
            self.admit_lookup(conn, address, client_id, found=bool(found))
        return found

    def exists(self, address: str, client_id: str) -> bool:
        return bool(self.lookup(address, client_id))

    def published(self, conn: sqlite3.Connection, address: str) -> list[CertificateRow]:
        now = self._clock()
        return [row for row in self._store.by_status(conn, address, "published") if row.not_after > now]

    def admit_lookup(self, conn: sqlite3.Connection, address: str, client_id: str, found: bool) -> None:
        """Inside the caller's write transaction: refuse (RateLimited, metering.Refusal) or charge
        and record one lookup of ``address`` by ``client_id``."""
        since = self._clock() - LOOKUP_WINDOW
        per_client, per_address = (self._settings.lookups_per_minute_per_client,
                                   self._settings.lookups_per_minute_per_address)
        if self._store.events_since(conn, "directory.lookup", since, client_id=client_id) >= per_client:
            raise RateLimited(f"rate limit of {per_client} directory lookups per minute reached")
        address_hash = self._store.address_hash(address)
        if self._store.events_since(conn, "directory.lookup", since, address_hash=address_hash) >= per_address:
            raise RateLimited(f"rate limit of {per_address} lookups per minute of one address reached")
        metering.charge(conn, client_id, 1)
        audit.append(conn, [audit.AuditEntry(f"client:{client_id}", "directory.lookup", client_id,
                                             {"kind": "directory", "address": address_hash, "found": found})])

    # -- helpers ----------------------------------------------------------------------------------

    def _checked(self, address: str, certificate: bytes, chain: Sequence[bytes], actor: str, client_id: str | None,
                 source: str) -> CheckedCertificate:
        try:
            return check_certificate(address, certificate, chain, self._revocation, self._clock())
        except CertificateRefused as refused:
            conn = self._db.connect()
            with immediate(conn):
                audit.append(conn, [self._entry(actor, "directory.refuse", client_id, address, fingerprint(certificate),
                                                check=refused.check, source=source)])
            raise

    def _admit_proof_mail(self, conn: sqlite3.Connection, address: str, now: datetime) -> None:
        """Raise RateLimited once the address has had [directory] proofs_per_hour_per_address proof
        mails in the last hour: a valid certificate must not become a way to flood its owner's mailbox."""
        since, address_hash = now - PROOF_MAIL_WINDOW, self._store.address_hash(address)
        sent = sum(self._store.events_since(conn, action, since, address_hash=address_hash)
                   for action in ("directory.submit", "directory.unpublish_requested"))
        if sent >= self._settings.proofs_per_hour_per_address:
            raise RateLimited(f"this address has had {sent} confirmation mails in the last hour; try again later")

    def _new_proof(self, conn: sqlite3.Connection, certificate_id: int, purpose: Purpose, now: datetime) -> ProofSecret:
        token = secrets.token_urlsafe(32)
        code = f"{secrets.randbelow(10**8):08d}"
        expires_at = now + timedelta(seconds=self._settings.proof_lifetime_s)
        self._store.add_proof(conn, certificate_id, purpose, token, code, expires_at, now)
        base = self._settings.public_base_url
        link = base.rstrip("/") + PROOF_PATH.format(token=token) if base else None
        return ProofSecret(purpose, link, code, expires_at)

    def _entry(self, actor: str, action: str, client_id: str | None, address: str, certificate_fingerprint: str,
               **details: str) -> audit.AuditEntry:
        return audit.AuditEntry(actor, action, client_id, {
            "address": self._store.address_hash(address), "fingerprint": certificate_fingerprint, **details})


def _parse(der: bytes, name: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise InvalidRequest(f"{name} is not an X.509 certificate (DER)") from None
