"""Which signature field a new signature goes into, so that signing breaks no earlier signature.

The rules, in order:
- a document certified with DocMDP 1 takes no further signature at all;
- a named field is used if it exists and is empty (its widget is where the stamp goes; a
  stamp_box as well is refused rather than ignored), else it is created;
- with no name, a form prepared for signing is signed in its first empty field, unless the
  caller placed a stamp of their own (stamp_box), which makes a new field;
- otherwise a new field "SignatureN" is added.
A certification signature (DocMDP 2 or 3) forbids adding a *visible* signature field after it,
so on a certified document a new field with a stamp is refused with the fields that can be used.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.form_tools import annot_width_height, get_single_field_annot
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import MDPPerm, enumerate_sig_fields
from pyhanko.sign.validation import read_certification_data

from ..errors import InvalidRequest

__all__ = [
    "CertifiedDocument", "CertifiedNoChanges", "FieldChoice", "Stamp", "choose_field", "field_place", "free_field_name",
    "widget_place",
]


class CertifiedNoChanges(InvalidRequest):
    """The document's certification (DocMDP 1) forbids every change, another signature included."""


class CertifiedDocument(InvalidRequest):
    """The request needs a new visible field, which the document's certification forbids."""


@dataclass(frozen=True)
class Stamp:
    """Where the caller wants a new visible signature field: page (1-based) and box in points."""

    page: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, origin bottom left


@dataclass(frozen=True)
class FieldChoice:
    name: str
    new: bool  # the signature adds this field
    size: tuple[float, float] | None  # the stamp's width and height in points; None: invisible
    stamp: Stamp | None = None  # where a new visible field goes


def free_field_name(reader: PdfFileReader) -> str:
    """The first "SignatureN" that names no signature field of the document yet."""
    taken = {name for name, _, _ in enumerate_sig_fields(reader)}
    return next(f"Signature{n}" for n in range(1, len(taken) + 2) if f"Signature{n}" not in taken)


def _size(field_ref: generic.Dereferenceable) -> tuple[float, float] | None:
    """The size of the field's widget, if it has an area.

    Taken as a Dereferenceable: pyHanko annotates get_object there, not on IndirectObject."""
    field = field_ref.get_object()
    assert isinstance(field, generic.DictionaryObject)  # enumerate_sig_fields yields dictionaries only
    width, height = annot_width_height(get_single_field_annot(field))
    return (float(width), float(height)) if width > 0 and height > 0 else None


def field_place(reader: PdfFileReader, field_name: str) -> Stamp | None:
    """Where a signature field's widget sits: its page (1-based, by the widget's /P or the pages'
    /Annots) and rectangle; None for an unknown or invisible field, or one on no page."""
    refs = {name: ref for name, _, ref in enumerate_sig_fields(reader)}
    if field_name not in refs:
        return None
    field = refs[field_name].get_object()
    assert isinstance(field, generic.DictionaryObject)
    return widget_place(reader, get_single_field_annot(field))


def widget_place(reader: PdfFileReader, widget: generic.DictionaryObject) -> Stamp | None:
    """Where a field's widget sits (any field type): its page and rectangle, as for field_place."""
    x1, y1, x2, y2 = (float(value) for value in widget["/Rect"])
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    pages = int(reader.root["/Pages"]["/Count"])
    for number in range(pages):
        page_ref = reader.find_page_for_modification(number)[0]  # type: ignore[no-untyped-call]
        annots = page_ref.get_object().get("/Annots", generic.ArrayObject())
        if any(annot.get_object() is widget or annot.get_object() == widget for annot in annots.get_object()):
            return Stamp(number + 1, (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return None


def _certifier(reader: PdfFileReader) -> str:
    """The name of the certification signature's field."""
    author = reader.root["/Perms"].raw_get("/DocMDP")
    fields = enumerate_sig_fields(reader, filled_status=True)
    return next((name for name, _, ref in fields if ref.get_object().raw_get("/V") == author), "(unnamed)")


def choose_field(reader: PdfFileReader, field_name: str | None, stamp: Stamp | None) -> FieldChoice:
    """The field for a signature asked for with ``field_name`` and ``stamp`` (both optional)."""
    certification = read_certification_data(reader)
    certifier = _certifier(reader) if certification is not None else None
    if certification is not None and certification.permission is MDPPerm.NO_CHANGES:
        raise CertifiedNoChanges(
            f"the PDF is certified by signature '{certifier}' with DocMDP 1: it allows no change at all,"
            " not even another signature"
        )
    empty = {name: ref for name, _, ref in enumerate_sig_fields(reader, filled_status=False)}
    if field_name is not None and field_name in empty:
        if stamp is not None:
            raise InvalidRequest(
                f"the PDF's field '{field_name}' already has its place on the page; leave out stamp_box and stamp_page"
            )
        return FieldChoice(field_name, new=False, size=_size(empty[field_name]))
    if field_name is not None and field_name in {name for name, _, _ in enumerate_sig_fields(reader, filled_status=True)}:
        raise InvalidRequest(f"the PDF's field '{field_name}' is already signed; name another field or none")
    if field_name is None and stamp is None and empty:
        name, ref = next(iter(empty.items()))
        return FieldChoice(name, new=False, size=_size(ref))
    if stamp is not None:
        pages = int(reader.root["/Pages"]["/Count"])
        if stamp.page > pages:
            raise InvalidRequest(f"stamp page {stamp.page} is out of range; the PDF has {pages} page(s)")
        if certification is not None:
            usable = ", ".join(f"'{name}'" for name, ref in empty.items() if _size(ref) is not None)
            raise CertifiedDocument(
                f"the PDF is certified by signature '{certifier}' with DocMDP {certification.permission.value}, which"
                " forbids adding a visible signature field; "
                + (f"sign into an empty field made before certification ({usable}) with field=NAME" if usable
                   else "it has no empty visible signature field")
                + ", or sign without stamp_box (an invisible signature)"
            )
    x1, y1, x2, y2 = stamp.box if stamp is not None else (0, 0, 0, 0)
    size = (x2 - x1, y2 - y1) if stamp is not None else None
    return FieldChoice(field_name or free_field_name(reader), new=True, size=size, stamp=stamp)
