"""What an envelope is made of: its parties, their fields, their states — the words the API, the
signing page, the console and the webhooks share.

A contract moves one way: ``in_progress`` → ``completed``, or ends early as ``declined``,
``cancelled`` or ``expired``. A party waits for its turn (``waiting``), is ``invited`` when every
party with a lower order number has signed (equal numbers sign in parallel), proves who it is
(``validated``), and ``signed``; or ``declined``. A reassigned party is ``replaced`` by its
delegate, who must be validated in turn. Copy-only parties never sign: they get the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "CONTRACT_STATUSES",
    "FORM_FIELD_KINDS",
    "METHODS",
    "PARTY_STATUSES",
    "ROLES",
    "Contract",
    "ContractStatus",
    "Field",
    "FieldKind",
    "Method",
    "OrgSignature",
    "Party",
    "PartyStatus",
    "Role",
]

ContractStatus = Literal["in_progress", "completed", "declined", "cancelled", "expired"]
CONTRACT_STATUSES: tuple[ContractStatus, ...] = ("in_progress", "completed", "declined", "cancelled", "expired")
PartyStatus = Literal["waiting", "invited", "validated", "signed", "declined", "replaced", "copy"]
PARTY_STATUSES: tuple[PartyStatus, ...] = ("waiting", "invited", "validated", "signed", "declined", "replaced", "copy")
Role = Literal["signer", "approver", "copy"]
ROLES: tuple[Role, ...] = ("signer", "approver", "copy")
# How a party proves who it is: a code mailed to it (encrypted to its directory certificate when it
# has one), an access code the business system hands over out of band, or the code of an
# authenticator app the business system enrolled the person for (totp.py). A new method (SMS, an
# eID) is a new entry here and a branch in the service's confirm_verification.
Method = Literal["email", "access_code", "totp"]
METHODS: tuple[Method, ...] = ("email", "access_code", "totp")
OrgSignature = Literal["none", "first", "last"]
# A party signs its signature field and fills its form fields: text it types, initials, a checkbox
# it ticks, and the date, which the box fills with the day the party signs.
FieldKind = Literal["signature", "text", "date", "checkbox", "initials"]
FORM_FIELD_KINDS: tuple[FieldKind, ...] = ("text", "date", "checkbox", "initials")


@dataclass(frozen=True)
class Field:
    """A party's field: its signature field, or a form field it fills when it signs (``kind``),
    either a field the PDF has (``page`` None) or one the box adds at ``page`` (1-based) within
    ``box`` (x1, y1, x2, y2 in points). ``required``: a text or initials field must be filled, a
    checkbox ticked; ``value`` is what the party filled in (a date: the day it signed), kept once
    it signed ("on"/"off" for a checkbox)."""

    party_id: str
    name: str
    page: int | None = None
    box: tuple[float, float, float, float] | None = None
    kind: FieldKind = "signature"
    required: bool = True
    label: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Party:
    contract_id: str
    id: str  # "p1", "p2", …; a delegate gets the next free one
    name: str
    email: str
    role: Role
    order: int
    method: Method
    status: PartyStatus
    invited_at: datetime | None
    validated_at: datetime | None
    signed_at: datetime | None
    note: str | None  # a decline's reason, or whom a replaced party delegated to
    replaces: str | None  # the party this delegate stands in for

    @property
    def signs(self) -> bool:
        return self.role != "copy"


@dataclass(frozen=True)
class Contract:
    id: str
    client_id: str
    title: str
    status: ContractStatus
    org_signature: OrgSignature
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    original_sha256: str
    revision: int
    webhook_url: str | None
    reminder_days: int | None = None

    @property
    def open(self) -> bool:
        return self.status == "in_progress"
