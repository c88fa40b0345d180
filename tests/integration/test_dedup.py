"""Dedup policies of enqueue, enqueue_many and conveyor.add_job (keep, replace, dedup_active), on a real PostgreSQL;
the replacement of a row a relay is publishing against moto's SQS."""

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.envelope import ATTR_JOB_ID
from shared.jobs import EMAIL_SEND, RESERVATIONS_CLEANUP
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.outbox import QUERIES, Dedup, EnqueueError, Item, enqueue, enqueue_many
from tests.integration.test_relay import InterceptedSQS, make_relay, receive_all

WELCOME = {"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}}
LATER = datetime(2031, 1, 1, 9, 0, tzinfo=UTC)
LIVE = ("waiting", "pending", "queued", "running", "retrying")
ENDED = ("succeeded", "failed", "dead", "cancelled", "skipped")


@pytest.fixture
def queues(sqs, stage):
    return ensure_queues(sqs, product, stage=stage)


def outbox(conn):
    """(id, queue, payload's subject, run_at, dedup_key) of every pending row."""
    return conn.execute(
        "SELECT id, queue, payload->>'subject', run_at, dedup_key FROM conveyor.outbox ORDER BY created_at, id"
    ).fetchall()


def add_run(conn, status, dedup_key="k", job_name="email.send"):
    """A published job in the ledger, as the relay and the handler runtime leave it."""
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO conveyor.runs (id, job_name, queue, payload, dedup_key, status, created_at, run_at, published_at)"
        " VALUES (%s, %s, 'email-default', '{}', %s, %s, now(), now(), now())",
        (run_id, job_name, dedup_key, status),
    )
    return run_id


# -- keep and replace -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [Dedup.KEEP, "keep"])
def test_keep_returns_the_pending_job_and_leaves_it_as_it_was(conn, keep):
    first = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k", run_at=LATER)
    again = enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key="k", queue="email-high", dedup=keep)
    assert again == first
    assert outbox(conn) == [(first, "email-default", "Hi", LATER, "k")]


@pytest.mark.parametrize("replace", [Dedup.REPLACE, "replace"])
def test_replace_updates_the_pending_job_in_place(conn, replace):
    first = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k")
    created = conn.execute("SELECT created_at FROM conveyor.outbox").fetchone()[0]
    # It had failed to publish twice and waits out a backoff: the replacement starts with a clean record.
    conn.execute(
        "UPDATE conveyor.outbox SET publish_attempts = 2, last_error = 'QueueDoesNotExist', next_attempt_at = now() + interval '1 minute'"
    )
    again = enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key="k", run_at=LATER, queue="email-high", dedup=replace)
    assert again == first
    assert outbox(conn) == [(first, "email-high", "new", LATER, "k")]
    row = conn.execute(
        "SELECT publish_attempts, last_error, next_attempt_at, claim_token, created_at FROM conveyor.outbox"
    ).fetchone()
    assert row == (0, None, None, None, created)


def test_replace_without_a_pending_job_inserts_and_replaces_only_its_own_key(conn):
    other = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="other")
    job_id = enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key="k", dedup="replace")
    unkeyed = enqueue(conn, EMAIL_SEND, WELCOME, dedup="replace")  # no key: a plain job
    assert {r[0]: r[2] for r in outbox(conn)} == {other: "Hi", job_id: "new", unkeyed: "Hi"}
    # The same key of another job is another key.
    cleanup = enqueue(conn, RESERVATIONS_CLEANUP, {}, dedup_key="k", dedup="replace")
    assert cleanup not in (other, job_id, unkeyed)


def test_replace_of_a_row_a_relay_has_claimed_becomes_a_new_job(conn):
    """The claimed row may be on SQS already and its relay deletes it by id once SQS has it: the replacement takes a
    new id and loses the claim, so the mark cannot delete it and another cycle publishes it."""
    first = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k")
    token = uuid.uuid4()
    claimed = conn.execute(
        QUERIES["outbox_claim"], {"limit": 10, "skip_queues": [], "token": token, "lease": timedelta(seconds=60), "max_bytes": 1 << 20}
    ).fetchall()
    assert [r[0] for r in claimed] == [first]
    replacement = enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key="k", dedup="replace")
    assert replacement != first
    assert conn.execute("SELECT id, claim_token, locked_until, payload->>'subject' FROM conveyor.outbox").fetchall() == [
        (replacement, None, None, "new")
    ]
    # The relay marks what it sent: the old id. The replacement stays pending.
    conn.execute(QUERIES["outbox_mark_published"], {"ids": [first], "message_ids": ["m-1"]})
    assert [r[0] for r in outbox(conn)] == [replacement]
    # A second replace now updates the new job in place.
    assert enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "newer"}, dedup_key="k", dedup="replace") == replacement


