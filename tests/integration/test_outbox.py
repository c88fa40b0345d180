"""Enqueue on the caller's transaction, against a real PostgreSQL."""

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.envelope import MAX_PAYLOAD_BYTES
from shared.jobs import EMAIL_SEND, RESERVATIONS_CLEANUP
from shared.outbox import EnqueueError, InvalidPayload, Item, enqueue, enqueue_many, enqueue_scheduled_run

WELCOME = {"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}}


def pending(conn):
    return conn.execute("SELECT id, job_name, queue, payload, dedup_key FROM conveyor.outbox ORDER BY created_at, id").fetchall()


def test_enqueue_exists_only_if_the_transaction_commits(conn):
    with conn.transaction():
        committed = enqueue(conn, EMAIL_SEND, WELCOME)
    with pytest.raises(RuntimeError):
        with conn.transaction():
            enqueue(conn, EMAIL_SEND, {**WELCOME, "to": "rolled@back.com"})
            raise RuntimeError("the business write failed")
    rows = pending(conn)
    assert [r[0] for r in rows] == [committed]
    assert rows[0][3]["to"] == "ada@example.com"


def test_enqueue_never_commits_on_its_own(db_url):
    with psycopg.connect(db_url) as writer:  # not autocommit: enqueue runs inside an implicit transaction
        enqueue(writer, EMAIL_SEND, WELCOME)
        with psycopg.connect(db_url, autocommit=True) as reader:
            assert pending(reader) == []
        writer.rollback()
        with psycopg.connect(db_url, autocommit=True) as reader:
            assert pending(reader) == []


def test_invalid_payload_names_the_field_and_writes_nothing(conn):
    with pytest.raises(InvalidPayload) as info:
        enqueue(conn, EMAIL_SEND, {**WELCOME, "to": "not-an-address", "extra": 1})
    message = str(info.value)
    assert "email.send" in message and "to:" in message and "extra: Extra inputs are not permitted" in message
    assert pending(conn) == []


def test_oversized_payload_is_refused_before_writing(conn):
    with pytest.raises(ValueError, match=f"the limit is {MAX_PAYLOAD_BYTES}"):
        enqueue(conn, EMAIL_SEND, {**WELCOME, "variables": {"blob": "x" * MAX_PAYLOAD_BYTES}})
    assert pending(conn) == []


def test_route_and_explicit_queue(conn):
    reset = enqueue(conn, EMAIL_SEND, {**WELCOME, "template": "password_reset", "variables": {"link": "l"}})
    forced = enqueue(conn, EMAIL_SEND, WELCOME, queue="email-high")
    normal = enqueue(conn, "email.send", WELCOME)
    queues = {r[0]: r[2] for r in pending(conn)}
    assert queues == {reset: "email-high", forced: "email-high", normal: "email-default"}


def test_delay_and_run_at_of_any_length(conn):
    enqueue(conn, EMAIL_SEND, WELCOME, delay=timedelta(days=40))
    at = datetime(2031, 1, 1, 9, 0, tzinfo=UTC)
    enqueue(conn, EMAIL_SEND, WELCOME, run_at=at)
    rows = conn.execute("SELECT run_at - now() FROM conveyor.outbox ORDER BY run_at").fetchall()
    assert rows[0][0] >= timedelta(days=40) - timedelta(seconds=5)
    assert conn.execute("SELECT max(run_at) FROM conveyor.outbox").fetchone()[0] == at


@pytest.mark.parametrize(
    "options, message",
    [
        ({"delay": 5, "run_at": datetime.now(UTC)}, "either delay or run_at"),
        ({"run_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"delay": -1}, "must not be negative"),
        ({"dedup_key": ""}, "dedup_key must be a non-empty string"),
    ],
)
def test_bad_options_are_refused(conn, options, message):
    with pytest.raises(EnqueueError, match=message):
        enqueue(conn, EMAIL_SEND, WELCOME, **options)
    assert pending(conn) == []


def test_dedup_key_returns_the_pending_job(conn):
    first = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="welcome:ada")
    again = enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "changed"}, dedup_key="welcome:ada")
    other = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="welcome:bob")
    assert again == first and other != first
    assert len(pending(conn)) == 2
    # Once the job leaves the outbox (published), the key is free again.
    conn.execute("DELETE FROM conveyor.outbox WHERE id = %s", (first,))
    assert enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="welcome:ada") not in (first, other)


