"""The completion certificate and the page previews, judged by tools nobody here wrote: qpdf
checks the certificate's structure, poppler's pdftotext reads its text back (non-Latin-1 letters
included) and Pillow measures the previews poppler's pdftoppm renders."""

from __future__ import annotations

import io
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

from firmware.contracts.completion import completion_pdf
from firmware.contracts.preview import MAX_HEIGHT_RATIO, page_count, render_page
from firmware.contracts.trail import CompletionTrail, TrailEvent, TrailParty
from firmware.errors import InvalidRequest
from firmware.signing.pdf_verify import PdfInvalid

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ORIGINAL = "3f" * 32
FINAL = "a7" * 32
DECLINE = "I do not agree with clause 7 (liability cap) as drafted; please send a revised version."


def _trail(events: int = 80, detail: str = "") -> CompletionTrail:
    parties = (
        TrailParty("Jörg Müller", "joerg@example.de", "signer", 1, "signed", "email-code", START,
                   START + timedelta(minutes=5), None),
        TrailParty("Zoë Ångström", "zoe@example.org", "signer", 2, "declined", "access-code",
                   START + timedelta(minutes=9), None, DECLINE),
        TrailParty("Anna Łukasiewicz", "anna@example.pl", "approver", 2, "pending", None, None, None, None),
    )
    trail = tuple(
        TrailEvent(START + timedelta(seconds=30 * i), "api:client-7" if i % 2 else "party:joerg@example.de",
                   f"party.viewed.{i}", "2001:db8::1234:5678:9abc:def0" if i % 3 else f"192.0.2.{i}",
                   f"event number {i}")
        for i in range(events - 1)
    )
    last = TrailEvent(START + timedelta(hours=2), "box", "envelope.declined", None, "LAST-EVENT-MARK " + detail)
    return CompletionTrail("env_8f3kq2", "Employment agreement — Jörg Müller", "Example GmbH", START,
                           START + timedelta(hours=2), ORIGINAL, FINAL, parties, (*trail, last))


def _text(pdf: bytes, tmp_path: Path, *options: str) -> str:
    """pdftotext's reading of ``pdf``, after qpdf --check has passed it."""
    path = tmp_path / "certificate.pdf"
    path.write_bytes(pdf)
    check = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run(["pdftotext", *options, "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout


def test_certificate_has_the_whole_trail_on_several_pages(tmp_path):
    pdf = completion_pdf(_trail())
    text = _text(pdf, tmp_path, "-layout")  # table rows on one line each
    for wanted in ("Jörg Müller", "Zoë Ångström", "joerg@example.de", ORIGINAL, FINAL, "env_8f3kq2",
                   "Example GmbH", "access-code", "2025-03-01 09:09:00", "envelope.declined", "LAST-EVENT-MARK",
                   "party.viewed.78", "2001:db8::1234:5", "Employment agreement - Jörg Müller"):
        assert wanted in text, wanted
    # The wrapped decline reason, read column by column (pdftotext without -layout).
    assert DECLINE in " ".join(_text(pdf, tmp_path).split())
    # Ł is not in the standard fonts' Latin-1: shown as "?", not as some other letter, and no crash.
    assert "Anna ?ukasiewicz" in text
    assert page_count(pdf) > 1
    assert f"page {page_count(pdf)} of {page_count(pdf)}" in text


def test_overlong_values_are_cut_visibly_and_stay_on_the_page(tmp_path):
    pdf = completion_pdf(_trail(events=3, detail="x" * 200_000 + " END-OF-DETAIL"))
    text = _text(pdf, tmp_path, "-layout")
    assert "LAST-EVENT-MARK" in text and "..." in text and "END-OF-DETAIL" not in text
    assert page_count(pdf) == 1
    # Nothing is drawn outside the page: poppler's bounding boxes of every word lie within A4.
    path = tmp_path / "certificate.pdf"
    boxes = subprocess.run(["pdftotext", "-bbox", str(path), "-"], capture_output=True, text=True,
                           check=True).stdout
    right_edges = [float(part.split('"')[1]) for part in boxes.split() if part.startswith('xMax="')]
    assert right_edges and max(right_edges) <= 595 - 40 + 1


def test_previews_are_pngs_of_the_asked_width():
    pdf = completion_pdf(_trail())
    count = page_count(pdf)
    assert count > 1
    png = render_page(pdf, count, 480)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.width == 480 and abs(image.height - 480 * 842 / 595) <= 1  # A4's shape; poppler rounds up
    assert len(image.getcolors(maxcolors=1 << 16) or ()) > 1  # not a blank page


def test_a_very_long_page_is_cropped():
    writer = PdfFileWriter()
    ink = writer.add_object(generic.StreamObject(stream_data=b"0 0 1 rg 0 0 100 14400 re f"))
    writer.insert_page(PageObject(ink, (0, 0, 100, 14400)))
    out = io.BytesIO()
    writer.write(out)
    pdf = out.getvalue()
    image = Image.open(io.BytesIO(render_page(pdf, 1, 200)))
    assert image.size == (200, 200 * MAX_HEIGHT_RATIO)


@pytest.mark.parametrize("page, width, message", [
    (0, 480, "page 0 does not exist"), (99, 480, "page 99 does not exist"),
    (1, 199, "200 to 2000 pixels"), (1, 2001, "200 to 2000 pixels"),
])
def test_bad_page_or_width_is_refused(page, width, message):
    with pytest.raises(InvalidRequest, match=message):
        render_page(completion_pdf(_trail(events=3)), page, width)


@pytest.mark.parametrize("data", [b"garbage, not a PDF", b"%PDF-1.7\n" + b"\0" * 100])
def test_damaged_documents_are_refused(data):
    with pytest.raises(PdfInvalid, match="not a readable PDF"):
        page_count(data)
    with pytest.raises(PdfInvalid, match="not a readable PDF"):
        render_page(data, 1, 480)


def test_a_truncated_document_is_refused():
    pdf = completion_pdf(_trail())
    with pytest.raises(PdfInvalid):
        page_count(pdf[: len(pdf) // 2])
