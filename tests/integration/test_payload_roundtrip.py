"""What is enqueued is what the handler parses: enqueue → outbox → relay → SQS → handler, on PostgreSQL and moto."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from shared.database import connect
from shared.envelope import MAX_PAYLOAD_BYTES
from shared.jobs import registry as product
from shared.lambda_events import sqs_record
from shared.local.aws import ensure_queues
from shared.outbox import EnqueueError, enqueue, enqueue_many
from shared.outbox.direct import send_now
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.registry import JobPayload, Registry
from shared.runtime import job_handler
from shared.settings import Settings


class Mail(JobPayload):
    """Aliases (``from`` is a Python keyword) and floats: the two things that used to change on the way."""

    from_: str = Field(alias="from")
    reply_to: str | None = Field(default=None, alias="reply-to")
    score: float = 0.0
    weights: list[float] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


aliased = Registry()
MAIL = aliased.job("test.mail", payload=Mail, queue="mail", timeout=5)


def published_bodies(db_url: str, sqs: Any, stage: str, url: str, expected: int) -> list[dict[str, Any]]:
    settings_ = Settings(stage=stage, database_url=db_url)
    relay = Relay(lambda: connect(settings_), sqs, QueueDirectory(sqs, settings_))
    try:
        stats = relay.drain(30)
    finally:
        relay.close()
    assert (stats.published, stats.failed) == (expected, 0), stats.errors
    messages: list[dict[str, Any]] = []
    for _ in range(100):
        if len(messages) >= expected:
            break
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
        ).get("Messages", [])
        messages.extend(batch)
    assert len(messages) == expected
    return messages


def run_handler(job, sqs, stage, url, messages) -> tuple[list[Any], dict[str, Any]]:
    """Hand the received messages to the job's real handler, as Lambda's event source would."""
    seen: list[Any] = []
    handler = job_handler(job, lambda payload, ctx: seen.append((ctx.job_id, payload)))
    handler.bind(sqs=sqs, directory=QueueDirectory(sqs, Settings(stage=stage)))
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    event = {"Records": [sqs_record(m, queue_arn=arn, region="us-east-1") for m in messages]}
    return seen, handler(event, None)


@pytest.fixture
def mail_queue(sqs, stage):
    return ensure_queues(sqs, aliased, stage=stage)["mail"][0]


def test_aliased_fields_travel_by_alias_and_parse_back(conn, db_url, sqs, stage, mail_queue):
    with conn.transaction():
        job_id = enqueue(conn, MAIL, {"from": "ada@example.com", "reply-to": "bob@example.com", "score": 1e300})
    [message] = published_bodies(db_url, sqs, stage, mail_queue, 1)
    assert json.loads(message["Body"])["from"] == "ada@example.com"
    seen, response = run_handler(MAIL, sqs, stage, mail_queue, [message])
    assert response == {"batchItemFailures": []}
    assert seen == [(str(job_id), Mail.model_validate({"from": "ada@example.com", "reply-to": "bob@example.com", "score": 1e300}))]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_at_enqueue(conn, bad):
    with pytest.raises(EnqueueError, match=r"weights\.1 is not a finite number"):
        enqueue(conn, MAIL, {"from": "a", "weights": [1.0, bad]})
    with pytest.raises(EnqueueError, match="score is not a finite number"):
        send_now(MAIL, {"from": "a", "score": bad})  # refused before any AWS call
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_large_exponents_are_sent_as_written(conn, db_url, sqs, stage, mail_queue):
    """jsonb renders 1e300 as 301 digits: a 7 KB body became 303 KB and the relay failed on it forever. The outbox
    keeps the text, so the body SQS gets is the one enqueue measured."""
    payload = {"from": "a", "weights": [1e300] * 1000}
    with conn.transaction():
        enqueue(conn, MAIL, payload)
    stored = conn.execute("SELECT octet_length(payload::text) FROM conveyor.outbox").fetchone()[0]
    assert stored < 10_000
    [message] = published_bodies(db_url, sqs, stage, mail_queue, 1)
    assert len(message["Body"].encode()) == stored
    assert Mail.model_validate_json(message["Body"]) == Mail.model_validate(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"from": "a\x00b"},
        {"from": "a", "tags": {"k\x00": "v"}},
        {"from": "a", "tags": {"k": "\\\x00"}},
    ],
)
def test_nul_characters_are_refused_before_any_sql_runs(conn, payload):
    """A NUL used to pass validation and then fail the INSERT, aborting the caller's business transaction."""
    with conn.transaction():
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(EnqueueError, match="NUL character"):
            enqueue(conn, MAIL, payload)
        conn.execute("INSERT INTO orders VALUES (2)")  # the transaction is still usable
    assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_an_escaped_backslash_before_u0000_is_not_a_nul(conn):
    job_id = enqueue(conn, MAIL, {"from": "C:\\u0000 is a path, not a NUL"})
    assert conn.execute("SELECT payload->>'from' FROM conveyor.outbox WHERE id = %s", (job_id,)).fetchone()[0] == (
        "C:\\u0000 is a path, not a NUL"
    )