def test_enqueue_many_is_validated_whole_and_keeps_order(conn):
    with pytest.raises(EnqueueError, match="item 1: invalid payload"):
        enqueue_many(conn, EMAIL_SEND, [WELCOME, {**WELCOME, "to": "bad"}])
    assert pending(conn) == []
    existing = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k1")
    ids = enqueue_many(
        conn,
        EMAIL_SEND,
        [WELCOME, Item(WELCOME, dedup_key="k1"), Item(WELCOME, dedup_key="k2"), Item(WELCOME, dedup_key="k2")],
    )
    assert len(ids) == 4 and ids[1] == existing and ids[2] == ids[3]
    assert len(pending(conn)) == 3


def test_a_scheduled_run_carries_its_period_and_the_schedule_payload(conn):
    # Whether a period runs is shared.scheduled's decision (tests/integration/test_scheduled.py); this is the row.
    period = datetime(2026, 11, 24, 12, 15, tzinfo=UTC)
    job_id = enqueue_scheduled_run(conn, RESERVATIONS_CLEANUP, period)
    *row, payload = conn.execute("SELECT id, job_name, queue, scheduled_for, payload FROM conveyor.outbox").fetchone()
    assert row == [job_id, "reservations.cleanup", "reservations-cleanup", period]
    assert RESERVATIONS_CLEANUP.payload.model_validate(payload) == RESERVATIONS_CLEANUP.payload.model_validate(
        dict(RESERVATIONS_CLEANUP.schedule_payload)
    )


def test_sql_add_job_for_producers_in_other_languages(conn):
    job_id = conn.execute(
        "SELECT conveyor.add_job('email.send', %s::jsonb, queue => 'email-default', dedup_key => 'sql-1')", ('{"to": "a@b.co"}',)
    ).fetchone()[0]
    again = conn.execute(
        "SELECT conveyor.add_job('email.send', '{}'::jsonb, queue => 'email-default', dedup_key => 'sql-1')"
    ).fetchone()[0]
    assert again == job_id
    assert pending(conn)[0][2] == "email-default"
    high = conn.execute("SELECT conveyor.add_job('email.send', '{}', queue => 'email-high')").fetchone()[0]
    assert {r[0]: r[2] for r in pending(conn)}[high] == "email-high"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='unknown job "nope"'):
        conn.execute("SELECT conveyor.add_job('nope')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='cannot go to queue "reservations-cleanup"'):
        conn.execute("SELECT conveyor.add_job('email.send', '{}', queue => 'reservations-cleanup')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be a JSON object"):
        conn.execute("SELECT conveyor.add_job('reservations.cleanup', '[1]')")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="the limit is"):
        conn.execute("SELECT conveyor.add_job('reservations.cleanup', jsonb_build_object('x', repeat('y', 300000)))")


def test_sql_and_python_payload_limits_agree(conn):
    assert conn.execute("SELECT conveyor.max_payload_bytes()").fetchone()[0] == MAX_PAYLOAD_BYTES


