"""pdf.render and pdf.package against a real PostgreSQL and moto's S3: the real handlers on SQS-shaped events, and
the package flow through the local runtime (relay, pollers, the flow trigger)."""

import io
import os
import re
import time
import zipfile
from datetime import date

import boto3
import pytest

from functions.pdf_package.handler import handler as package_handler
from functions.pdf_render.handler import handler as render_handler
from shared.database import Database
from shared.demo import documents
from shared.demo.documents import DOCUMENTS_BUCKET, package_invoices
from shared.jobs import PDF_PACKAGE, PDF_RENDER
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.queues import QueueDirectory
from shared.registry import Registry
from shared.runtime import Outcome
from shared.settings import Settings
from shared.testing import invoke


def billing(conn, *, bills=1, tenant="Saraa Ganbold"):
    """A property, unit, tenant and contract with ``bills`` monthly bills from 2026-09; returns (contract, bill ids)."""
    prop = conn.execute("INSERT INTO demo.properties (name) VALUES ('Sunrise Tower') RETURNING id").fetchone()[0]
    unit = conn.execute("INSERT INTO demo.units (property_id, label) VALUES (%s, '12B') RETURNING id", (prop,)).fetchone()[0]
    person = conn.execute(
        "INSERT INTO demo.tenants (name, phone, email) VALUES (%s, '+97699112233', 'saraa@example.mn') RETURNING id",
        (tenant,),
    ).fetchone()[0]
    contract = conn.execute(
        """INSERT INTO demo.contracts (unit_id, tenant_id, monthly_rent, starts_on, ends_on)
           VALUES (%s, %s, 1250000, '2026-09-01', '2027-08-31') RETURNING id""",
        (unit, person),
    ).fetchone()[0]
    ids = [
        conn.execute(
            """INSERT INTO demo.bills (contract_id, period, amount, reference, due_on)
               VALUES (%s, %s, 1250000, %s, %s) RETURNING id""",
            (contract, date(2026, 9 + i, 1), f"B-{contract}-2026-{9 + i:02d}", date(2026, 9 + i, 10)),
        ).fetchone()[0]
        for i in range(bills)
    ]
    return contract, ids


def page_count(pdf: bytes) -> int:
    return int(re.search(rb"/Type /Pages/Kids \[.*?\]/Count (\d+)", pdf).group(1))


def documents_rows(conn):
    return conn.execute("SELECT id, kind, subject_id, s3_key, bytes, rendered_at IS NOT NULL FROM demo.documents ORDER BY id").fetchall()


@pytest.fixture
def bucket(aws_endpoint, stage, monkeypatch):
    name = f"conveyor-{stage}-documents"
    monkeypatch.setenv(DOCUMENTS_BUCKET, name)
    monkeypatch.setattr(documents, "_s3", None)  # a client made for this session's moto server
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def bound(sqs, stage, db_url, bucket):
    ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    for handler in (render_handler, package_handler):
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    yield
    database.close()


def s3_object(bucket, key) -> bytes:
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_render_invoice_puts_a_pdf_in_s3_and_records_it(bound, bucket, conn, stage):
    _, (bill,) = billing(conn)
    result = invoke(render_handler, {"kind": "invoice", "subject_id": bill}, stage=stage)

    assert result.succeeded
    pdf = s3_object(bucket, f"documents/invoice/{bill}.pdf")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert page_count(pdf) == 1
    reference = conn.execute("SELECT reference FROM demo.bills WHERE id = %s", (bill,)).fetchone()[0]
    for text in (reference.encode(), b"Saraa Ganbold", b"Sunrise Tower, 12B", b"1,250,000.00"):
        assert text in pdf  # streams are not compressed: the invoice's text is in the bytes
    assert [row[1:] for row in documents_rows(conn)] == [("invoice", bill, f"documents/invoice/{bill}.pdf", len(pdf), True)]


def test_render_statement_lists_bills_and_matched_payments(bound, bucket, conn, stage):
    contract, bills = billing(conn, bills=2)
    conn.execute(
        """INSERT INTO demo.statement_lines (bank_ref, booked_on, amount, reference, status, matched_bill_id)
           VALUES ('KHAN-77001', '2026-09-08', 1250000, 'x', 'matched', %s),
                  ('KHAN-77002', '2026-09-09', 99, 'y', 'unmatched', NULL)""",
        (bills[0],),
    )
    result = invoke(render_handler, {"kind": "statement", "subject_id": contract}, stage=stage)

    assert result.succeeded
    pdf = s3_object(bucket, f"documents/statement/{contract}.pdf")
    assert pdf.startswith(b"%PDF-") and page_count(pdf) == 1
    assert b"KHAN-77001" in pdf and b"KHAN-77002" not in pdf  # only payments matched to this contract's bills
    assert b"Rent 2026-09" in pdf and b"Rent 2026-10" in pdf
    assert b"(Balance due) Tj" in pdf and b"(1,250,000.00) Tj" in pdf
    assert [row[1:4] for row in documents_rows(conn)] == [("statement", contract, f"documents/statement/{contract}.pdf")]


def test_a_long_statement_continues_on_more_pages(bound, bucket, conn, stage):
    contract, _ = billing(conn, bills=4)
    for i in range(60):  # 60 payments + 4 bills: more rows than one A4 page holds
        conn.execute(
            """INSERT INTO demo.statement_lines (bank_ref, booked_on, amount, status, matched_bill_id)
               SELECT %s, '2026-09-05', 1000, 'matched', id FROM demo.bills WHERE contract_id = %s AND period = '2026-09-01'""",
            (f"PAY-{i:03d}", contract),
        )
    assert invoke(render_handler, {"kind": "statement", "subject_id": contract}, stage=stage).succeeded
    pdf = s3_object(bucket, f"documents/statement/{contract}.pdf")
    assert page_count(pdf) == 2
    assert b"PAY-059" in pdf and pdf.count(b"(Balance) Tj") == 2  # the table header is repeated on page 2