def test_replace_of_a_row_whose_lease_ran_out_also_becomes_a_new_job(conn):
    """A relay past its lease may still be finishing its send, and its mark deletes by id whoever holds the row."""
    first = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k")
    conn.execute("UPDATE conveyor.outbox SET claim_token = gen_random_uuid(), locked_until = now() - interval '1 second'")
    replacement = enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key="k", dedup="replace")
    assert replacement != first
    conn.execute(QUERIES["outbox_mark_published"], {"ids": [first], "message_ids": ["m-1"]})
    assert [r[0] for r in outbox(conn)] == [replacement]


def test_replace_while_the_relay_is_sending_loses_nothing(conn, db_url, sqs, stage, queues):
    """A producer replaces the job while the relay's SendMessageBatch is in flight with the old payload: SQS gets
    the old message under the old id, the relay's mark leaves the replacement alone, and the next cycle publishes
    the replacement under its new id."""
    first = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k")
    replaced = []

    def producer_replaces_mid_send(_kwargs):
        if not replaced:
            with psycopg.connect(db_url, autocommit=True) as producer:
                replaced.append(enqueue(producer, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key="k", dedup="replace"))

    relay = make_relay(db_url, sqs, stage, client=InterceptedSQS(sqs, before=producer_replaces_mid_send))
    try:
        assert relay.run_once().published == 1
        [replacement] = replaced
        assert replacement != first
        assert [r[0] for r in outbox(conn)] == [replacement]  # the mark did not delete it
        assert relay.run_once().published == 1
    finally:
        relay.close()
    assert outbox(conn) == []
    messages = receive_all(sqs, queues["email-default"][0], expected=2)
    sent = {m["MessageAttributes"][ATTR_JOB_ID]["StringValue"]: json.loads(m["Body"])["subject"] for m in messages}
    assert sent == {str(first): "Hi", str(replacement): "new"}
    assert conn.execute("SELECT id FROM conveyor.runs WHERE id = %s", (replacement,)).fetchall() == [(replacement,)]


# -- dedup_active -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", LIVE)
@pytest.mark.parametrize("dedup", ["keep", "replace"])
def test_dedup_active_returns_a_live_job_and_writes_nothing(conn, status, dedup):
    live = add_run(conn, status)
    assert enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k", dedup=dedup, dedup_active=True) == live
    assert outbox(conn) == []
    # Without dedup_active the published job does not hold the key.
    assert enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k", dedup=dedup) != live
    assert len(outbox(conn)) == 1


@pytest.mark.parametrize("status", ENDED)
def test_dedup_active_ignores_finished_jobs(conn, status):
    ended = add_run(conn, status)
    job_id = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k", dedup_active=True)
    assert job_id != ended and [r[0] for r in outbox(conn)] == [job_id]


def test_dedup_active_looks_at_the_same_job_and_key_only(conn):
    add_run(conn, "running", dedup_key="other")
    add_run(conn, "running", dedup_key="k", job_name="reservations.cleanup")
    job_id = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k", dedup_active=True)
    assert [r[0] for r in outbox(conn)] == [job_id]


def test_dedup_active_lets_the_policy_handle_a_pending_job_first(conn):
    """A pending job beside a live one (enqueued without dedup_active): keep returns it, replace updates it, since
    it has not reached SQS and is what runs next."""
    add_run(conn, "running")
    pending = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k")
    assert enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "x"}, dedup_key="k", dedup_active=True) == pending
    assert outbox(conn)[0][2] == "Hi"
    assert enqueue(conn, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key="k", dedup="replace", dedup_active=True) == pending
    assert outbox(conn)[0][2] == "new"


RACE_KEY = "race"


def _publish_between_snapshot_and_insert(db_url, add):
    """Make the dedup_active race happen every time: a pending job holds the key; the relay's mark (delete the row,
    write its ledger row) is under way but not committed when the producer's statement starts, so the statement's
    snapshot sees the job pending and not in the ledger; its INSERT waits for the mark, which then commits, and
    finds the key free. Returns the producer's answer, the pending row ids and the published job's id."""
    with psycopg.connect(db_url, autocommit=True) as admin, psycopg.connect(db_url) as relay:
        holder = enqueue(admin, EMAIL_SEND, WELCOME, dedup_key=RACE_KEY)
        relay.execute(QUERIES["outbox_mark_published"], {"ids": [holder], "message_ids": ["m-1"]})  # not committed
        result = {}

        def produce():
            with psycopg.connect(db_url, autocommit=True) as producer:
                result["id"] = add(producer)

        thread = threading.Thread(target=produce)
        thread.start()
        for _ in range(600):
            waiting = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the producer's INSERT never waited for the mark"
        relay.commit()
        thread.join(30)
        rows = [r[0] for r in admin.execute("SELECT id FROM conveyor.outbox")]
        return result.get("id"), rows, holder