def test_size_is_checked_on_the_exact_text_that_is_stored_and_sent(conn):
    """The outbox keeps the payload's JSON text as enqueue produced it, so the size enqueue measures is the size
    the relay sends. conveyor.add_job stores (and measures) PostgreSQL's rendering of its jsonb argument."""
    from shared.envelope import PayloadTooLarge

    variables = {f"k{i:05d}": "" for i in range(20_000)}  # "k00000":"", is 11 bytes compact, 13 as jsonb renders it
    payload = {"to": "a@b.co", "template": "notification", "subject": "s", "variables": variables}
    job_id = enqueue(conn, "email.send", payload)
    stored = conn.execute("SELECT payload::text FROM conveyor.outbox WHERE id = %s", (job_id,)).fetchone()[0]
    assert len(stored.encode()) < MAX_PAYLOAD_BYTES
    assert stored == EMAIL_SEND.payload.model_validate(payload).model_dump_json(by_alias=True)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        conn.execute("SELECT conveyor.add_job('email.send', %s::jsonb, queue => 'email-default')", (json.dumps(payload),))
    too_big = {**payload, "variables": {f"k{i:05d}": "" for i in range(24_000)}}
    with pytest.raises(PayloadTooLarge, match="the limit is"):
        enqueue(conn, "email.send", too_big)


# -- the SQL producer path follows Python's rules ------------------------------------------------------------------


def test_sql_add_job_requires_a_queue_for_routed_jobs(conn):
    """email.send picks email-high for password resets in Python; SQL cannot run that route, so it must not guess."""
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"picks its queue from the payload.*email-default,email-high"):
        conn.execute("SELECT conveyor.add_job('email.send', '{}')")
    high = conn.execute("SELECT conveyor.add_job('email.send', '{}', queue => 'email-high')").fetchone()[0]
    plain = conn.execute("SELECT conveyor.add_job('reservations.cleanup')").fetchone()[0]
    assert {r[0]: r[2] for r in pending(conn)} == {high: "email-high", plain: "reservations-cleanup"}


@pytest.mark.parametrize("key", ["", "k" * 513, "k" * 6000])
def test_sql_add_job_applies_pythons_dedup_key_rules(conn, key):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="dedup_key must be 1 to 512 characters"):
        conn.execute("SELECT conveyor.add_job('reservations.cleanup', dedup_key => %s)", (key,))
    with pytest.raises(EnqueueError, match="dedup_key must be a non-empty string of at most 512"):
        enqueue(conn, RESERVATIONS_CLEANUP, {}, dedup_key=key)
    assert conn.execute("SELECT conveyor.add_job('reservations.cleanup', dedup_key => %s)", ("k" * 512,)).fetchone()[0]


@pytest.mark.parametrize("when", ["infinity", "-infinity"])
def test_non_finite_run_at_is_refused_in_sql(conn, when):
    """A job due at 'infinity' is never due and invisible to the lag metric: refused by add_job and by the table."""
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="run_at must be a finite time"):
        conn.execute("SELECT conveyor.add_job('reservations.cleanup', run_at => %s::timestamptz)", (when,))
    with pytest.raises(psycopg.errors.CheckViolation, match="outbox_run_at_finite"):
        conn.execute(
            "INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at) "
            "VALUES (gen_random_uuid(), 'reservations.cleanup', 'reservations-cleanup', '{}', %s::timestamptz)", (when,)
        )
    assert pending(conn) == []


def test_python_refuses_delays_postgres_cannot_hold(conn):
    with pytest.raises(EnqueueError, match="at most 100 years"):
        enqueue(conn, EMAIL_SEND, WELCOME, delay=timedelta(weeks=50_000_000))
    assert pending(conn) == []


PAUSE_AFTER_INSERT = """
CREATE FUNCTION public.pause_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Once per session: wait for the test to let go of its advisory lock.
    IF current_setting('test.pause', true) = 'on' THEN
        PERFORM set_config('test.pause', 'off', false);
        PERFORM pg_advisory_lock(4242);
        PERFORM pg_advisory_unlock(4242);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER pause_after_insert AFTER INSERT ON conveyor.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.pause_after_insert();
"""


