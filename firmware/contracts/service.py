"""Process control of envelopes: create, invite in order, validate, sign, decline, reassign, cancel,
expire, complete.

Each state change is one write transaction holding the change, its line in the envelope's trail,
its audit entry and its webhook: none exists without the others. Token work (a party's signature,
the organisation's, the final timestamp) happens outside the transaction, on the newest revision;
the result is committed only if nobody released another revision meanwhile (else it is redone on
top of that one). A crash between the token's work and the commit therefore loses nothing that was
released and duplicates nothing: the party is still "validated" and signs again; an envelope whose
parties have all signed but that was not completed is completed by ``resume``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from ..config import ContractsSettings, WebhookSettings
from ..durable import secret_key
from ..errors import InvalidRequest
from ..mail.outbox import address_hash
from ..otp import OtpCodes
from ..signing.pdf_form_fields import PDF_KIND, ExistingField, check_form_value
from ..store import audit, metering
from ..store.db import Database, immediate
from ..webhooks import check_webhook_url
from ..webhooks import enqueue as enqueue_webhook
from .completion import completion_pdf
from .model import Contract, Field, Method, OrgSignature, Party, Role
from .store import ContractStore
from .totp import TotpSecrets
from .trail import CompletionTrail, TrailEvent, TrailParty

__all__ = [
    "MAX_PARTIES", "SIGN_PATH", "ContractClosed", "ContractsService", "Created", "Invitations", "NotYourTurn",
    "PartyRequest", "PartySigning", "PartyUnverified", "UnknownContract", "VerificationFailed",
]

log = logging.getLogger(__name__)

SIGN_PATH = "/sign/{token}"  # the signing page, on the API listener (published by the reverse proxy)
KEY_FILE = "secrets/contracts.key"
_RETRIES = 3
MAX_PARTIES = 10
MAX_FORM_FIELDS = 20  # per party


class UnknownContract(LookupError):
    """No such envelope, or not this client's (the two look the same)."""


class ContractClosed(Exception):
    """The envelope is completed, declined, cancelled or expired: it takes no more signatures."""


class NotYourTurn(Exception):
    """The party's state does not allow this step now (not invited yet, already signed, …)."""


class PartyUnverified(Exception):
    """The party has not proved who it is: it may neither see nor sign the document."""


class VerificationFailed(Exception):
    """A wrong, expired or used code, or too many attempts."""

    reason = "failed"  # wrong_code, expired, used, too_many_attempts, no_code_sent, unknown

    @classmethod
    def because(cls, reason: str) -> VerificationFailed:
        failed = cls(f"identity not validated: {reason.replace('_', ' ')}")
        failed.reason = reason
        return failed


class PartySigning(Protocol):
    """The signing layer's part: a party's signature made on the token (firmware/signing)."""

    def sign_party(self, pdf: bytes, name: str, email: str, method: str, validated_at: datetime, field_name: str,
                   image_png: bytes | None, values: Mapping[str, str | bool] | None = None) -> bytes: ...

    def add_fields(self, pdf: bytes, fields: Sequence[Field]) -> bytes: ...

    def certify(self, pdf: bytes) -> bytes: ...

    def approve(self, pdf: bytes) -> bytes: ...

    def finish(self, pdf: bytes) -> bytes: ...

    def seal(self, pdf: bytes) -> bytes: ...

    def empty_signature_fields(self, pdf: bytes) -> tuple[int, set[str]]: ...

    def existing_form_fields(self, pdf: bytes) -> dict[str, ExistingField]: ...

    def field_place(self, pdf: bytes, field_name: str) -> tuple[int, tuple[float, float, float, float]] | None: ...


class Invitations(Protocol):
    """How a party learns it may sign: a mail with the link (encrypted where the directory can)."""

    def invite(self, client_id: str, party: Party, title: str, link: str) -> None: ...

    def deliver(self, client_id: str, party: Party, title: str, pdf: bytes) -> None: ...


@dataclass(frozen=True)
class PartyRequest:
    name: str
    email: str
    role: Role
    order: int
    method: Method
    access_code: str | None
    field: Field | None  # None for copy-only parties
    form_fields: tuple[Field, ...] = ()  # filled when the party signs


@dataclass(frozen=True)
class Created:
    contract: Contract
    links: dict[str, str]  # party id -> invitation link (or token when no public_base_url)
    webhook_secret: str | None


