"""The scheduled maintenance jobs, run through their real handlers on SQS-shaped events against real PostgreSQL:
what each removes, moves or creates (and what it leaves just inside its cut-off), batching and its bound, a second
run changing nothing, failures (a bad payload or configuration goes to the DLQ; a database error is retried), rows
held by another transaction being skipped rather than waited for, and each schedule's next fire times.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest

from functions.audit_retention.handler import handler as audit_retention
from functions.idempotency_keys_prune.handler import handler as idempotency_keys_prune
from functions.notifications_cleanup.handler import handler as notifications_cleanup
from functions.push_tokens_cleanup.handler import handler as push_tokens_cleanup
from functions.reservations_cleanup.handler import handler as reservations_cleanup
from functions.vouchers_audit_archive.handler import handler as vouchers_audit_archive
from functions.vouchers_expire.handler import handler as vouchers_expire
from shared.database import Database
from shared.demo.vouchers import VOUCHER_AUDIT_RETENTION_DAYS
from shared.migrate import DEMO
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.queues import QueueDirectory
from shared.runtime import Outcome
from shared.settings import Settings
from shared.testing import invoke

HANDLERS = (
    vouchers_expire, vouchers_audit_archive, audit_retention, notifications_cleanup, reservations_cleanup,
    push_tokens_cleanup, idempotency_keys_prune,
)  # fmt: skip


@pytest.fixture
def bind(sqs, stage, db_url):
    """Bind the handlers to this test's database and queues. ``lock_timeout`` (optional) bounds every lock wait of
    the job's connection: a job that waited for a row another transaction holds would fail instead of hanging."""
    ensure_queues(sqs, product, stage=stage)
    databases = []

    def bind(lock_timeout: str | None = None) -> None:
        url = db_url if lock_timeout is None else f"{db_url} options='-c lock_timeout={lock_timeout}'"
        settings = Settings(stage=stage, database_url=url)
        database = Database(settings)
        databases.append(database)
        for handler in HANDLERS:
            handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)

    bind()
    yield bind
    for database in databases:
        database.close()


@pytest.fixture
def run(bind, stage):
    def run(handler, payload=None):
        result = invoke(handler, payload if payload is not None else {}, stage=stage)
        assert len(result.reports) == 1
        return result

    return run


def result_of(invoked) -> dict:
    assert invoked.outcomes == [Outcome.SUCCEEDED], invoked.reports[0].error
    return json.loads(invoked.reports[0].result)


def column(conn, query: str, params=None) -> list:
    return [row[0] for row in conn.execute(query, params).fetchall()]


@pytest.fixture
def user_id(conn) -> int:
    return conn.execute("INSERT INTO demo.users (email, name) VALUES ('ada@example.com', 'Ada') RETURNING id").fetchone()[0]


@pytest.fixture
def store_id(conn, user_id) -> int:
    return conn.execute("INSERT INTO demo.stores (name, owner_user_id) VALUES ('Corner', %s) RETURNING id", (user_id,)).fetchone()[0]


# -- schedules --------------------------------------------------------------------------------------------------------

