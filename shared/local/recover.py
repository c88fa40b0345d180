"""Jobs a restarted local SQS lost. ``conveyor dev`` starts its own in-memory moto on every start, so the messages of
jobs that were queued, waiting on SQS for their next attempt, or running when it stopped are gone, while the ledger
(PostgreSQL keeps its data) still says they are on their way: nothing would ever run them. The runtime puts them
back in the outbox before its relay starts. Dead jobs need nothing: `conveyor retry` works from the ledger."""

from __future__ import annotations

import psycopg

from shared.sqlfile import load_queries

QUERIES = load_queries("shared.local", "recover.sql")

REASON = "republished: the local SQS restarted empty"


def republish_lost(conn: psycopg.Connection) -> int:
    """Put every queued, retrying or running job without an outbox row back in the outbox (pending, its attempts
    still counted), in one transaction. Returns how many. Only for an SQS that started empty: on one that kept its
    messages this would run those jobs twice."""
    with conn.transaction():
        return len(conn.execute(QUERIES["republish_lost"], {"reason": REASON}).fetchall())