class ContractsService:
    def __init__(self, db: Database, state_dir: Path, signing: PartySigning, codes: OtpCodes | None,
                 invitations: Invitations, settings: ContractsSettings, webhooks: WebhookSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._db = db
        self._store = ContractStore(db)
        self._signing = signing
        self._codes = codes
        self._invitations = invitations
        self._settings = settings
        self._webhooks = webhooks
        self._clock = clock
        self._key = secret_key(state_dir / KEY_FILE)
        self.totp = TotpSecrets(db, state_dir, settings.organisation)

    # -- creating ------------------------------------------------------------------------------------

    def create(self, client_id: str, title: str, pdf: bytes, parties: Sequence[PartyRequest],
               org_signature: OrgSignature, expires_in_days: int | None, webhook_url: str | None,
               ip: str | None, reminder_days: int | None = None) -> Created:
        """Check everything, prepare the document (the parties' fields, the organisation's
        certification), then store the envelope and invite the first group, in one transaction."""
        self._check_parties(parties)
        if webhook_url is not None:
            webhook_url = check_webhook_url(webhook_url, self._webhooks.allow_loopback)
        days = expires_in_days or self._settings.default_expiry_days
        if not 1 <= days <= self._settings.max_expiry_days:
            raise InvalidRequest(f"expires_in_days is 1..{self._settings.max_expiry_days}")
        for number, request in enumerate(parties):
            self._check_method(client_id, f"parties[{number}]: ", request.method, request.email)
        pages, empty = self._signing.empty_signature_fields(pdf)
        named = any(f.page is None for p in parties for f in p.form_fields)
        self._check_fields(parties, pages, empty, self._signing.existing_form_fields(pdf) if named else {})
        metering.check(self._db.connect(), client_id, 1)  # before the token works for it
        fields = [replace(f, party_id=f"p{number}") for number, p in enumerate(parties, start=1)
                  for f in ((p.field,) if p.field is not None else ()) + p.form_fields]
        changes = any(f.page is not None or f.kind != "signature" for f in fields)  # new fields, or locks
        prepared = self._signing.add_fields(pdf, fields) if changes else pdf
        if org_signature == "first":
            prepared = self._signing.certify(prepared)
        now = self._clock()
        contract = Contract(f"ct_{secrets.token_urlsafe(12)}", client_id, title, "in_progress", org_signature, now,
                            now + timedelta(days=days), None, None, hashlib.sha256(pdf).hexdigest(), 0, webhook_url,
                            reminder_days)
        webhook_secret = secrets.token_urlsafe(32) if webhook_url else None
        conn = self._db.connect()
        with immediate(conn):
            metering.charge(conn, client_id, 1)
            self._store.add_contract(conn, contract, webhook_secret.encode() if webhook_secret else None)
            self._store.add_document(conn, contract.id, 0, "original", pdf, now)
            if prepared is not pdf:
                self._store.add_document(conn, contract.id, 1, "prepared", prepared, now)
            for number, request in enumerate(parties, start=1):
                party = Party(contract.id, f"p{number}", request.name.strip(), request.email, request.role,
                              request.order, request.method, "waiting" if request.role != "copy" else "copy",
                              None, None, None, None, None)
                self._store.add_party(conn, party, self._mac(request.access_code) if request.access_code else None)
            for field in fields:
                self._store.add_field(conn, contract.id, field)
            self._emit(conn, contract.id, f"client:{client_id}", "created", None, ip,
                       {"title": title, "parties": len(parties), "org_signature": org_signature}, kind="contract")
            links = self._advance(conn, contract.id, now)
            stored = self._contract(conn, contract.id)
        self._send_invitations(stored, links)
        return Created(stored, {pid: link for pid, (_, link) in links.items()}, webhook_secret)

    def _check_parties(self, parties: Sequence[PartyRequest]) -> None:
        if not 1 <= len(parties) <= MAX_PARTIES:
            raise InvalidRequest(f"an envelope has 1..{MAX_PARTIES} parties")
        if not any(p.role != "copy" for p in parties):
            raise InvalidRequest("at least one party must sign or approve")
        for number, party in enumerate(parties, start=1):
            where = f"parties[{number - 1}]"
            if party.role == "copy":
                if party.field is not None or party.form_fields:
                    raise InvalidRequest(f"{where}: a copy-only party has no field")
            elif party.field is None:
                raise InvalidRequest(f"{where}: a {party.role} needs a signature field (field name, or page and box)")
            if party.method == "access_code" and not party.access_code:
                raise InvalidRequest(f"{where}: method access_code needs the access_code the business system hands over")
            if len(party.form_fields) > MAX_FORM_FIELDS:
                raise InvalidRequest(f"{where}: a party fills at most {MAX_FORM_FIELDS} form fields")
        names = [f.name for p in parties for f in ((p.field,) if p.field is not None else ()) + p.form_fields]
        if len(set(names)) != len(names):
            raise InvalidRequest("each field belongs to one party: field names must differ across the envelope")

    def _check_method(self, client_id: str, where: str, method: Method, email: str) -> None:
        if method == "totp" and not self.totp.enrolled(client_id, email):
            raise InvalidRequest(f"{where}method totp needs the person enrolled first (POST /v1/signers/totp)")

    @staticmethod
    def _check_fields(parties: Sequence[PartyRequest], pages: int, empty: set[str],
                      existing: dict[str, ExistingField]) -> None:
        for field in (f for p in parties for f in p.form_fields):
            if field.page is not None:
                if not 1 <= field.page <= pages:
                    raise InvalidRequest(f"field {field.name!r}: page {field.page} is not in 1..{pages}")
                continue  # its name is checked against every field of the PDF as it is added
            found = existing.get(field.name)
            if found is None:
                fillable = sorted(name for name, info in existing.items() if info.kind is not None)
                raise InvalidRequest(f"the PDF has no form field {field.name!r} (fillable ones: "
                                     f"{', '.join(fillable) or 'none'}); or place a new one with page and box")
            if found.kind is None:
                raise InvalidRequest(f"the PDF's field {field.name!r} cannot be filled: {found.problem}")
            if found.kind != PDF_KIND[field.kind]:  # type: ignore[index]  # a form field's kind is never "signature"
                raise InvalidRequest(f"the PDF's field {field.name!r} is a {found.kind} field, not one for {field.kind}")
        for signature in (p.field for p in parties if p.field is not None):
            if signature.page is None:
                if signature.name not in empty:
                    raise InvalidRequest(f"the PDF has no empty signature field {signature.name!r}"
                                         f" (empty ones: {', '.join(sorted(empty)) or 'none'})")
            else:
                if not 1 <= signature.page <= pages:
                    raise InvalidRequest(f"field {signature.name!r}: page {signature.page} is not in 1..{pages}")
                if signature.name in empty:
                    raise InvalidRequest(f"the PDF already has a field {signature.name!r}: name it without page and box")

    # -- reading -------------------------------------------------------------------------------------

    def contract(self, contract_id: str, client_id: str | None) -> Contract:
        """The envelope (expired on the spot if its time is up); UnknownContract if it is not ``client_id``'s."""
        self._expire_if_due(contract_id)
        found = self._store.contract(self._db.connect(), contract_id)
        if found is None or (client_id is not None and found.client_id != client_id):
            raise UnknownContract(f"no envelope {contract_id!r}")
        return found

    def parties(self, contract_id: str) -> list[Party]:
        return self._store.parties(self._db.connect(), contract_id)

    def fields(self, contract_id: str) -> list[Field]:
        return self._store.fields(self._db.connect(), contract_id)

    def events(self, contract_id: str) -> list[Any]:
        return self._store.events(self._db.connect(), contract_id)

    def document(self, contract_id: str) -> tuple[int, bytes, str]:
        """The newest released document: revision, PDF, SHA-256 (the final one once completed)."""
        conn = self._db.connect()
        contract = self._store.contract(conn, contract_id)
        if contract is not None and contract.status == "completed":
            return self._store.document(conn, contract_id, "final")
        revision, pdf, digest = self._store.document(conn, contract_id)
        return revision, pdf, digest

    def completion_certificate(self, contract_id: str) -> bytes:
        try:
            return self._store.document(self._db.connect(), contract_id, "completion")[1]
        except LookupError:
            raise ContractClosed("the completion certificate exists once every party has signed") from None

    def listing(self, status: str | None = None, client_id: str | None = None, limit: int = 100) -> list[Contract]:
        return self._store.listing(self._db.connect(), status, client_id, limit)

    def party_by_invitation(self, token: str) -> Party:
        """The party an invitation link stands for; UnknownContract when unknown, replaced or expired."""
        party = self._store.party_by_invite(self._db.connect(), token, self._clock())
        if party is None:
            raise UnknownContract("this signing link is unknown, expired or was replaced by a newer one")
        return party

    def field_place(self, contract_id: str, party_id: str) -> tuple[int, tuple[float, float, float, float]] | None:
        """Where the party's signature field is on the current document (page, rectangle), for the
        signing page to point at; None if it has no visible place."""
        [field] = [f for f in self.fields(contract_id) if f.party_id == party_id and f.kind == "signature"]
        return self.place_of(contract_id, field)

    def form_fields(self, contract_id: str, party_id: str) -> list[Field]:
        """The form fields the party fills when it signs, in the order the envelope named them."""
        return [f for f in self.fields(contract_id) if f.party_id == party_id and f.kind != "signature"]

    def place_of(self, contract_id: str, field: Field) -> tuple[int, tuple[float, float, float, float]] | None:
        """Where a field is on the current document (page, rectangle); None if it has no visible place."""
        if field.page is not None and field.box is not None:
            return field.page, field.box
        return self._signing.field_place(self._store.document(self._db.connect(), contract_id)[1], field.name)

    def code_sent(self, contract_id: str, party_id: str) -> bool:
        """Whether a validation code was mailed to the party (the page then asks for it)."""
        return self._store.secrets_of(self._db.connect(), contract_id, party_id)["code_id"] is not None

    # -- identity validation -------------------------------------------------------------------------

    def start_verification(self, contract_id: str, party_id: str, ip: str | None) -> dict[str, Any]:
        """Mail the party a code (method email), or nothing (method access_code: the business
        system gave it out of band). Says which, never the code."""
        contract, party = self._active(contract_id, party_id, ("invited",))
        if party.method in ("access_code", "totp"):  # the person has the code already
            return {"method": party.method, "sent": False}
        if self._codes is None:
            raise InvalidRequest("this box sends no mail ([mail] relay_host): use method access_code")
        issued = self._codes.issue(contract.client_id, party.email, allow_plain=True)
        conn = self._db.connect()
        with immediate(conn):
            self._store.set_code(conn, contract_id, party_id, issued.id)
            self._emit(conn, contract_id, f"party:{party_id}", "verification_started", party_id, ip,
                       {"method": "email", "encrypted": issued.encrypted})
        return {"method": "email", "sent": True, "encrypted": issued.encrypted, "expires_in": issued.expires_in_s}

    def confirm_verification(self, contract_id: str, party_id: str, code: str, ip: str | None) -> Party:
        """Check the party's code; right once → ``validated``; wrong → VerificationFailed (counted)."""
        contract, party = self._active(contract_id, party_id, ("invited",))
        conn = self._db.connect()
        row = self._store.secrets_of(conn, contract_id, party_id)
        if party.method == "email":
            if self._codes is None or row["code_id"] is None:
                raise VerificationFailed.because("no_code_sent")
            reason = self._codes.verify(contract.client_id, row["code_id"], code.strip()).reason
        elif row["attempts"] >= self._settings.max_access_attempts:
            reason = "too_many_attempts"
        elif party.method == "totp":
            reason = self.totp.check(contract.client_id, party.email, code)
        else:
            reason = "ok" if hmac.compare_digest(row["access_code_mac"], self._mac(code.strip())) else "wrong_code"
        with immediate(conn):
            current = self._store.party(conn, contract_id, party_id)
            if current is None or current.status != "invited":
                raise NotYourTurn(f"party {party_id} is {current.status if current else 'unknown'}, not invited")
            if reason != "ok":
                if party.method != "email" and reason == "wrong_code":  # mailed codes count their own attempts
                    self._store.count_attempt(conn, contract_id, party_id)
                self._emit(conn, contract_id, f"party:{party_id}", "verification_failed", party_id, ip,
                           {"method": party.method, "reason": reason})
            else:
                self._store.set_status(conn, contract_id, party_id, "validated", self._clock())
                self._emit(conn, contract_id, f"party:{party_id}", "validated", party_id, ip, {"method": party.method})
        if reason != "ok":
            raise VerificationFailed.because(reason)
        validated = self._store.party(conn, contract_id, party_id)
        assert validated is not None
        return validated

    # -- signing and declining -----------------------------------------------------------------------

    def sign(self, contract_id: str, party_id: str, image_png: bytes | None, ip: str | None,
             values: Mapping[str, str | bool] | None = None) -> Party:
        """The party's approval signature on the newest revision, made on the token, with the
        ``values`` of its form fields written in the same revision (its signature covers them);
        then the next group is invited, or the envelope completed."""
        self._active(contract_id, party_id, ("validated",))
        to_pdf, to_store = self._form_values(self.fields(contract_id), party_id, values or {})
        for _ in range(_RETRIES):
            contract, party = self._active(contract_id, party_id, ("validated",))
            conn = self._db.connect()
            revision, pdf, _ = self._store.document(conn, contract_id)
            [field] = [f for f in self._store.fields(conn, contract_id)
                       if f.party_id == party_id and f.kind == "signature"]
            assert party.validated_at is not None
            signed = self._signing.sign_party(pdf, party.name, party.email, party.method, party.validated_at,
                                              field.name, image_png, to_pdf)
            now = self._clock()
            with immediate(conn):
                fresh = self._store.contract(conn, contract_id)
                current = self._store.party(conn, contract_id, party_id)
                if fresh is None or not fresh.open or current is None or current.status != "validated":
                    raise ContractClosed("the envelope changed while signing: nothing was signed")
                if fresh.revision != revision:
                    continue  # a parallel party released a revision first: sign again on top of it
                digest = self._store.add_document(conn, contract_id, revision + 1, "party", signed, now)
                self._store.set_status(conn, contract_id, party_id, "signed", now)
                self._store.set_values(conn, contract_id, to_store)
                self._emit(conn, contract_id, f"party:{party_id}", "signed", party_id, ip,
                           {"revision": revision + 1, "sha256": digest, "field": field.name,
                            **({"filled": sorted(to_store)} if to_store else {})})
                links = self._advance(conn, contract_id, now)
                done = not self._remaining(conn, contract_id)
            self._send_invitations(contract, links)
            if done:
                try:
                    self.complete(contract_id)
                except Exception as exc:  # e.g. the TSA is down: the signature stands, the sweep completes it
                    log.warning("contract %s: completion postponed: %s", contract_id, exc)
            result = self._store.party(self._db.connect(), contract_id, party_id)
            assert result is not None
            return result
        raise ContractClosed("the document kept changing while signing; try again")

    def _form_values(self, fields: Sequence[Field], party_id: str,
                     values: Mapping[str, str | bool]) -> tuple[dict[str, str | bool], dict[str, str]]:
        """The party's values checked against its form fields: what goes into the PDF (empty text
        and unticked boxes stay as they are) and what is stored (every form field of the party,
        the date as the day it signs). Any problem: InvalidRequest, before the token works."""
        by_name = {f.name: f for f in fields}
        for name in values:
            field = by_name.get(name)
            if field is None:
                raise InvalidRequest(f"the envelope has no field {name!r}")
            if field.party_id != party_id:
                raise InvalidRequest(f"field {name!r} is another party's")
            if field.kind == "signature":
                raise InvalidRequest(f"field {name!r} is the signature field: it takes the signature, not a value")
            if field.kind == "date":
                raise InvalidRequest(f"field {name!r} is filled by the box with the date of signing")
        to_pdf: dict[str, str | bool] = {}
        to_store: dict[str, str] = {}
        for field in (f for f in fields if f.party_id == party_id and f.kind != "signature"):
            shown = field.label or field.name
            value = values.get(field.name)
            if field.kind == "date":
                to_pdf[field.name] = to_store[field.name] = self._clock().date().isoformat()
            elif field.kind == "checkbox":
                if value is not None and not isinstance(value, bool):
                    raise InvalidRequest(f"field {field.name!r} is a checkbox: its value is true or false")
                if field.required and value is not True:
                    raise InvalidRequest(f"tick {shown!r}: it is required")
                to_store[field.name] = "on" if value else "off"
                if value:
                    to_pdf[field.name] = True
            else:
                if value is not None and not isinstance(value, str):
                    raise InvalidRequest(f"field {field.name!r} takes text")
                text = check_form_value(field.kind, value or "")  # type: ignore[arg-type]  # text or initials
                if field.required and not text:
                    raise InvalidRequest(f"fill in {shown!r}: it is required")
                to_store[field.name] = text
                if text:
                    to_pdf[field.name] = text
        return to_pdf, to_store

    def decline(self, contract_id: str, party_id: str, reason: str, ip: str | None) -> Contract:
        reason = " ".join(reason.split())[:500]
        if not reason:
            raise InvalidRequest("say why you decline (reason)")
        self._active(contract_id, party_id, ("invited", "validated"))
        conn = self._db.connect()
        now = self._clock()
        with immediate(conn):
            self._store.set_status(conn, contract_id, party_id, "declined", now, note=reason)
            self._store.end(conn, contract_id, "declined", f"{party_id} declined: {reason}", now)
            self._emit(conn, contract_id, f"party:{party_id}", "declined", party_id, ip, {"reason": reason})
        return self.contract(contract_id, None)

    # -- the business system's controls -----------------------------------------------------------------

    def cancel(self, contract_id: str, client_id: str, reason: str, ip: str | None,
               actor: str | None = None) -> Contract:
        """End the envelope early. ``actor`` names who did it when it is not the client itself (the
        console's administrator, acting on the client's envelope); the trail and the audit log say so."""
        contract = self.contract(contract_id, client_id)
        if not contract.open:
            raise ContractClosed(f"the envelope is already {contract.status}")
        conn = self._db.connect()
        with immediate(conn):
            self._store.end(conn, contract_id, "cancelled", reason[:500] or "cancelled", self._clock())
            self._emit(conn, contract_id, actor or f"client:{client_id}", "cancelled", None, ip,
                       {"reason": reason[:500]})
        return self.contract(contract_id, client_id)

    def resend(self, contract_id: str, client_id: str, party_id: str | None, ip: str | None,
               actor: str | None = None) -> dict[str, str]:
        """New invitation links (mailed again) for one party or, as a reminder, every party whose
        turn it is; the old links stop working. ``actor`` as for ``cancel``."""
        contract = self.contract(contract_id, client_id)
        if not contract.open:
            raise ContractClosed(f"the envelope is {contract.status}")
        conn = self._db.connect()
        now = self._clock()
        with immediate(conn):
            targets = [p for p in self._store.parties(conn, contract_id)
                       if p.status in ("invited", "validated") and (party_id is None or p.id == party_id)]
            if party_id is not None and not targets:
                raise NotYourTurn(f"party {party_id} is not invited (not its turn, or done)")
            links = {p.id: (p, self._invite(conn, contract_id, p.id, now)) for p in targets}
            self._emit(conn, contract_id, actor or f"client:{client_id}", "reminded" if party_id is None else "resent",
                       party_id, ip, {"parties": sorted(links)})
        self._send_invitations(contract, links)
        return {pid: link for pid, (_, link) in links.items()}

    def reassign(self, contract_id: str, client_id: str, party_id: str, name: str, email: str, method: Method,
                 access_code: str | None, ip: str | None) -> Party:
        """Hand a party's part to another person, who must be validated in turn."""
        contract = self.contract(contract_id, client_id)
        if not contract.open:
            raise ContractClosed(f"the envelope is {contract.status}")
        if method == "access_code" and not access_code:
            raise InvalidRequest("method access_code needs the access_code the business system hands over")
        self._check_method(client_id, "", method, email)
        conn = self._db.connect()
        now = self._clock()
        with immediate(conn):
            old = self._store.party(conn, contract_id, party_id)
            if old is None or old.status not in ("waiting", "invited", "validated"):
                raise NotYourTurn(f"party {party_id} cannot be reassigned now ({old.status if old else 'unknown'})")
            new_id = f"p{len(self._store.parties(conn, contract_id)) + 1}"
            delegate = Party(contract_id, new_id, name.strip(), email, old.role, old.order, method, "waiting",
                             None, None, None, None, party_id)
            self._store.add_party(conn, delegate, self._mac(access_code) if access_code else None)
            self._store.move_fields(conn, contract_id, party_id, new_id)
            self._store.set_status(conn, contract_id, party_id, "replaced", now, note=f"reassigned to {new_id}")
            conn.execute("UPDATE contract_parties SET invite_hash = NULL WHERE contract_id = ? AND id = ?",
                         (contract_id, party_id))
            self._emit(conn, contract_id, f"client:{client_id}", "reassigned", party_id, ip, {"to": new_id})
            links = self._advance(conn, contract_id, now)
        self._send_invitations(contract, links)
        party = self._store.party(self._db.connect(), contract_id, new_id)
        assert party is not None
        return party

    # -- completion, expiry, recovery -------------------------------------------------------------------

    def complete(self, contract_id: str) -> None:
        """Every party has signed: the organisation's last signature (if so configured), the final
        timestamp (B-LTA), and the signed completion certificate; committed only if nothing changed."""
        conn = self._db.connect()
        contract = self._store.contract(conn, contract_id)
        if contract is None or not contract.open or self._remaining(conn, contract_id):
            return
        revision, pdf, _ = self._store.document(conn, contract_id)
        if contract.org_signature == "last":
            pdf = self._signing.approve(pdf)
        final = self._signing.finish(pdf)
        now = self._clock()
        trail = self._trail(conn, contract, hashlib.sha256(final).hexdigest(), now)
        certificate = self._signing.seal(completion_pdf(trail))
        with immediate(conn):
            fresh = self._store.contract(conn, contract_id)
            if fresh is None or not fresh.open or fresh.revision != revision:
                return  # someone else completed (or changed) it meanwhile
            digest = self._store.add_document(conn, contract_id, revision + 1, "final", final, now)
            self._store.add_document(conn, contract_id, revision + 2, "completion", certificate, now)
            conn.execute("UPDATE contracts SET status = 'completed', ended_at = ?, end_reason = 'completed'"
                         " WHERE id = ?", (now.isoformat(timespec="microseconds"), contract_id))
            self._emit(conn, contract_id, "box", "completed", None, None, {"sha256": digest})
        for party in self._store.parties(conn, contract_id):  # every signer and every copy-only party
            if party.status in ("signed", "copy"):
                try:
                    self._invitations.deliver(contract.client_id, party, contract.title, final)
                except Exception as exc:  # the envelope is complete; a copy not mailed is logged, the API has it
                    log.warning("contract %s: signed copy for %s not mailed: %s", contract_id, party.id, exc)

    def remind_due(self, now: datetime | None = None) -> int:
        """Mail a new link to every invited party that has not acted for its envelope's
        ``reminder_days`` (the older link stops working: only the newest mail counts)."""
        now = now or self._clock()
        conn = self._db.connect()
        sent = 0
        for party in self._store.due_reminders(conn, now):
            with immediate(conn):
                self._store.reminded(conn, party.contract_id, party.id, now)
                link = self._invite(conn, party.contract_id, party.id, now)
                self._emit(conn, party.contract_id, "box", "reminded", party.id, None, {"parties": [party.id]},
                           hook_only={"link": link})
            self._send_invitations(self._contract(conn, party.contract_id), {party.id: (party, link)})
            sent += 1
        return sent

    def resume(self) -> int:
        """Complete the envelopes a crash left with every party signed; expire overdue ones; send
        the reminders that are due."""
        self.expire_due()
        self.remind_due()
        conn = self._db.connect()
        done = 0
        for contract in self._store.listing(conn, "in_progress", None, 1000):
            if not self._remaining(conn, contract.id):
                self.complete(contract.id)
                done += 1
        return done

    def expire_due(self) -> int:
        conn = self._db.connect()
        due = self._store.overdue(conn, self._clock())
        for contract_id in due:
            self._expire_if_due(contract_id)
        return len(due)

    def _expire_if_due(self, contract_id: str) -> None:
        conn = self._db.connect()
        now = self._clock()
        contract = self._store.contract(conn, contract_id)
        if contract is None or not contract.open or contract.expires_at > now:
            return
        with immediate(conn):
            fresh = self._store.contract(conn, contract_id)
            if fresh is None or not fresh.open:
                return
            self._store.end(conn, contract_id, "expired", "expired", now)
            self._emit(conn, contract_id, "box", "expired", None, None, {"expires_at": contract.expires_at.isoformat()})

    # -- helpers -------------------------------------------------------------------------------------

    def _active(self, contract_id: str, party_id: str, states: tuple[str, ...]) -> tuple[Contract, Party]:
        """The open envelope and its party, in one of ``states``; else the error that says why not."""
        contract = self.contract(contract_id, None)
        if not contract.open:
            raise ContractClosed(f"the envelope is {contract.status}: {contract.end_reason or contract.status}")
        party = self._store.party(self._db.connect(), contract_id, party_id)
        if party is None:
            raise UnknownContract(f"envelope {contract_id} has no party {party_id!r}")
        if party.status not in states:
            if party.status == "invited" and "validated" in states:
                raise PartyUnverified("validate your identity first")
            if party.status == "waiting":
                raise NotYourTurn("it is not this party's turn yet: earlier parties sign first")
            raise NotYourTurn(f"party {party_id} is {party.status}")
        return contract, party

    def _remaining(self, conn: sqlite3.Connection, contract_id: str) -> list[Party]:
        return [p for p in self._store.parties(conn, contract_id)
                if p.signs and p.status in ("waiting", "invited", "validated")]

    def _advance(self, conn: sqlite3.Connection, contract_id: str, now: datetime) -> dict[str, tuple[Party, str]]:
        """Invite the lowest-numbered group still to sign (equal order numbers sign in parallel)."""
        remaining = self._remaining(conn, contract_id)
        if not remaining:
            return {}
        turn = min(p.order for p in remaining)
        links = {}
        for party in remaining:
            if party.order == turn and party.status == "waiting":
                link = self._invite(conn, contract_id, party.id, now)
                links[party.id] = (party, link)
                self._emit(conn, contract_id, "box", "invited", party.id, None, {"order": party.order},
                           hook_only={"link": link})
        return links

    def _invite(self, conn: sqlite3.Connection, contract_id: str, party_id: str, now: datetime) -> str:
        token = secrets.token_urlsafe(32)
        contract = self._store.contract(conn, contract_id)
        assert contract is not None
        self._store.invite(conn, contract_id, party_id, token, contract.expires_at, now)
        base = self._settings.public_base_url
        return base.rstrip("/") + SIGN_PATH.format(token=token) if base else token

    def _send_invitations(self, contract: Contract, links: dict[str, tuple[Party, str]]) -> None:
        """After the commit: a failed mail leaves the invitation valid (the API returned its link,
        and ``resend`` mails a new one)."""
        for party, link in links.values():
            try:
                self._invitations.invite(contract.client_id, party, contract.title, link)
            except Exception as exc:  # the relay's or the outbox's trouble must not undo the step
                log.warning("contract %s: invitation of %s not mailed: %s", contract.id, party.id, exc)

    def _emit(self, conn: sqlite3.Connection, contract_id: str, actor: str, action: str, party_id: str | None,
              ip: str | None, detail: dict[str, Any], kind: str | None = None,
              hook_only: dict[str, Any] | None = None) -> None:
        """The trail's line, the audit entry and the webhook of one state change, in the caller's
        transaction; ``hook_only`` goes to the business system's webhook alone (an invitation link:
        a credential, kept out of the trail, the audit log and the completion certificate)."""
        now = self._clock()
        self._store.add_event(conn, contract_id, now, actor, action, party_id, ip, detail)
        contract = self._store.contract(conn, contract_id)
        assert contract is not None
        details = {"contract": contract_id, "party": party_id, **detail, **({"kind": kind} if kind else {})}
        if party_id is not None:
            party = self._store.party(conn, contract_id, party_id)
            if party is not None:
                details["address"] = address_hash(party.email)
        audit.append(conn, [audit.AuditEntry(actor, f"contract.{action}", contract.client_id, details)])
        hook = self._store.webhook(conn, contract_id)
        if hook is not None:
            enqueue_webhook(conn, hook[0], hook[1], f"contract.{action}",
                            {"contract": contract_id, "status": contract.status, "party": party_id, **detail,
                             **(hook_only or {})})

    def _trail(self, conn: sqlite3.Connection, contract: Contract, final_sha256: str, now: datetime) -> CompletionTrail:
        parties = tuple(
            TrailParty(p.name, p.email, p.role, p.order, p.status, p.method if p.validated_at else None,
                       p.validated_at, p.signed_at, p.note)
            for p in self._store.parties(conn, contract.id))
        events = tuple(
            TrailEvent(e.at, e.actor, e.action, e.ip, ", ".join(f"{k}={v}" for k, v in sorted(e.detail.items())))
            for e in self._store.events(conn, contract.id))
        return CompletionTrail(contract.id, contract.title, self._settings.organisation, contract.created_at, now,
                               contract.original_sha256, final_sha256, parties, events)

    def _contract(self, conn: sqlite3.Connection, contract_id: str) -> Contract:
        found = self._store.contract(conn, contract_id)
        assert found is not None
        return found

    def _mac(self, code: str) -> bytes:
        return hmac.new(self._key, code.strip().encode(), hashlib.sha256).digest()
