"""Whole PDF in, PAdES-signed PDF out: the box as its own e-Signing Agent.

pyHanko does all PDF and CMS work; this module chooses the options per level, keeps pyHanko's
errors from leaking as 500s, and makes sure a PDF leaves the box only with the level it was
asked for (B-LT/B-LTA output is re-validated from its embedded data before release) and only
after the signature is in the ledger. Which field the signature goes into is pdf_fields' rule;
that no earlier signature is broken by it is pdf_integrity's check, run on every PDF released.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import MDPPerm, SigFieldSpec, SigSeedSubFilter
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes, Signer
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import PathError, RevokedError, ValidationError

from ..errors import InvalidRequest
from ..store.ledger import SignatureLedger
from .accounting import Accounting, Signed
from .levels import Level, Profile
from .pdf_fields import FieldChoice, Stamp, choose_field
from .pdf_integrity import check_earlier_signatures
from .pdf_verify import PDF_DAMAGE, PdfInvalid, newest_signature_offline, read_pdf
from .revocation import CertificateRevoked, RevocationService, RevocationUnavailable
from .stamp_look import StampLook, stamp_style
from .timestamps import FallbackTimeStamper, TimestampUnavailable
from .token_signer import TokenSigner

_FIELD_NAME = re.compile(r"[A-Za-z0-9_\- ]{1,64}")  # ASCII: it is echoed in a header
_MAX_TEXT = 200
# What PDF's standard fonts (WinAnsi) and pyHanko's PDFDocEncoding text strings agree on.
_STAMP_TEXT = re.compile(r"[\x20-\x7e\xa1-\xff\n]*")
_MAX_COORDINATE = 14400.0  # PDF's largest page side, in points


@dataclass(frozen=True)
class PdfSignOptions:
    level: Level = Level.B_T
    reason: str | None = None
    location: str | None = None
    field_name: str | None = None  # None: the first empty field, else the first free "SignatureN"
    certify: bool = False
    docmdp: int | None = None  # 1 no changes, 2 form filling, 3 also annotations; with certify
    stamp: Stamp | None = None  # a new visible field here
    stamp_text: str | None = None  # None: the box's default ([signing] stamp_text)


@dataclass(frozen=True)
class SignedPdf:
    pdf: bytes
    field_name: str
    level: Level


def check_options(options: PdfSignOptions) -> None:
    """Refuse options that cannot be honoured, before the document is even parsed."""
    if options.field_name is not None and not _FIELD_NAME.fullmatch(options.field_name):
        raise InvalidRequest("a field name is 1-64 letters, digits, spaces, '-' or '_'")
    for name, text in (("reason", options.reason), ("location", options.location)):
        if text is not None and (len(text) > _MAX_TEXT or not text.isprintable()):
            raise InvalidRequest(f"{name} must be printable text of at most {_MAX_TEXT} characters")
    if options.docmdp is not None:
        if not options.certify:
            raise InvalidRequest("docmdp applies to certification signatures; add certify=true")
        if options.docmdp not in (1, 2, 3):
            raise InvalidRequest("docmdp must be 1 (no changes), 2 (form filling) or 3 (annotations)")
    if options.stamp is not None:
        _check_stamp(options.stamp)
    check_stamp_text(options.stamp_text)


def _check_stamp(spec: Stamp) -> None:
    x1, y1, x2, y2 = spec.box
    if not (0 <= x1 < x2 <= _MAX_COORDINATE and 0 <= y1 < y2 <= _MAX_COORDINATE):
        raise InvalidRequest("stamp box must be x1,y1,x2,y2 with 0 <= x1 < x2 and 0 <= y1 < y2 (points)")
    if spec.page < 1:
        raise InvalidRequest("stamp page numbers start at 1")


def check_stamp_text(text: str | None) -> None:
    """The one rule for a stamp's text: a request's stamp_text and the box's default alike."""
    if text is not None and (len(text) > _MAX_TEXT or not _STAMP_TEXT.fullmatch(text)):
        raise InvalidRequest(
            f"stamp text must be at most {_MAX_TEXT} printable Latin-1 characters (lines split by \\n):"
            " the stamp uses PDF's standard Courier font, which shows nothing else correctly"
        )


