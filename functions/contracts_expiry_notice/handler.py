"""contracts.expiry_notice: SMS tenants whose contract ends soon, once per contract and threshold (daily, 10:00
Asia/Ulaanbaatar).

"Today" is the day the run is for in Asia/Ulaanbaatar: the day of ``ctx.scheduled_for`` for a scheduled run (so a
run delivered late still counts from its own day), the current day there for a manual trigger. A contract has reached
a threshold of N days when it is active and ends between today and N days from today. For each contract with
thresholds reached and not yet noticed, one ``contract_notices`` row per such threshold is inserted and one
``sms.send`` job is enqueued, in one ``ctx.transaction()``: the notice exists if and only if its SMS is on its way.
A contract that reaches several thresholds at once (signed late, or the job did not run for weeks) gets one SMS, not
one per threshold, and all of those thresholds count as noticed.

Once per contract and threshold, even when run twice or concurrently: the notices a run records are the rows its
insert added (``ON CONFLICT DO NOTHING … RETURNING``); a concurrent run's insert waits for the first one's commit and
adds nothing, so only one of them sends.

A tenant whose phone number is not E.164 (``sms.send`` would refuse it) is skipped with a warning and nothing is
recorded for that contract: the rest of the run goes on, and the notice goes out on the first day the number is
fixed (while the contract is still within the threshold). Thresholds must be positive days (PermanentJobError).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from shared.jobs import BILLING_TZ, CONTRACTS_EXPIRY_NOTICE, SMS_SEND
from shared.outbox import enqueue_many
from shared.payloads import ContractsExpiryNotice, SmsSend
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.contracts_expiry_notice")
ZONE = ZoneInfo(BILLING_TZ)


def notice_text(tenant: str, place: str, ends_on: date, days_left: int) -> str:
    when = "today" if days_left == 0 else "tomorrow" if days_left == 1 else f"in {days_left} days"
    return f"Dear {tenant}, your lease of {place} ends {when} ({ends_on.isoformat()}). Please contact us to renew."


def send_notices(payload: ContractsExpiryNotice, ctx: JobContext) -> dict[str, int]:
    thresholds = sorted(set(payload.thresholds_days))
    if any(days < 1 for days in thresholds):
        raise PermanentJobError(f"thresholds_days must be positive numbers of days, got {list(thresholds)}")
    today = (ctx.scheduled_for or datetime.now(UTC)).astimezone(ZONE).date()
    sent = skipped = 0
    with ctx.transaction() as conn:
        due = conn.execute(
            QUERIES["notices_due"], {"today": today, "thresholds": thresholds, "widest": max(thresholds, default=0)}
        ).fetchall()
        messages: dict[int, SmsSend] = {}
        for contract_id, ends_on, tenant, phone, unit, property_name, _ in due:
            text = notice_text(tenant, f"{property_name} {unit}", ends_on, (ends_on - today).days)
            try:
                messages[contract_id] = SmsSend(to=phone, text=text)
            except ValidationError:
                skipped += 1
                ctx.logger.warning(
                    "contract expiry notice skipped: the tenant's phone number is not E.164",
                    extra={"contract_id": contract_id},  # not the number itself: it is personal data
                )
        pairs = [(row[0], days) for row in due if row[0] in messages for days in row[6]]
        recorded = conn.execute(
            QUERIES["notices_record"],
            {"contract_ids": [c for c, _ in pairs], "thresholds": [d for _, d in pairs]},
        ).fetchall()
        # One SMS per contract that this run recorded a notice for (a concurrent run may have recorded some).
        noticed = sorted({contract_id for contract_id, _ in recorded})
        enqueue_many(conn, SMS_SEND, [messages[contract_id] for contract_id in noticed])
        sent = len(noticed)
        result = {"sent": sent, "skipped_bad_phone": skipped}
        ctx.set_result(result)
    ctx.logger.info("contract expiry notices", extra={**result, "today": today.isoformat()})
    return result


handler = job_handler(CONTRACTS_EXPIRY_NOTICE, send_notices)
