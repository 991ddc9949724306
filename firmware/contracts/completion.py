"""The envelope's completion certificate: an A4 PDF with the whole trail, for the box to sign.

It is what a party or an auditor reads years later to see who signed, how each identity was
validated, what happened when and from where, and which documents the hashes bind. So it is
plain and self-contained: PDF's standard Courier (no font files to embed or lose), every value
in full where the page allows and visibly shortened ("...") where it does not.

Courier because the box's stamps use it too and its fixed pitch makes every width exact: lines
are wrapped by character count and can never run off the page. Its WinAnsi encoding shows
Latin-1 (so "Jörg Müller" and "Zoë" come out right); any other character becomes "?" rather than
a wrong glyph or a crash. pyHanko's TextBox lays out each cell; this module only decides where.
"""

from __future__ import annotations

import io
import re
import textwrap
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pyhanko.pdf_utils import generic, layout
from pyhanko.pdf_utils.font.basic import SimpleFontEngineFactory
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.text import TextBox, TextBoxStyle
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

from .trail import CompletionTrail, TrailEvent, TrailParty

__all__ = ["completion_pdf"]

_PAGE_WIDTH, _PAGE_HEIGHT = 595.0, 842.0  # A4 in points
_MARGIN = 40.0
_FOOTER = 24.0  # points from the bottom edge to the footer's baseline area
_COURIER_ADVANCE = 0.6  # every Courier glyph is 600/1000 em wide
_BODY, _BODY_LEADING = 7, 9  # points; pyHanko's TextBox takes whole points
_HEADING, _HEADING_LEADING = 10, 14
_TITLE, _TITLE_LEADING = 16, 20
_SUBTITLE, _SUBTITLE_LEADING = 12, 15
_GAP = 2  # characters between table columns
_ROW_SPACE = 3.0  # points between table rows
_SECTION_SPACE = 12.0

# What PDF's standard fonts (WinAnsi) and pyHanko's PDFDocEncoding text strings agree on, as for
# the box's stamp text (signing/pdf_signing.py); the soft hyphen (U+00AD) is in neither.
_SHOWN = re.compile(r"[\x20-\x7e\xa1-\xac\xae-\xff]")
_REPLACEMENT = "?"
# Typography people paste into titles and reasons, as the nearest characters Courier has.
_FOLD = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                       "\u2026": "...", "\u2022": "*", "\u20ac": "EUR"})
_ELLIPSIS = "..."  # U+2026 is not in PDFDocEncoding


def _printable(text: str) -> str:
    """``text`` as Courier can show it: whitespace as spaces, invisible format characters
    dropped, anything else it cannot show as "?"."""
    shown = []
    for char in unicodedata.normalize("NFC", text).translate(_FOLD):
        category = unicodedata.category(char)
        if char.isspace():
            shown.append(" ")
        elif category == "Cf":
            continue
        else:
            shown.append(char if _SHOWN.fullmatch(char) else _REPLACEMENT)
    return "".join(shown)


def _wrap(text: str | Sequence[str], width: int, max_lines: int) -> tuple[str, ...]:
    """At most ``max_lines`` lines of at most ``width`` characters, each paragraph (a string of
    ``text``) starting a line; the last line ends in "..." if the text goes on. Long words
    (hashes, URLs, addresses) are broken rather than overflow."""
    paragraphs = (text,) if isinstance(text, str) else text
    # Text beyond what the cell can show is dropped before wrapping (an event's detail has no
    # length limit); what is kept still overflows the cell, so the ellipsis shows the cut.
    keep = 2 * width * (max_lines + 1)
    lines = [
        line
        for paragraph in paragraphs
        for line in textwrap.wrap(_printable(paragraph[:keep]), width, break_long_words=True) or [""]
    ]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = f"{lines[-1][: width - len(_ELLIPSIS) - 1]} {_ELLIPSIS}".lstrip()
    return tuple(lines) or ("",)


