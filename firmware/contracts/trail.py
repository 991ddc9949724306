"""What an envelope's completion certificate shows: its parties and its event trail, as plain values.

The contracts service reads them from its tables; the certificate (completion.py) only lays them
out, so the PDF never depends on how the envelope is stored. Times are UTC (naive ones are taken
as UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["CompletionTrail", "TrailEvent", "TrailParty"]


@dataclass(frozen=True)
class TrailParty:
    name: str
    email: str
    role: str  # "signer", "approver", "copy"
    order: int  # equal numbers sign in parallel
    status: str  # e.g. "signed", "declined", "pending"
    method: str | None  # how the identity was validated ("email-code", "access-code", "totp")
    validated_at: datetime | None
    signed_at: datetime | None
    note: str | None  # e.g. a decline reason or "reassigned to ..."


@dataclass(frozen=True)
class TrailEvent:
    at: datetime
    actor: str
    action: str
    ip: str | None
    detail: str


@dataclass(frozen=True)
class CompletionTrail:
    envelope_id: str
    title: str
    organisation: str
    created_at: datetime
    completed_at: datetime
    original_sha256: str  # hex
    final_sha256: str  # hex
    parties: tuple[TrailParty, ...]
    events: tuple[TrailEvent, ...]