# All in UTC, which has no daylight saving time: the fires keep their wall-clock time across the dates Europe and
# North America change their clocks (2026-03-08, 2026-03-29), which the windows below straddle.
SCHEDULES = [
    ("vouchers.expire", "cron(0 2 * * ? *)", "2026-03-28T12:00:00",
     ["2026-03-29T02:00:00", "2026-03-30T02:00:00", "2026-03-31T02:00:00"]),
    ("vouchers.audit_archive", "cron(30 2 * * ? *)", "2026-03-28T12:00:00",
     ["2026-03-29T02:30:00", "2026-03-30T02:30:00", "2026-03-31T02:30:00"]),
    ("audit.retention", "cron(0 3 * * ? *)", "2026-03-28T03:00:00",
     ["2026-03-29T03:00:00", "2026-03-30T03:00:00", "2026-03-31T03:00:00"]),
    ("notifications.cleanup", "rate(1 hour)", "2026-03-29T00:20:00",
     ["2026-03-29T01:00:00", "2026-03-29T02:00:00", "2026-03-29T03:00:00"]),
    ("reservations.cleanup", "rate(15 minutes)", "2026-03-08T01:50:00",
     ["2026-03-08T02:00:00", "2026-03-08T02:15:00", "2026-03-08T02:30:00"]),
    # 2026-03-30 is a Monday (EventBridge's MON); the run after Sunday 2026-03-29 04:00 is the next day's.
    ("push_tokens.cleanup", "cron(0 4 ? * MON *)", "2026-03-25T12:00:00",
     ["2026-03-30T04:00:00", "2026-04-06T04:00:00", "2026-04-13T04:00:00"]),
    ("idempotency_keys.prune", "rate(1 hour)", "2026-03-08T01:59:00",
     ["2026-03-08T02:00:00", "2026-03-08T03:00:00", "2026-03-08T04:00:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "expression", "after", "fires"), SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedule_expression_timezone_and_next_fires(name, expression, after, fires):
    job = product[name]
    assert (job.schedule, job.timezone) == (expression, "UTC")
    schedule = job.parsed_schedule
    moment = datetime.fromisoformat(after).replace(tzinfo=UTC)
    got = []
    for _ in fires:
        moment = schedule.next_after(moment)
        got.append(moment)
    assert got == [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in fires]
    if name == "push_tokens.cleanup":
        assert {f.weekday() for f in got} == {0}  # Python's Monday


# -- notifications.cleanup ---------------------------------------------------------------------------------------------


def add_notifications(conn, user_id, ages: list[str]) -> None:
    for age in ages:
        conn.execute(
            "INSERT INTO demo.notifications (user_id, type, title, body, created_at) "
            "VALUES (%s, 'reminder', %s, 'b', now() - %s::interval)",
            (user_id, age, age),
        )


def test_notifications_cleanup_deletes_those_older_than_90_days_and_keeps_the_rest(run, conn, user_id):
    add_notifications(conn, user_id, ["400 days", "90 days 1 minute", "89 days 23 hours 59 minutes", "1 day"])
    assert result_of(run(notifications_cleanup)) == {"deleted": 2, "batches": 1, "stopped_early": False}
    assert column(conn, "SELECT title FROM demo.notifications ORDER BY created_at") == ["89 days 23 hours 59 minutes", "1 day"]
    # Idempotent: nothing more is old enough.
    assert result_of(run(notifications_cleanup))["deleted"] == 0
    assert conn.execute("SELECT count(*) FROM demo.notifications").fetchone()[0] == 2


def test_notifications_cleanup_runs_batches_until_done_and_stops_at_max_batches(run, conn, user_id):
    add_notifications(conn, user_id, [f"{100 + i} days" for i in range(5)] + ["1 day"])
    # max_batches bounds a run: two batches of two, and the oldest-first order leaves the youngest old one.
    assert result_of(run(notifications_cleanup, {"batch_size": 2, "max_batches": 2})) == {
        "deleted": 4, "batches": 2, "stopped_early": True,
    }  # fmt: skip
    assert column(conn, "SELECT title FROM demo.notifications ORDER BY created_at") == ["100 days", "1 day"]
    # Three old rows in batches of two: both batches in one run, the last one short.
    add_notifications(conn, user_id, ["200 days", "201 days"])
    assert result_of(run(notifications_cleanup, {"batch_size": 2, "max_batches": 10})) == {
        "deleted": 3, "batches": 2, "stopped_early": False,
    }  # fmt: skip
    assert column(conn, "SELECT title FROM demo.notifications") == ["1 day"]


def test_notifications_cleanup_skips_rows_another_transaction_holds_instead_of_waiting(bind, run, conn, db_url, user_id):
    bind(lock_timeout="5s")  # waiting for the held row would fail the run (LockNotAvailable) rather than hang
    add_notifications(conn, user_id, ["100 days", "101 days", "102 days"])
    with psycopg.connect(db_url) as other:  # not autocommit: the lock is held until the block ends
        other.execute("SELECT 1 FROM demo.notifications WHERE title = '101 days' FOR UPDATE")
        assert result_of(run(notifications_cleanup))["deleted"] == 2
        assert column(conn, "SELECT title FROM demo.notifications") == ["101 days"]
    assert result_of(run(notifications_cleanup))["deleted"] == 1


def test_notifications_cleanup_bad_payload_goes_to_the_dlq(run):
    invoked = run(notifications_cleanup, {"older_than_days": 0})
    assert invoked.outcomes == [Outcome.DEAD]
    assert "older_than_days" in invoked.reports[0].error


def test_notifications_cleanup_database_error_is_retried(run, conn, user_id):
    add_notifications(conn, user_id, ["100 days"])
    conn.execute("ALTER TABLE demo.notifications RENAME TO notifications_moved")
    invoked = run(notifications_cleanup)
    assert invoked.outcomes == [Outcome.RETRYING]
    assert "notifications" in invoked.reports[0].error
    conn.execute("ALTER TABLE demo.notifications_moved RENAME TO notifications")
    assert result_of(run(notifications_cleanup))["deleted"] == 1


# -- idempotency_keys.prune --------------------------------------------------------------------------------------------


def test_idempotency_keys_prune_deletes_expired_keys_only(run, conn):
    conn.execute(
        """INSERT INTO demo.idempotency_keys (key, expires_at) VALUES
           ('long-gone', now() - interval '30 days'), ('just-expired', now() - interval '1 second'),
           ('about-to-expire', now() + interval '1 minute'), ('fresh', now() + interval '1 day')"""
    )
    assert result_of(run(idempotency_keys_prune)) == {"deleted": 2, "batches": 1, "stopped_early": False}
    assert column(conn, "SELECT key FROM demo.idempotency_keys ORDER BY key") == ["about-to-expire", "fresh"]
    assert result_of(run(idempotency_keys_prune))["deleted"] == 0


def test_idempotency_keys_prune_batches(run, conn):
    conn.execute(
        "INSERT INTO demo.idempotency_keys (key, expires_at) "
        "SELECT 'k' || n, now() - make_interval(mins => n) FROM generate_series(1, 7) n"
    )
    assert result_of(run(idempotency_keys_prune, {"batch_size": 3, "max_batches": 2}))["deleted"] == 6
    assert result_of(run(idempotency_keys_prune, {"batch_size": 3, "max_batches": 2})) == {
        "deleted": 1, "batches": 1, "stopped_early": False,
    }  # fmt: skip
    assert conn.execute("SELECT count(*) FROM demo.idempotency_keys").fetchone()[0] == 0


# -- push_tokens.cleanup -----------------------------------------------------------------------------------------------


def add_tokens(conn, user_id, ages: list[str]) -> None:
    for age in ages:
        conn.execute(
            "INSERT INTO demo.device_tokens (user_id, token, platform, last_seen_at) VALUES (%s, %s, 'ios', now() - %s::interval)",
            (user_id, age, age),
        )


def test_push_tokens_cleanup_deletes_tokens_unseen_for_60_days(run, conn, user_id):
    add_tokens(conn, user_id, ["90 days", "60 days 1 minute", "59 days 23 hours", "1 hour"])
    assert result_of(run(push_tokens_cleanup))["deleted"] == 2
    assert column(conn, "SELECT token FROM demo.device_tokens ORDER BY last_seen_at") == ["59 days 23 hours", "1 hour"]
    assert result_of(run(push_tokens_cleanup))["deleted"] == 0


def test_push_tokens_cleanup_threshold_comes_from_the_payload(run, conn, user_id):
    add_tokens(conn, user_id, ["40 days", "20 days"])
    assert result_of(run(push_tokens_cleanup, {"unseen_days": 30}))["deleted"] == 1
    assert column(conn, "SELECT token FROM demo.device_tokens") == ["20 days"]
    invoked = run(push_tokens_cleanup, {"unseen_days": 0})
    assert invoked.outcomes == [Outcome.DEAD] and "unseen_days" in invoked.reports[0].error


def test_push_tokens_cleanup_batches_within_one_run(run, conn, user_id):
    add_tokens(conn, user_id, [f"{61 + i} days" for i in range(5)])
    assert result_of(run(push_tokens_cleanup, {"batch_size": 2})) == {"deleted": 5, "batches": 3, "stopped_early": False}


# -- vouchers.expire ---------------------------------------------------------------------------------------------------


def add_voucher(conn, store_id, code: str, expires: str) -> int:
    """``expires``: an interval from now, e.g. '-1 day' (expired yesterday) or '1 hour'."""
    return conn.execute(
        "INSERT INTO demo.vouchers (code, store_id, amount, expires_at) VALUES (%s, %s, 10, now() + %s::interval) RETURNING id",
        (code, store_id, expires),
    ).fetchone()[0]


def expired_codes(conn) -> list[str]:
    return column(
        conn,
        "SELECT v.code FROM demo.voucher_audit a JOIN demo.vouchers v ON v.id = a.voucher_id "
        "WHERE a.action = 'EXPIRED' ORDER BY v.code",
    )


def test_vouchers_expire_writes_one_expired_row_per_expired_voucher_and_never_a_second(run, conn, store_id):
    add_voucher(conn, store_id, "a-last-month", "-30 days")
    add_voucher(conn, store_id, "b-a-second-ago", "-1 second")
    add_voucher(conn, store_id, "c-in-a-minute", "1 minute")
    already = add_voucher(conn, store_id, "d-already-expired", "-2 days")
    conn.execute("INSERT INTO demo.voucher_audit (voucher_id, action) VALUES (%s, 'CREATED'), (%s, 'EXPIRED')", (already, already))

    assert result_of(run(vouchers_expire)) == {"expired": 2, "batches": 1, "stopped_early": False}
    assert expired_codes(conn) == ["a-last-month", "b-a-second-ago", "d-already-expired"]
    # Running twice adds nothing.
    assert result_of(run(vouchers_expire))["expired"] == 0
    assert conn.execute("SELECT count(*) FROM demo.voucher_audit").fetchone()[0] == 4


def test_vouchers_expire_batches_commit_separately_and_max_batches_bounds_a_run(run, conn, store_id):
    for i in range(5):
        add_voucher(conn, store_id, f"v{i}", f"-{10 - i} days")
    assert result_of(run(vouchers_expire, {"batch_size": 2, "max_batches": 2})) == {
        "expired": 4, "batches": 2, "stopped_early": True,
    }  # fmt: skip
    assert expired_codes(conn) == ["v0", "v1", "v2", "v3"]  # oldest expiry first
    assert result_of(run(vouchers_expire, {"batch_size": 2})) == {"expired": 1, "batches": 1, "stopped_early": False}
    # created_at is each transaction's start: two batches, then the next run's one.
    assert conn.execute("SELECT count(DISTINCT created_at) FROM demo.voucher_audit").fetchone()[0] == 3


def test_vouchers_expire_skips_a_voucher_another_transaction_holds(bind, run, conn, db_url, store_id):
    bind(lock_timeout="5s")
    add_voucher(conn, store_id, "free", "-1 day")
    held = add_voucher(conn, store_id, "held", "-1 day")
    with psycopg.connect(db_url) as other:
        other.execute("SELECT 1 FROM demo.vouchers WHERE id = %s FOR UPDATE", (held,))
        assert result_of(run(vouchers_expire))["expired"] == 1
        assert expired_codes(conn) == ["free"]
    assert result_of(run(vouchers_expire))["expired"] == 1
    assert expired_codes(conn) == ["free", "held"]


def expired_at(conn, voucher_id: int):
    return conn.execute("SELECT expired_at FROM demo.vouchers WHERE id = %s", (voucher_id,)).fetchone()[0]


def test_vouchers_expire_records_the_expiry_on_the_voucher(run, conn, store_id):
    due = add_voucher(conn, store_id, "due", "-1 day")
    valid = add_voucher(conn, store_id, "valid", "1 day")
    assert result_of(run(vouchers_expire))["expired"] == 1
    written = conn.execute("SELECT created_at FROM demo.voucher_audit WHERE voucher_id = %s AND action = 'EXPIRED'", (due,)).fetchone()[0]
    assert expired_at(conn, due) == written  # one statement: the mark and the audit row share the transaction's now()
    assert expired_at(conn, valid) is None


def test_vouchers_expire_does_not_rewrite_an_expiry_the_audit_archive_deleted(run, conn, store_id):
    # The archive's retention can be shorter than the environment's (a payload's retention_days): what keeps the
    # expiry from being written twice is the mark on the voucher, not a look-back bound to the retention.
    voucher = add_voucher(conn, store_id, "old", "-200 days")
    assert result_of(run(vouchers_expire))["expired"] == 1
    conn.execute("UPDATE demo.voucher_audit SET created_at = now() - interval '199 days' WHERE voucher_id = %s", (voucher,))
    marked = expired_at(conn, voucher)
    assert marked is not None

    assert result_of(run(vouchers_audit_archive, {"retention_days": 100}))["deleted"] == 1
    assert expired_codes(conn) == []
    assert result_of(run(vouchers_expire))["expired"] == 0
    assert expired_codes(conn) == []
    assert expired_at(conn, voucher) == marked
    assert conn.execute("SELECT count(*) FROM demo.voucher_audit").fetchone()[0] == 0


def test_vouchers_expire_ignores_the_audit_retention_setting(run, conn, store_id, monkeypatch):
    # Only vouchers.audit_archive reads VOUCHER_AUDIT_RETENTION_DAYS now: a bad value there does not stop expiries.
    add_voucher(conn, store_id, "x", "-1 day")
    monkeypatch.setenv(VOUCHER_AUDIT_RETENTION_DAYS, "two years")
    assert result_of(run(vouchers_expire))["expired"] == 1
    assert expired_codes(conn) == ["x"]


def test_migration_0004_backfills_expired_at_from_existing_expired_rows(conn, store_id):
    # Replay the migration on a schema as 0003 left it: a voucher with an EXPIRED row is marked with that row's time;
    # one without stays unmarked for vouchers.expire.
    conn.execute("DROP INDEX IF EXISTS demo.vouchers_unexpired")
    conn.execute("ALTER TABLE demo.vouchers DROP COLUMN expired_at")
    marked = add_voucher(conn, store_id, "marked", "-10 days")
    pending = add_voucher(conn, store_id, "pending", "-1 day")
    conn.execute(
        "INSERT INTO demo.voucher_audit (voucher_id, action, created_at) VALUES "
        "(%s, 'CREATED', now() - interval '20 days'), (%s, 'EXPIRED', now() - interval '9 days')",
        (marked, marked),
    )
    conn.execute(next(m for m in DEMO.migrations() if m.version == 4).sql)
    assert expired_at(conn, marked) == conn.execute(
        "SELECT created_at FROM demo.voucher_audit WHERE voucher_id = %s AND action = 'EXPIRED'", (marked,)
    ).fetchone()[0]
    assert expired_at(conn, pending) is None


# -- vouchers.audit_archive --------------------------------------------------------------------------------------------


def add_audit(conn, voucher_id: int, ages: list[str], action: str = "CREATED") -> None:
    for age in ages:
        conn.execute(
            "INSERT INTO demo.voucher_audit (voucher_id, action, created_at) VALUES (%s, %s, now() - %s::interval)",
            (voucher_id, action, age),
        )


def audit_ages(conn) -> list[int]:
    return column(conn, "SELECT extract(day FROM now() - created_at)::int FROM demo.voucher_audit ORDER BY created_at")


def test_vouchers_audit_archive_deletes_rows_older_than_730_days(run, conn, store_id):
    voucher = add_voucher(conn, store_id, "v", "-1 day")
    add_audit(conn, voucher, ["2000 days", "730 days 1 minute", "729 days 23 hours", "10 days"])
    assert result_of(run(vouchers_audit_archive)) == {"deleted": 2, "batches": 1, "stopped_early": False, "retention_days": 730}
    assert audit_ages(conn) == [729, 10]
    assert result_of(run(vouchers_audit_archive))["deleted"] == 0
    assert audit_ages(conn) == [729, 10]


def test_vouchers_audit_archive_retention_from_environment_or_payload(run, conn, store_id, monkeypatch):
    voucher = add_voucher(conn, store_id, "v", "-1 day")
    add_audit(conn, voucher, ["400 days", "200 days", "50 days"])
    monkeypatch.setenv(VOUCHER_AUDIT_RETENTION_DAYS, "365")
    assert result_of(run(vouchers_audit_archive))["deleted"] == 1
    assert audit_ages(conn) == [200, 50]
    # The payload's retention_days wins over the environment.
    assert result_of(run(vouchers_audit_archive, {"retention_days": 100}))["deleted"] == 1
    assert audit_ages(conn) == [50]


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "VOUCHER_AUDIT_RETENTION_DAYS='abc' is not a whole number of days"),
    ("0", "VOUCHER_AUDIT_RETENTION_DAYS=0 is out of range (1 to 36500 days)"),
])  # fmt: skip
def test_vouchers_audit_archive_bad_retention_setting_goes_to_the_dlq(run, conn, store_id, monkeypatch, value, message):
    voucher = add_voucher(conn, store_id, "v", "-1 day")
    add_audit(conn, voucher, ["2000 days"])
    monkeypatch.setenv(VOUCHER_AUDIT_RETENTION_DAYS, value)
    invoked = run(vouchers_audit_archive)
    assert invoked.outcomes == [Outcome.DEAD]
    assert message in invoked.reports[0].error
    assert audit_ages(conn) == [2000]


