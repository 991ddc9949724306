"""Contract signing (issue 12): envelopes with several parties, each validated and signing in
order, driven to one long-term-valid PDF that shows every party's signature.

model: the words (statuses, roles, methods); store: the tables; service: process control and
identity validation; trail/completion: the completion certificate; preview: pages as images for
the signing page. The service, the certificate and the previews load pyHanko, so they are
imported when first named (PEP 562), not with the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .model import (
    CONTRACT_STATUSES,
    FORM_FIELD_KINDS,
    METHODS,
    PARTY_STATUSES,
    ROLES,
    Contract,
    ContractStatus,
    Field,
    FieldKind,
    Method,
    OrgSignature,
    Party,
    PartyStatus,
    Role,
)
from .trail import CompletionTrail, TrailEvent, TrailParty

if TYPE_CHECKING:
    from .completion import completion_pdf
    from .preview import PreviewUnavailable, page_count, page_sizes, render_page
    from .service import (
        MAX_FORM_FIELDS,
        MAX_PARTIES,
        SIGN_PATH,
        ContractClosed,
        ContractsService,
        Created,
        Invitations,
        NotYourTurn,
        PartyRequest,
        PartySigning,
        PartyUnverified,
        UnknownContract,
        VerificationFailed,
    )

__all__ = [
    "CONTRACT_STATUSES", "FORM_FIELD_KINDS", "MAX_FORM_FIELDS", "MAX_PARTIES", "METHODS", "PARTY_STATUSES", "ROLES", "SIGN_PATH", "CompletionTrail", "Contract",
    "ContractClosed", "ContractStatus", "ContractsService", "Created", "Field", "FieldKind", "Invitations",
    "Method", "NotYourTurn", "OrgSignature", "Party", "PartyRequest", "PartySigning", "PartyStatus", "PartyUnverified",
    "PreviewUnavailable", "Role", "TrailEvent", "TrailParty", "UnknownContract", "VerificationFailed", "completion_pdf",
    "page_count", "page_sizes", "render_page",
]

_HEAVY = {
    "completion_pdf": "completion", "PreviewUnavailable": "preview", "page_count": "preview", "page_sizes": "preview",
    "render_page": "preview",
    **{name: "service" for name in (
        "MAX_FORM_FIELDS", "MAX_PARTIES", "SIGN_PATH", "ContractClosed", "ContractsService", "Created", "Invitations", "NotYourTurn",
        "PartyRequest", "PartySigning", "PartyUnverified", "UnknownContract", "VerificationFailed")},
}

__getattr__ = lazy_exports(__name__, _HEAVY)
