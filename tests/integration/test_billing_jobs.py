"""The property-billing jobs (bills.monthly, contracts.expiry_notice, statements.poll, statements.reconcile), run
the way Lambda runs them on real PostgreSQL and moto's SQS; statements.poll against a real local HTTP server standing
in for the bank. Scheduled runs take the real path (schedule fire → outbox → relay → SQS → handler), so the period a
run works on comes from the fire, as in production.

Asia/Ulaanbaatar has had no daylight saving time since 2017 (Mongolia last observed it in 2016): it is UTC+8 all
year, so the schedules' fire times are the same UTC hour every month and there is no DST change to test around.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from functions.bills_monthly.handler import billing_period
from functions.bills_monthly.handler import handler as bills_handler
from functions.contracts_expiry_notice.handler import handler as notice_handler
from functions.statements_reconcile.handler import handler as reconcile_handler
from shared.database import Database
from shared.jobs import BILLS_MONTHLY, CONTRACTS_EXPIRY_NOTICE, STATEMENTS_POLL, STATEMENTS_RECONCILE
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.payloads import BillsMonthly
from shared.queues import QueueDirectory
from shared.runtime import Outcome
from shared.scheduled.fire import FireOutcome, fire_schedule
from shared.settings import Settings
from shared.testing import invoke
from tests.support import FakeLambdaContext, publish, receive

UB = ZoneInfo("Asia/Ulaanbaatar")
HANDLERS = [bills_handler, notice_handler, reconcile_handler]


@pytest.fixture
def queues(sqs, stage, db_url):
    """Every product queue on moto (url, arn by queue name) and the billing handlers bound to this test's database."""
    made = ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    for handler in HANDLERS:
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    yield {
        name: (url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
        for name, (url, _) in made.items()
    }
    database.close()


def run_scheduled(conn, db_url, sqs, stage, queues, job, handler, fire_time):
    """Fire ``job``'s schedule for ``fire_time`` and run what the fire enqueued through its handler."""
    result = fire_schedule(conn, job, fire_time, now=fire_time + timedelta(minutes=1))
    if result.outcome is not FireOutcome.ENQUEUED:
        return result, None
    publish(db_url, sqs, stage)
    event = receive(sqs, queues[job.queue], 1)
    # Lambda gives a run at least the job's timeout (the runtime refuses to start one with less).
    assert handler(event, FakeLambdaContext(remaining_ms=(job.timeout + 60) * 1000)) == {"batchItemFailures": []}
    return result, job_row(conn, result.job_id)


def job_row(conn, job_id):
    status, result, error = conn.execute(
        "SELECT status, result, last_error FROM conveyor.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    return {"status": status, "result": result, "error": error}


def jobs_of(conn, name):
    """Payloads of every ``name`` job enqueued (pending in the outbox or published), oldest first; jobs of one
    transaction share its created_at (and ids need not rise within a millisecond), so they come in payload order."""
    rows = conn.execute(
        "SELECT payload FROM conveyor.jobs WHERE job_name = %s ORDER BY created_at, payload::text", (name,)
    ).fetchall()
    return [row[0] for row in rows]


# -- the domain ----------------------------------------------------------------------------------------------------


def tenant(conn, name="Bat", phone="+97699112233"):
    return conn.execute(
        "INSERT INTO demo.tenants (name, phone) VALUES (%s, %s) RETURNING id", (name, phone)
    ).fetchone()[0]


def contract(conn, starts_on, ends_on, *, rent="1500000.00", status="active", tenant_id=None, unit="A-1"):
    property_id = conn.execute(
        "INSERT INTO demo.properties (name) VALUES ('Sky Tower') RETURNING id"
    ).fetchone()[0]
    unit_id = conn.execute(
        "INSERT INTO demo.units (property_id, label) VALUES (%s, %s) RETURNING id", (property_id, unit)
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO demo.contracts (unit_id, tenant_id, monthly_rent, starts_on, ends_on, status)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (unit_id, tenant_id or tenant(conn), Decimal(rent), starts_on, ends_on, status),
    ).fetchone()[0]


def bills(conn):
    return conn.execute(
        "SELECT contract_id, period, amount, reference, due_on, status FROM demo.bills ORDER BY contract_id, period"
    ).fetchall()


# -- bills.monthly -------------------------------------------------------------------------------------------------

MARCH = date(2026, 3, 1)


@pytest.fixture
def leases(conn):
    """Contracts around March 2026: which ones overlap the month decides who is billed."""
    return {
        "running": contract(conn, date(2025, 6, 1), date(2027, 5, 31), rent="1500000.00"),
        "starts_mid_march": contract(conn, date(2026, 3, 15), date(2027, 3, 14), rent="900000.00"),
        "ends_on_march_1": contract(conn, date(2025, 3, 1), date(2026, 3, 1), rent="1200000.00"),
        "ended_in_february": contract(conn, date(2025, 3, 1), date(2026, 2, 28)),
        "starts_in_april": contract(conn, date(2026, 4, 1), date(2027, 3, 31)),
        "terminated": contract(conn, date(2025, 6, 1), date(2027, 5, 31), status="ended"),
    }


def test_bills_monthly_bills_every_contract_active_in_the_period_once(queues, conn, stage, leases):
    result = invoke(bills_handler, {"period": "2026-03-01"}, stage=stage)
    assert result.succeeded
    billed = {row[0]: row for row in bills(conn)}
    assert sorted(billed) == sorted([leases["running"], leases["starts_mid_march"], leases["ends_on_march_1"]])
    running = leases["running"]
    assert billed[running] == (
        running, MARCH, Decimal("1500000.00"), f"B{running}-202603", date(2026, 3, 15), "open"
    )
    assert billed[leases["starts_mid_march"]][2] == Decimal("900000.00")
    # Each new bill's invoice is rendered, enqueued in the same transaction as the bills.
    bill_ids = [r[0] for r in conn.execute("SELECT id FROM demo.bills ORDER BY id")]
    assert sorted(p["subject_id"] for p in jobs_of(conn, "pdf.render")) == bill_ids
    assert {p["kind"] for p in jobs_of(conn, "pdf.render")} == {"invoice"}


def test_bills_monthly_rerun_of_a_period_creates_nothing_new(queues, conn, stage, leases):
    assert invoke(bills_handler, {"period": "2026-03-01"}, stage=stage).succeeded
    before, renders = bills(conn), len(jobs_of(conn, "pdf.render"))
    # A contract signed since: the rerun bills it, and only it.
    late = contract(conn, date(2026, 3, 20), date(2027, 3, 19))
    again = invoke(bills_handler, {"period": "2026-03-01"}, stage=stage)
    assert again.succeeded
    after = bills(conn)
    assert [row for row in after if row not in before] == [
        (late, MARCH, Decimal("1500000.00"), f"B{late}-202603", date(2026, 3, 15), "open")
    ]
    assert len(jobs_of(conn, "pdf.render")) == renders + 1
    assert invoke(bills_handler, {"period": "2026-03-01"}, stage=stage).succeeded
    assert bills(conn) == after and len(jobs_of(conn, "pdf.render")) == renders + 1


def test_bills_monthly_refuses_a_period_that_is_not_a_months_first_day(queues, conn, stage, leases):
    result = invoke(bills_handler, {"period": "2026-03-10"}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "2026-03-10 is not a month's first day" in result.reports[0].error
    assert bills(conn) == []


def test_bills_monthly_fires_at_nine_on_the_tenth_in_ulaanbaatar():
    schedule = BILLS_MONTHLY.parsed_schedule
    assert (BILLS_MONTHLY.schedule, BILLS_MONTHLY.timezone) == ("cron(0 9 10 * ? *)", "Asia/Ulaanbaatar")
    # 09:00 at UTC+8 is 01:00 UTC, every month of the year: no DST in Mongolia since 2017.
    fires = list(schedule.fire_times(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)))
    assert fires == [datetime(2026, month, 10, 1, 0, tzinfo=UTC) for month in range(1, 13)]
    assert {fire.astimezone(UB).utcoffset() for fire in fires} == {timedelta(hours=8)}
    assert schedule.next_after(datetime(2026, 3, 10, 1, 0, tzinfo=UTC)) == datetime(2026, 4, 10, 1, 0, tzinfo=UTC)
    assert schedule.next_after(datetime(2026, 3, 10, 0, 59, tzinfo=UTC)) == datetime(2026, 3, 10, 1, 0, tzinfo=UTC)


def test_two_fires_of_a_period_bill_each_contract_once(queues, conn, db_url, sqs, stage, leases):
    fire_time = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)
    first, run = run_scheduled(conn, db_url, sqs, stage, queues, BILLS_MONTHLY, bills_handler, fire_time)
    assert run == {"status": "succeeded", "result": {"period": "2026-03-01", "bills_created": 3}, "error": None}
    billed = bills(conn)
    assert sorted(row[0] for row in billed) == sorted(
        [leases["running"], leases["starts_mid_march"], leases["ends_on_march_1"]]
    )
    # Scheduler delivering the period again: the fire is a duplicate, nothing runs.
    second, again = run_scheduled(conn, db_url, sqs, stage, queues, BILLS_MONTHLY, bills_handler, fire_time)
    assert second.outcome is FireOutcome.DUPLICATE and second.duplicate_of == first.job_id and again is None
    # An operator triggering the same period by hand: the run succeeds and bills nothing more.
    manual = invoke(bills_handler, {"period": "2026-03-01"}, stage=stage)
    assert manual.succeeded
    assert bills(conn) == billed
    # The next month's fire bills the next period.
    _, april = run_scheduled(
        conn, db_url, sqs, stage, queues, BILLS_MONTHLY, bills_handler, datetime(2026, 4, 10, 1, 0, tzinfo=UTC)
    )
    assert april["result"] == {"period": "2026-04-01", "bills_created": 3}  # running, starts_mid_march, starts_in_april


def test_the_sample_event_bills_the_month_of_its_scheduled_run(queues, conn, stage, leases):
    event = json.loads((Path(__file__).resolve().parents[2] / "events" / "bills.monthly.json").read_text())
    assert bills_handler(event, FakeLambdaContext(remaining_ms=700_000)) == {"batchItemFailures": []}
    # scheduled_for 2026-12-10T01:00Z, 09:00 in Ulaanbaatar: December's bills, for the leases running then.
    assert {(row[0], row[1]) for row in bills(conn)} == {
        (leases["running"], date(2026, 12, 1)), (leases["starts_mid_march"], date(2026, 12, 1)),
        (leases["starts_in_april"], date(2026, 12, 1)),
    }


def test_the_period_is_the_month_in_ulaanbaatar_not_in_utc():
    # 31 March 17:00 UTC is already 1 April 01:00 in Ulaanbaatar.
    assert billing_period(BillsMonthly(), datetime(2026, 3, 31, 17, 0, tzinfo=UTC)) == date(2026, 4, 1)
    assert billing_period(BillsMonthly(), datetime(2026, 3, 31, 15, 59, tzinfo=UTC)) == date(2026, 3, 1)


def test_a_manual_trigger_without_a_period_bills_the_current_month_there(queues, conn, stage):
    contract(conn, date(2000, 1, 1), date(2100, 12, 31))
    before = datetime.now(UB).date().replace(day=1)
    assert invoke(bills_handler, {}, stage=stage).succeeded
    after = datetime.now(UB).date().replace(day=1)
    [(_, period, *_)] = bills(conn)
    assert period in {before, after}  # the same month, unless the test straddles a month's turn


# -- contracts.expiry_notice ---------------------------------------------------------------------------------------

# The daily fire at 10:00 Ulaanbaatar = 02:00 UTC; the run's "today" is 2026-06-01 there.
JUNE_1 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
TODAY = date(2026, 6, 1)


def notices(conn):
    return conn.execute("SELECT contract_id, threshold_days FROM demo.contract_notices ORDER BY 1, 2").fetchall()


def run_notices(conn, db_url, sqs, stage, queues, fire_time=JUNE_1):
    _, run = run_scheduled(conn, db_url, sqs, stage, queues, CONTRACTS_EXPIRY_NOTICE, notice_handler, fire_time)
    return run


def test_expiry_notice_fires_daily_at_ten_in_ulaanbaatar():
    schedule = CONTRACTS_EXPIRY_NOTICE.parsed_schedule
    job = CONTRACTS_EXPIRY_NOTICE
    assert (job.schedule, job.timezone) == ("cron(0 10 * * ? *)", "Asia/Ulaanbaatar")
    # 10:00 at UTC+8 = 02:00 UTC, winter and summer alike (no DST in Mongolia since 2017).
    assert schedule.next_after(datetime(2026, 1, 15, 2, 0, tzinfo=UTC)) == datetime(2026, 1, 16, 2, 0, tzinfo=UTC)
    assert schedule.next_after(datetime(2026, 7, 15, 1, 59, tzinfo=UTC)) == datetime(2026, 7, 15, 2, 0, tzinfo=UTC)


def test_expiry_notice_texts_each_tenant_once_per_threshold(queues, conn, db_url, sqs, stage):
    soon = contract(conn, date(2025, 6, 1), TODAY + timedelta(days=5), tenant_id=tenant(conn, "Bat", "+97699000001"))
    saraa = tenant(conn, "Saraa", "+97699000002")
    month = contract(conn, date(2025, 7, 1), TODAY + timedelta(days=20), tenant_id=saraa)
    contract(conn, date(2025, 8, 1), TODAY + timedelta(days=45))  # not yet
    contract(conn, date(2025, 6, 1), TODAY - timedelta(days=1))  # already over
    contract(conn, date(2025, 6, 1), TODAY + timedelta(days=3), status="ended")  # terminated early

    run = run_notices(conn, db_url, sqs, stage, queues)
    assert run["result"] == {"sent": 2, "skipped_bad_phone": 0}
    # The contract ending in 5 days reached both thresholds at once: one SMS, both recorded.
    assert notices(conn) == [(soon, 7), (soon, 30), (month, 30)]
    sms = jobs_of(conn, "sms.send")
    assert [m["to"] for m in sms] == ["+97699000001", "+97699000002"]
    assert sms[0]["text"] == (
        "Dear Bat, your lease of Sky Tower A-1 ends in 5 days (2026-06-06). Please contact us to renew."
    )

    # Run again the same day (a manual trigger): nothing more is sent.
    manual = invoke(notice_handler, {}, stage=stage)  # today's date, whatever it is: all are far past
    assert manual.succeeded
    # The next day's run sends nothing new either; 14 days on, the 20-day contract reaches its 7-day threshold.
    assert run_notices(conn, db_url, sqs, stage, queues, JUNE_1 + timedelta(days=1))["result"]["sent"] == 0
    assert run_notices(conn, db_url, sqs, stage, queues, JUNE_1 + timedelta(days=14))["result"]["sent"] == 1
    assert notices(conn) == [(soon, 7), (soon, 30), (month, 7), (month, 30)]
    assert [m["to"] for m in jobs_of(conn, "sms.send")] == ["+97699000001", "+97699000002", "+97699000002"]
    assert "ends in 6 days (2026-06-21)" in jobs_of(conn, "sms.send")[2]["text"]


def test_expiry_notice_skips_a_bad_phone_number_and_sends_once_it_is_fixed(queues, conn, db_url, sqs, stage):
    bad_tenant = tenant(conn, "Dorj", "99112233")  # no country code: not E.164
    bad = contract(conn, date(2025, 6, 1), TODAY + timedelta(days=6), tenant_id=bad_tenant)
    good = contract(conn, date(2025, 6, 1), TODAY + timedelta(days=6), tenant_id=tenant(conn, "Tuya", "+97688001122"))
    run = run_notices(conn, db_url, sqs, stage, queues)
    assert run["status"] == "succeeded" and run["result"] == {"sent": 1, "skipped_bad_phone": 1}
    assert notices(conn) == [(good, 7), (good, 30)]
    assert [m["to"] for m in jobs_of(conn, "sms.send")] == ["+97688001122"]

    conn.execute("UPDATE demo.tenants SET phone = '+97699112233' WHERE id = %s", (bad_tenant,))
    assert run_notices(conn, db_url, sqs, stage, queues, JUNE_1 + timedelta(days=1))["result"]["sent"] == 1
    assert notices(conn) == [(bad, 7), (bad, 30), (good, 7), (good, 30)]
    assert "ends in 5 days" in jobs_of(conn, "sms.send")[1]["text"]


def test_expiry_notice_refuses_thresholds_that_are_not_positive(queues, conn, stage):
    result = invoke(notice_handler, {"thresholds_days": [30, 0]}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "thresholds_days must be positive" in result.reports[0].error


# -- statements.reconcile ------------------------------------------------------------------------------------------


def bill(conn, contract_id, period, amount, reference):
    return conn.execute(
        "INSERT INTO demo.bills (contract_id, period, amount, reference, due_on) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id",
        (contract_id, period, Decimal(amount), reference, period + timedelta(days=14)),
    ).fetchone()[0]


def line(conn, bank_ref, amount, reference):
    return conn.execute(
        "INSERT INTO demo.statement_lines (bank_ref, booked_on, amount, reference) VALUES (%s, %s, %s, %s)"
        " RETURNING id",
        (bank_ref, date(2026, 3, 12), Decimal(amount), reference),
    ).fetchone()[0]


def lines(conn):
    return {
        row[0]: (row[1], row[2])
        for row in conn.execute("SELECT id, status, matched_bill_id FROM demo.statement_lines")
    }


def bill_states(conn):
    return {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, status, paid_at IS NOT NULL FROM demo.bills")}


@pytest.fixture
def open_bills(conn):
    first, second, third = (contract(conn, date(2025, 1, 1), date(2027, 1, 1)) for _ in range(3))
    return {
        "a": bill(conn, first, MARCH, "1500000.00", f"B{first}-202603"),
        "b": bill(conn, second, MARCH, "900000.00", f"B{second}-202603"),
        "c": bill(conn, third, MARCH, "700000.00", f"B{third}-202603"),
        "refs": (f"B{first}-202603", f"B{second}-202603", f"B{third}-202603"),
    }


def test_reconcile_matches_by_reference_and_amount_and_leaves_the_rest_for_review(queues, conn, stage, open_bills):
    ref_a, ref_b, ref_c = open_bills["refs"]
    exact = line(conn, "T1", "1500000.00", f"  {ref_a.lower()} ")  # trimmed, case-insensitive
    partial = line(conn, "T2", "450000.00", ref_b)  # part of bill b
    over = line(conn, "T3", "800000.00", ref_c)  # more than bill c
    unknown = line(conn, "T4", "1500000.00", "rent march")
    result = invoke(reconcile_handler, {"line_ids": [exact, partial, over, unknown]}, stage=stage)
    assert result.succeeded
    assert lines(conn) == {
        exact: ("matched", open_bills["a"]),
        partial: ("unmatched", None),
        over: ("unmatched", None),
        unknown: ("unmatched", None),
    }
    assert bill_states(conn) == {open_bills["a"]: ("paid", True), open_bills["b"]: ("open", False),
                                 open_bills["c"]: ("open", False)}  # fmt: skip


def test_reconcile_pays_a_bill_once_and_a_second_payment_is_left_for_review(queues, conn, stage, open_bills):
    ref_a = open_bills["refs"][0]
    first = line(conn, "T1", "1500000.00", ref_a)
    twice = line(conn, "T2", "1500000.00", ref_a)
    assert invoke(reconcile_handler, {}, stage=stage).succeeded  # no ids: every new line
    assert lines(conn) == {first: ("matched", open_bills["a"]), twice: ("unmatched", None)}
    # The same bill paid again in a later import: still only once.
    third = line(conn, "T3", "1500000.00", ref_a)
    assert invoke(reconcile_handler, {"line_ids": [third]}, stage=stage).succeeded
    assert lines(conn)[third] == ("unmatched", None)


def test_reconcile_is_idempotent_and_touches_only_the_lines_given(queues, conn, stage, open_bills):
    ref_a, ref_b, _ = open_bills["refs"]
    given = line(conn, "T1", "1500000.00", ref_a)
    other = line(conn, "T2", "900000.00", ref_b)
    first = invoke(reconcile_handler, {"line_ids": [given]}, stage=stage)
    assert first.succeeded
    assert job_row(conn, first.reports[0].job_id)["result"] == {"matched": 1, "unmatched": 0}
    def snapshot():
        return lines(conn), bill_states(conn), conn.execute("SELECT paid_at FROM demo.bills ORDER BY id").fetchall()

    state = snapshot()
    assert state[0] == {given: ("matched", open_bills["a"]), other: ("new", None)}
    # A new job over the same lines (not a redelivery: that would be acknowledged without running) changes nothing.
    again = invoke(reconcile_handler, {"line_ids": [given]}, stage=stage)
    assert again.succeeded and job_row(conn, again.reports[0].job_id)["result"] == {"matched": 0, "unmatched": 0}
    assert snapshot() == state


# -- statements.poll (the bank is a real local HTTP server: the fake_service fixture) -------------------------------


@pytest.fixture
def bank(fake_service, queues, sqs, stage, db_url):
    """The bank's statement API on a local server, and the poll handler bound to this test's database."""
    from functions.statements_poll.handler import handler as poll_handler

    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    poll_handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    fake_service.use("bank")
    fake_service.poll = poll_handler
    yield fake_service
    database.close()


STATEMENTS = "/accounts/main/statements"


def bank_line(bank_ref, amount, reference, booked_on="2026-03-12"):
    return {"id": bank_ref, "booked_on": booked_on, "amount": amount, "reference": reference}


def cursor(conn):
    row = conn.execute("SELECT cursor FROM demo.statement_cursor WHERE account = 'main'").fetchone()
    return row and row[0]


def test_statements_poll_fires_hourly_on_the_hour():
    schedule = STATEMENTS_POLL.parsed_schedule
    assert STATEMENTS_POLL.schedule == "rate(1 hour)"
    # A rate counts hours, not wall-clock times: the timezone (UTC+8, no DST) does not move it.
    assert schedule.next_after(datetime(2026, 3, 10, 1, 30, tzinfo=UTC)) == datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    assert schedule.period == timedelta(hours=1)


def test_statements_poll_imports_new_lines_then_reconcile_pays_their_bills(
    bank, conn, db_url, sqs, stage, queues, open_bills
):
    ref_a, ref_b, _ = open_bills["refs"]
    bank.reply(200, {"lines": [bank_line("T1", "1500000.00", ref_a), bank_line("T2", 12.5, "unknown")], "cursor": "c2"})
    bank.reply(200, {"lines": [bank_line("T3", "900000.00", ref_b.lower())], "cursor": "c3"})
    bank.reply(200, {"lines": [], "cursor": "c3"})
    result = invoke(bank.poll, {"account": "main"}, stage=stage)
    assert result.succeeded
    # Pages followed from where the import was (nowhere yet) until a page brought nothing.
    assert [(r.method, r.path, r.query) for r in bank.requests] == [
        ("GET", STATEMENTS, {}), ("GET", STATEMENTS, {"after": ["c2"]}), ("GET", STATEMENTS, {"after": ["c3"]})
    ]
    assert bank.requests[0].header("Authorization") == "Bearer test-token"
    stored = conn.execute(
        "SELECT id, bank_ref, booked_on, amount, reference, status FROM demo.statement_lines ORDER BY bank_ref"
    ).fetchall()
    assert [row[1:] for row in stored] == [
        ("T1", date(2026, 3, 12), Decimal("1500000.00"), ref_a, "new"),
        ("T2", date(2026, 3, 12), Decimal("12.50"), "unknown", "new"),
        ("T3", date(2026, 3, 12), Decimal("900000.00"), ref_b.lower(), "new"),
    ]
    assert cursor(conn) == "c3"
    # Reconciliation was enqueued with the import, for exactly the lines it added.
    assert jobs_of(conn, "statements.reconcile") == [{"line_ids": sorted(row[0] for row in stored)}]

    publish(db_url, sqs, stage)
    event = receive(sqs, queues[STATEMENTS_RECONCILE.queue], 1)
    assert reconcile_handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert bill_states(conn)[open_bills["a"]] == ("paid", True) and bill_states(conn)[open_bills["b"]] == ("paid", True)
    assert sorted(status for _, (status, _) in lines(conn).items()) == ["matched", "matched", "unmatched"]


def test_statements_poll_rerun_imports_nothing_and_starts_no_reconcile(bank, conn, stage, queues):
    page = {"lines": [bank_line("T1", "100.00", "B1-202603")], "cursor": "c1"}
    bank.reply(200, page)
    bank.reply(200, {"lines": [], "cursor": "c1"})
    assert invoke(bank.poll, {}, stage=stage).succeeded
    assert len(jobs_of(conn, "statements.reconcile")) == 1
    # The bank sends the same line again (it ignores the cursor, or a retry overlaps): stored once, no new reconcile.
    bank.reply(200, page)
    bank.reply(200, {"lines": [], "cursor": "c1"})
    again = invoke(bank.poll, {}, stage=stage)
    assert again.succeeded
    assert bank.requests[2].query == {"after": ["c1"]}
    assert conn.execute("SELECT count(*) FROM demo.statement_lines").fetchone()[0] == 1
    assert len(jobs_of(conn, "statements.reconcile")) == 1
    assert job_row(conn, again.reports[0].job_id)["result"] == {
        "fetched": 1, "imported": 0, "cursor_moved": True, "reconcile_job": None
    }


def test_statements_poll_retries_when_the_bank_fails_and_stores_nothing(bank, conn, stage, queues):
    conn.execute("INSERT INTO demo.statement_cursor (account, cursor) VALUES ('main', 'c7')")
    bank.reply(200, {"lines": [bank_line("T8", "100.00", "x")], "cursor": "c8"})
    bank.reply(503, "maintenance")  # the second page fails: the first one is not stored either
    result = invoke(bank.poll, {}, stage=stage)
    assert result.outcomes == [Outcome.RETRYING]
    assert "503" in result.reports[0].error
    assert conn.execute("SELECT count(*) FROM demo.statement_lines").fetchone()[0] == 0
    assert cursor(conn) == "c7" and jobs_of(conn, "statements.reconcile") == []


def test_statements_poll_is_dead_with_the_banks_answer_on_a_4xx(bank, conn, stage, queues):
    bank.reply(403, {"error": "account main is not enabled for statement access"})
    result = invoke(bank.poll, {}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "403" in result.reports[0].error
    assert "account main is not enabled for statement access" in result.reports[0].error
    assert cursor(conn) is None


def test_statements_poll_is_dead_on_an_answer_of_the_wrong_shape(bank, conn, stage, queues):
    bank.reply(200, {"transactions": [], "next": "c1"})
    result = invoke(bank.poll, {}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "not the expected shape" in result.reports[0].error and "lines" in result.reports[0].error


@pytest.mark.parametrize(
    "amount",
    ["12.345", "10000000000.00", "-10000000000", "1E+40"],
    ids=["more than two decimals (numeric(12,2) would round it: never reconcilable)", "too large", "too small", "huge"],
)
def test_statements_poll_is_dead_naming_a_line_whose_amount_does_not_fit(bank, conn, stage, queues, amount):
    # Stored, it would be rounded (and never match a bill) or overflow the column (a database error retried every
    # hour for ever): the bank's data is wrong, and only a person can say what it meant.
    bank.reply(200, {"lines": [bank_line("T1", "100.00", "x"), bank_line("T2", amount, "y")], "cursor": "c2"})
    bank.reply(200, {"lines": [], "cursor": "c2"})
    result = invoke(bank.poll, {}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    error = result.reports[0].error
    assert "T2" in error and amount in error
    assert conn.execute("SELECT count(*) FROM demo.statement_lines").fetchone()[0] == 0
    assert cursor(conn) is None and jobs_of(conn, "statements.reconcile") == []
