"""The one error table: every failure a caller can meet, once, with its HTTP status and code on each
face of the box (the native API and the CSC API).

The faces only serialise (firmware/api/errors.py, firmware/csc/errors.py); what a failure *means*
to a caller is decided here, so an exception can not be a 503 on one endpoint and a 500 on another.
The codes differ by face only where the CSC specification (§10.2) names its own; refusals (scope,
quota, rate) are the box's own business and show the same code on both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hsm import KeyNotFound, TokenError, TokenUnavailable, UnsupportedDigest

from ..contracts import (
    ContractClosed,
    NotYourTurn,
    PartyUnverified,
    PreviewUnavailable,
    UnknownContract,
    VerificationFailed,
)
from ..directory import AddressInvalid, CertificateRefused, NoCertificate, ProofInvalid
from ..errors import InvalidRequest
from ..mail.outbox import MailUnavailable
from ..mail.service import NoEncryptionCertificate
from ..signing.clock import ClockSkewed
from ..signing.pdf_fields import CertifiedDocument, CertifiedNoChanges
from ..signing.pdf_integrity import EarlierSignatureBroken
from ..signing.pdf_verify import PdfInvalid
from ..signing.revocation import CertificateRevoked, RevocationUnavailable
from ..signing.timestamps import TimestampUnavailable
from ..store.clients import ClientError
from ..store.csc_grants import SadRefused
from ..store.metering import QuotaExhausted, RateLimited, Refusal, ScopeDenied
from ..store.storage import StorageFull

__all__ = ["FAULTS", "INTERNAL", "Face", "Fault"]


class Face(enum.Enum):
    NATIVE = "native"  # /v1/...: {"error", "message"}
    CSC = "csc"  # /csc/...: {"error", "error_description"}


@dataclass(frozen=True)
class Fault:
    """How one kind of failure is shown: status and code natively, and in CSC where it differs."""

    status: int
    code: str
    csc_code: str
    csc_status: int | None = None  # None: the native status

    def on(self, face: Face) -> tuple[int, str]:
        """(HTTP status, error code) on ``face``."""
        if face is Face.CSC:
            return self.csc_status or self.status, self.csc_code
        return self.status, self.code


_UNAVAILABLE = "temporarily_unavailable"  # CSC's word for every 503: nothing was signed, try again later

# Exception type -> Fault, most specific first. Falcon picks the handler of the most specific
# registered type, so a subclass listed here wins over its base (PdfInvalid over InvalidRequest).
FAULTS: dict[type[Exception], Fault] = {
    # the PDF endpoint: a body that is no usable PDF is a 422; a sound PDF whose signatures rule
    # the request out is a 409
    PdfInvalid: Fault(422, "invalid_pdf", "invalid_request", 400),
    CertifiedNoChanges: Fault(409, "certified_no_changes", "invalid_request", 400),
    CertifiedDocument: Fault(409, "certified_document", "invalid_request", 400),
    EarlierSignatureBroken: Fault(409, "earlier_signature_broken", "invalid_request", 400),
    # the certificate directory: a certificate refused names its failed check in the message; "no
    # certificate" and "not proven yet" are one answer
    CertificateRefused: Fault(422, "certificate_refused", "invalid_request", 400),
    NoEncryptionCertificate: Fault(409, "no_encryption_certificate", "invalid_request", 400),
    NoCertificate: Fault(404, "no_certificate", "invalid_request", 400),
    ProofInvalid: Fault(404, "proof_invalid", "invalid_request", 400),
    AddressInvalid: Fault(400, "invalid_address", "invalid_request"),
    # envelopes: unknown (or another client's) is one answer; a step the envelope's state rules out is a 409
    UnknownContract: Fault(404, "unknown_contract", "invalid_request", 400),
    ContractClosed: Fault(409, "contract_closed", "invalid_request", 400),
    NotYourTurn: Fault(409, "not_your_turn", "invalid_request", 400),
    PartyUnverified: Fault(403, "party_unverified", "invalid_request", 400),
    VerificationFailed: Fault(422, "verification_failed", "invalid_request", 400),
    # the caller can fix the request
    InvalidRequest: Fault(400, "invalid_request", "invalid_request"),
    ClientError: Fault(400, "invalid_request", "invalid_request"),
    SadRefused: Fault(400, "invalid_request", "invalid_request"),
    UnsupportedDigest: Fault(400, "invalid_hash", "invalid_request"),
    # refusals: the client may not do this now; nothing was signed or charged
    ScopeDenied: Fault(403, "scope_denied", "scope_denied"),
    QuotaExhausted: Fault(402, "quota_exhausted", "quota_exhausted"),
    RateLimited: Fault(429, "rate_limited", "rate_limited"),
    Refusal: Fault(403, "forbidden", "forbidden"),
    # the credential is unusable: the box cannot help it (CSC calls that a bad request)
    CertificateRevoked: Fault(503, "signing_certificate_revoked", "invalid_request", 400),
    # the box or a peer cannot serve now; nothing was signed
    TimestampUnavailable: Fault(503, "timestamp_unavailable", _UNAVAILABLE),
    ClockSkewed: Fault(503, "clock_skewed", _UNAVAILABLE),
    RevocationUnavailable: Fault(503, "revocation_unavailable", _UNAVAILABLE),
    TokenUnavailable: Fault(503, "token_unavailable", _UNAVAILABLE),
    KeyNotFound: Fault(503, "signing_key_missing", _UNAVAILABLE),
    StorageFull: Fault(503, "storage_full", _UNAVAILABLE),
    MailUnavailable: Fault(503, "mail_unavailable", _UNAVAILABLE),
    PreviewUnavailable: Fault(503, "preview_unavailable", _UNAVAILABLE),
    TokenError: Fault(500, "token_error", "server_error"),
}

# Anything else: the box's fault; the caller learns nothing more (the log has the traceback).
INTERNAL = Fault(500, "internal_error", "server_error")