def pick_field(reader: PdfFileReader, options: PdfSignOptions) -> FieldChoice:
    """The field the signature goes into (pdf_fields' rules); refuses stamp text nobody would see."""
    try:
        field = choose_field(reader, options.field_name, options.stamp)
    except InvalidRequest:
        raise
    except PDF_DAMAGE as exc:
        raise PdfInvalid.damaged("not a readable PDF", exc) from exc
    if options.stamp_text is not None and field.size is None:
        raise InvalidRequest(
            f"stamp_text needs a visible signature, and field '{field.name}' has none: add stamp_box,"
            " or name an empty visible field"
        )
    return field


def build_pdf_signer(
    options: PdfSignOptions,
    field: FieldChoice,
    signer: Signer,
    timestamper: TimeStamper | None = None,
    validation_context: ValidationContext | None = None,
    look: StampLook | None = None,
) -> PdfSigner:
    """A PAdES PdfSigner for ``options``; pyHanko embeds LTV data only if given a context.

    The box passes its timestamper, (for B-LT/B-LTA) its caching validation context and its
    stamp look; the local agent passes neither context nor timestamper, because the box adds
    the timestamp to the CMS and the agent writes the DSS itself.
    """
    field_name = field.name
    ltv = validation_context is not None
    meta = PdfSignatureMetadata(
        field_name=field_name,
        reason=options.reason,
        location=options.location,
        subfilter=SigSeedSubFilter.PADES,
        certify=options.certify,
        docmdp_permissions=MDPPerm(options.docmdp or MDPPerm.FILL_FORMS.value),
        embed_validation_info=ltv,
        use_pades_lta=ltv and options.level is Level.B_LTA,
        validation_context=validation_context,
    )
    spec = style = None
    if field.stamp is not None:
        # pyHanko annotates box as ints, but PDF rectangles are reals and it writes them as FloatObjects
        box = field.stamp.box
        spec = SigFieldSpec(sig_field_name=field_name, on_page=field.stamp.page - 1, box=box)  # type: ignore[arg-type]
    if field.size is not None:  # the box's own look, also in a field the document brought
        style = stamp_style(look or StampLook.default(), options.stamp_text, *field.size)
    return PdfSigner(meta, signer=signer, timestamper=timestamper, stamp_style=style, new_field_spec=spec)


