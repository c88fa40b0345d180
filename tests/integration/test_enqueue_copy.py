"""enqueue_many writes a batch without dedup keys by binary COPY: the rows are the ones enqueue() writes one by one,
with every check enqueue() makes, and the relay publishes them as any other job. Batches with keys keep their INSERT."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg.rows
import pytest
from pydantic import Field, SecretStr

from shared.database import connect
from shared.envelope import ATTR_JOB_ID, MAX_PAYLOAD_BYTES
from shared.local.aws import ensure_queues
from shared.outbox import Dedup, EnqueueError, InvalidPayload, Item, enqueue, enqueue_many
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.registry import JobPayload, Registry
from shared.settings import Settings


class Order(JobPayload):
    from_: str = Field(alias="from")
    note: str | None = None
    amount: float = 0.0
    kind: str = "normal"
    lines: list[int] = Field(default_factory=list)


class Card(JobPayload):
    holder: str
    number: SecretStr


jobs = Registry()
ORDER = jobs.job(
    "test.copy.order", payload=Order, queue="copy-orders", queues=("copy-rush",), timeout=5,
    route=lambda p: "copy-rush" if p.kind == "rush" else "copy-orders",
)  # fmt: skip
CARD = jobs.job("test.copy.card", payload=Card, queue="copy-cards", timeout=5)

ORDERS: list[Any] = [
    {"from": "ada", "amount": 1.5, "lines": [1, 2]},
    {"from": "bob", "kind": "rush", "note": "fast"},  # routed
    Order.model_validate({"from": "cy", "note": None, "amount": 1e300}),  # an instance passes through
    Item({"from": "dee", "note": "é ü \\u0000 is text, not NUL"}, queue="copy-rush"),  # an item's own queue
    {"from": "eve", "note": "ünïcödé ✓", "amount": -0.0},
]

# Every column but the id, created_at (the transaction's start) and run_at (checked against the clock).
COLUMNS = """job_name, queue, payload::text AS payload, dedup_key, publish_attempts, last_error, next_attempt_at,
    claim_token, locked_until, job_id, attempt, parent_id, scheduled_for"""


def rows(conn: psycopg.Connection, ids: list[Any]) -> list[tuple[Any, ...]]:
    found = {r[0]: r[1:] for r in conn.execute(f"SELECT id, {COLUMNS} FROM conveyor.outbox WHERE id = ANY(%s)", (ids,))}
    return [found[i] for i in ids]


def one_by_one(conn: psycopg.Connection, job: Any, entries: list[Any], **options: Any) -> list[Any]:
    out = []
    for entry in entries:
        if isinstance(entry, Item):
            out.append(enqueue(conn, job, entry.payload, queue=entry.queue, dedup_key=entry.dedup_key, **options))
        else:
            out.append(enqueue(conn, job, entry, **options))
    return out


def clock(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


@pytest.fixture
def copy_log(conn: psycopg.Connection) -> psycopg.Connection:
    """A row trigger (test database only) that notes the statement each outbox row came from: COPY fires row
    triggers as INSERT does, so the log shows which path wrote what."""
    conn.execute("""
        CREATE TABLE public.outbox_writes (id uuid, statement text);
        CREATE FUNCTION public.note_outbox_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.outbox_writes VALUES (NEW.id, current_query()); RETURN NEW; END $$;
        CREATE TRIGGER note_outbox_write AFTER INSERT ON conveyor.outbox
            FOR EACH ROW EXECUTE FUNCTION public.note_outbox_write();
    """)  # fmt: skip
    return conn


def statements(conn: psycopg.Connection, ids: list[Any]) -> set[str]:
    found = conn.execute("SELECT statement FROM public.outbox_writes WHERE id = ANY(%s)", (ids,)).fetchall()
    assert len(found) == len(set(ids))
    code = ("\n".join(line for line in r[0].splitlines() if not line.lstrip().startswith("--")) for r in found)
    return {" ".join(text.split()[:2]) for text in code}


def test_a_keyless_batch_is_one_copy_and_a_keyed_one_an_insert(copy_log):
    conn = copy_log
    keyless = enqueue_many(conn, ORDER, ORDERS, registry=jobs)
    keyed = enqueue_many(conn, ORDER, [Item({"from": "a"}, dedup_key="k1"), {"from": "b"}], registry=jobs)
    assert statements(conn, keyless) == {"COPY conveyor.outbox"}
    assert statements(conn, keyed) == {"WITH inserted"}
    assert keyless == sorted(keyless) and len(set(keyless)) == len(ORDERS)  # ascending within the batch


@pytest.mark.parametrize(
    "options",
    [{}, {"delay": 30}, {"delay": timedelta(days=400, microseconds=7)}, {"run_at": datetime(2031, 5, 6, 7, 8, 9, 10, UTC)}],
    ids=["now", "delay", "long-delay", "run_at"],
)
def test_copy_writes_the_rows_enqueue_writes(conn, options):
    with conn.transaction():
        before = clock(conn)
        single = one_by_one(conn, ORDER, ORDERS, registry=jobs, **options)
        middle = clock(conn)
        many = enqueue_many(conn, ORDER, ORDERS, registry=jobs, **options)
        after = clock(conn)
    assert rows(conn, many) == rows(conn, single)
    assert [r[1] for r in rows(conn, many)] == ["copy-orders", "copy-rush", "copy-orders", "copy-rush", "copy-orders"]
    bodies = [json.loads(r[2]) for r in rows(conn, many)]
    assert bodies[0] == {"from": "ada", "note": None, "amount": 1.5, "kind": "normal", "lines": [1, 2]}
    assert bodies[3]["note"] == "é ü \\u0000 is text, not NUL"
    run_at = dict(conn.execute("SELECT id, run_at FROM conveyor.outbox").fetchall())
    if "run_at" in options:
        assert {run_at[i] for i in single + many} == {options["run_at"]}
    else:
        delay = options.get("delay", 0)
        delay = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        # Delays count from the statement that computes run_at: inside each call, not from the transaction's start.
        assert all(before + delay <= run_at[i] <= middle + delay for i in single)
        assert all(middle + delay <= run_at[i] <= after + delay for i in many)
        assert len({run_at[i] for i in many}) == 1


def test_secrets_are_written_with_their_values(conn):
    cards = [{"holder": "ada", "number": "4111 1111"}, Card(holder="bob", number=SecretStr("5500 0000"))]
    with conn.transaction():
        single = one_by_one(conn, CARD, cards, registry=jobs)
        many = enqueue_many(conn, CARD, cards, registry=jobs)
    assert rows(conn, many) == rows(conn, single)
    assert [json.loads(r[2])["number"] for r in rows(conn, many)] == ["4111 1111", "5500 0000"]


BAD = [
    ({"from": "x", "lines": ["not a number"]}, InvalidPayload, "lines.0"),
    ({"from": "x", "amount": math.nan}, EnqueueError, "amount is not a finite number"),
    ({"from": "x", "amount": -math.inf}, EnqueueError, "amount is not a finite number"),
    ({"from": "x", "note": "a\x00b"}, EnqueueError, "NUL character"),
    ({"from": "x", "note": "x" * MAX_PAYLOAD_BYTES}, ValueError, f"the limit is {MAX_PAYLOAD_BYTES}"),
    ({"from": "x", "kind": "rush", "extra": 1}, InvalidPayload, "extra: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("bad, error, message", BAD, ids=["invalid", "nan", "infinity", "nul", "size", "extra"])
def test_a_bad_item_is_refused_by_its_index_as_enqueue_refuses_it(conn, bad, error, message):
    with pytest.raises(error) as single:
        enqueue(conn, ORDER, bad, registry=jobs)
    assert message in str(single.value)
    batch = [{"from": "ok"}, {"from": "ok", "kind": "rush"}, bad, {"from": "x", "amount": math.nan}]
    with pytest.raises(EnqueueError) as many:
        enqueue_many(conn, ORDER, batch, registry=jobs)
    assert str(many.value) == f"item 2: {single.value}"
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_an_invalid_secret_is_not_quoted(conn):
    with pytest.raises(EnqueueError) as many:
        enqueue_many(conn, CARD, [{"holder": "ada", "number": "1"}, {"holder": "bob", "number": 4111}], registry=jobs)
    assert str(many.value).startswith("item 1: invalid payload for job 'test.copy.card': number:")
    assert "4111" not in str(many.value)


def test_another_models_instance_is_refused_as_enqueue_refuses_it(conn):
    stranger = Card(holder="x", number=SecretStr("1"))
    with pytest.raises(EnqueueError) as single:
        enqueue(conn, ORDER, stranger, registry=jobs)
    with pytest.raises(EnqueueError) as many:
        enqueue_many(conn, ORDER, [{"from": "a"}, stranger], registry=jobs)
    assert str(many.value) == str(single.value)
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_an_empty_batch_writes_nothing(copy_log):
    assert enqueue_many(copy_log, ORDER, [], registry=jobs) == []
    assert enqueue_many(copy_log, ORDER, iter(()), registry=jobs) == []
    assert copy_log.execute("SELECT count(*) FROM public.outbox_writes").fetchone()[0] == 0


def test_a_rolled_back_batch_leaves_nothing(conn):
    with pytest.raises(RuntimeError), conn.transaction():
        assert len(enqueue_many(conn, ORDER, ORDERS * 100, registry=jobs)) == 500
        raise RuntimeError("the business write failed")
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_a_copy_inside_a_longer_transaction_is_part_of_it(db_url):
    with psycopg.connect(db_url) as writer:  # not autocommit
        writer.execute("SELECT 1")
        ids = enqueue_many(writer, ORDER, ORDERS, registry=jobs)
        with psycopg.connect(db_url, autocommit=True) as reader:
            assert reader.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0
        writer.commit()
        with psycopg.connect(db_url, autocommit=True) as reader:
            assert len(rows(reader, ids)) == len(ORDERS)


@pytest.mark.parametrize("dedup", [Dedup.KEEP, Dedup.REPLACE])
def test_a_keyed_batch_ends_as_enqueue_one_by_one_would(conn, dedup):
    entries = [
        Item({"from": "a1"}, dedup_key="a"),
        {"from": "none"},
        Item({"from": "b1", "kind": "rush"}, dedup_key="b"),
        Item({"from": "a2"}, dedup_key="a"),  # the same key twice in the batch
    ]

    def run(write: Any) -> tuple[Any, list[Any], list[tuple[Any, ...]]]:
        with conn.transaction(force_rollback=True):
            held = enqueue(conn, ORDER, {"from": "held"}, dedup_key="b", registry=jobs)
            ids = write()
            return held, ids, rows(conn, list(dict.fromkeys(ids)))

    held, many, many_rows = run(lambda: enqueue_many(conn, ORDER, entries, dedup=dedup, registry=jobs))
    held_single, single, single_rows = run(lambda: one_by_one(conn, ORDER, entries, dedup=dedup, registry=jobs))
    assert many[0] == many[3] and single[0] == single[3]
    assert many[2] == held and single[2] == held_single  # kept or replaced in place: the pending job's id
    assert many_rows == single_rows
    kept = {"a": "a1", "b": "held"} if dedup is Dedup.KEEP else {"a": "a2", "b": "b1"}
    assert {r[3]: json.loads(r[2])["from"] for r in many_rows if r[3]} == kept


def test_the_relay_publishes_a_copied_batch(conn, db_url, sqs, stage):
    urls = ensure_queues(sqs, jobs, stage=stage)
    with conn.transaction():
        ids = enqueue_many(conn, ORDER, ORDERS * 5, delay=0, registry=jobs)
    settings = Settings(stage=stage, database_url=db_url)
    relay = Relay(lambda: connect(settings), sqs, QueueDirectory(sqs, settings))
    try:
        stats = relay.drain(30)
    finally:
        relay.close()
    assert (stats.published, stats.failed) == (25, 0), stats.errors
    seen: dict[str, dict[str, Any]] = {}
    for queue in ("copy-orders", "copy-rush"):
        for _ in range(100):
            batch = sqs.receive_message(QueueUrl=urls[queue][0], MaxNumberOfMessages=10, MessageAttributeNames=["All"])
            for message in batch.get("Messages", []):
                seen[message["MessageAttributes"][ATTR_JOB_ID]["StringValue"]] = json.loads(message["Body"])
            if not batch.get("Messages"):
                break
    assert set(seen) == {str(i) for i in ids}
    assert seen[str(ids[1])]["from"] == "bob"
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM conveyor.runs WHERE id = ANY(%s)", (ids,)).fetchone()[0] == 25


def test_a_batch_in_pipeline_mode_takes_the_insert(copy_log):
    conn = copy_log
    with conn.pipeline():
        ids = enqueue_many(conn, ORDER, ORDERS, registry=jobs)
    assert statements(conn, ids) == {"WITH inserted"}
    assert len(rows(conn, ids)) == len(ORDERS)


def test_a_connection_making_dict_rows_gets_its_batch_copied(db_url):
    with psycopg.connect(db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        ids = enqueue_many(conn, ORDER, ORDERS, delay=5, registry=jobs)
        found = conn.execute("SELECT count(*) AS n FROM conveyor.outbox WHERE id = ANY(%s)", (ids,)).fetchone()
    assert found == {"n": len(ORDERS)}


def test_a_keyed_batch_refuses_its_first_bad_item_first(conn):
    nan = {"from": "x", "amount": math.nan}
    with pytest.raises(EnqueueError, match=r"^item 1: payload of job 'test.copy.order': amount is not a finite"):
        enqueue_many(conn, ORDER, [Item({"from": "a"}, dedup_key="a"), Item(nan, dedup_key="b")], registry=jobs)
    with pytest.raises(EnqueueError, match=r"^item 1: payload of job 'test.copy.order': amount is not a finite"):
        enqueue_many(conn, ORDER, [Item({"from": "a"}, dedup_key="a"), nan, Item({"from": "c"}, dedup_key="")], registry=jobs)
    with pytest.raises(EnqueueError, match=r"^dedup_key must be a non-empty string"):
        enqueue_many(conn, ORDER, [Item({"from": "a"}, dedup_key=""), nan], registry=jobs)
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_a_text_utf8_cannot_carry_is_refused_naming_its_item(conn):
    """A lone surrogate passes validation (a Python str may hold one) but has no UTF-8 form: the batch says which
    item, as the item-by-item path does, and writes nothing."""
    with pytest.raises(EnqueueError, match=r"^item 1: "):
        enqueue_many(conn, ORDER, [{"from": "ada"}, {"from": "bob", "note": "a\ud800"}])
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0
