"""pdf.render: render an invoice (a bill) or a statement (a contract) to PDF, store it in S3 and record its key.

The billing rows are read in one short transaction, the PDF is rendered and put to S3 with no transaction open, and
the document's row is upserted in the job's ``ctx.transaction()``. The key is the document's name
(``documents/<kind>/<subject id>.pdf``) and the rendering has no date in it, so a retry or a second run writes the
same bytes to the same object and updates the same row. The run's result (``s3_key``, ``bytes``) is what a
``pdf.package`` parent reads from its children.
"""

from __future__ import annotations

from shared.demo import documents
from shared.demo.pdf import render
from shared.jobs import PDF_RENDER
from shared.payloads import DocumentKind, PdfRender
from shared.runtime import JobContext, PermanentJobError, job_handler

SUBJECTS = {DocumentKind.INVOICE: "bill", DocumentKind.STATEMENT: "contract"}


def render_document(payload: PdfRender, ctx: JobContext) -> dict[str, object]:
    conn = ctx.connection()
    with conn.transaction():
        document = documents.read(conn, payload.kind, payload.subject_id)
    if document is None:
        raise PermanentJobError(f"no {SUBJECTS[payload.kind]} {payload.subject_id}: cannot render its {payload.kind.value}")
    pdf = render(document)
    key = documents.document_key(payload.kind, payload.subject_id)
    documents.s3().put_object(Bucket=documents.bucket(), Key=key, Body=pdf, ContentType="application/pdf")
    result = {"kind": payload.kind.value, "subject_id": payload.subject_id, "s3_key": key, "bytes": len(pdf)}
    with ctx.transaction() as conn:
        documents.record(conn, payload.kind.value, payload.subject_id, key, len(pdf))
        ctx.set_result(result)  # commits with the run: the flow's parent may start the moment it does
    ctx.logger.info("document rendered", extra=result)
    return result


handler = job_handler(PDF_RENDER, render_document)
