"""statements.poll: import new bank statement lines, then start statements.reconcile for them (hourly).

1. Read where the import got to (``demo.statement_cursor``; no transaction held).
2. With no transaction open, page through ``GET /accounts/{account}/statements?after=<cursor>`` of the ``bank``
   integration (``{"lines": [{"id", "booked_on", "amount", "reference"}], "cursor": "..."}``) until a page brings no
   lines or the cursor stops moving, at most ``MAX_PAGES`` pages a run (the next run continues from there).
3. In one ``ctx.transaction()``: store the lines (``ON CONFLICT (bank_ref) DO NOTHING``), advance the cursor, and
   enqueue ``statements.reconcile`` with the ids of the lines this import added (none added → no reconcile).

Reconciliation runs only after the import committed, and always does once it has: the reconcile job is enqueued
through the outbox in the import's own transaction, so it exists if and only if the lines and the cursor committed.
That is the whole ordering the job needs, so no ``enqueue_flow`` is used: a flow's parent waits for children still to
run, and here the one thing to wait for, the import, has already happened when the follow-up is enqueued. (Were the
import split into one job per page, ``statements.reconcile`` would be those jobs' flow parent.)

Failures: the bank answering 5xx, a timeout or a refused connection → the job retries with its backoff, and no
cursor moved; a 4xx → dead at once with the bank's answer in the reason; 429 → retried after its Retry-After; an
answer that is not the shape above → dead (the bank's API changed; retrying cannot fix it); so is a line whose amount
does not fit ``numeric(12,2)`` (more than two decimals would be rounded and never reconcile; ten digits before the
point would overflow, a database error retried every hour for ever), named by its bank id and amount. Importing twice is
harmless: lines are keyed by the bank's id, and a rerun over lines already stored adds none and starts no reconcile.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from shared.integrations.http import Integration
from shared.jobs import STATEMENTS_POLL, STATEMENTS_RECONCILE
from shared.outbox import enqueue
from shared.payloads import StatementsPoll
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.statements_poll")
INTEGRATION = "bank"
# Pages fetched per run; an import that far behind catches up over the next hourly runs.
MAX_PAGES = 20
# More new lines than this and the reconcile job is given none (= every new line) rather than a huge payload.
MAX_LINE_IDS = 5000
# demo.statement_lines.amount is numeric(12,2).
CENT = Decimal("0.01")
AMOUNT_LIMIT = Decimal(10) ** 10


class StatementLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    booked_on: date
    amount: Decimal
    reference: str | None = ""


class StatementPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    lines: list[StatementLine]
    cursor: str | None = None


def fetch_page(client: Integration, account: str, cursor: str | None) -> StatementPage:
    path = f"/accounts/{quote(account, safe='')}/statements"
    if cursor is not None:
        path += "?" + urlencode({"after": cursor})
    response = client.request("GET", path)
    try:
        page = StatementPage.model_validate_json(response.text)
    except ValidationError as exc:
        raise PermanentJobError(f"the bank's statement answer for GET {path} is not the expected shape: {exc}") from exc
    for line in page.lines:
        check_amount(line)
    return page


def check_amount(line: StatementLine) -> None:
    """An amount numeric(12,2) stores exactly, or the line is refused whole: rounded, it would never match a bill."""
    amount = line.amount
    # The size first: quantize cannot represent a huge amount in 28 digits and would raise.
    if abs(amount) >= AMOUNT_LIMIT or amount != amount.quantize(CENT):
        raise PermanentJobError(
            f"bank statement line {line.id}: amount {amount} does not fit the ledger's numeric(12,2) (at most 10 digits "
            "before the point and 2 after); nothing of this poll was stored"
        )


def poll(payload: StatementsPoll, ctx: JobContext) -> dict[str, object]:
    row = ctx.connection().execute(QUERIES["cursor_get"], {"account": payload.account}).fetchone()
    start = cursor = row[0] if row else None
    client = Integration.from_env(INTEGRATION)
    lines: dict[str, StatementLine] = {}
    for _ in range(MAX_PAGES):
        page = fetch_page(client, payload.account, cursor)
        for line in page.lines:
            lines.setdefault(line.id, line)
        if not page.lines or page.cursor is None or page.cursor == cursor:
            cursor = page.cursor or cursor
            break
        cursor = page.cursor
    with ctx.transaction() as conn:
        added = [r[0] for r in conn.execute(QUERIES["lines_import"], {
            "bank_refs": [line.id for line in lines.values()],
            "booked_on": [line.booked_on for line in lines.values()],
            "amounts": [line.amount for line in lines.values()],
            "references": [line.reference or "" for line in lines.values()],
        })]  # fmt: skip
        moved = conn.execute(
            QUERIES["cursor_advance"], {"account": payload.account, "cursor": cursor, "previous": start}
        ).fetchone() is not None
        reconcile = None
        if added:
            line_ids = sorted(added) if len(added) <= MAX_LINE_IDS else []
            reconcile = enqueue(conn, STATEMENTS_RECONCILE, {"line_ids": line_ids})
        result = {"fetched": len(lines), "imported": len(added), "cursor_moved": moved,
                  "reconcile_job": str(reconcile) if reconcile else None}  # fmt: skip
        ctx.set_result(result)
    if not moved:
        ctx.logger.info("another poll moved the statement cursor first; it stays where that one put it")
    ctx.logger.info("bank statement lines imported", extra=result)
    return result


handler = job_handler(STATEMENTS_POLL, poll)
