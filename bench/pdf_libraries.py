"""The same one-page invoice (a title, five fields, one table row, two totals) rendered by each PDF library that was
a candidate for pdf.render (issue 15): the time of a cold first render (import included, as in a Lambda's first
invocation) and the median of warm renders. Run each library in its own process, with that library importable:

    PYTHONPATH=.:/tmp/pdf-pydyf     .venv/bin/python bench/pdf_libraries.py pydyf
    PYTHONPATH=.:/tmp/pdf-fpdf2     .venv/bin/python bench/pdf_libraries.py fpdf2
    PYTHONPATH=.:/tmp/pdf-reportlab .venv/bin/python bench/pdf_libraries.py reportlab

(``pip install --target /tmp/pdf-<name> <name>`` for the machine's own platform.) Prints the cold time, the warm
median over 200 renders and the PDF's size.
"""

from __future__ import annotations

import statistics
import sys
import time

FIELDS = [
    ("Reference", "B-2026-11-00042"),
    ("Tenant", "Bat-Erdene Dorj"),
    ("Unit", "Sunrise Tower, 12B"),
    ("Period", "2026-11"),
    ("Due on", "2026-11-10"),
]
ROW = ("Rent 2026-11", "1,250,000.00")
TOTALS = [("Total", "1,250,000.00"), ("Status", "open")]


def render_pydyf() -> bytes:
    from shared.demo.pdf import Column, Document, render

    return render(
        Document("Invoice", FIELDS, [Column("Item", 345), Column("Amount", 150, numeric=True)], [ROW], TOTALS)
    )


def render_fpdf2() -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="pt")
    pdf.set_compression(False)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 30, "Invoice", new_x="LMARGIN", new_y="NEXT")
    for label, value in FIELDS:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(110, 14, label)
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(0, 14, value, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(345, 16, "Item", border="B")
    pdf.cell(150, 16, "Amount", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Courier", "", 10)
    pdf.cell(345, 16, ROW[0])
    pdf.cell(150, 16, ROW[1], align="R", new_x="LMARGIN", new_y="NEXT")
    for label, amount in TOTALS:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(345, 16, label, align="R")
        pdf.set_font("Courier", "", 10)
        pdf.cell(150, 16, amount, align="R", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def render_reportlab() -> bytes:
    import io

    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen.canvas import Canvas

    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, pageCompression=0)
    y = A4[1] - 68
    canvas.setFont("Helvetica-Bold", 18)
    canvas.drawString(50, y, "Invoice")
    y -= 30
    for label, value in FIELDS:
        canvas.setFont("Helvetica-Bold", 10)
        canvas.drawString(50, y, label)
        canvas.setFont("Helvetica", 10)
        canvas.drawString(160, y, value)
        y -= 14
    y -= 16
    canvas.setFont("Helvetica-Bold", 10)
    canvas.drawString(50, y, "Item")
    canvas.drawRightString(545, y, "Amount")
    canvas.line(50, y - 5, 545, y - 5)
    y -= 20
    canvas.setFont("Courier", 10)
    canvas.drawString(50, y, ROW[0])
    canvas.drawRightString(545, y, ROW[1])
    for label, amount in TOTALS:
        y -= 16
        canvas.setFont("Helvetica-Bold", 10)
        canvas.drawString(295, y, label)
        canvas.setFont("Courier", 10)
        canvas.drawRightString(545, y, amount)
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def main(library: str) -> None:
    render = {"pydyf": render_pydyf, "fpdf2": render_fpdf2, "reportlab": render_reportlab}[library]
    started = time.perf_counter()
    pdf = render()
    cold = time.perf_counter() - started
    assert pdf.startswith(b"%PDF"), pdf[:20]
    warm = []
    for _ in range(200):
        started = time.perf_counter()
        render()
        warm.append(time.perf_counter() - started)
    print(f"{library}: cold {cold * 1000:.1f} ms, warm median {statistics.median(warm) * 1000:.2f} ms, {len(pdf)} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
