"""A contract's pages as pictures: what the signing page shows instead of a PDF viewer.

People sign on phones and locked-down PCs where a PDF viewer may be missing, slow or a risk, so
the box renders each page itself with poppler's ``pdftoppm`` and the page only shows PNGs. The
renderer is a separate process with a time limit, fed through a pipe (no temporary files), and
its output is bounded: the width comes from a fixed range and the height is cropped at a
multiple of it, so neither a huge request nor a page a mile long can make a huge image.
"""

from __future__ import annotations

import subprocess

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader

from ..config import ApiSettings
from ..errors import InvalidRequest
from ..signing.pdf_verify import PDF_DAMAGE, PdfInvalid, read_pdf

__all__ = [
    "MAX_HEIGHT_RATIO", "MAX_WIDTH_PX", "MIN_WIDTH_PX", "RENDER_TIMEOUT_S", "PreviewUnavailable", "page_count",
    "page_sizes", "render_page",
]

MIN_WIDTH_PX = 200
MAX_WIDTH_PX = 2000
MAX_HEIGHT_RATIO = 4  # a rendering is cropped at this many times its width (A4 portrait is 1.41)
RENDER_TIMEOUT_S = 20.0
_DEFAULT_MAX_BYTES = ApiSettings().max_pdf_bytes  # box.toml's default; callers pass the box's own limit
_MAX_ERROR = 200


class PreviewUnavailable(RuntimeError):
    """The renderer did not finish in time: the box is busy or the page is unreasonably heavy."""


def _pages(reader: PdfFileReader) -> int:
    try:
        count = int(reader.root["/Pages"]["/Count"])
    except PDF_DAMAGE as exc:
        raise PdfInvalid.damaged("not a readable PDF", exc) from exc
    if count < 1:
        raise PdfInvalid("not a readable PDF: it has no pages")
    return count


def page_count(pdf: bytes, max_bytes: int = _DEFAULT_MAX_BYTES) -> int:
    """How many pages ``pdf`` has; PdfInvalid (an InvalidRequest) if it is not a PDF the box reads."""
    return _pages(read_pdf(pdf, max_bytes))


def page_sizes(pdf: bytes, max_bytes: int = _DEFAULT_MAX_BYTES) -> list[tuple[float, float]]:
    """Each page's width and height in points (its MediaBox, inherited if need be; rotation
    ignored): where on a page's picture the signing page highlights a party's field."""
    reader = read_pdf(pdf, max_bytes)
    try:
        return [_media_size(reader.find_page_for_modification(number)[0].get_object())  # type: ignore[no-untyped-call]
                for number in range(_pages(reader))]
    except PDF_DAMAGE as exc:
        raise PdfInvalid.damaged("not a readable PDF", exc) from exc


def _media_size(page: generic.DictionaryObject) -> tuple[float, float]:
    node = page
    for _ in range(32):  # a page tree deeper than this is refused by read_pdf anyway
        if "/MediaBox" in node:
            x1, y1, x2, y2 = (float(value) for value in node["/MediaBox"])
            return abs(x2 - x1), abs(y2 - y1)
        if "/Parent" not in node:
            break
        node = node["/Parent"]
    return 612.0, 792.0  # PDF's default page: US Letter


def _check_page(reader: PdfFileReader, page: int) -> None:
    """``page`` (1-based) exists: in the page count and in the page tree (which may disagree)."""
    count = _pages(reader)
    if not 1 <= page <= count:
        raise InvalidRequest(f"page {page} does not exist; the document has pages 1 to {count}")
    try:
        reader.find_page_container(page - 1)  # type: ignore[no-untyped-call]  # pyHanko leaves it unannotated
    except PDF_DAMAGE as exc:
        raise PdfInvalid.damaged(f"page {page} cannot be read", exc) from exc


def render_page(pdf: bytes, page: int, width_px: int, max_bytes: int = _DEFAULT_MAX_BYTES) -> bytes:
    """Page ``page`` (1-based) of ``pdf`` as a PNG ``width_px`` pixels wide (MIN_WIDTH_PX to
    MAX_WIDTH_PX), at most MAX_HEIGHT_RATIO times as high (a longer page is cut off at the bottom).

    InvalidRequest for a width out of range or a page that does not exist, PdfInvalid for a
    document the box or poppler cannot read, PreviewUnavailable when rendering takes longer than
    RENDER_TIMEOUT_S.
    """
    if not MIN_WIDTH_PX <= width_px <= MAX_WIDTH_PX:
        raise InvalidRequest(f"a page preview is {MIN_WIDTH_PX} to {MAX_WIDTH_PX} pixels wide, not {width_px}")
    _check_page(read_pdf(pdf, max_bytes), page)
    command = [
        "pdftoppm", "-png", "-f", str(page), "-l", str(page),
        "-scale-to-x", str(width_px), "-scale-to-y", "-1",
        "-x", "0", "-y", "0", "-W", str(width_px), "-H", str(width_px * MAX_HEIGHT_RATIO),
        "-",  # the PDF on stdin; no output root, so the PNG comes on stdout
    ]
    try:
        done = subprocess.run(command, input=pdf, capture_output=True, timeout=RENDER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise PreviewUnavailable(f"page {page} took longer than {RENDER_TIMEOUT_S:g} s to render") from None
    if done.returncode != 0 or not done.stdout.startswith(b"\x89PNG\r\n\x1a\n"):
        reason = " ".join(done.stderr.decode("utf-8", "replace").split())[:_MAX_ERROR] or f"exit {done.returncode}"
        raise PdfInvalid(f"page {page} cannot be rendered: {reason}")
    return done.stdout