def _publish_holder_between_insert_and_lookup(db_url, add):
    """Make the dedup race happen every time: a committed job holds the key; the producer's INSERT conflicts with
    it, then (a test-only trigger holds the producer right after its INSERT) the holder is published (deleted)
    before the producer looks it up. Returns what the producer's call returned."""
    import threading

    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(PAUSE_AFTER_INSERT)
        admin.execute("SELECT pg_advisory_lock(4242)")
        admin.execute("SELECT conveyor.add_job('reservations.cleanup', dedup_key => 'race')")
        result = {}

        def produce():
            with psycopg.connect(db_url, autocommit=True) as producer:
                producer.execute("SET test.pause = 'on'")
                result["pid"] = producer.info.backend_pid
                result["id"] = add(producer)

        thread = threading.Thread(target=produce)
        thread.start()
        for _ in range(600):
            paused = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND datname = current_database()"
            ).fetchone()[0]
            if paused:
                break
            time.sleep(0.05)
        assert paused, "the producer never reached its INSERT"
        admin.execute("DELETE FROM conveyor.outbox WHERE dedup_key = 'race'")  # published meanwhile
        admin.execute("SELECT pg_advisory_unlock(4242)")
        thread.join(30)
        return result.get("id"), admin.execute("SELECT id FROM conveyor.outbox WHERE dedup_key = 'race'").fetchall()


def test_sql_add_job_never_returns_null_when_the_dedup_holder_is_published(db_url):
    job_id, rows = _publish_holder_between_insert_and_lookup(
        db_url, lambda c: c.execute(
            "SELECT conveyor.add_job('reservations.cleanup', dedup_key => 'race')"
        ).fetchone()[0],
    )
    assert job_id is not None and rows == [(job_id,)]


def test_python_enqueue_retries_when_the_dedup_holder_is_published(db_url):
    job_id, rows = _publish_holder_between_insert_and_lookup(
        db_url, lambda c: enqueue(c, RESERVATIONS_CLEANUP, {}, dedup_key="race")
    )
    assert job_id is not None and rows == [(job_id,)]


def test_delay_counts_from_the_enqueue_statement_not_the_transaction_start(conn):
    """now() is the transaction's start: a 1 s delay enqueued 0.5 s into a transaction was due 0.5 s early."""
    with conn.transaction():
        conn.execute("SELECT pg_sleep(0.5)")
        job_id = enqueue(conn, EMAIL_SEND, WELCOME, delay=1)
        early = conn.execute(
            "SELECT run_at - now() FROM conveyor.outbox WHERE id = %s", (job_id,)
        ).fetchone()[0]
        sql_id = conn.execute("SELECT conveyor.add_job('reservations.cleanup')").fetchone()[0]
        due_sql = conn.execute("SELECT run_at - now() FROM conveyor.outbox WHERE id = %s", (sql_id,)).fetchone()[0]
    assert early >= timedelta(seconds=1.45)
    assert due_sql >= timedelta(seconds=0.45)  # due when add_job ran, not when the transaction began


def test_a_secret_field_travels_with_its_value_not_pydantics_mask(conn):
    """SecretStr hides a value from logs and reprs; the job still needs the value itself."""
    from pydantic import BaseModel, SecretStr

    from shared.outbox import payload_body
    from shared.registry import JobPayload, Registry

    class Credentials(BaseModel):
        token: SecretStr

    class Login(JobPayload):
        user: str
        password: SecretStr
        nested: Credentials
        many: list[SecretStr] = []

    job = Registry().job("test.login", payload=Login, queue="work")
    model = Login(user="ada", password="hunter2", nested={"token": "t0k"}, many=["a", "b"])
    body = payload_body(job, model)
    assert json.loads(body) == {"user": "ada", "password": "hunter2", "nested": {"token": "t0k"}, "many": ["a", "b"]}
    parsed = Login.model_validate_json(body)
    assert parsed.password.get_secret_value() == "hunter2" and parsed.nested.token.get_secret_value() == "t0k"
