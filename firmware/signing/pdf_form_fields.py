"""The fillable fields of a contract's PDF besides signatures: text, date, initials and checkboxes.

An envelope names fields the PDF already has (AcroForm text fields and checkboxes) or has the box
add new ones at a page and box. New fields must be added before the organisation's certification
(DocMDP 2 allows filling fields and signing, not adding fields), so `add_form_fields` works on the
writer that prepares the document. A party's values are written by `fill_form_fields` into the
same incremental revision as the party's approval signature, so that signature covers them and,
with a field lock naming them on the party's signature field, forbids changing them later.

Only structures the box can fill without guessing are accepted: a terminal field with exactly one
widget (merged into the field or as its only kid), a single-line text field or a plain checkbox
with one "on" appearance, empty and not read-only. Radio groups, push buttons, choice lists, file
selects, rich text and fields shown in several places are refused with the reason. Values are
drawn with PDF's standard Courier font, so they are printable Latin-1 text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.content import RawContent
from pyhanko.pdf_utils.form_tools import TextFieldContent, annot_width_height
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import BasePdfFileWriter

from ..errors import InvalidRequest
from .pdf_fields import Stamp
from .pdf_signing import PdfSignOptions, check_options

__all__ = [
    "FORM_KINDS", "MAX_LENGTH", "PDF_KIND", "ExistingField", "FormField", "FormKind", "add_form_fields", "check_form_value",
    "existing_form_fields", "fill_form_fields", "form_widget",
]

FormKind = Literal["text", "date", "checkbox", "initials"]
FORM_KINDS: tuple[FormKind, ...] = ("text", "date", "checkbox", "initials")
# The PDF's field type each kind is: a date and initials are text the box or the party types.
PdfKind = Literal["text", "checkbox"]
PDF_KIND: dict[FormKind, PdfKind] = {"text": "text", "date": "text", "initials": "text", "checkbox": "checkbox"}
MAX_LENGTH: dict[FormKind, int] = {"text": 200, "date": 10, "initials": 10, "checkbox": 0}
_PRINTABLE = re.compile(r"[\x20-\x7e\xa0-\xff]*")  # what Courier with WinAnsiEncoding shows
_OFF = pdf_name("/Off")
_FONT = pdf_name("/Cour")
# Field flags (PDF 32000-1:2008, 12.7.3.1 and 12.7.4)
_READ_ONLY = 1
_MULTILINE = 1 << 12
_RADIO = 1 << 15
_PUSHBUTTON = 1 << 16
_FILE_SELECT = 1 << 20
_RICH_TEXT = 1 << 25
_PRINT = 4  # annotation flag: printed with the page
_MAX_FIELDS = 10_000  # a form tree larger than this is not a contract's form
_MAX_DEPTH = 32


@dataclass(frozen=True)
class FormField:
    """A form field the box adds: ``page`` 1-based, ``box`` x1, y1, x2, y2 in points."""

    name: str
    kind: FormKind
    page: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class ExistingField:
    """A terminal form field of the PDF: what it holds, or why the box cannot fill it."""

    kind: PdfKind | None
    problem: str | None = None


@dataclass(frozen=True)
class _Found:
    info: ExistingField
    field: generic.DictionaryObject
    widget: generic.DictionaryObject
    on_state: generic.NameObject | None = None


def check_form_value(kind: FormKind, value: str) -> str:
    """A typed value as it goes into the PDF (surrounding spaces dropped), or InvalidRequest."""
    value = value.strip()
    if len(value) > MAX_LENGTH[kind]:
        raise InvalidRequest(f"a {kind} value is at most {MAX_LENGTH[kind]} characters")
    if not _PRINTABLE.fullmatch(value):
        raise InvalidRequest(f"a {kind} value is one line of printable Latin-1 characters: the PDF shows it in its"
                             " standard Courier font, which shows nothing else correctly")
    return value


def existing_form_fields(root: generic.DictionaryObject) -> dict[str, ExistingField]:
    """The document's terminal text and checkbox fields (signature fields aside) by qualified
    name, each with its kind or the reason it cannot be filled; ``root`` is the reader's or
    writer's document catalog."""
    return {name: found.info for name, found in _walk(root)}