# -- property: every registry job, any valid payload --------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_finite = st.floats(allow_nan=False, allow_infinity=False)
# The scheduled clean-ups' common batch bounds (shared.payloads.Batched).
_BATCHED = {"batch_size": st.integers(1, 10_000), "max_batches": st.integers(1, 10_000)}
PAYLOADS = {
    "test.mail": st.builds(
        lambda f, r, s, w, t: {"from": f, "reply-to": r, "score": s, "weights": w, "tags": t},
        _text, st.none() | _text, _finite, st.lists(_finite, max_size=5), st.dictionaries(_text, _text, max_size=4),
    ),
    "email.send": st.builds(
        lambda user, template, subject, variables: {
            "to": f"{user}@example.com", "template": template, "subject": subject, "variables": variables,
        },
        st.from_regex(r"[a-z0-9._+-]{1,20}", fullmatch=True),
        st.sampled_from(["password_reset", "welcome", "receipt", "notification"]),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60).filter(str.strip),
        st.dictionaries(_text, _text, max_size=4),
    ),
    "reservations.cleanup": st.builds(
        lambda minutes, limit: {"older_than_minutes": minutes, "limit": limit},
        st.integers(1, 24 * 60), st.integers(1, 100_000),
    ),
    "vouchers.expire": st.fixed_dictionaries({}, optional=_BATCHED),
    "vouchers.audit_archive": st.fixed_dictionaries({}, optional={**_BATCHED, "retention_days": st.none() | st.integers(1, 36500)}),
    "audit.retention": st.integers(1, 3650).flatmap(
        lambda archive: st.fixed_dictionaries(
            {"archive_after_days": st.just(archive), "purge_after_days": st.integers(archive, 36500)}, optional=_BATCHED,
        )
    ),
    "notifications.cleanup": st.fixed_dictionaries({}, optional={**_BATCHED, "older_than_days": st.integers(1, 36500)}),
    "push_tokens.cleanup": st.fixed_dictionaries({}, optional={**_BATCHED, "unseen_days": st.integers(1, 3650)}),
    "idempotency_keys.prune": st.fixed_dictionaries({}, optional=_BATCHED),
    "notification.dispatch": st.builds(lambda i: {"notification_id": i}, st.integers(1, 2**62)),
    "sms.send": st.builds(
        lambda number, text: {"to": "+976" + number, "text": text},
        st.from_regex(r"[0-9]{8}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=160).filter(str.strip),
    ),
    "receipt.push": st.builds(lambda i: {"sale_id": i}, st.integers(1, 2**62)),
    "orders.digest": st.fixed_dictionaries({}, optional={"max_items_per_store": st.integers(1, 1000)}),
    "store.sync": st.fixed_dictionaries({}, optional={"store_id": st.none() | st.integers(1, 2**62)}),
    "bills.monthly": st.fixed_dictionaries({}, optional={
        "period": st.none() | st.dates().map(lambda d: d.replace(day=1).isoformat()),
    }),
    "contracts.expiry_notice": st.fixed_dictionaries({}, optional={"thresholds_days": st.lists(st.integers(1, 365), max_size=4)}),
    "statements.poll": st.fixed_dictionaries({}, optional={"account": st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)}),
    "statements.reconcile": st.fixed_dictionaries({}, optional={"line_ids": st.lists(st.integers(1, 2**62), max_size=5)}),
    "pdf.render": st.builds(
        lambda kind, i: {"kind": kind, "subject_id": i}, st.sampled_from(["invoice", "statement"]), st.integers(1, 2**62)
    ),
    "pdf.package": st.builds(lambda name: {"name": name}, st.from_regex(r"[A-Za-z0-9._-]{1,200}", fullmatch=True)),
    "conveyor.retention": st.fixed_dictionaries({}, optional={
        "keep_succeeded": st.none() | st.integers(1, 36500),
        "keep_failed": st.none() | st.integers(1, 36500),
        "keep_schedule_fires": st.none() | st.integers(1, 36500),
        "batch_size": st.integers(1, 1000),
    }),
}


def test_every_registry_job_has_a_payload_strategy():
    assert set(PAYLOADS) == {job.name for job in product} | {MAIL.name}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_payloads_survive_the_whole_path(data, db_url, sqs, stage):
    """For every registry job: a batch of generated valid payloads, enqueued in one transaction, published by the
    relay, received from SQS and parsed by the job's handler, equals what was enqueued, field for field."""
    both = Registry([*product, MAIL])
    urls = ensure_queues(sqs, both, stage=stage)
    for job in both:
        payloads = data.draw(st.lists(PAYLOADS[job.name], min_size=1, max_size=5), label=job.name)
        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            ids = enqueue_many(conn, job, payloads)
        expected = {str(i): job.payload.model_validate(p) for i, p in zip(ids, payloads)}
        by_queue: dict[str, list[Any]] = {}
        total = 0
        for queue in job.all_queues:
            url = urls[queue][0]
            with psycopg.connect(db_url, autocommit=True) as conn:
                count = conn.execute(
                    "SELECT count(*) FROM conveyor.outbox WHERE job_name = %s AND queue = %s", (job.name, queue)
                ).fetchone()[0]
            by_queue[url] = [count]
            total += count
        assert total == len(payloads)
        settings_ = Settings(stage=stage, database_url=db_url)
        relay = Relay(lambda: connect(settings_), sqs, QueueDirectory(sqs, settings_))
        try:
            assert relay.drain(30).published == len(payloads)
        finally:
            relay.close()
        seen: list[Any] = []
        for url, (count,) in by_queue.items():
            messages: list[dict[str, Any]] = []
            for _ in range(50):
                if len(messages) >= count:
                    break
                messages.extend(
                    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]).get("Messages", [])
                )
            assert len(messages) == count
            if messages:
                got, response = run_handler(job, sqs, stage, url, messages)
                assert response == {"batchItemFailures": []}
                seen.extend(got)
                sqs.delete_message_batch(
                    QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
                )
        assert dict(seen) == expected
        assert all(len(json.dumps(p)) < MAX_PAYLOAD_BYTES for p in payloads)