def _pki_fault(exc: BaseException) -> Exception | None:
    """The box-side PKI failure behind a pyHanko error, if that is what it is."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, RevokedError):
            return CertificateRevoked(f"a certificate on the signing path is revoked: {cause}")
        if isinstance(cause, (PathError, ValidationError)):
            return RevocationUnavailable(f"cannot establish revocation status: {cause}")
        cause = cause.__cause__
    return None


@contextmanager
def _translated(before_signing: bool) -> Iterator[None]:
    """Map pyHanko's errors to the box's: PKI faults always, document faults only before signing.

    After the token has signed, a pyHanko error is the box's fault (e.g. a reserved /Contents
    that turned out too small), not the caller's, so it is left to surface as an internal error.
    """
    try:
        yield
    except (*PDF_DAMAGE, PathError, ValidationError) as exc:
        fault = _pki_fault(exc)
        if fault is not None:
            raise fault from exc
        if before_signing and not isinstance(exc, (PathError, ValidationError)):
            raise PdfInvalid.damaged("cannot sign this PDF", exc) from exc
        raise


class PdfSigningService:
    def __init__(
        self,
        signer: TokenSigner,
        timestamper: FallbackTimeStamper | None,
        revocation: RevocationService,
        ledger: SignatureLedger,
        max_pdf_bytes: int,
        look: StampLook | None = None,
    ) -> None:
        self._signer = signer
        self._look = look
        self._timestamper = timestamper
        self._revocation = revocation
        self._accounting = Accounting(ledger, signer, "pdf")
        self._max_pdf_bytes = max_pdf_bytes

    @property
    def max_pdf_bytes(self) -> int:
        return self._max_pdf_bytes

    def sign(self, client_id: str, pdf: bytes, options: PdfSignOptions) -> SignedPdf:
        """Sign ``pdf`` incrementally (earlier signatures stay valid) and record it in the ledger.

        The ledger's document_hash is the digest of the signed byte ranges, i.e. the value the
        CMS messageDigest attribute commits to — the same meaning it has for hash signing, so an
        auditor can match a ledger entry to a signature in any copy of the signed PDF.
        """
        check_options(options)
        if options.level.needs_timestamp and self._timestamper is None:
            raise TimestampUnavailable("no TSA is configured; only B-B is available")
        reader = read_pdf(pdf, self._max_pdf_bytes)
        field = pick_field(reader, options)
        return self._accounting.run(client_id, 1, lambda: self._signed_pdf(pdf, reader, options, field))

    def sign_for_box(self, pdf: bytes, options: PdfSignOptions) -> SignedPdf:
        """Sign ``pdf`` for a process of the box's own (an envelope's organisation signature, its
        completion certificate): the same checks and release rules as ``sign``, but no client is
        charged and nothing goes to the signature ledger — the caller audits the step in the
        transaction that stores the result."""
        check_options(options)
        if options.level.needs_timestamp and self._timestamper is None:
            raise TimestampUnavailable("no TSA is configured; only B-B is available")
        reader = read_pdf(pdf, self._max_pdf_bytes)
        return self._signed_pdf(pdf, reader, options, pick_field(reader, options))[0]

    def _signed_pdf(
        self, pdf: bytes, reader: PdfFileReader, options: PdfSignOptions, field: FieldChoice
    ) -> tuple[SignedPdf, list[Signed]]:
        output, digest, md_algorithm = asyncio.run(self._sign(pdf, reader, options, field))
        signed = Signed(md_algorithm, digest, options.level.value, Profile.PADES.value)
        return SignedPdf(output.getvalue(), field.name, options.level), [signed]

    async def _sign(
        self, pdf: bytes, reader: PdfFileReader, options: PdfSignOptions, field: FieldChoice
    ) -> tuple[io.BytesIO, bytes, str]:
        """Returns the output stream, not its bytes: on the main thread, asyncio.run reprs the
        coroutine's result (Python 3.11's SIGINT handling), which costs ~0.3 s for 20 MB of bytes."""
        level = options.level
        pdf_signer = build_pdf_signer(
            options,
            field,
            self._signer,
            timestamper=self._timestamper if level.needs_timestamp else None,
            # Revocation data comes through the box's shared cache, in hard-fail mode.
            validation_context=self._revocation.validation_context() if level.needs_revocation_data else None,
            look=self._look,
        )
        with _translated(before_signing=True):
            writer = IncrementalPdfFileWriter.from_reader(reader)
            # pyHanko sizes /Contents from a dry run that includes a dummy timestamp token.
            prepared, tbs, output = await pdf_signer.async_digest_doc_for_signing(writer)
        assert isinstance(output, io.BytesIO)  # given no output stream, pyHanko writes to a new BytesIO
        with _translated(before_signing=False):
            post_sign = await tbs.perform_signature(prepared.document_digest, PdfCMSSignedAttributes())
            await post_sign.post_signature_processing(output)
        check_earlier_signatures(pdf, output)
        if options.level.needs_revocation_data:
            await self._check_ltv(output.getvalue(), options.level)
        return output, prepared.document_digest, tbs.md_algorithm

    async def _check_ltv(self, signed: bytes, level: Level) -> None:
        """Release B-LT/B-LTA only if the new signature validates from the PDF's own data.

        pyHanko gathers LTV data for the TSA that answered the dry run; if a fallback TSA
        stamped the real signature, its revocation data would be missing from the DSS.
        """
        newest = await newest_signature_offline(read_pdf(signed, len(signed)), self._revocation)
        order = list(Level)
        if newest.level is None or order.index(newest.level) < order.index(level):
            raise RevocationUnavailable(
                f"the signed PDF would only reach {newest.level.value if newest.level else 'no PAdES level'}"
                f" instead of {level.value}; not released"
            )