def test_vouchers_audit_archive_deletes_in_batches_of_1000_by_default(run, conn, store_id):
    voucher = add_voucher(conn, store_id, "v", "-1 day")
    conn.execute(
        "INSERT INTO demo.voucher_audit (voucher_id, action, created_at) "
        "SELECT %s, 'REDEEMED', now() - interval '800 days' - make_interval(secs => n) FROM generate_series(1, 2500) n",
        (voucher,),
    )
    add_audit(conn, voucher, ["1 day"])
    assert result_of(run(vouchers_audit_archive)) == {"deleted": 2500, "batches": 3, "stopped_early": False, "retention_days": 730}
    assert audit_ages(conn) == [1]
    conn.execute(
        "INSERT INTO demo.voucher_audit (voucher_id, action, created_at) "
        "SELECT %s, 'REDEEMED', now() - interval '800 days' FROM generate_series(1, 5) n",
        (voucher,),
    )
    assert result_of(run(vouchers_audit_archive, {"batch_size": 2, "max_batches": 2}))["deleted"] == 4


def test_vouchers_audit_archive_database_error_is_retried(run, conn):
    conn.execute("ALTER TABLE demo.voucher_audit RENAME TO voucher_audit_moved")
    invoked = run(vouchers_audit_archive)
    assert invoked.outcomes == [Outcome.RETRYING]
    assert "voucher_audit" in invoked.reports[0].error