def form_widget(root: generic.DictionaryObject, name: str) -> generic.DictionaryObject | None:
    """The widget of a fillable form field (where it is shown), or None."""
    found = dict(_walk(root)).get(name)
    return found.widget if found is not None and found.info.kind is not None else None


def _walk(root: generic.DictionaryObject) -> Iterator[tuple[str, _Found]]:
    form = root.get("/AcroForm")
    fields = form.get_object().get("/Fields") if form is not None else None
    if not isinstance(fields, generic.ArrayObject):
        return
    seen: set[generic.Reference] = set()
    stack: list[tuple[generic.PdfObject, str, str | None, int, int]] = [(ref, "", None, 0, 0) for ref in reversed(fields)]
    while stack:
        ref, parent, inherited_type, inherited_flags, depth = stack.pop()
        if not isinstance(ref, generic.IndirectObject) or ref.reference in seen:
            raise InvalidRequest("the PDF's form is damaged: a field appears twice or is not an object of its own")
        seen.add(ref.reference)
        if len(seen) > _MAX_FIELDS or depth > _MAX_DEPTH:
            raise InvalidRequest("the PDF's form is too large or too deep to fill")
        field = ref.get_object()  # type: ignore[no-untyped-call]  # pyHanko leaves it unannotated
        if not isinstance(field, generic.DictionaryObject) or "/T" not in field:
            continue  # a bare widget in /Fields: not a field
        name = f"{parent}.{field['/T']}" if parent else str(field["/T"])
        field_type = str(field.get("/FT", inherited_type)) if field.get("/FT", inherited_type) else None
        flags = int(field.get("/Ff", inherited_flags))
        kids = field.get("/Kids", generic.ArrayObject())
        kids = kids if isinstance(kids, generic.ArrayObject) else generic.ArrayObject()
        children = [k for k in kids if isinstance(k.get_object(), generic.DictionaryObject) and "/T" in k.get_object()]
        if children:
            if len(children) != len(kids):
                yield name, _Found(ExistingField(None, "it mixes child fields and widgets"), field, field)
            stack.extend((kid, name, field_type, flags, depth + 1) for kid in reversed(children))
            continue
        if field_type in (None, "/Sig"):
            continue
        widgets = [k.get_object() for k in kids] if kids else [field]
        yield name, _judge(field, widgets, field_type, flags)


def _judge(field: generic.DictionaryObject, widgets: list[generic.PdfObject], field_type: str,
           flags: int) -> _Found:
    """What a terminal field is, and whether the box can fill it safely."""
    def refused(problem: str) -> _Found:
        return _Found(ExistingField(None, problem), field, field)

    if len(widgets) != 1 or not isinstance(widgets[0], generic.DictionaryObject) or "/Rect" not in widgets[0]:
        return refused(f"it is shown in {len(widgets)} places" if len(widgets) != 1 else "it has no place on a page")
    widget = widgets[0]
    if flags & _READ_ONLY:
        return refused("it is read-only")
    if field_type == "/Tx":
        if flags & (_FILE_SELECT | _RICH_TEXT | _MULTILINE):
            return refused("it is a file select, rich text or multi-line field")
        if str(field.get("/V", "")):
            return refused("it is filled in already")
        return _Found(ExistingField("text"), field, widget)
    if field_type == "/Btn":
        if flags & _RADIO:
            return refused("it is a radio button group")
        if flags & _PUSHBUTTON:
            return refused("it is a push button")
        appearances = widget.get("/AP")
        normal = appearances.get("/N") if isinstance(appearances, generic.DictionaryObject) else None
        states = list(normal) if isinstance(normal, generic.DictionaryObject) else []
        on = [state for state in states if state != _OFF]
        if len(on) != 1:
            return refused("its checkbox has no single 'on' appearance")
        if field.get("/V", _OFF) != _OFF:
            return refused("it is ticked already")
        return _Found(ExistingField("checkbox"), field, widget, pdf_name(on[0]))
    return refused("it is a choice list" if field_type == "/Ch" else f"its type {field_type} is not text or checkbox")


