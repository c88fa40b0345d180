"""reservations.cleanup: release expired reservations so their stock can be sold again."""

from __future__ import annotations

from shared.jobs import RESERVATIONS_CLEANUP
from shared.payloads import ReservationsCleanup
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.reservations_cleanup")


def release_expired(payload: ReservationsCleanup, ctx: JobContext) -> int:
    with ctx.transaction() as conn:
        released = conn.execute(
            QUERIES["release_expired"], {"grace_minutes": payload.grace_minutes, "limit": payload.limit}
        ).rowcount
    ctx.logger.info("released expired reservations", extra={"released": released})
    return released


handler = job_handler(RESERVATIONS_CLEANUP, release_expired)