# -- audit.retention ---------------------------------------------------------------------------------------------------


def add_logs(conn, ages: list[str]) -> None:
    for age in ages:
        conn.execute(
            "INSERT INTO demo.audit_logs (actor, action, entity, detail, created_at) "
            "VALUES ('ops', 'update', %s, %s, now() - %s::interval)",
            (age, json.dumps({"age": age}), age),
        )


def add_archived(conn, ages: list[str]) -> None:
    for i, age in enumerate(ages):
        conn.execute(
            "INSERT INTO demo.audit_logs_archive (id, actor, action, entity, created_at) "
            "VALUES (%s, 'ops', 'update', %s, now() - %s::interval)",
            (1_000_000 + i, age, age),
        )


def test_audit_retention_moves_year_old_logs_to_the_archive_and_purges_seven_year_old_ones(run, conn):
    add_logs(conn, ["3000 days", "366 days", "365 days 1 minute", "364 days 23 hours", "1 day"])
    add_archived(conn, ["2600 days", "2555 days 1 minute", "2554 days 23 hours", "500 days"])
    before = {row[0]: row[1:] for row in conn.execute("SELECT id, actor, action, entity, detail, created_at FROM demo.audit_logs")}

    summary = result_of(run(audit_retention))
    # The 3000-day-old log is archived, then purged in the same run (archived first, purged after).
    assert summary == {"archived": 3, "purged": 3, "batches": 2, "stopped_early": False}
    assert column(conn, "SELECT entity FROM demo.audit_logs ORDER BY created_at") == ["364 days 23 hours", "1 day"]
    assert column(conn, "SELECT entity FROM demo.audit_logs_archive ORDER BY created_at") == [
        "2554 days 23 hours", "500 days", "366 days", "365 days 1 minute",
    ]  # fmt: skip
    # Moved whole: same id and columns.
    for id_, *rest in conn.execute("SELECT id, actor, action, entity, detail, created_at FROM demo.audit_logs_archive WHERE id < 1000000"):
        assert tuple(rest) == before[id_]

    assert result_of(run(audit_retention)) == {"archived": 0, "purged": 0, "batches": 2, "stopped_early": False}
    assert conn.execute("SELECT count(*) FROM demo.audit_logs").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM demo.audit_logs_archive").fetchone()[0] == 4


