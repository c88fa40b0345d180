"""Billing documents: what an invoice and a statement say (read from the billing tables), where their PDFs live in
S3, their rows in ``demo.documents``, and the flow that renders many invoices and zips them (``package_invoices``).

Keys name documents, so a document rendered again lands on the same object and the same row:
``documents/<kind>/<subject id>.pdf`` (an invoice's subject is a bill, a statement's a contract) and
``packages/<name>.zip``. The jobs (functions/pdf_render, functions/pdf_package) read here in a short transaction,
talk to S3 with none open, and record the result with :func:`record` in their ``ctx.transaction()``.
"""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from shared.demo.pdf import Column, Document
from shared.jobs import PDF_PACKAGE, PDF_RENDER
from shared.ledger.flows import enqueue_flow
from shared.payloads import DocumentKind, PdfPackage, PdfRender
# The bucket the stack creates for documents (infra/documents.py): its variable is named once, in shared.settings.
from shared.settings import DOCUMENTS_BUCKET
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.demo", "documents.sql")


PACKAGE = "package"  # demo.documents.kind of a zip (the PDFs' kinds are DocumentKind)


class MissingBucket(RuntimeError):
    def __init__(self) -> None:
        super().__init__(f"{DOCUMENTS_BUCKET} is not set: the documents bucket is where PDFs and packages are stored")


def bucket() -> str:
    name = os.environ.get(DOCUMENTS_BUCKET)
    if not name:
        raise MissingBucket()
    return name


_s3 = None


def s3() -> Any:
    """The S3 client the document jobs share (made on first use, kept for the container's later invocations)."""
    global _s3
    if _s3 is None:
        import boto3

        _s3 = boto3.client("s3")
    return _s3


def document_key(kind: DocumentKind, subject_id: int) -> str:
    return f"documents/{DocumentKind(kind).value}/{subject_id}.pdf"


def package_key(name: str) -> str:
    return f"packages/{name}.zip"


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def _party(row: dict[str, Any]) -> list[tuple[str, str]]:
    contact = ", ".join(part for part in (row["phone"], row["email"]) if part)
    return [("Tenant", row["tenant"]), ("Contact", contact), ("Unit", f"{row['property']}, {row['unit']}")]


def invoice(conn: psycopg.Connection, bill_id: int) -> Document | None:
    """Bill ``bill_id``'s invoice, or None when there is no such bill."""
    with conn.cursor(row_factory=dict_row) as cur:
        bill = cur.execute(QUERIES["invoice_read"], {"bill_id": bill_id}).fetchone()
    if bill is None:
        return None
    period = bill["period"].strftime("%Y-%m")
    status = "paid" if bill["status"] == "paid" else f"open, due {bill['due_on'].isoformat()}"
    return Document(
        title=f"Invoice {bill['reference']}",
        fields=[("Reference", bill["reference"]), *_party(bill), ("Contract", str(bill["contract_id"])),
                ("Period", period), ("Due on", bill["due_on"].isoformat())],  # fmt: skip
        columns=[Column("Item", 345), Column("Amount", 150, numeric=True)],
        rows=[(f"Rent {period}", _money(bill["amount"]))],
        totals=[("Total", _money(bill["amount"])), ("Status", status)],
        note=f"Write {bill['reference']} on your bank transfer so the payment is matched to this bill.",
    )


def statement(conn: psycopg.Connection, contract_id: int) -> Document | None:
    """Contract ``contract_id``'s statement of account (its bills and the payments matched to them), or None when
    there is no such contract. Call it inside a transaction: the contract and its entries are read apart."""
    with conn.cursor(row_factory=dict_row) as cur:
        contract = cur.execute(QUERIES["contract_read"], {"contract_id": contract_id}).fetchone()
        if contract is None:
            return None
        entries = cur.execute(QUERIES["statement_entries"], {"contract_id": contract_id}).fetchall()
    balance = Decimal(0)
    rows = []
    for entry in entries:
        charge = entry["kind"] == "charge"
        balance += entry["amount"] if charge else -entry["amount"]
        amount = _money(entry["amount"])
        rows.append((entry["on_day"].isoformat(), entry["description"], amount if charge else "", "" if charge else amount,
                     _money(balance)))  # fmt: skip
    charged = sum((e["amount"] for e in entries if e["kind"] == "charge"), Decimal(0))
    paid = sum((e["amount"] for e in entries if e["kind"] == "payment"), Decimal(0))
    return Document(
        title=f"Statement, contract {contract['id']}",
        fields=[*_party(contract), ("Term", f"{contract['starts_on'].isoformat()} to {contract['ends_on'].isoformat()}"),
                ("Monthly rent", _money(contract["monthly_rent"])), ("Status", contract["status"])],  # fmt: skip
        columns=[Column("Date", 70), Column("Entry", 185), Column("Charge", 80, numeric=True),
                 Column("Payment", 80, numeric=True), Column("Balance", 80, numeric=True)],  # fmt: skip
        rows=rows,
        totals=[("Charged", _money(charged)), ("Paid", _money(paid)), ("Balance due", _money(charged - paid))],
    )


def read(conn: psycopg.Connection, kind: DocumentKind, subject_id: int) -> Document | None:
    """The document of ``kind`` about ``subject_id`` (a bill for an invoice, a contract for a statement)."""
    return invoice(conn, subject_id) if kind is DocumentKind.INVOICE else statement(conn, subject_id)


def record(conn: psycopg.Connection, kind: str, subject_id: int | None, s3_key: str, size: int) -> int:
    """Record (or update) the document stored at ``s3_key``; returns its row id."""
    row = conn.execute(
        QUERIES["document_upsert"], {"kind": kind, "subject_id": subject_id, "s3_key": s3_key, "bytes": size}
    ).fetchone()
    assert row is not None
    return row[0]


def zip_documents(files: Iterable[tuple[str, bytes]]) -> bytes:
    """A zip of ``(name, content)`` pairs, deflated (the PDFs' streams are not compressed, so this is where they
    shrink); a fixed date keeps the zip's bytes the same when its PDFs are."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return out.getvalue()


def package_invoices(conn: psycopg.Connection, name: str, bill_ids: Sequence[int]) -> uuid.UUID:
    """Enqueue, in the caller's transaction, a ``pdf.render`` of each bill's invoice and, once all of them
    succeeded, a ``pdf.package`` zipping them into ``packages/<name>.zip``. Returns the package job's id. A bill
    whose invoice cannot be rendered fails the package (the flow's default policy): no partial zip is made."""
    flow = enqueue_flow(
        conn,
        (PDF_PACKAGE, PdfPackage(name=name)),
        [(PDF_RENDER, PdfRender(kind=DocumentKind.INVOICE, subject_id=bill_id)) for bill_id in bill_ids],
    )
    return flow.parent
