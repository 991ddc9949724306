"""What a PDF's signatures prove: integrity, trust, timestamps, LTV level and later changes.

The level of each PAdES signature is assessed from evidence, not from what the document says
about itself: B-T needs a trusted signature timestamp, B-LT needs the signature to validate
from the data embedded in the PDF alone (DSS, no network), B-LTA needs a trusted document
timestamp added after it. Signatures without such data are checked online through the box's
revocation cache. The signing service runs the same assessment on its own output before
releasing a B-LT or B-LTA PDF.
"""

from __future__ import annotations

import asyncio
import enum
import io
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict, TypeVar

from asn1crypto import cms, x509
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import DiffResult
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.validation import (
    DocumentSecurityStore,
    EmbeddedPdfSignature,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
    read_certification_data,
)
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko.sign.validation.generic_cms import extract_tst_data_iter
from pyhanko.sign.validation.status import DocumentTimestampStatus, ModificationInfo, SignatureStatus
from pyhanko_certvalidator import ValidationContext

from ..errors import InvalidRequest
from .levels import Level
from .pdf_structure import structure_fault
from .revocation import RevocationService

# What damaged files make pyHanko raise: PdfError mostly, but structural surprises surface as
# lookup/type/number errors, failed internal assertions (an object stream that is no stream, a
# startxref on some other object), broken Flate data as zlib.error, unknown filters as
# NotImplementedError, and objects nested deeper than the interpreter recurses (hundreds of
# nested arrays, a /Root that is a reference to itself, a page tree thousands of levels deep) as
# RecursionError: pyHanko's parser recurses in Python, so the recursion limit bounds it long before
# a worker thread's stack could overflow.
PDF_DAMAGE = (
    PdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError, AssertionError,
    RecursionError, zlib.error, NotImplementedError,
)
_MAX_DETAIL = 200


class PdfInvalid(InvalidRequest):
    """The body is not a PDF the box can process: unreadable, damaged, encrypted or too large."""

    @classmethod
    def damaged(cls, what: str, exc: BaseException) -> PdfInvalid:
        """``what: <what pyHanko found>`` on one short line: it is logged and sent to the caller."""
        if isinstance(exc, RecursionError):
            detail = "objects nested too deeply or referring to themselves"
        else:
            detail = " ".join(str(exc).split())[:_MAX_DETAIL] or f"unreadable structure ({type(exc).__name__})"
        return cls(f"{what}: {detail}")


def read_pdf(data: bytes, max_bytes: int) -> PdfFileReader:
    """Parse ``data`` strictly (hybrid cross-reference files are refused), refuse encryption and
    a skeleton pyHanko should not walk (pdf_structure).

    Encrypted files are refused before any signer sees them: pyHanko installs a PDF-MAC
    attribute provider on the (shared) signer for encrypted files and leaves it there if signing
    fails, which would break every later signature of the process.
    """
    if len(data) > max_bytes:
        raise PdfInvalid(f"the PDF is over the box's limit of {max_bytes} bytes")
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=True)
        encrypted = reader.encrypted
        fault = None if encrypted else structure_fault(reader.root)
    except PDF_DAMAGE as exc:
        raise PdfInvalid.damaged("not a readable PDF", exc) from exc
    if encrypted:
        raise PdfInvalid("encrypted PDFs are not supported; send the decrypted document")
    if fault is not None:
        raise PdfInvalid(f"not a readable PDF: {fault}")
    return reader


@dataclass(frozen=True)
class TimestampReport:
    present: bool
    time: datetime | None = None
    valid: bool = False
    trusted: bool = False


@dataclass(frozen=True)
class SignatureReport:
    field: str
    kind: str  # "signature" or "document_timestamp"
    signer: str
    signing_time: datetime | None
    intact: bool
    valid: bool
    trusted: bool
    trust_problem: str | None
    timestamp: TimestampReport
    level: Level | None  # PAdES baseline level the evidence supports; None if not PAdES
    ltv: bool  # validated from the data embedded in the PDF alone
    coverage: str
    modification_level: str | None
    changed_form_fields: list[str]
    docmdp_ok: bool | None
    certification: int | None  # DocMDP permission (1-3) of a certification signature
    bottom_line: bool
    error: str | None = None  # why the signature could not be evaluated at all