def test_audit_retention_moves_in_batches_each_its_own_transaction(run, conn):
    add_logs(conn, [f"{400 + i} days" for i in range(5)])
    add_archived(conn, [f"{3000 + i} days" for i in range(5)])
    summary = result_of(run(audit_retention, {"batch_size": 2, "max_batches": 2}))
    # max_batches bounds each step: two batches of two moved, two of two purged.
    assert summary == {"archived": 4, "purged": 4, "batches": 4, "stopped_early": True}
    # archived_at is each batch's transaction start: two distinct moves.
    assert conn.execute("SELECT count(DISTINCT archived_at) FROM demo.audit_logs_archive WHERE id < 1000000").fetchone()[0] == 2
    summary = result_of(run(audit_retention, {"batch_size": 2, "max_batches": 10}))
    assert summary == {"archived": 1, "purged": 1, "batches": 2, "stopped_early": False}
    assert conn.execute("SELECT count(*) FROM demo.audit_logs").fetchone()[0] == 0
    assert column(conn, "SELECT count(*) FROM demo.audit_logs_archive WHERE id >= 1000000") == [0]


def test_audit_retention_refuses_a_purge_before_the_archiving(run, conn):
    add_logs(conn, ["400 days"])
    invoked = run(audit_retention, {"archive_after_days": 365, "purge_after_days": 30})
    assert invoked.outcomes == [Outcome.DEAD]
    assert "purge_after_days (30) must not be less than archive_after_days (365)" in invoked.reports[0].error
    assert conn.execute("SELECT count(*) FROM demo.audit_logs").fetchone()[0] == 1


