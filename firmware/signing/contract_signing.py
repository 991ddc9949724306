"""The signing work of an envelope, as firmware/contracts asks for it (its ``PartySigning`` seam).

Two keys sign an envelope's document: each party's own one-time key (party_signatures) and the
box's signing key for the organisation (pdf_signing, without per-client accounting: the envelope
is charged once and every step is audited by the envelope service in the transaction that stores
it). Which fields exist, that each party's signature locks the form fields it fills, and that the
organisation's certification comes after them all, is decided here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol, cast

from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.validation import read_certification_data

from ..errors import InvalidRequest
from .levels import Level
from .party_ca import PartyIdentity
from .party_signatures import PartyMark, PartySigner, add_signature_fields
from .pdf_fields import field_place, widget_place
from .pdf_form_fields import ExistingField, FormField, FormKind, existing_form_fields, form_widget
from .pdf_signing import PdfSigningService, PdfSignOptions
from .pdf_verify import PDF_DAMAGE, PdfInvalid, read_pdf

__all__ = ["ORGANISATION_FIELD", "ContractSigning", "FieldPlacement"]

ORGANISATION_FIELD = "Organisation"
# The methods' names as they appear in certificates and signatures.
_METHOD_WORDS = {"email": "one-time code by e-mail", "access_code": "access code"}


class FieldPlacement(Protocol):
    """What contracts.Field is to this module: whose it is, its kind (signature or a form field's),
    a name, and page + box when the box adds it."""

    @property
    def party_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def page(self) -> int | None: ...

    @property
    def box(self) -> tuple[float, float, float, float] | None: ...


class ContractSigning:
    def __init__(self, parties: PartySigner, organisation: PdfSigningService, organisation_name: str) -> None:
        self._parties = parties
        self._organisation = organisation
        self._name = organisation_name

    def empty_signature_fields(self, pdf: bytes) -> tuple[int, set[str]]:
        """Pages and empty signature fields of a PDF an envelope may start from: readable, not
        certified already (a certification would forbid the parties' fields)."""
        reader = read_pdf(pdf, self._organisation.max_pdf_bytes)
        try:
            if read_certification_data(reader) is not None:
                raise InvalidRequest("the PDF is certified already: start the envelope from the uncertified document")
            pages = int(reader.root["/Pages"]["/Count"])
            empty = {name for name, value, _ in enumerate_sig_fields(reader) if value is None}
        except PDF_DAMAGE as exc:
            raise PdfInvalid.damaged("not a readable PDF", exc) from exc
        if ORGANISATION_FIELD in empty:
            empty.discard(ORGANISATION_FIELD)
        return pages, empty

    def field_place(self, pdf: bytes, field_name: str) -> tuple[int, tuple[float, float, float, float]] | None:
        """Page (1-based) and rectangle of a signature or form field, for the signing page's highlight."""
        try:
            reader = read_pdf(pdf, self._organisation.max_pdf_bytes)
            place = field_place(reader, field_name)
            if place is None and (widget := form_widget(reader.root, field_name)) is not None:
                place = widget_place(reader, widget)
        except (*PDF_DAMAGE, InvalidRequest):
            return None
        return (place.page, place.box) if place is not None else None

    def existing_form_fields(self, pdf: bytes) -> dict[str, ExistingField]:
        """The PDF's own text fields and checkboxes, each with its kind or why it cannot be filled."""
        reader = read_pdf(pdf, self._organisation.max_pdf_bytes)
        try:
            return existing_form_fields(reader.root)
        except PDF_DAMAGE as exc:
            raise PdfInvalid.damaged("not a readable PDF", exc) from exc

    def add_fields(self, pdf: bytes, fields: Sequence[FieldPlacement]) -> bytes:
        """The parties' new signature and form fields, and on each party's signature field a lock
        naming its form fields: all before the organisation certifies."""
        signatures = {f.party_id: f.name for f in fields if f.kind == "signature"}
        placed = [(f.name, f.page, f.box) for f in fields if f.kind == "signature" and f.page is not None
                  and f.box is not None]
        forms = [f for f in fields if f.kind != "signature"]
        locks: dict[str, list[str]] = {}
        for f in forms:
            locks.setdefault(signatures[f.party_id], []).append(f.name)
        new_forms = [FormField(f.name, cast(FormKind, f.kind), f.page, f.box) for f in forms
                     if f.page is not None and f.box is not None]
        return add_signature_fields(pdf, placed, self._organisation.max_pdf_bytes, locks, new_forms)

    def certify(self, pdf: bytes) -> bytes:
        """The organisation first: a certification that still lets the parties sign their fields."""
        options = PdfSignOptions(level=Level.B_T, certify=True, docmdp=2, field_name=ORGANISATION_FIELD,
                                 reason=f"Issued by {self._name}")
        return self._organisation.sign_for_box(pdf, options).pdf

    def approve(self, pdf: bytes) -> bytes:
        """The organisation last: an approval after every party's signature."""
        options = PdfSignOptions(level=Level.B_T, field_name=ORGANISATION_FIELD, reason=f"Countersigned by {self._name}")
        return self._organisation.sign_for_box(pdf, options).pdf

    def sign_party(self, pdf: bytes, name: str, email: str, method: str, validated_at: datetime, field_name: str,
                   image_png: bytes | None, values: Mapping[str, str | bool] | None = None) -> bytes:
        identity = PartyIdentity(name, email, _METHOD_WORDS.get(method, method), validated_at)
        return self._parties.sign(pdf, identity, PartyMark(field_name, image_png), values)

    def finish(self, pdf: bytes) -> bytes:
        return self._parties.finish(pdf)

    def crl_der(self) -> bytes:
        """The signer CA's current CRL (served at the URL every party certificate names)."""
        return self._parties.crl_der()

    def cleanup(self) -> int:
        """Destroy the party keys a crash left on the token."""
        return self._parties.cleanup()

    def seal(self, pdf: bytes) -> bytes:
        """The completion certificate: certified by the box, no changes allowed, long-term valid."""
        options = PdfSignOptions(level=Level.B_LTA, certify=True, docmdp=1, reason=f"Completion certificate, {self._name}")
        return self._organisation.sign_for_box(pdf, options).pdf
