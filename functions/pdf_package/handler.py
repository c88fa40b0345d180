"""pdf.package: a flow's parent (see shared.demo.documents.package_invoices); zips the PDFs its ``pdf.render``
children stored into ``packages/<name>.zip`` and records it in demo.documents.

It runs once every child has ended, and under the flow's default policy only if all of them succeeded (a child
that failed for good fails this job before it runs). It still checks: a child that did not succeed, or left no
``s3_key``, stops it with a permanent error rather than a zip missing a document. The PDFs are read and the zip put
with no transaction open; the row is upserted in ``ctx.transaction()``. The same children give the same zip, so a
retry overwrites the object with the same bytes and updates the same row.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from botocore.exceptions import ClientError

from shared.demo import documents
from shared.jobs import PDF_PACKAGE
from shared.payloads import PdfPackage
from shared.runtime import JobContext, PermanentJobError, job_handler


def package(payload: PdfPackage, ctx: JobContext) -> dict[str, object]:
    children = ctx.children()
    keys = []
    for child in children:
        key = child.result.get("s3_key") if isinstance(child.result, dict) else None
        if child.status != "succeeded" or not key:
            raise PermanentJobError(
                f"child {child.id} ({child.job_name}) is {child.status} with result {child.result!r:.200}: "
                "no document to package"
            )
        keys.append(key)
    bucket = documents.bucket()
    files = []
    for key in keys:
        try:
            body = documents.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise PermanentJobError(f"document {key} is no longer in bucket {bucket}") from exc
            raise
        # documents/invoice/42.pdf -> invoice-42.pdf: kinds keep their subjects' names apart inside the zip
        path = PurePosixPath(key)
        files.append((f"{path.parent.name}-{path.name}", body))
    archive = documents.zip_documents(files)
    key = documents.package_key(payload.name)
    documents.s3().put_object(Bucket=bucket, Key=key, Body=archive, ContentType="application/zip")
    result = {"s3_key": key, "bytes": len(archive), "documents": len(files)}
    with ctx.transaction() as conn:
        documents.record(conn, documents.PACKAGE, None, key, len(archive))
        ctx.set_result(result)
    ctx.logger.info("documents packaged", extra=result)
    return result


handler = job_handler(PDF_PACKAGE, package)
