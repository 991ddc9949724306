"""Each party of a contract signs the PDF with a signature of its own, made on the token.

Per signature the box generates an EC P-256 key on the token ("party-<unix time>-<random>",
sensitive, never extractable), has its signer CA certify it for the party's validated identity
(party_ca), makes one PAdES B-T approval signature into the party's empty field with the party's
signature image in the visible stamp, and destroys the key, whatever happened. A key thus signs
exactly one document and no party key ever exists outside the token or outlives its signature by
more than a crash; `PartySigner.cleanup` destroys what a crash left behind.

`finish` turns the document into one long-term-valid PDF: the DSS gets the revocation data of
every signature (the signer CA's own CRL, the box CA's OCSP/CRLs, the TSAs') and a document
timestamp covers it all (B-LTA). It validates every signature from the PDF's own data before
releasing it. Every PDF released, by `sign` and `finish` alike, passes pdf_integrity's check.

Fields come first: a certification signature (DocMDP 2) allows signing existing fields and filling
form fields but not adding either, so `add_signature_fields` (the parties' signature fields, their
form fields, and the lock on each signature field naming the form fields its party fills) is
meant for the document before the organisation certifies it. A party's values are filled in the
revision of its signature, which thereby covers and, by the lock, freezes them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from asn1crypto import x509
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import (
    FieldMDPAction,
    FieldMDPSpec,
    SigFieldSpec,
    append_signature_field,
    enumerate_sig_fields,
)
from pyhanko.sign.signers import PdfTimeStamper
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko.sign.validation.dss import collect_validation_info
from pyhanko_certvalidator.errors import PathError, RevokedError, ValidationError
from pyhanko_certvalidator.path import ValidationPath

from hsm import KeyAlgorithm, KeyNotFound, Token

from ..errors import InvalidRequest
from .clock import ClockWatch
from .levels import Level
from .party_ca import PartyIdentity, SignerCa, validation_note
from .pdf_fields import Stamp
from .pdf_form_fields import FormField, add_form_fields, fill_form_fields
from .pdf_integrity import check_earlier_signatures
from .pdf_signing import PdfSignOptions, build_pdf_signer, check_options, pick_field
from .pdf_verify import read_pdf, signatures_offline
from .revocation import CertificateRevoked, RevocationService, RevocationUnavailable
from .stamp_logo import decode_logo
from .stamp_look import StampLook
from .token_signer import TokenSigner

__all__ = ["PARTY_KEY_PREFIX", "PartyIdentity", "PartyMark", "PartySigner", "add_signature_fields"]

log = logging.getLogger(__name__)

PARTY_KEY_PREFIX = "party-"
_PARTY_LABEL = re.compile(re.escape(PARTY_KEY_PREFIX) + r"(\d+)-[0-9a-f]+")
# A party key older than this is a crash's leftover: a signature takes seconds. Younger ones may
# belong to another worker process signing right now.
LEFTOVER_AFTER = timedelta(minutes=10)
_DIGEST = "sha256"


@dataclass(frozen=True)
class PartyMark:
    field_name: str  # an existing empty signature field of the document
    image_png: bytes | None = None  # the party's drawn or typed signature, shown in the visible stamp


def _now() -> datetime:
    return datetime.now(UTC)


def add_signature_fields(
    pdf: bytes, fields: Sequence[tuple[str, int, tuple[float, float, float, float]]], max_pdf_bytes: int,
    locks: Mapping[str, Sequence[str]] | None = None, form_fields: Sequence[FormField] = (),
) -> bytes:
    """``pdf`` with empty visible signature fields (name, page 1-based, box x1,y1,x2,y2 in points)
    and ``form_fields`` added in one incremental update; before certification, since DocMDP
    forbids it after. ``locks``: signature field (new or existing) -> the form fields its
    signature will lock (a /Lock dictionary, action Include), so a validator sees any later change."""
    locks = locks or {}
    reader = read_pdf(pdf, max_pdf_bytes)
    taken = {name for name, _, _ in enumerate_sig_fields(reader)}
    pages = int(reader.root["/Pages"]["/Count"])
    writer = IncrementalPdfFileWriter.from_reader(reader)
    for name, page, box in fields:
        check_options(PdfSignOptions(field_name=name, stamp=Stamp(page, box)))
        if name in taken:
            raise InvalidRequest(f"the PDF already has a signature field '{name}'")
        if page > pages:
            raise InvalidRequest(f"page {page} is out of range; the PDF has {pages} page(s)")
        taken.add(name)
        lock = FieldMDPSpec(FieldMDPAction.INCLUDE, list(locks[name])) if locks.get(name) else None
        # pyHanko annotates box as ints, but PDF rectangles are reals and it writes them as FloatObjects
        append_signature_field(writer, SigFieldSpec(name, on_page=page - 1, box=box,  # type: ignore[arg-type]
                                                    field_mdp_spec=lock))
    placed = {name for name, _, _ in fields}
    for name, ref in ((n, r) for n, _, r in enumerate_sig_fields(writer) if n not in placed and locks.get(n)):
        field = ref.get_object()
        if "/Lock" in field:
            raise InvalidRequest(f"the PDF's signature field '{name}' has a field lock of its own: the box cannot"
                                 " lock the party's form fields with it")
        field[pdf_name("/Lock")] = FieldMDPSpec(FieldMDPAction.INCLUDE, list(locks[name])).as_sig_field_lock()
        writer.update_container(field)
    add_form_fields(writer, form_fields)
    output = io.BytesIO()
    writer.write(output)  # type: ignore[no-untyped-call]  # pyHanko leaves it unannotated
    check_earlier_signatures(pdf, output)
    return output.getvalue()


class PartySigner:
    """Party signatures and the finishing B-LTA step; built once by the box, safe across threads."""

    def __init__(
        self,
        token: Token,
        signer_ca_label: str,
        signer_ca_chain: list[x509.Certificate],
        timestamper: TimeStamper,
        revocation: RevocationService,
        crl_url: str,
        max_pdf_bytes: int,
        look: StampLook | None = None,
        clock: ClockWatch | None = None,
        lifetime: timedelta = timedelta(hours=1),
        crl_lifetime: timedelta = timedelta(days=3),
        now: Callable[[], datetime] = _now,
    ) -> None:
        """``crl_url``: where the box publishes the signer CA's CRL (`crl_der`), named in every party
        certificate; ``look``: the box's stamp look, whose logo a party's signature image replaces."""
        self._token = token
        self._ca = SignerCa(token, signer_ca_label, signer_ca_chain, crl_url, clock, lifetime, crl_lifetime)
        self._timestamper = timestamper
        self._revocation = revocation
        self._max_pdf_bytes = max_pdf_bytes
        self._look = look or StampLook.default()
        self._clock = clock
        self._now = now

    def crl_der(self) -> bytes:
        """The signer CA's current CRL, for the face that serves ``crl_url``."""
        der: bytes = self._ca.crl(self._now()).dump()
        return der

    def sign(self, pdf: bytes, identity: PartyIdentity, mark: PartyMark,
             values: Mapping[str, str | bool] | None = None) -> bytes:
        """``pdf`` with the party's approval signature (PAdES B-T) in ``mark.field_name``, and
        ``values`` written into their form fields in the same revision: the signature covers them
        (and its field's lock, set when the fields were added, forbids changing them later)."""
        options = PdfSignOptions(level=Level.B_T, reason=validation_note(identity), field_name=mark.field_name)
        check_options(options)
        reader = read_pdf(pdf, self._max_pdf_bytes)
        field = pick_field(reader, options)
        if field.new:
            raise InvalidRequest(f"the PDF has no empty signature field '{mark.field_name}'")
        writer = IncrementalPdfFileWriter.from_reader(reader)
        fill_form_fields(writer, values or {})  # before the key exists: a value refused costs nothing
        look = self._look if mark.image_png is None else replace(self._look, logo=decode_logo(mark.image_png))
        now = self._now()
        label = f"{PARTY_KEY_PREFIX}{int(now.timestamp())}-{secrets.token_hex(8)}"
        key = self._token.generate_key(label, KeyAlgorithm.EC_P256)
        try:
            certificate = self._ca.issue(key.public_key_info, identity, now)
            signer = TokenSigner(self._token, label, [certificate, *self._ca.chain], clock=self._clock)
            pdf_signer = build_pdf_signer(options, field, signer, timestamper=self._timestamper, look=look)
            output = asyncio.run(pdf_signer.async_sign_pdf(writer))
        finally:
            self._token.destroy_key(label)
        check_earlier_signatures(pdf, output)
        signed: bytes = output.getvalue()
        return signed

    def finish(self, pdf: bytes) -> bytes:
        """``pdf`` with the DSS for all its signatures and a document timestamp: B-LTA."""
        reader = read_pdf(pdf, self._max_pdf_bytes)
        if not reader.embedded_regular_signatures:
            raise InvalidRequest("the PDF has no signature to finish")
        output: io.BytesIO = asyncio.run(self._finish(reader))
        check_earlier_signatures(pdf, output)
        finished = output.getvalue()
        asyncio.run(self._check_offline(finished))
        return finished

    async def _finish(self, reader: PdfFileReader) -> io.BytesIO:
        context = self._revocation.validation_context(other_certs=self._ca.chain, crls=[self._ca.crl(self._now())])
        paths: list[ValidationPath] = []
        try:
            for sig in reader.embedded_regular_signatures:
                paths.extend(await collect_validation_info(sig, context))
        except RevokedError as exc:
            raise CertificateRevoked(f"a certificate of a signature in the PDF is revoked: {exc}") from exc
        except (PathError, ValidationError) as exc:
            raise RevocationUnavailable(f"cannot establish revocation status for the PDF's signatures: {exc}") from exc
        writer = IncrementalPdfFileWriter.from_reader(reader)
        DocumentSecurityStore.supply_dss_in_writer(writer, None, validation_context=context, paths=paths)
        with_dss = io.BytesIO()
        writer.write(with_dss)  # type: ignore[no-untyped-call]  # pyHanko leaves it unannotated
        stamper = PdfTimeStamper(self._timestamper)
        try:
            stamped: io.BytesIO = await stamper.async_timestamp_pdf(
                IncrementalPdfFileWriter(with_dss), _DIGEST, validation_context=context
            )
        except (PathError, ValidationError) as exc:
            raise RevocationUnavailable(f"cannot establish revocation status of the TSA: {exc}") from exc
        return stamped

    async def _check_offline(self, finished: bytes) -> None:
        """Release only if every signature is B-LTA and every document timestamp holds, judged
        from the PDF's own data (no network)."""
        reports = await signatures_offline(read_pdf(finished, len(finished)), self._revocation)
        for report in reports:
            sound = report.bottom_line if report.kind == "document_timestamp" else report.level is Level.B_LTA
            if not sound:
                reached = report.level.value if report.level is not None else "no PAdES level"
                raise RevocationUnavailable(
                    f"{report.kind} '{report.field}' would not validate as B-LTA from the PDF's own data"
                    f" ({reached}, {report.trust_problem or report.error or 'untrusted'}); not released"
                )

    def cleanup(self) -> int:
        """Destroy party keys a crash left on the token (older than LEFTOVER_AFTER); how many."""
        cutoff = (self._now() - LEFTOVER_AFTER).timestamp()
        destroyed = 0
        on_token = self._token.keys()
        for key in on_token:
            match = _PARTY_LABEL.fullmatch(key.label)
            if not key.label.startswith(PARTY_KEY_PREFIX) or (match is not None and int(match.group(1)) > cutoff):
                continue
            try:
                self._token.destroy_key(key.label)
            except KeyNotFound:  # another worker process cleaned it up first
                continue
            destroyed += 1
        if destroyed:
            log.warning("destroyed %d party key(s) left on the token by an interrupted signature", destroyed)
        return destroyed