@pytest.mark.parametrize("kind,what", [("invoice", "bill"), ("statement", "contract")])
def test_unknown_subject_is_permanent_and_stores_nothing(bound, bucket, conn, stage, kind, what):
    result = invoke(render_handler, {"kind": kind, "subject_id": 987654}, stage=stage)

    assert result.outcomes == [Outcome.DEAD]
    assert f"no {what} 987654" in result.reports[0].error
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=bucket)
    assert documents_rows(conn) == []


def test_rendering_twice_overwrites_the_same_object_and_row(bound, bucket, conn, stage):
    _, (bill,) = billing(conn)
    assert invoke(render_handler, {"kind": "invoice", "subject_id": bill}, stage=stage).succeeded
    first_pdf, first_rows = s3_object(bucket, f"documents/invoice/{bill}.pdf"), documents_rows(conn)

    assert invoke(render_handler, {"kind": "invoice", "subject_id": bill}, stage=stage).succeeded

    assert s3_object(bucket, f"documents/invoice/{bill}.pdf") == first_pdf  # no date in it: the same bytes
    assert documents_rows(conn) == first_rows  # the same row (same id), updated in place
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"documents/invoice/{bill}.pdf"]


# -- the package flow, through the local runtime ----------------------------------------------------------------------

# Only the two PDF jobs: the product's other handlers are not this test's concern.
pdf_registry = Registry()
pdf_registry.add(PDF_RENDER)
pdf_registry.add(PDF_PACKAGE)


def wait_for_end(conn, job_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT status, coalesce(reason, last_error) FROM conveyor.jobs WHERE id = %s", (job_id,)).fetchone()
        if row and row[0] in ("succeeded", "failed", "dead", "cancelled"):
            return row
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {row}")


def test_package_zips_every_invoice_after_all_renders_succeeded(runtime_factory, conn, stage, monkeypatch):
    _, bills = billing(conn, bills=3)
    monkeypatch.delenv(DOCUMENTS_BUCKET, raising=False)
    runtime_factory(registry=pdf_registry, handlers={"pdf.render": render_handler, "pdf.package": package_handler})
    bucket = os.environ[DOCUMENTS_BUCKET]
    assert bucket == f"conveyor-{stage}-documents"  # made by the local runtime's start, as `conveyor dev` does

    with conn.transaction():
        parent = package_invoices(conn, "invoices-2026-q4", bills)
    assert wait_for_end(conn, parent)[0] == "succeeded"

    archive = zipfile.ZipFile(io.BytesIO(s3_object(bucket, "packages/invoices-2026-q4.zip")))
    assert sorted(archive.namelist()) == sorted(f"invoice-{bill}.pdf" for bill in bills)
    for bill in bills:
        assert archive.read(f"invoice-{bill}.pdf") == s3_object(bucket, f"documents/invoice/{bill}.pdf")
    # The parent started only once every child had finished, each successfully.
    children = conn.execute(
        "SELECT status, finished_at FROM conveyor.runs WHERE parent_id = %s", (parent,)
    ).fetchall()
    started = conn.execute("SELECT first_started_at FROM conveyor.runs WHERE id = %s", (parent,)).fetchone()[0]
    assert len(children) == 3 and all(status == "succeeded" and finished <= started for status, finished in children)
    rows = documents_rows(conn)
    assert sorted(row[1] for row in rows) == ["invoice"] * 3 + ["package"]
    package_row = next(row for row in rows if row[1] == "package")
    assert package_row[2:5] == (None, "packages/invoices-2026-q4.zip", len(s3_object(bucket, "packages/invoices-2026-q4.zip")))


def test_a_child_that_fails_for_good_fails_the_package_without_a_zip(runtime_factory, conn, stage):
    _, bills = billing(conn, bills=2)
    runtime_factory(registry=pdf_registry, handlers={"pdf.render": render_handler, "pdf.package": package_handler})
    bucket = os.environ[DOCUMENTS_BUCKET]
    with conn.transaction():
        parent = package_invoices(conn, "broken", [*bills, 987654])

    status, reason = wait_for_end(conn, parent)

    assert status == "failed" and "no bill 987654" in reason
    # The parent never ran: no zip, no package row; the bills that exist still got their invoices.
    assert conn.execute("SELECT first_started_at FROM conveyor.runs WHERE id = %s", (parent,)).fetchone()[0] is None
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any(key.startswith("packages/") for key in keys)
    assert conn.execute("SELECT count(*) FROM demo.documents WHERE kind = 'package'").fetchone()[0] == 0


def test_package_refuses_children_that_left_no_document(runtime_factory, conn):
    """Under policy continue a parent runs whatever its children's ends: pdf.package still zips nothing partial."""
    from shared.ledger.flows import enqueue_flow

    _, (bill,) = billing(conn)
    runtime_factory(registry=pdf_registry, handlers={"pdf.render": render_handler, "pdf.package": package_handler})
    bucket = os.environ[DOCUMENTS_BUCKET]
    with conn.transaction():
        flow = enqueue_flow(
            conn, (PDF_PACKAGE, {"name": "partial"}),
            [(PDF_RENDER, {"kind": "invoice", "subject_id": bill}), (PDF_RENDER, {"kind": "invoice", "subject_id": 987654})],
            policy="continue",
        )  # fmt: skip

    status, reason = wait_for_end(conn, flow.parent)

    assert status == "dead" and "no document to package" in reason
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [f"documents/invoice/{bill}.pdf"]
    assert conn.execute("SELECT count(*) FROM demo.documents WHERE kind = 'package'").fetchone()[0] == 0