def test_audit_retention_a_failed_move_keeps_the_logs(run, conn):
    add_logs(conn, ["400 days"])
    log_id = conn.execute("SELECT id FROM demo.audit_logs").fetchone()[0]
    # Something else wrote this id to the archive: the move fails as a whole (retried) instead of losing the log.
    conn.execute("INSERT INTO demo.audit_logs_archive (id, actor, action, entity, created_at) VALUES (%s, 'x', 'x', 'x', now())", (log_id,))
    invoked = run(audit_retention)
    assert invoked.outcomes == [Outcome.RETRYING]
    assert "UniqueViolation" in invoked.reports[0].error
    assert conn.execute("SELECT count(*) FROM demo.audit_logs").fetchone()[0] == 1


# -- reservations.cleanup ----------------------------------------------------------------------------------------------


@pytest.fixture
def shop(conn, store_id, user_id):
    """Stock of two SKUs and a helper placing a pending order that reserves some of it."""
    conn.execute(
        "INSERT INTO demo.inventory (store_id, sku, name, price, on_hand, reserved) VALUES "
        "(%s, 'tea', 'Tea', 5, 100, 10), (%s, 'mug', 'Mug', 9, 20, 3)",
        (store_id, store_id),
    )

    def order(age: str, items: dict[str, int], status: str = "pending") -> int:
        order_id = conn.execute(
            "INSERT INTO demo.orders (store_id, user_id, status, created_at) VALUES (%s, %s, %s, now() - %s::interval) RETURNING id",
            (store_id, user_id, status, age),
        ).fetchone()[0]
        for sku, quantity in items.items():
            conn.execute(
                "INSERT INTO demo.order_items (order_id, store_id, sku, quantity, price) VALUES (%s, %s, %s, %s, 1)",
                (order_id, store_id, sku, quantity),
            )
        return order_id

    return order


