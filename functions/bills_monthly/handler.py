"""bills.monthly: one bill per active contract for a month (09:00 on the 10th, Asia/Ulaanbaatar).

The period is the payload's ``period`` (a month's first day) or else the month the run is for: the month of
``ctx.scheduled_for`` in Asia/Ulaanbaatar for a scheduled run, the current month there for a manual trigger without a
period. A contract is billed for the period when it is active and its term overlaps the month (it starts on or before
the month's last day and ends on or after its first day). The bill's amount is the contract's monthly rent, its
reference ``B<contract id>-<YYYYMM>`` (what the tenant writes on the bank transfer; statements.reconcile matches on it)
and it is due 14 days after the period starts (the 15th), five days after the bill is issued on the 10th.

Effectively once: the bills, the ``pdf.render`` job of each new bill's invoice and the run's ``succeeded`` mark commit
in one ``ctx.transaction()``. Re-running a period (a second delivery, a manual trigger for a billed month) creates no
bill and renders no invoice again: the insert skips contracts billed for the period (``UNIQUE (contract_id,
period)``). A period that is not a month's first day is refused at once (PermanentJobError): retrying cannot fix it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.jobs import BILLING_TZ, BILLS_MONTHLY, PDF_RENDER
from shared.outbox import enqueue_many
from shared.payloads import BillsMonthly, DocumentKind
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.bills_monthly")
ZONE = ZoneInfo(BILLING_TZ)
# Bills are due on the period's 15th: 14 days after the first, five after they are issued on the 10th.
DUE_AFTER = timedelta(days=14)


def billing_period(payload: BillsMonthly, scheduled_for: datetime | None, now: datetime | None = None) -> date:
    """The first day of the month to bill (see the module docstring)."""
    if payload.period is not None:
        if payload.period.day != 1:
            raise PermanentJobError(
                f"period {payload.period.isoformat()} is not a month's first day; give e.g. "
                f"{payload.period.replace(day=1).isoformat()}"
            )
        return payload.period
    moment = scheduled_for or now or datetime.now(UTC)
    return moment.astimezone(ZONE).date().replace(day=1)


def create_bills(payload: BillsMonthly, ctx: JobContext) -> dict[str, object]:
    period = billing_period(payload, ctx.scheduled_for)
    with ctx.transaction() as conn:
        bill_ids = [row[0] for row in conn.execute(
            QUERIES["bills_create"], {"period": period, "due_on": period + DUE_AFTER}
        )]  # fmt: skip
        # One invoice render per new bill, committed with it (they run in parallel, up to pdf.render's
        # concurrency); a period re-run creates no bill, so it renders nothing again.
        enqueue_many(conn, PDF_RENDER, [{"kind": DocumentKind.INVOICE, "subject_id": bill_id} for bill_id in bill_ids])
        result = {"period": period.isoformat(), "bills_created": len(bill_ids)}
        ctx.set_result(result)
    ctx.logger.info("bills created", extra=result)
    return result


handler = job_handler(BILLS_MONTHLY, create_bills)