@pytest.mark.parametrize("dedup", ["keep", "replace"])
def test_dedup_active_holds_when_the_pending_job_is_published_mid_statement(db_url, dedup):
    job_id, rows, holder = _publish_between_snapshot_and_insert(
        db_url, lambda c: enqueue(c, EMAIL_SEND, {**WELCOME, "subject": "new"}, dedup_key=RACE_KEY, dedup=dedup, dedup_active=True)
    )
    assert (job_id, rows) == (holder, [])


@pytest.mark.parametrize("dedup", ["keep", "replace"])
def test_sql_dedup_active_holds_when_the_pending_job_is_published_mid_statement(db_url, dedup):
    job_id, rows, holder = _publish_between_snapshot_and_insert(
        db_url,
        lambda c: c.execute(
            "SELECT conveyor.add_job('email.send', '{}', queue => 'email-default', dedup_key => %s, dedup => %s, dedup_active => true)",
            (RACE_KEY, dedup),
        ).fetchone()[0],
    )
    assert (job_id, rows) == (holder, [])


def test_without_dedup_active_a_job_published_mid_statement_frees_the_key(db_url):
    job_id, rows, holder = _publish_between_snapshot_and_insert(
        db_url, lambda c: enqueue(c, EMAIL_SEND, WELCOME, dedup_key=RACE_KEY, dedup="replace")
    )
    assert job_id != holder and rows == [job_id]


# -- enqueue_many -----------------------------------------------------------------------------------------------


def test_enqueue_many_keep_and_replace(conn):
    held = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="a")
    subjects = lambda: {r[4] or r[0]: r[2] for r in outbox(conn)}  # noqa: E731

    ids = enqueue_many(conn, EMAIL_SEND, [Item({**WELCOME, "subject": s}, dedup_key=k) for s, k in [("1", "a"), ("2", "b"), ("3", "b")]])
    assert ids[0] == held and ids[1] == ids[2] != held
    assert subjects() == {"a": "Hi", "b": "2"}  # keep: the pending job, then the first item of a key

    again = enqueue_many(
        conn,
        EMAIL_SEND,
        [Item({**WELCOME, "subject": "4"}, dedup_key="a"), {**WELCOME, "subject": "plain"},
         Item({**WELCOME, "subject": "5"}, dedup_key="b"), Item({**WELCOME, "subject": "6"}, dedup_key="b"),
         Item({**WELCOME, "subject": "7"}, dedup_key="c")],
        run_at=LATER,
        dedup=Dedup.REPLACE,
    )  # fmt: skip
    assert again[0] == held and again[2] == again[3] == ids[1] and len(set(again)) == 4
    assert subjects() == {"a": "4", "b": "6", "c": "7", again[1]: "plain"}  # replace: the last item of a key
    assert {r[3] for r in outbox(conn)} == {LATER}


@pytest.mark.parametrize("dedup", ["keep", "replace"])
def test_enqueue_many_dedup_active(conn, dedup):
    running = add_run(conn, "running", dedup_key="live")
    add_run(conn, "succeeded", dedup_key="done")
    ids = enqueue_many(
        conn,
        EMAIL_SEND,
        [Item(WELCOME, dedup_key="live"), Item(WELCOME, dedup_key="done"), WELCOME, Item(WELCOME, dedup_key="live")],
        dedup=dedup,
        dedup_active=True,
    )
    assert ids[0] == ids[3] == running
    assert {r[0] for r in outbox(conn)} == {ids[1], ids[2]}


# -- SQL producers ----------------------------------------------------------------------------------------------


def sql_add(conn, sql, *args):
    return conn.execute(f"SELECT conveyor.add_job({sql})", args).fetchone()[0]


