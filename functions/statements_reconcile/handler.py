"""statements.reconcile: match new bank statement lines to open bills; mark those bills paid.

A line pays a bill when the bill is open, its reference equals the line's (trimmed, case-insensitive) and its amount
equals the line's exactly. The line becomes ``matched`` (``matched_bill_id``) and the bill ``paid`` (``paid_at``).
Every other line becomes ``unmatched`` and is left for someone to review: an unknown or empty reference, a partial
payment or an overpayment (the amount differs), a second payment of a bill already paid. Nothing is split or
credited automatically: money that does not fit a bill exactly is a person's call.

The lines are those of ``line_ids`` (statements.poll passes the lines one import added) that are still new, or every
new line when none are given (a manual trigger, or a sweep after a failed import). All of it is one statement in one
``ctx.transaction()``: the lines are locked ``FOR UPDATE SKIP LOCKED`` (a concurrent reconcile takes other lines, and
a bill is paid once even if both see a payment for it) and committed with the run's ``succeeded`` mark. Idempotent: a
rerun finds its lines no longer new and changes nothing.
"""

from __future__ import annotations

from shared.jobs import STATEMENTS_RECONCILE
from shared.payloads import StatementsReconcile
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.statements_reconcile")


def reconcile(payload: StatementsReconcile, ctx: JobContext) -> dict[str, int]:
    with ctx.transaction() as conn:
        rows = conn.execute(QUERIES["lines_reconcile"], {"line_ids": list(payload.line_ids)}).fetchall()
        matched = sum(1 for _, status, _ in rows if status == "matched")
        result = {"matched": matched, "unmatched": len(rows) - matched}
        ctx.set_result(result)
    ctx.logger.info("statement lines reconciled", extra=result)
    return result


handler = job_handler(STATEMENTS_RECONCILE, reconcile)