@dataclass(frozen=True)
class PdfReport:
    signatures: list[SignatureReport] = field(default_factory=list)
    dss: bool = False


_Status = TypeVar("_Status", bound=SignatureStatus)


def _tst_time(tst: cms.SignedData) -> datetime:
    gen_time: datetime = tst["encap_content_info"]["content"].parsed["gen_time"].native
    return gen_time


def _embedded_context(
    reader: PdfFileReader, trust_roots: list[x509.Certificate], moment: datetime | None
) -> ValidationContext | None:
    """A no-network context holding the DSS's certificates and revocation data, or None.

    Validation happens at ``moment`` (the time a timestamp proves) and accepts revocation data
    issued after it: that is what lets a B-LT signature validate years later from its DSS.
    """
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return None
    return dss.as_validation_context(
        {
            "trust_roots": trust_roots,
            "allow_fetching": False,
            "revocation_mode": "hard-fail",
            "moment": moment,
            "retroactive_revinfo": True,
        }
    )


def _timestamp_holds(status: SignatureStatus) -> bool:
    """A signature validated at its timestamp's time counts only if that timestamp is sound."""
    ts = getattr(status, "timestamp_validity", None)
    return ts is None or (ts.intact and ts.valid and ts.trusted)


class _Modifications(TypedDict):
    coverage: str
    modification_level: str | None
    changed_form_fields: list[str]
    docmdp_ok: bool | None


class _Trust(TypedDict):
    signer: str
    intact: bool
    valid: bool
    trusted: bool
    trust_problem: str | None


def _modifications(status: ModificationInfo) -> _Modifications:
    diff = status.diff_result
    level = status.modification_level
    return {
        "coverage": status.coverage.name if status.coverage is not None else "UNCLEAR",
        "modification_level": level.name if level is not None else None,
        "changed_form_fields": sorted(diff.changed_form_fields) if isinstance(diff, DiffResult) else [],
        "docmdp_ok": status.docmdp_ok,
    }


def _trust(status: SignatureStatus) -> _Trust:
    problem = status.trust_problem_indic
    trust_problem = None
    if problem is not None and not status.trusted:
        assert isinstance(problem, enum.Enum)  # pyHanko's subindications (AdESFailure, ...) are enums
        trust_problem = problem.name
    return {
        "signer": status.signing_cert.subject.human_friendly,
        "intact": status.intact,
        "valid": status.valid,
        "trusted": status.trusted,
        "trust_problem": trust_problem,
    }


class _Verifier:
    def __init__(self, reader: PdfFileReader, revocation: RevocationService, online: bool) -> None:
        self._reader = reader
        self._revocation = revocation
        self._online = online
        self._certification = read_certification_data(reader)

    def _fallback_context(self) -> ValidationContext:
        if self._online:
            return self._revocation.validation_context()
        return ValidationContext(trust_roots=self._revocation.trust_roots, allow_fetching=False)

    async def _validate(
        self,
        sig: EmbeddedPdfSignature,
        moment: datetime | None,
        validate: Callable[[EmbeddedPdfSignature, ValidationContext], Awaitable[_Status]],
    ) -> tuple[_Status, bool]:
        """Validate from the DSS alone first; else with the box's cached online context."""
        offline = _embedded_context(self._reader, self._revocation.trust_roots, moment)
        if offline is not None:
            status = await validate(sig, offline)
            if status.trusted and _timestamp_holds(status):
                return status, True
        return await validate(sig, self._fallback_context()), False

    async def timestamp(self, sig: EmbeddedPdfSignature) -> SignatureReport:
        async def validate(s: EmbeddedPdfSignature, context: ValidationContext) -> DocumentTimestampStatus:
            return await async_validate_pdf_timestamp(s, validation_context=context)

        status, ltv = await self._validate(sig, _tst_time(sig.signed_data), validate)
        return SignatureReport(
            field=sig.field_name,
            kind="document_timestamp",
            signing_time=status.timestamp,
            timestamp=TimestampReport(True, status.timestamp, status.intact and status.valid, status.trusted),
            level=None,
            ltv=ltv,
            certification=None,
            bottom_line=status.intact and status.valid and status.trusted,
            **_trust(status),
            **_modifications(status),
        )

    async def signature(self, sig: EmbeddedPdfSignature, later_timestamps: list[SignatureReport]) -> SignatureReport:
        tst = next(extract_tst_data_iter(sig.signer_info, signed=False), None)
        status, ltv = await self._validate(sig, _tst_time(tst) if tst is not None else None, async_validate_pdf_signature)
        ts_status = status.timestamp_validity
        timestamp = TimestampReport(
            present=tst is not None,
            time=ts_status.timestamp if ts_status is not None else None,
            valid=ts_status is not None and ts_status.intact and ts_status.valid,
            trusted=ts_status is not None and ts_status.trusted,
        )
        certification = self._certification
        certified = certification if certification is not None and certification.author_sig == sig.sig_object else None
        return SignatureReport(
            field=sig.field_name,
            kind="signature",
            signing_time=status.signer_reported_dt,
            timestamp=timestamp,
            level=_level(sig, status.intact and status.valid, timestamp, ltv, later_timestamps),
            ltv=ltv and timestamp.trusted,
            certification=certified.permission.value if certified is not None else None,
            bottom_line=status.bottom_line,
            **_trust(status),
            **_modifications(status),
        )