def test_sql_add_job_keep_and_replace(conn):
    first = sql_add(conn, "'email.send', '{\"subject\": \"Hi\"}', 'email-default', NULL, 'k'")  # the old five, by position
    assert sql_add(conn, "'email.send', '{\"subject\": \"x\"}', 'email-default', NULL, 'k', 'keep'") == first
    assert outbox(conn)[0][2] == "Hi"
    replaced = sql_add(
        conn, "'email.send', '{\"subject\": \"new\"}', queue => 'email-high', run_at => %s, dedup_key => 'k', dedup => 'replace'", LATER
    )
    assert replaced == first
    assert outbox(conn) == [(first, "email-high", "new", LATER, "k")]
    # By position, all seven.
    assert sql_add(conn, "'email.send', '{\"subject\": \"pos\"}', 'email-default', NULL, 'k', 'replace', false") == first
    assert outbox(conn)[0][2] == "pos"


def test_sql_add_job_replace_of_a_claimed_row_becomes_a_new_job(conn):
    first = sql_add(conn, "'reservations.cleanup', dedup_key => 'k'")
    conn.execute("UPDATE conveyor.outbox SET claim_token = gen_random_uuid(), locked_until = now() + interval '1 minute'")
    replacement = sql_add(conn, "'reservations.cleanup', '{\"a\": 1}', dedup_key => 'k', dedup => 'replace'")
    assert replacement != first
    conn.execute(QUERIES["outbox_mark_published"], {"ids": [first], "message_ids": ["m-1"]})
    assert conn.execute("SELECT id, claim_token, payload::text FROM conveyor.outbox").fetchall() == [(replacement, None, '{"a": 1}')]


@pytest.mark.parametrize("dedup", ["keep", "replace"])
def test_sql_add_job_dedup_active(conn, dedup):
    live = add_run(conn, "retrying", job_name="reservations.cleanup")
    add_run(conn, "dead", dedup_key="gone", job_name="reservations.cleanup")
    assert sql_add(conn, "'reservations.cleanup', dedup_key => 'k', dedup => %s, dedup_active => true", dedup) == live
    assert outbox(conn) == []
    fresh = sql_add(conn, "'reservations.cleanup', dedup_key => 'gone', dedup => %s, dedup_active => true", dedup)
    assert [r[0] for r in outbox(conn)] == [fresh]
    # A pending job is handled by the policy before the ledger is looked at.
    assert sql_add(conn, "'reservations.cleanup', dedup_key => 'gone', dedup => %s, dedup_active => true", dedup) == fresh


def test_cli_enqueue_takes_the_policies(conn, db_url):
    from tests.integration.test_cli import conveyor

    first = enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k")
    payload = json.dumps({**WELCOME, "subject": "new"})
    replaced = conveyor("enqueue", "email.send", "--json", payload, "--dedup-key", "k", "--dedup", "replace", env={"DATABASE_URL": db_url})
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stdout.strip() == str(first) and outbox(conn)[0][2] == "new"
    conn.execute("DELETE FROM conveyor.outbox")
    live = add_run(conn, "running")
    held = conveyor("enqueue", "email.send", "--json", payload, "--dedup-key", "k", "--dedup-active", env={"DATABASE_URL": db_url})
    assert held.stdout.strip() == str(live) and outbox(conn) == []
    bad = conveyor("enqueue", "email.send", "--dedup", "Replace", env={"DATABASE_URL": db_url})
    assert bad.returncode == 2 and "invalid choice: 'Replace'" in bad.stderr


# -- bad options ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dedup": "Replace"}, "dedup must be 'keep' or 'replace' (Dedup.KEEP or Dedup.REPLACE), got 'Replace'"),
        ({"dedup": None}, "dedup must be 'keep' or 'replace'"),
        ({"dedup": True}, "dedup must be 'keep' or 'replace'"),
        ({"dedup_active": "yes"}, "dedup_active must be True or False, got 'yes'"),
        ({"dedup_active": None}, "dedup_active must be True or False, got None"),
    ],
)
def test_bad_dedup_options_are_refused(conn, options, message):
    with pytest.raises(EnqueueError, match=re.escape(message)):
        enqueue(conn, EMAIL_SEND, WELCOME, dedup_key="k", **options)
    with pytest.raises(EnqueueError, match="dedup"):
        enqueue_many(conn, EMAIL_SEND, [Item(WELCOME, dedup_key="k")], **options)
    assert outbox(conn) == []


@pytest.mark.parametrize(
    "call, message",
    [
        ("dedup => 'Replace'", "dedup must be 'keep' or 'replace', got 'Replace'"),
        ("dedup => NULL", "dedup must be 'keep' or 'replace', got NULL"),
        ("dedup_active => NULL", "dedup_active must be true or false, got NULL"),
    ],
)
def test_sql_add_job_refuses_bad_dedup_options(conn, call, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"SELECT conveyor.add_job('reservations.cleanup', dedup_key => 'k', {call})")
    assert outbox(conn) == []