def _utc(moment: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC (naive times are taken as UTC), "-" for no time."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class _Cell:
    column: int  # characters from the left margin, in the row's font size
    width: int  # characters
    lines: tuple[str, ...]
    bold: bool = False


@dataclass(frozen=True)
class _Row:
    cells: tuple[_Cell, ...]
    size: int = _BODY
    leading: int = _BODY_LEADING
    space_before: float = _ROW_SPACE
    rule_below: bool = False

    @property
    def height(self) -> float:
        return self.space_before + self.leading * max(len(cell.lines) for cell in self.cells)


def _chars(size: int) -> int:
    """How many Courier characters of ``size`` points fit between the margins."""
    return int((_PAGE_WIDTH - 2 * _MARGIN) / (size * _COURIER_ADVANCE))


@dataclass(frozen=True)
class _Column:
    title: str
    width: int
    max_lines: int


def _table(columns: Sequence[_Column], rows: Sequence[Sequence[str | tuple[str, ...]]]) -> tuple[_Row, list[_Row]]:
    """A header row and one row per entry; the last column takes what the others leave."""
    widths = [column.width for column in columns[:-1]]
    widths.append(_chars(_BODY) - sum(widths) - _GAP * (len(columns) - 1))
    starts = [sum(widths[:i]) + _GAP * i for i in range(len(columns))]

    def row(values: Sequence[str | tuple[str, ...]], header: bool) -> _Row:
        cells = tuple(
            _Cell(start, width, _wrap(value, width, 1 if header else column.max_lines), bold=header)
            for start, width, column, value in zip(starts, widths, columns, values, strict=True)
        )
        return _Row(cells, rule_below=header, space_before=_ROW_SPACE * 2 if header else _ROW_SPACE)

    return row([column.title for column in columns], True), [row(values, False) for values in rows]


_PARTY_COLUMNS = (
    _Column("#", 3, 1), _Column("Name / e-mail", 24, 6), _Column("Role", 8, 2), _Column("Status", 9, 2),
    _Column("Validated", 19, 4), _Column("Signed", 19, 1), _Column("Note", 0, 8),
)
_EVENT_COLUMNS = (
    _Column("Time (UTC)", 19, 1), _Column("Actor", 22, 4), _Column("Action", 18, 3), _Column("IP", 16, 3),
    _Column("Detail", 0, 10),
)


def _party_values(party: TrailParty) -> list[str | tuple[str, ...]]:
    validated = (party.method, _utc(party.validated_at)) if party.method else ("-",)
    return [str(party.order), (party.name, party.email), party.role, party.status, validated,
            _utc(party.signed_at), party.note or ""]


def _event_values(event: TrailEvent) -> list[str | tuple[str, ...]]:
    return [_utc(event.at), event.actor, event.action, event.ip or "-", event.detail]


def _heading(text: str, size: int, leading: int, space_before: float, max_lines: int = 1) -> _Row:
    width = _chars(size)
    return _Row((_Cell(0, width, _wrap(text, width, max_lines), bold=True),), size, leading, space_before)


def _facts(trail: CompletionTrail) -> list[_Row]:
    """The envelope's identifying values as label/value rows."""
    label = 18
    value = _chars(_BODY) - label - _GAP
    facts = (
        ("Envelope", trail.envelope_id), ("Organisation", trail.organisation),
        ("Created (UTC)", _utc(trail.created_at)), ("Completed (UTC)", _utc(trail.completed_at)),
        ("Original SHA-256", trail.original_sha256), ("Final SHA-256", trail.final_sha256),
        ("Parties", str(len(trail.parties))), ("Events", str(len(trail.events))),
    )
    return [
        _Row((_Cell(0, label, (name,), bold=True), _Cell(label + _GAP, value, _wrap(text, value, 3))))
        for name, text in facts
    ]


class _Flow:
    """Rows placed top to bottom onto as many pages as they need."""

    def __init__(self) -> None:
        self.pages: list[list[tuple[float, _Row]]] = [[]]  # (top of the row, row) per page
        self._top = _PAGE_HEIGHT - _MARGIN

    def add(self, rows: Sequence[_Row], repeat: Sequence[_Row] = ()) -> None:
        """``rows`` together on one page; on a new page, ``repeat`` (a table's header) first."""
        if self._top - sum(row.height for row in rows) < _MARGIN + _FOOTER and self.pages[-1]:
            self.pages.append([])
            self._top = _PAGE_HEIGHT - _MARGIN
            for row in repeat:
                self._put(row)
        for row in rows:
            self._put(row)

    def _put(self, row: _Row) -> None:
        top = self._top if not self.pages[-1] else self._top - row.space_before
        self.pages[-1].append((top, row))
        self._top = top - row.leading * max(len(cell.lines) for cell in row.cells)


def _layout(trail: CompletionTrail) -> _Flow:
    flow = _Flow()
    flow.add([_heading("Completion certificate", _TITLE, _TITLE_LEADING, 0)])
    flow.add([_heading(trail.title, _SUBTITLE, _SUBTITLE_LEADING, 4, max_lines=3)])
    flow.add([_heading("All times are UTC. Hashes are of the PDF as submitted and as completed.",
                       _BODY, _BODY_LEADING, 4)])
    flow.add(_facts(trail))
    for name, columns, values in (
        ("Parties", _PARTY_COLUMNS, [_party_values(p) for p in sorted(trail.parties, key=lambda p: p.order)]),
        ("Event trail", _EVENT_COLUMNS, [_event_values(e) for e in trail.events]),
    ):
        header, rows = _table(columns, values)
        title = _heading(name, _HEADING, _HEADING_LEADING, _SECTION_SPACE)
        flow.add([title, header, *rows[:1]])
        for row in rows[1:]:
            flow.add([row], repeat=[header])
    return flow


_STYLES = {
    bold: TextBoxStyle(
        font=SimpleFontEngineFactory("Courier-Bold" if bold else "Courier", _COURIER_ADVANCE),
        box_layout_rule=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MIN, y_align=layout.AxisAlignment.ALIGN_MAX
        ),
    )
    for bold in (False, True)
}
_FONT_NAMES = {False: "F1", True: "F2"}