def _level(
    sig: EmbeddedPdfSignature,
    sound: bool,
    timestamp: TimestampReport,
    ltv: bool,
    later_timestamps: list[SignatureReport],
) -> Level | None:
    """The baseline level the evidence supports; None for broken or non-PAdES signatures."""
    if not sound or sig.sig_object.get("/SubFilter") != SigSeedSubFilter.PADES.value:
        return None
    if not (timestamp.valid and timestamp.trusted):
        return Level.B_B
    if not ltv:
        return Level.B_T
    if any(ts.bottom_line for ts in later_timestamps):
        return Level.B_LTA
    return Level.B_LT


def _unreadable(sig: EmbeddedPdfSignature, kind: str, exc: Exception) -> SignatureReport:
    return SignatureReport(
        field=sig.field_name,
        kind=kind,
        signer="",
        signing_time=None,
        intact=False,
        valid=False,
        trusted=False,
        trust_problem=None,
        timestamp=TimestampReport(False),
        level=None,
        ltv=False,
        coverage="UNCLEAR",
        modification_level=None,
        changed_form_fields=[],
        docmdp_ok=None,
        certification=None,
        bottom_line=False,
        error=str(exc) or type(exc).__name__,
    )


async def _newest_first(verifier: _Verifier, reader: PdfFileReader) -> AsyncIterator[SignatureReport]:
    # Newest first, so each signature knows which document timestamps came after it.
    timestamps: list[SignatureReport] = []
    for sig in reversed(reader.embedded_signatures):
        kind = "document_timestamp" if sig.sig_object_type == "/DocTimeStamp" else "signature"
        try:
            if kind == "document_timestamp":
                report = await verifier.timestamp(sig)
                timestamps.append(report)
            else:
                report = await verifier.signature(sig, list(timestamps))
        except (ValueError, PdfError) as exc:  # a damaged signature dictionary or CMS blob
            report = _unreadable(sig, kind, exc)
        yield report


async def async_verify(reader: PdfFileReader, revocation: RevocationService) -> PdfReport:
    reports = [r async for r in _newest_first(_Verifier(reader, revocation, online=True), reader)]
    return PdfReport(signatures=reports[::-1], dss="/DSS" in reader.root)


async def newest_signature_offline(reader: PdfFileReader, revocation: RevocationService) -> SignatureReport:
    """The newest approval/certification signature, judged from the PDF's own data only."""
    async for report in _newest_first(_Verifier(reader, revocation, online=False), reader):
        if report.kind == "signature":
            return report
    raise PdfInvalid("the PDF has no signature")


async def signatures_offline(reader: PdfFileReader, revocation: RevocationService) -> list[SignatureReport]:
    """Every signature and document timestamp, oldest first, judged from the PDF's own data only."""
    reports = [r async for r in _newest_first(_Verifier(reader, revocation, online=False), reader)]
    return reports[::-1]


def verify_pdf(data: bytes, revocation: RevocationService, max_bytes: int) -> PdfReport:
    """Report on every signature and document timestamp in ``data``, oldest first."""
    reader = read_pdf(data, max_bytes)
    try:
        return asyncio.run(async_verify(reader, revocation))
    except PDF_DAMAGE as exc:
        raise PdfInvalid.damaged("the PDF's signatures cannot be read", exc) from exc