def _appearance(writer: BasePdfFileWriter, width: float, height: float, inner: bytes = b"") -> generic.IndirectObject:
    """A form XObject: the light box that shows where the field is, and ``inner`` drawn on it."""
    frame = b"q 0.93 0.95 1 rg 0 0 %g %g re f Q q 0.45 0.55 0.75 RG 0.75 w 0.5 0.5 %g %g re S Q " % (
        width, height, width - 1, height - 1)
    content = RawContent(frame + inner, box=layout.BoxConstraints(width=width, height=height))
    ref: generic.IndirectObject = writer.add_object(content.as_form_xobject())
    return ref


def _tick(width: float, height: float) -> bytes:
    """A tick drawn with lines (no font needed), inside the box."""
    side = min(width, height)
    x, y = (width - side) / 2, (height - side) / 2
    points = [(0.2, 0.5), (0.42, 0.25), (0.8, 0.78)]
    path = b" ".join(b"%g %g %s" % (x + px * side, y + py * side, op)
                     for (px, py), op in zip(points, (b"m", b"l", b"l"), strict=True))
    return b"q 0.06 0.16 0.26 RG %g w 1 J 1 j %s S Q" % (max(side / 10, 1), path)


def _dict(entries: dict[str, generic.PdfObject]) -> generic.DictionaryObject:
    """A PDF dictionary from plain keys (pyHanko leaves the constructor unannotated)."""
    return generic.DictionaryObject({pdf_name(k): v for k, v in entries.items()})  # type: ignore[no-untyped-call]


def _number(value: int) -> generic.NumberObject:
    return generic.NumberObject(value)  # type: ignore[no-untyped-call]  # pyHanko leaves __new__ unannotated


def _updated(writer: BasePdfFileWriter, holder: generic.DictionaryObject, key: str) -> generic.DictionaryObject:
    """``holder[key]``, a dictionary made if missing, marked as changed in this revision."""
    raw = holder.raw_get(key) if key in holder else None
    if raw is None or not isinstance(raw.get_object(), generic.DictionaryObject):
        holder[pdf_name(key)] = raw = writer.add_object(_dict({}))
    if isinstance(raw, generic.IndirectObject):
        writer.mark_update(raw)
    value = raw.get_object()
    assert isinstance(value, generic.DictionaryObject)
    return value


def _form_dict(writer: BasePdfFileWriter) -> generic.DictionaryObject:
    """The catalog's /AcroForm (made if missing), with a /DR naming the Courier the fields use."""
    writer.update_root()  # type: ignore[no-untyped-call]  # pyHanko leaves it unannotated
    form = _updated(writer, writer.root, "/AcroForm")
    if not isinstance(form.get("/Fields"), generic.ArrayObject):
        form[pdf_name("/Fields")] = generic.ArrayObject()
    elif isinstance(form.raw_get("/Fields"), generic.IndirectObject):
        writer.mark_update(form.raw_get("/Fields"))
    fonts = _updated(writer, _updated(writer, form, "/DR"), "/Font")
    if _FONT not in fonts:
        fonts[_FONT] = writer.add_object(_dict({
            "/Type": pdf_name("/Font"), "/Subtype": pdf_name("/Type1"), "/BaseFont": pdf_name("/Courier"),
            "/Encoding": pdf_name("/WinAnsiEncoding")}))
    return form


