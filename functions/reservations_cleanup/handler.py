"""reservations.cleanup: cancel orders pending for more than ``older_than_minutes`` (30) and release the stock
they held, one transaction per order, at most ``limit`` orders per run.

Each order's transaction locks it (still pending; one being paid is skipped), locks its inventory rows in key order,
lowers their ``reserved`` by the order's quantities (never below zero) and cancels it: an order is either cancelled
with its stock released, or untouched. Idempotent by nature, so no ``ctx.transaction()``: a cancelled order is no
longer pending, and a retry after a crash carries on with the orders still pending. Overlapping runs share the
orders (SKIP LOCKED) instead of waiting for each other.
"""

from __future__ import annotations

from typing import Any

from shared.jobs import RESERVATIONS_CLEANUP
from shared.payloads import ReservationsCleanup
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.reservations_cleanup")


def cancel_stale_orders(payload: ReservationsCleanup, ctx: JobContext) -> dict[str, Any]:
    conn = ctx.connection()
    cancelled = 0
    while cancelled < payload.limit:
        with conn.transaction():
            row = conn.execute(QUERIES["order_claim_stale"], {"older_than_minutes": payload.older_than_minutes}).fetchone()
            if row is None:
                break
            order = {"order_id": row[0]}
            conn.execute(QUERIES["inventory_lock_for_order"], order)
            conn.execute(QUERIES["inventory_release_for_order"], order)
            conn.execute(QUERIES["order_cancel"], order)
        cancelled += 1
    summary = {"cancelled": cancelled, "stopped_early": cancelled >= payload.limit}
    ctx.logger.info("cancelled stale pending orders", extra=summary)
    return summary


handler = job_handler(RESERVATIONS_CLEANUP, cancel_stale_orders)