def _cell_ops(writer: PdfFileWriter, row: _Row, cell: _Cell, top: float) -> bytes:
    """A cell's text, drawn by pyHanko's TextBox in a box exactly as large as its lines."""
    base = _STYLES[cell.bold]
    style = TextBoxStyle(font=base.font, font_size=row.size, leading=row.leading,
                         box_layout_rule=base.box_layout_rule)
    height = row.leading * len(cell.lines)
    width = cell.width * row.size * _COURIER_ADVANCE
    box = TextBox(style, writer, box=layout.BoxConstraints(width + 1, height), font_name=_FONT_NAMES[cell.bold])
    box.content = "\n".join(cell.lines)
    x = _MARGIN + cell.column * row.size * _COURIER_ADVANCE
    return b"q 1 0 0 1 %g %g cm %s Q" % (x, top - height, box.render())  # type: ignore[no-untyped-call]


def _page_ops(writer: PdfFileWriter, placed: list[tuple[float, _Row]], footer: str) -> bytes:
    ops: list[bytes] = []
    for top, row in placed:
        ops.extend(_cell_ops(writer, row, cell, top) for cell in row.cells)
        if row.rule_below:
            y = top - row.leading * max(len(cell.lines) for cell in row.cells) - 1
            ops.append(b"q 0.5 G 0.5 w %g %g m %g %g l S Q" % (_MARGIN, y, _PAGE_WIDTH - _MARGIN, y))
    footer_row = _Row((_Cell(0, _chars(_BODY), _wrap(footer, _chars(_BODY), 1)),))
    ops.append(_cell_ops(writer, footer_row, footer_row.cells[0], _FOOTER + _BODY_LEADING))
    return b"\n".join(ops)


def completion_pdf(trail: CompletionTrail) -> bytes:
    """The certificate of ``trail`` as an unsigned A4 PDF (the box signs it, B-LTA)."""
    flow = _layout(trail)
    writer = PdfFileWriter()  # type: ignore[no-untyped-call]  # pyHanko leaves its writer API unannotated
    writer.document_meta.title = _printable(f"Completion certificate: {trail.title}")
    writer.document_meta.creator = "E-signature Box"
    # The cells' TextBoxes name the fonts F1/F2; the page holds them once instead of per cell.
    fonts = generic.DictionaryObject({  # type: ignore[no-untyped-call]
        pdf_name("/" + _FONT_NAMES[bold]): writer.add_object(
            _STYLES[bold].font.create_font_engine(writer).as_resource()
        )
        for bold in (False, True)
    })
    resources = generic.DictionaryObject({pdf_name("/Font"): fonts})  # type: ignore[no-untyped-call]
    total = len(flow.pages)
    for number, placed in enumerate(flow.pages, start=1):
        footer = f"Completion certificate - envelope {trail.envelope_id} - page {number} of {total}"
        stream = generic.StreamObject(stream_data=_page_ops(writer, placed, footer))
        stream.compress()  # type: ignore[no-untyped-call]
        page = PageObject(writer.add_object(stream), (0, 0, _PAGE_WIDTH, _PAGE_HEIGHT), resources)  # type: ignore[no-untyped-call]
        writer.insert_page(page)  # type: ignore[no-untyped-call]
    out = io.BytesIO()
    writer.write(out)  # type: ignore[no-untyped-call]
    return out.getvalue()