def reserved(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT sku, reserved FROM demo.inventory").fetchall())


def statuses(conn) -> dict[int, str]:
    return dict(conn.execute("SELECT id, status FROM demo.orders").fetchall())


def test_reservations_cleanup_cancels_stale_pending_orders_and_releases_their_stock(run, conn, shop):
    stale = shop("2 hours", {"tea": 4, "mug": 1})
    just_stale = shop("30 minutes 5 seconds", {"tea": 2})
    young = shop("29 minutes", {"tea": 3})
    paid = shop("3 hours", {"mug": 2}, status="paid")
    assert result_of(run(reservations_cleanup)) == {"cancelled": 2, "stopped_early": False}
    assert statuses(conn) == {stale: "cancelled", just_stale: "cancelled", young: "pending", paid: "paid"}
    assert reserved(conn) == {"tea": 10 - 4 - 2, "mug": 3 - 1}
    # A second run releases nothing twice.
    assert result_of(run(reservations_cleanup)) == {"cancelled": 0, "stopped_early": False}
    assert reserved(conn) == {"tea": 4, "mug": 2}


def test_reservations_cleanup_never_takes_reserved_below_zero(run, conn, shop):
    order = shop("1 hour", {"mug": 5})  # more than the 3 still reserved (a stock count reset it meanwhile)
    assert result_of(run(reservations_cleanup))["cancelled"] == 1
    assert statuses(conn) == {order: "cancelled"}
    assert reserved(conn) == {"tea": 10, "mug": 0}


def test_reservations_cleanup_limit_bounds_a_run_oldest_first(run, conn, shop):
    orders = [shop(f"{5 - i} hours", {"tea": 1}) for i in range(3)]
    assert result_of(run(reservations_cleanup, {"limit": 2})) == {"cancelled": 2, "stopped_early": True}
    assert statuses(conn) == {orders[0]: "cancelled", orders[1]: "cancelled", orders[2]: "pending"}
    assert result_of(run(reservations_cleanup, {"older_than_minutes": 30, "limit": 2}))["cancelled"] == 1
    assert reserved(conn)["tea"] == 7


def test_reservations_cleanup_passes_over_an_order_being_paid(bind, run, conn, db_url, shop):
    bind(lock_timeout="5s")  # waiting for the held order would fail the run instead of hanging
    being_paid = shop("2 hours", {"tea": 4})
    other_order = shop("1 hour", {"tea": 1})
    with psycopg.connect(db_url) as payment:
        payment.execute("SELECT 1 FROM demo.orders WHERE id = %s FOR UPDATE", (being_paid,))
        assert result_of(run(reservations_cleanup))["cancelled"] == 1
        payment.execute("UPDATE demo.orders SET status = 'paid' WHERE id = %s", (being_paid,))
    assert statuses(conn) == {being_paid: "paid", other_order: "cancelled"}
    assert reserved(conn)["tea"] == 9
    assert result_of(run(reservations_cleanup))["cancelled"] == 0


def test_reservations_cleanup_an_order_that_fails_is_rolled_back_whole_and_retried(run, conn, shop):
    first = shop("3 hours", {"tea": 1})
    broken = shop("2 hours", {"mug": 1})
    # A trigger standing in for any failure mid-order: after its stock was released, cancelling it fails.
    conn.execute(
        f"""CREATE FUNCTION demo.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refusing order %', NEW.id; END $$;
            CREATE TRIGGER refuse BEFORE UPDATE ON demo.orders FOR EACH ROW WHEN (OLD.id = {broken})
            EXECUTE FUNCTION demo.refuse()"""
    )
    invoked = run(reservations_cleanup)
    assert invoked.outcomes == [Outcome.RETRYING]
    assert f"refusing order {broken}" in invoked.reports[0].error
    # The first order's transaction committed; the broken one's stock release was rolled back with it.
    assert statuses(conn) == {first: "cancelled", broken: "pending"}
    assert reserved(conn) == {"tea": 9, "mug": 3}
    conn.execute("DROP TRIGGER refuse ON demo.orders")
    assert result_of(run(reservations_cleanup))["cancelled"] == 1
    assert reserved(conn) == {"tea": 9, "mug": 2}


def test_reservations_cleanup_bad_payload_goes_to_the_dlq(run):
    invoked = run(reservations_cleanup, {"grace_minutes": 10})
    assert invoked.outcomes == [Outcome.DEAD]
    assert "grace_minutes" in invoked.reports[0].error