def add_form_fields(writer: BasePdfFileWriter, fields: Sequence[FormField]) -> None:
    """Add empty text fields and checkboxes at their page and box (one widget each, merged into
    the field); refuses a name the form has already (any field type) or a page out of range."""
    if not fields:
        return
    form = _form_dict(writer)
    taken = _all_names(writer.root)
    pages = int(writer.root["/Pages"]["/Count"])
    for spec in fields:
        try:
            check_options(PdfSignOptions(field_name=spec.name, stamp=Stamp(spec.page, spec.box)))
        except InvalidRequest as exc:
            raise InvalidRequest(f"field {spec.name!r}: {exc}".replace("stamp ", "")) from None
        if spec.name in taken:
            raise InvalidRequest(f"the PDF already has a field {spec.name!r}: name it without page and box")
        if spec.page > pages:
            raise InvalidRequest(f"field {spec.name!r}: page {spec.page} is not in 1..{pages}")
        taken.add(spec.name)
        x1, y1, x2, y2 = spec.box
        width, height = x2 - x1, y2 - y1
        page_ref = writer.find_page_for_modification(spec.page - 1)[0]  # type: ignore[no-untyped-call]
        field = _dict({
            "/Type": pdf_name("/Annot"), "/Subtype": pdf_name("/Widget"), "/T": generic.TextStringObject(spec.name),
            "/Rect": generic.ArrayObject(generic.FloatObject(v) for v in spec.box),  # type: ignore[no-untyped-call]
            "/F": _number(_PRINT), "/P": page_ref,
        })
        if PDF_KIND[spec.kind] == "checkbox":
            field[pdf_name("/FT")] = pdf_name("/Btn")
            field[pdf_name("/V")] = field[pdf_name("/AS")] = _OFF
            field[pdf_name("/AP")] = _dict({"/N": _dict({
                "/Yes": _appearance(writer, width, height, _tick(width, height)),
                "/Off": _appearance(writer, width, height)})})
        else:
            field[pdf_name("/FT")] = pdf_name("/Tx")
            field[pdf_name("/MaxLen")] = _number(MAX_LENGTH[spec.kind])
            field[pdf_name("/DA")] = generic.TextStringObject(f"/Cour {_font_size(height)} Tf 0 g")
            field[pdf_name("/AP")] = _dict({"/N": _appearance(writer, width, height)})
        field_ref = writer.add_object(field)
        writer.register_annotation(page_ref, field_ref)  # type: ignore[no-untyped-call]
        form["/Fields"].append(field_ref)


def fill_form_fields(writer: BasePdfFileWriter, values: Mapping[str, str | bool]) -> None:
    """Write each value into its empty field, with a new appearance: a string into a text field
    (then read-only, so viewers do not offer to edit a signed value), True ticks a checkbox
    (False leaves it as it is). Refuses a name that is no fillable field of the right type."""
    found = dict(_walk(writer.root)) if values else {}
    for name, value in values.items():
        target = found.get(name)
        if target is None or target.info.kind is None:
            reason = target.info.problem if target is not None else "no such field"
            raise InvalidRequest(f"the PDF's field {name!r} cannot be filled: {reason}")
        expected: PdfKind = "checkbox" if isinstance(value, bool) else "text"
        if target.info.kind != expected:
            raise InvalidRequest(f"the PDF's field {name!r} is a {target.info.kind} field, not a {expected} field")
        field, widget = target.field, target.widget
        if isinstance(value, bool):
            if value:
                assert target.on_state is not None
                field[pdf_name("/V")] = widget[pdf_name("/AS")] = target.on_state
        else:
            text = check_form_value("text", value)
            width, height = (float(side) for side in annot_width_height(widget))
            size = min(_font_size(height), max(int(width / (0.6 * max(len(text), 1) + 0.5)), 4))
            content = TextFieldContent(writer, text, TextBoxStyle(font_size=size),
                                       box=layout.BoxConstraints(width=width, height=height))
            content.apply_appearance(widget)
            field[pdf_name("/V")] = generic.TextStringObject(text)
            field[pdf_name("/Ff")] = _number(int(field.get("/Ff", 0)) | _READ_ONLY)
        writer.update_container(field)
        if widget is not field:
            writer.update_container(widget)


def _font_size(height: float) -> int:
    return max(4, min(12, int(height * 0.6)))


def _all_names(root: generic.DictionaryObject) -> set[str]:
    """Every field name of the form, signature fields and non-terminal ones included."""
    form = root.get("/AcroForm")
    fields = form.get_object().get("/Fields") if form is not None else None
    names: set[str] = set()
    stack = [(ref, "") for ref in fields] if isinstance(fields, generic.ArrayObject) else []
    while stack and len(names) <= _MAX_FIELDS:
        ref, parent = stack.pop()
        field = ref.get_object()
        if isinstance(field, generic.DictionaryObject) and "/T" in field:
            name = f"{parent}.{field['/T']}" if parent else str(field["/T"])
            names.add(name)
            kids = field.get("/Kids")
            if isinstance(kids, generic.ArrayObject):
                stack.extend((kid, name) for kid in kids)
    return names
