"""Form fields of a contract's PDF (pdf_form_fields): new text fields and checkboxes placed by page
and box, fields a form already has, and the structures the box refuses to fill. Results are read
back with pyHanko's reader and checked by qpdf and poppler (pdftotext shows the filled text)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from firmware.errors import InvalidRequest
from firmware.signing.pdf_form_fields import (
    ExistingField,
    FormField,
    add_form_fields,
    check_form_value,
    existing_form_fields,
    fill_form_fields,
)

from .pdfs import make_pdf, raw_pdf, reader

_PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
_ON_OFF = b"/AP << /N << /Yes 20 0 R /Off 20 0 R >> >>"


def _form(fields: dict[int, bytes], top: list[int]) -> bytes:
    """A one-page PDF whose form has ``fields`` (object number -> dictionary), ``top`` in /Fields;
    every object with a /Rect is a widget on the page."""
    widgets = b" ".join(b"%d 0 R" % n for n, body in fields.items() if b"/Rect" in body)
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm 4 0 R >>", 2: _PAGES,
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Annots [%s] >>" % widgets,
        4: b"<< /Fields [%s] >>" % b" ".join(b"%d 0 R" % n for n in top),
        20: b"<< /Type /XObject /Subtype /Form /BBox [0 0 20 20] /Length 0 >>\nstream\n\nendstream",
        **fields,
    }
    return raw_pdf(objects)


def _write(writer: IncrementalPdfFileWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _value(pdf: bytes, name: str) -> generic.PdfObject:
    [ref] = [r for r in reader(pdf).root["/AcroForm"]["/Fields"] if r.get_object()["/T"] == name]
    return ref.get_object().get("/V")


def _qpdf_and_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "filled.pdf"
    path.write_bytes(pdf)
    check = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_new_fields_are_added_where_asked_then_filled_with_their_appearance(tmp_path):
    writer = IncrementalPdfFileWriter(io.BytesIO(make_pdf(pages=2)))
    add_form_fields(writer, [FormField("Employee number", "text", 2, (50, 300, 250, 330)),
                             FormField("Agree", "checkbox", 1, (50, 400, 70, 420)),
                             FormField("Signed on", "date", 1, (300, 400, 450, 420))])
    prepared = _write(writer)
    assert existing_form_fields(reader(prepared).root) == {
        "Employee number": ExistingField("text"), "Agree": ExistingField("checkbox"), "Signed on": ExistingField("text")}
    page_two = reader(prepared).root["/Pages"]["/Kids"][1].get_object()
    assert [a.get_object()["/T"] for a in page_two["/Annots"]] == ["Employee number"]

    writer = IncrementalPdfFileWriter(io.BytesIO(prepared))
    fill_form_fields(writer, {"Employee number": "E-4711", "Agree": True, "Signed on": "2025-03-01"})
    filled = _write(writer)
    assert str(_value(filled, "Employee number")) == "E-4711" and _value(filled, "Agree") == "/Yes"
    agree = [r.get_object() for r in reader(filled).root["/AcroForm"]["/Fields"] if r.get_object()["/T"] == "Agree"]
    assert agree[0]["/AS"] == "/Yes"
    text = _qpdf_and_text(filled, tmp_path)
    assert "E-4711" in text and "2025-03-01" in text  # the appearance shows the values


def test_a_name_the_form_has_and_a_bad_place_are_refused():
    writer = IncrementalPdfFileWriter(io.BytesIO(make_pdf()))
    add_form_fields(writer, [FormField("Name", "text", 1, (50, 300, 250, 330))])
    prepared = _write(writer)
    for field, message in [(FormField("Name", "text", 1, (50, 50, 90, 90)), "already has a field"),
                           (FormField("Other", "text", 2, (50, 50, 90, 90)), "page 2"),
                           (FormField("Other", "text", 1, (90, 50, 50, 90)), "box must be"),
                           (FormField("Bad/name", "text", 1, (50, 50, 90, 90)), "field name")]:
        with pytest.raises(InvalidRequest, match=message):
            add_form_fields(IncrementalPdfFileWriter(io.BytesIO(prepared)), [field])


def test_fields_of_an_existing_form_are_found_and_filled(tmp_path):
    pdf = _form({
        5: b"<< /T (Name) /FT /Tx /Kids [6 0 R] >>",  # a field with its one widget as a kid
        6: b"<< /Type /Annot /Subtype /Widget /Parent 5 0 R /Rect [50 700 300 720] >>",
        7: b"<< /T (person) /Kids [8 0 R] >>",  # a parent: the child's name is qualified
        8: b"<< /T (agree) /FT /Btn /Parent 7 0 R /Type /Annot /Subtype /Widget /Rect [50 650 70 670] "
           b"/V /Off /AS /Off " + _ON_OFF.replace(b"/Yes", b"/On") + b" >>",
    }, top=[5, 7])
    assert existing_form_fields(reader(pdf).root) == {"Name": ExistingField("text"),
                                                     "person.agree": ExistingField("checkbox")}
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    fill_form_fields(writer, {"Name": "Alice Example", "person.agree": True})
    filled = _write(writer)
    form = reader(filled).root["/AcroForm"]["/Fields"]
    name, person = (ref.get_object() for ref in form)
    assert str(name["/V"]) == "Alice Example" and int(name["/Ff"]) & 1  # read-only once filled
    assert "/AP" in name["/Kids"][0].get_object()
    agree = person["/Kids"][0].get_object()
    assert agree["/V"] == "/On" and agree["/AS"] == "/On"  # the checkbox's own "on" state
    assert "Alice Example" in _qpdf_and_text(filled, tmp_path)


_TEXT_WIDGET = b"/Type /Annot /Subtype /Widget /Rect [50 600 300 620]"


@pytest.mark.parametrize(("body", "problem"), [
    (b"<< /T (f) /FT /Btn /Ff 32768 " + _TEXT_WIDGET + b" " + _ON_OFF + b" >>", "radio button group"),
    (b"<< /T (f) /FT /Btn /Ff 65536 " + _TEXT_WIDGET + b" >>", "push button"),
    (b"<< /T (f) /FT /Btn " + _TEXT_WIDGET + b" >>", "no single 'on' appearance"),
    (b"<< /T (f) /FT /Ch " + _TEXT_WIDGET + b" >>", "choice list"),
    (b"<< /T (f) /FT /Tx /Ff 1 " + _TEXT_WIDGET + b" >>", "read-only"),
    (b"<< /T (f) /FT /Tx /Ff 4096 " + _TEXT_WIDGET + b" >>", "multi-line"),
    (b"<< /T (f) /FT /Tx /V (already) " + _TEXT_WIDGET + b" >>", "filled in already"),
    (b"<< /T (f) /FT /Tx >>", "no place on a page"),
    (b"<< /T (f) /FT /Tx /Kids [6 0 R 9 0 R] >>", "shown in 2 places"),
])
def test_fields_the_box_cannot_fill_safely_are_refused_with_the_reason(body, problem):
    pdf = _form({5: body, 6: b"<< " + _TEXT_WIDGET + b" /Parent 5 0 R >>",
                 9: b"<< /Type /Annot /Subtype /Widget /Rect [50 500 300 520] /Parent 5 0 R >>"}, top=[5])
    found = existing_form_fields(reader(pdf).root)["f"]
    assert found.kind is None and problem in (found.problem or "")
    with pytest.raises(InvalidRequest, match="cannot be filled"):
        fill_form_fields(IncrementalPdfFileWriter(io.BytesIO(pdf)), {"f": "x"})


@pytest.mark.parametrize("fields", [
    {5: b"<< /T (f) /Kids [5 0 R] >>"},  # a cycle
    {5: b"<< /T (f) /Kids [6 0 R 6 0 R] >>", 6: b"<< /T (g) /FT /Tx >>"},  # a kid shared twice
])
def test_a_damaged_form_tree_is_refused(fields):
    with pytest.raises(InvalidRequest, match="damaged"):
        existing_form_fields(reader(_form(fields, top=[5])).root)


def test_a_value_of_the_wrong_type_or_an_unknown_field_is_refused():
    writer = IncrementalPdfFileWriter(io.BytesIO(make_pdf()))
    add_form_fields(writer, [FormField("Name", "text", 1, (50, 300, 250, 330)),
                             FormField("Agree", "checkbox", 1, (50, 400, 70, 420))])
    prepared = _write(writer)
    for values, message in [({"Name": True}, "not a checkbox"), ({"Agree": "yes"}, "not a text"),
                            ({"Nope": "x"}, "no such field")]:
        with pytest.raises(InvalidRequest, match=message):
            fill_form_fields(IncrementalPdfFileWriter(io.BytesIO(prepared)), values)


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("text", "x" * 201, "at most 200"), ("initials", "ABCDEFGHIJK", "at most 10"),
    ("text", "two\nlines", "printable Latin-1"), ("text", "Ωmega", "printable Latin-1"),
    ("text", "bell\x07", "printable Latin-1"),
])
def test_values_the_pdf_cannot_show_are_refused(kind, value, message):
    with pytest.raises(InvalidRequest, match=message):
        check_form_value(kind, value)
    assert check_form_value("text", "  Müller & Söhne  ") == "Müller & Söhne"
