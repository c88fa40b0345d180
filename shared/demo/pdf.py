"""A small PDF layout for the billing documents (an invoice, a statement): a title, labelled fields, a table and its
totals, on A4 pages, written with pydyf (a 0.1 MB pure-Python PDF writer; see docs/BENCHMARKS.md, "PDF rendering").

Text uses PDF's built-in Helvetica and Courier, so nothing is embedded and a page is a few kilobytes; those fonts
cover Windows-1252 (Latin), and any other character is printed as ``?``. Amounts are set in Courier, whose every
glyph is 0.6 em wide, so right-aligning them needs no font metrics. Rows that do not fit continue on a new page
under the repeated table header. Content streams are not compressed: a one-page invoice stays around 2 KB, and the
text stays searchable by anything that reads the bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import pydyf

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
MARGIN = 50
ROW = 16  # baseline-to-baseline distance of table rows
COURIER_ADVANCE = 0.6  # width of every Courier glyph, in ems


@dataclass(frozen=True)
class Column:
    title: str
    width: float  # points
    numeric: bool = False  # right-aligned, in Courier


@dataclass(frozen=True)
class Document:
    """What a billing document says; :func:`render` lays it out."""

    title: str
    fields: Sequence[tuple[str, str]]  # label, value: the block under the title
    columns: Sequence[Column]
    rows: Sequence[Sequence[str]]
    totals: Sequence[tuple[str, str]] = ()  # label, amount: under the table, aligned with its last column
    note: str = ""


def _text(value: str) -> bytes:
    return value.encode("cp1252", errors="replace")


@dataclass
class _Page:
    stream: pydyf.Stream = field(default_factory=pydyf.Stream)

    def text(self, x: float, y: float, value: str, *, size: float = 10, font: str = "F1") -> None:
        self.stream.begin_text()
        self.stream.set_font_size(font, size)
        self.stream.set_text_matrix(1, 0, 0, 1, x, y)
        self.stream.show_text_string(_text(value))
        self.stream.end_text()

    def right(self, x_end: float, y: float, value: str, *, size: float = 10, font: str = "F3") -> None:
        """``value`` in Courier (``F3``, or ``F4`` bold) ending at ``x_end``."""
        self.text(x_end - len(value) * COURIER_ADVANCE * size, y, value, size=size, font=font)

    def rule(self, y: float) -> None:
        self.stream.set_line_width(0.5)
        self.stream.move_to(MARGIN, y)
        self.stream.line_to(PAGE_WIDTH - MARGIN, y)
        self.stream.stroke()


def _table_header(page: _Page, columns: Sequence[Column], y: float) -> float:
    x = MARGIN
    for column in columns:
        if column.numeric:
            page.right(x + column.width, y, column.title, font="F4")
        else:
            page.text(x, y, column.title, font="F2")
        x += column.width
    page.rule(y - 5)
    return y - ROW - 4


def _row(page: _Page, columns: Sequence[Column], cells: Sequence[str], y: float) -> None:
    x = MARGIN
    for column, cell in zip(columns, cells):
        if column.numeric:
            page.right(x + column.width, y, cell)
        else:
            page.text(x, y, cell)
        x += column.width


def render(document: Document) -> bytes:
    """The PDF of ``document``: one page, or more when its rows do not fit."""
    pages = [_Page()]
    page = pages[0]
    y = PAGE_HEIGHT - MARGIN - 18
    page.text(MARGIN, y, document.title, size=18, font="F2")
    y -= 30
    for label, value in document.fields:
        page.text(MARGIN, y, label, font="F2")
        page.text(MARGIN + 110, y, value)
        y -= 14
    y = _table_header(page, document.columns, y - 16)
    table_end = MARGIN + sum(column.width for column in document.columns)
    for cells in document.rows:
        if y < MARGIN + ROW:
            page = _Page()
            pages.append(page)
            y = _table_header(page, document.columns, PAGE_HEIGHT - MARGIN - 10)
        _row(page, document.columns, cells, y)
        y -= ROW
    if document.totals:
        if y < MARGIN + ROW * (len(document.totals) + 1):
            page = _Page()
            pages.append(page)
            y = PAGE_HEIGHT - MARGIN - 10
        page.rule(y + ROW - 6)
        for label, amount in document.totals:
            page.text(table_end - 250, y, label, font="F2")
            page.right(table_end, y, amount)
            y -= ROW
    if document.note:
        page.text(MARGIN, MARGIN, document.note, size=8)
    return _write(pages, document.title)


def _write(pages: list[_Page], title: str) -> bytes:
    pdf = pydyf.PDF()
    fonts = pydyf.Dictionary()
    for key, base in (("F1", "Helvetica"), ("F2", "Helvetica-Bold"), ("F3", "Courier"), ("F4", "Courier-Bold")):
        font = pydyf.Dictionary(
            {"Type": "/Font", "Subtype": "/Type1", "BaseFont": f"/{base}", "Encoding": "/WinAnsiEncoding"}
        )
        pdf.add_object(font)
        fonts[key] = font.reference
    for page in pages:
        pdf.add_object(page.stream)
        pdf.add_page(
            pydyf.Dictionary(
                {
                    "Type": "/Page",
                    "Parent": pdf.pages.reference,
                    "MediaBox": pydyf.Array([0, 0, PAGE_WIDTH, PAGE_HEIGHT]),
                    "Contents": page.stream.reference,
                    "Resources": pydyf.Dictionary({"Font": fonts}),
                }
            )
        )
    pdf.info["Title"] = pydyf.String(_text(title))
    pdf.info["Producer"] = pydyf.String(b"Conveyor")
    out = io.BytesIO()
    pdf.write(out)
    return out.getvalue()
