"""Sales: recording one enqueues its tax receipt in the same transaction.

``record_sale`` is what the application calls at the till. The sale row and its ``receipt.push`` job are written on
the caller's connection and commit together or not at all: a rolled-back sale never posts a receipt, and a
committed one always does (the relay publishes the job once the transaction commits). The job's dedup key is the
sale (``receipt:<id>``), so enqueueing it again while one is pending adds no second job.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg

from shared.jobs import RECEIPT_PUSH
from shared.outbox import enqueue
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.demo", "sales.sql")


def record_sale(conn: psycopg.Connection, store_id: int, order_id: int | None, total: Decimal, vat: Decimal) -> int:
    """Insert a sale and enqueue its ``receipt.push``; returns the sale's id. Never commits: call it inside the
    caller's transaction (``with conn.transaction():``), with whatever else the sale changes."""
    with conn.transaction():  # a savepoint inside the caller's transaction; on an autocommit connection, its own
        sale_id = conn.execute(
            QUERIES["sale_insert"], {"store_id": store_id, "order_id": order_id, "total": total, "vat": vat}
        ).fetchone()[0]
        enqueue(conn, RECEIPT_PUSH, {"sale_id": sale_id}, dedup_key=f"receipt:{sale_id}")
    return sale_id
