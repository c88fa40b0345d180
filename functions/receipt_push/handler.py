"""receipt.push: post a sale's tax receipt to the receipt service and store the id it answers on the sale.

Three steps, and no transaction is open during the HTTP call: read the sale (autocommit, no lock), POST it, store
the receipt id in ``ctx.transaction()`` (which marks the run succeeded with it). A sale that already has a receipt
id is done: nothing is posted.

A crash between the POST and the commit posts again on the retry, and a second job for the same sale (a re-enqueue
after a dead job, two in flight) may post before the first stores. The ``Idempotency-Key`` header is the sale
(``sale-<id>``), not the job: the same on every attempt of every job for that sale, so the service answers the
receipt it already made instead of registering a second one. The UPDATE only fills an empty receipt id, so whatever
happens the first stored id is never replaced.

Errors come from the integration client: 5xx, timeouts and connection errors retry with the job's backoff; a 429
with Retry-After retries then; any other 4xx is permanent (the sale goes to the DLQ with the service's answer).
"""

from __future__ import annotations

from typing import Any

from shared.integrations.http import Integration
from shared.jobs import RECEIPT_PUSH
from shared.payloads import ReceiptPush
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.receipt_push")
INTEGRATION = "receipts"


class ReceiptResponseInvalid(Exception):
    """The service accepted the receipt but answered without a receipt id: retried (the sale's idempotency key makes
    the next post answer the same receipt), and dead-lettered if it keeps doing so."""


def receipt_body(sale: dict[str, Any]) -> dict[str, Any]:
    # Money as decimal strings: a float would round the cents.
    return {
        "sale_id": sale["id"],
        "store_id": sale["store_id"],
        "total": str(sale["total"]),
        "vat": str(sale["vat"]),
        "created_at": sale["created_at"].isoformat(),
    }


def idempotency_key(sale_id: int) -> str:
    # The sale, not the job, is what must be registered once: every job for it posts under this key.
    return f"sale-{sale_id}"


def push_receipt(payload: ReceiptPush, ctx: JobContext) -> dict[str, Any]:
    cursor = ctx.connection().execute(QUERIES["sale_get"], {"sale_id": payload.sale_id})
    row = cursor.fetchone()
    if row is None:
        raise PermanentJobError(f"sale {payload.sale_id} does not exist")
    sale = dict(zip([column.name for column in cursor.description], row))
    if sale["receipt_id"] is not None:
        ctx.logger.info("receipt already stored", extra={"sale_id": payload.sale_id, "receipt_id": sale["receipt_id"]})
        return {"receipt_id": sale["receipt_id"], "stored": False}

    response = Integration.from_env(INTEGRATION).request(
        "POST", "/receipts", json=receipt_body(sale), headers={"Idempotency-Key": idempotency_key(payload.sale_id)}
    )
    answer = response.json()
    receipt_id = answer.get("receipt_id") if isinstance(answer, dict) else None
    if not isinstance(receipt_id, (str, int)) or isinstance(receipt_id, bool) or str(receipt_id) == "":
        raise ReceiptResponseInvalid(f"the receipt service answered {response.status} without a receipt_id: {response.text[:500]}")
    receipt_id = str(receipt_id)

    with ctx.transaction() as conn:
        stored = conn.execute(QUERIES["sale_receipt_store"], {"sale_id": payload.sale_id, "receipt_id": receipt_id}).rowcount
        result = {"receipt_id": receipt_id, "stored": bool(stored)}
        ctx.set_result(result)  # commits with the run
    if not stored:
        ctx.logger.warning("sale already had a receipt id; kept it", extra={"sale_id": payload.sale_id, "posted_receipt_id": receipt_id})
    return result


handler = job_handler(RECEIPT_PUSH, push_receipt)
