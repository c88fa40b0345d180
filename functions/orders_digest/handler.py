"""orders.digest: the morning email to each store owner, and one to operations.

For every store with unprocessed ``demo.digest_items``: one ``email.send`` (template ``digest``) to the store's
owner listing its oldest items (at most ``max_items_per_store``; the rest wait for the next run), and those items
marked processed. Then one operations email (to ``CONVEYOR_OPS_EMAIL``, default ``ops@conveyor.example``) with the
count per store (and any store whose owner's address email.send refuses: its items stay unprocessed). All of it in one ``ctx.transaction()``: the items are marked if and only if their emails are
enqueued (and the run is marked succeeded with them), so a crash sends nothing twice and loses nothing. A run with
nothing new enqueues nothing: rerunning the same day after a run sends no email.

The email's variables (all text), as email.send's ``digest`` template takes them: ``name`` (the owner's;
"operations"), ``store`` (the store's name; "all stores" for operations), ``date`` (the digest's day, UTC),
``count`` (the items listed) and ``items`` (one ``- kind: summary`` line each).
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from shared.jobs import EMAIL_SEND, ORDERS_DIGEST
from shared.outbox import enqueue_many
from shared.payloads import EmailSend, EmailTemplate, OrdersDigest
from shared.runtime import JobContext, job_handler
from shared.settings import OPS_EMAIL
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.orders_digest")

OPS_EMAIL_VARIABLE = OPS_EMAIL  # set on AWS by the stack (conveyor:opsEmail), as the registry entry asks
DEFAULT_OPS_EMAIL = "ops@conveyor.example"
# One line per item; a longer summary is cut here so a chatty item cannot blow the email (or the SQS message) up.
MAX_SUMMARY_CHARS = 300


def item_line(kind: str, summary: str) -> str:
    summary = " ".join(summary.split())
    if len(summary) > MAX_SUMMARY_CHARS:
        summary = summary[: MAX_SUMMARY_CHARS - 1] + "…"
    return f"- {kind}: {summary}"


def owner_email(store: dict[str, Any], items: list[dict[str, Any]], left: int, day: str) -> EmailSend:
    lines = [item_line(i["kind"], i["summary"]) for i in items]
    if left:
        lines.append(f"(and {left} more in the next digest)")
    return EmailSend(
        to=store["owner_email"],
        template=EmailTemplate.DIGEST,
        subject=f"{store['store_name']}: {len(items)} new for {day}",
        variables={
            "name": store["owner_name"], "store": store["store_name"], "date": day, "count": str(len(items)),
            "items": "\n".join(lines),
        },
    )


def operations_email(
    to: str, stores: list[dict[str, Any]], counts: dict[int, int], left: dict[int, int], day: str, refused: list[dict[str, Any]]
) -> EmailSend:
    lines = []
    for store in stores:
        line = f"- {store['store_name']} (store {store['store_id']}): {counts[store['store_id']]}"
        if left.get(store["store_id"]):
            line += f", {left[store['store_id']]} left for the next digest"
        lines.append(line)
    for store in refused:
        lines.append(
            f"- {store['store_name']} (store {store['store_id']}): not sent, the owner's address "
            f"{store['owner_email']!r} is not one email.send accepts; {counts[store['store_id']]} items kept"
        )
    total = sum(counts[store["store_id"]] for store in stores)
    return EmailSend(
        to=to,
        template=EmailTemplate.DIGEST,
        subject=f"Orders digest {day}: {total} items for {len(stores)} stores",
        variables={"name": "operations", "store": "all stores", "date": day, "count": str(total), "items": "\n".join(lines)},
    )


def digest(payload: OrdersDigest, ctx: JobContext) -> dict[str, int]:
    day = (ctx.scheduled_for or datetime.now(UTC)).astimezone(UTC).date().isoformat()
    ops_to = os.environ.get(OPS_EMAIL_VARIABLE) or DEFAULT_OPS_EMAIL
    with ctx.transaction() as conn:
        cursor = conn.execute(QUERIES["digest_items_take"], {"max_items": payload.max_items_per_store})
        columns = [column.name for column in cursor.description]
        by_store: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in cursor:
            item = dict(zip(columns, row))
            by_store[item["store_id"]].append(item)
        if not by_store:
            result = {"stores": 0, "items": 0}
            ctx.set_result(result)
            return result
        store_ids = sorted(by_store)
        left = dict(conn.execute(QUERIES["digest_items_left"], {"store_ids": store_ids}).fetchall())
        stores, emails, refused = [], [], []
        for store_id in store_ids:
            items = sorted(by_store[store_id], key=lambda i: (i["created_at"], i["id"]))
            store = items[0]  # store_id, store_name, owner_email ride on every item
            try:
                emails.append(owner_email(store, items, left.get(store_id, 0), day))
            except ValidationError:
                # One owner's unusable address must not hold back every other store's digest: operations hear of it.
                refused.append(store)
                conn.execute(QUERIES["digest_items_release"], {"ids": [i["id"] for i in items]})
                continue
            stores.append(store)
        counts = {store_id: len(by_store[store_id]) for store_id in store_ids}
        emails.append(operations_email(ops_to, stores, counts, left, day, refused))
        enqueue_many(conn, EMAIL_SEND, emails)
        result = {"stores": len(stores), "items": sum(counts[s["store_id"]] for s in stores), "refused": len(refused)}
        ctx.set_result(result)
    ctx.logger.info("digest enqueued", extra=result)
    return result


handler = job_handler(ORDERS_DIGEST, digest)
