"""The operations service (shared.operations.service) against a real PostgreSQL and moto's SQS: each method's answer,
its refusals (Forbidden, InvalidRequest, NotFound, WrongState, Unavailable) and the audit rows it leaves."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from psycopg import sql
import pytest
from pydantic import BaseModel, Field, SecretStr

from shared.database import connect
from shared.jobs import EMAIL_SEND
from shared.ledger.read import get_job
from shared.local.aws import ensure_queues
from shared.operations.controls import LocalQueueControls
from shared.operations.errors import Forbidden, InvalidRequest, NotFound, Unavailable, WrongState
from shared.operations.masking import MASK, mask_payload
from shared.operations.models import HealthCheck
from shared.operations.redrive import Redriver
from shared.operations.scopes import ALL_SCOPES, Caller, Scope
from shared.operations.service import Operations, build_operations, decode_cursor, encode_cursor
from shared.outbox import enqueue
from shared.queues import QueueDirectory
from shared.registry import JobPayload, Registry
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.settings import Settings, SettingsError
from tests.support import WORK, Work, insert_run
from tests.support import registry as work_registry


class Address(BaseModel):
    street: str
    door_code: str = Field(json_schema_extra={"sensitive": True})


class Card(BaseModel):
    last4: str
    pin: SecretStr


class Signup(JobPayload):
    user: str
    password: SecretStr
    api_key: SecretStr | None = None
    token: str = Field(default="", alias="tok", json_schema_extra={"sensitive": True})
    address: Address | None = None
    cards: list[Card] = Field(default_factory=list)
    by_name: dict[str, Card] = Field(default_factory=dict)


REGISTRY = Registry()
REGISTRY.add(WORK)
REGISTRY.add(EMAIL_SEND)
SIGNUP = REGISTRY.job("test.signup", payload=Signup, queue="signup")

ADMIN = Caller("ada", ALL_SCOPES)
READER = Caller("rita", frozenset({Scope.READ}))
NOBODY = Caller("nobody", frozenset())


@pytest.fixture
def queues(sqs, stage):
    return ensure_queues(sqs, REGISTRY, stage=stage)


def make_ops(db_url, sqs, stage, *, controls=None, redriver=None, registry=REGISTRY, connect_to=None) -> Operations:
    settings = Settings(stage=stage, database_url=db_url)
    return Operations(
        registry,
        connect=connect_to or (lambda: connect(settings)),
        sqs=sqs,
        directory=QueueDirectory(sqs, settings),
        controls=controls or LocalQueueControls(registry),
        redriver=redriver or Redriver(sqs, move_task=False),
    )


@pytest.fixture
def ops(db_url, sqs, stage, queues):
    return make_ops(db_url, sqs, stage)


def audit(conn) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT actor, action, target, job_id, result, detail FROM conveyor.audit_log ORDER BY id"
    ).fetchall()
    return [dict(zip(("actor", "action", "target", "job_id", "result", "detail"), r)) for r in rows]


def ledger(conn, job_id):
    row = conn.execute(
        "SELECT status, attempt, finished_at, reason FROM conveyor.runs WHERE id = %s", (job_id,)
    ).fetchone()
    return None if row is None else dict(zip(("status", "attempt", "finished_at", "reason"), row))


def outbox_rows(conn):
    return conn.execute("SELECT coalesce(job_id, id), job_name, queue, attempt FROM conveyor.outbox ORDER BY created_at").fetchall()


# -- scopes ------------------------------------------------------------------------------------------------------------

ANY_ID = str(uuid.uuid4())
CALLS = {
    "queues": (Scope.READ, lambda o, c: o.queues(c)),
    "runs": (Scope.READ, lambda o, c: o.runs(c)),
    "run": (Scope.READ, lambda o, c: o.run(c, ANY_ID)),
    "throughput": (Scope.READ, lambda o, c: o.throughput(c, "1h")),
    "health": (Scope.READ, lambda o, c: o.health(c)),
    "retry": (Scope.RETRY, lambda o, c: o.retry(c, ANY_ID)),
    "cancel": (Scope.CANCEL, lambda o, c: o.cancel(c, ANY_ID)),
    "trigger": (Scope.RETRY, lambda o, c: o.trigger(c, "test.work", {"n": 1})),
    "redrive": (Scope.RETRY, lambda o, c: o.redrive(c, "work")),
    "pause": (Scope.RETRY, lambda o, c: o.pause(c, "work")),
    "resume": (Scope.RETRY, lambda o, c: o.resume(c, "work")),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_method_refuses_a_caller_without_its_scope_and_changes_nothing(name, ops, conn):
    scope, call = CALLS[name]
    others = Caller("mallory", frozenset(ALL_SCOPES - {scope}))
    for caller in (NOBODY, others):
        with pytest.raises(Forbidden) as refused:
            call(ops, caller)
        assert refused.value.details == {"required_scope": scope.value}
        assert refused.value.http_status == 403
    assert audit(conn) == []
    assert outbox_rows(conn) == []
    assert conn.execute("SELECT count(*) FROM conveyor.paused_queues").fetchone() == (0,)


def test_me_needs_no_scope_and_lists_what_the_caller_may_do(ops):
    assert ops.me(NOBODY).model_dump() == {"actor": "nobody", "scopes": [], "actions": []}
    me = ops.me(Caller("cat", frozenset({Scope.READ, Scope.CANCEL})))
    assert me.scopes == ["jobs:cancel", "jobs:read"]
    assert me.actions == ["cancel"]
    assert ops.me(ADMIN).actions == ["retry", "redrive", "cancel", "trigger", "pause", "resume"]


# -- input -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda o: o.run(ADMIN, "not-a-uuid"),
        lambda o: o.retry(ADMIN, "42"),
        lambda o: o.cancel(ADMIN, "x"),
        lambda o: o.runs(ADMIN, status="exploded"),
        lambda o: o.runs(ADMIN, limit=0),
        lambda o: o.runs(ADMIN, limit=1001),
        lambda o: o.runs(ADMIN, cursor="garbage!"),
        lambda o: o.runs(ADMIN, cursor=encode_cursor.__name__),
        lambda o: o.runs(ADMIN, q="   "),
        lambda o: o.throughput(ADMIN, "7d"),
        lambda o: o.trigger(ADMIN, "test.work", ["n", 1]),
        lambda o: o.cancel(ADMIN, ANY_ID, reason="x" * 4001),
    ],
    ids=["run-id", "retry-id", "cancel-id", "status", "limit-0", "limit-1001", "cursor", "cursor-text", "q-blank",
         "window", "payload-list", "long-reason"],
)  # fmt: skip
def test_bad_input_is_an_invalid_request(call, ops, conn):
    with pytest.raises(InvalidRequest) as refused:
        call(ops)
    assert refused.value.http_status == 422
    assert audit(conn) == []


def test_trigger_with_a_payload_its_model_refuses_names_each_field(ops, conn):
    with pytest.raises(InvalidRequest) as refused:
        ops.trigger(ADMIN, "test.work", {"n": "seven", "surprise": 1})
    assert "n: Input should be a valid integer" in refused.value.message
    errors = refused.value.to_json()["errors"]
    assert {tuple(e["loc"]) for e in errors} == {("n",), ("surprise",)}
    json.dumps(refused.value.to_json())  # JSON-safe, for the API
    assert outbox_rows(conn) == []


def test_cursor_round_trips_and_is_opaque():
    job_id = uuid.uuid4()
    from datetime import UTC, datetime

    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    token = encode_cursor((at, job_id))
    assert "=" not in token and str(job_id) not in token
    assert decode_cursor(token) == (at, job_id)


# -- not found ---------------------------------------------------------------------------------------------------------


def test_unknown_ids_job_names_and_queues_are_not_found_and_audited_as_errors(ops, conn):
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as e:
        ops.run(ADMIN, str(missing))
    assert e.value.details == {"kind": "job"}
    with pytest.raises(NotFound) as e:
        ops.retry(ADMIN, str(missing))
    assert e.value.details == {"kind": "job"}
    with pytest.raises(NotFound) as e:
        ops.cancel(ADMIN, str(missing))
    assert e.value.details == {"kind": "job"}
    with pytest.raises(NotFound) as e:
        ops.trigger(ADMIN, "no.such.job", {})
    assert e.value.details == {"kind": "job_name"}
    for act in (ops.pause, ops.resume, ops.redrive):
        with pytest.raises(NotFound) as e:
            act(ADMIN, "nowhere")
        assert e.value.details == {"kind": "queue"}
    with pytest.raises(NotFound) as e:
        ops.redrive(ADMIN, "work", job="no.such.job")
    assert e.value.details == {"kind": "job_name"}
    with pytest.raises(InvalidRequest):
        ops.redrive(ADMIN, "work", job="test.signup")  # a job of another queue

    rows = audit(conn)
    assert [(r["action"], r["target"], r["result"], r["detail"]["error"]) for r in rows] == [
        ("retry", str(missing), "error", "not_found"),
        ("cancel", str(missing), "error", "not_found"),
        ("trigger", "no.such.job", "error", "not_found"),
        ("pause", "nowhere", "error", "not_found"),
        ("resume", "nowhere", "error", "not_found"),
        ("redrive", "nowhere", "error", "not_found"),
        ("redrive", "work", "error", "not_found"),
    ]
    assert rows[0]["job_id"] == missing and rows[0]["actor"] == "ada"
    assert outbox_rows(conn) == []
    assert conn.execute("SELECT count(*) FROM conveyor.paused_queues").fetchone() == (0,)


# -- cancel ------------------------------------------------------------------------------------------------------------


def test_cancel_cancels_a_pending_job_and_audits_it_in_the_same_transaction(ops, conn):
    job_id = enqueue(conn, WORK, {"n": 1})
    done = ops.cancel(ADMIN, str(job_id), reason="not needed")
    assert (done.action, done.job_id, done.status) == ("cancel", str(job_id), "cancelled")
    assert ledger(conn, job_id)["status"] == "cancelled"
    assert ledger(conn, job_id)["reason"] == "not needed"
    assert outbox_rows(conn) == []
    [row] = audit(conn)
    assert row == {"actor": "ada", "action": "cancel", "target": str(job_id), "job_id": job_id, "result": "ok",
                   "detail": {"from": "pending", "reason": "not needed"}}  # fmt: skip


def test_cancel_without_a_reason_records_who_cancelled(ops, conn):
    job_id = insert_run(conn, "test.work", "queued", queue="work")
    ops.cancel(ADMIN, str(job_id))
    assert ledger(conn, job_id)["reason"] == "cancelled by ada"


@pytest.mark.parametrize("status", ["running", "succeeded", "dead"])
def test_cancel_too_late_is_wrong_state_with_the_status_and_audited_as_an_error(status, ops, conn):
    job_id = insert_run(conn, "test.work", status, queue="work")
    with pytest.raises(WrongState) as refused:
        ops.cancel(ADMIN, str(job_id))
    assert refused.value.details == {"status": status}
    assert refused.value.http_status == 409
    assert ledger(conn, job_id)["status"] == status
    [row] = audit(conn)
    assert (row["action"], row["result"], row["detail"]["error"], row["detail"]["status"]) == (
        "cancel", "error", "wrong_state", status,
    )  # fmt: skip


# -- trigger -----------------------------------------------------------------------------------------------------------


def test_trigger_enqueues_a_validated_job_with_its_audit_row(ops, conn):
    done = ops.trigger(ADMIN, "test.work", {"n": 7})
    job_id = uuid.UUID(done.job_id)
    assert done.status == "pending"
    assert outbox_rows(conn) == [(job_id, "test.work", "work", 1)]
    assert get_job(conn, job_id).payload == {"n": 7, "fail_times": 0, "permanent": False}
    [row] = audit(conn)
    assert (row["action"], row["target"], row["job_id"], row["result"]) == ("trigger", "test.work", job_id, "ok")


# -- retry -------------------------------------------------------------------------------------------------------------


def test_retry_of_a_dead_job_reopens_it_under_the_same_id_with_a_fresh_attempt_count(ops, conn):
    job_id = insert_run(conn, "test.work", "dead", queue="work", payload='{"n": 3}', attempt=3,
                        last_error_type="RuntimeError", last_error="boom", attempts='[{"attempt": 1, "outcome": "failed"}]')  # fmt: skip
    done = ops.retry(ADMIN, str(job_id))
    assert (done.job_id, done.status) == (str(job_id), "pending")
    row = ledger(conn, job_id)
    assert (row["status"], row["attempt"], row["finished_at"], row["reason"]) == ("pending", 0, None, "retried by ada")
    assert outbox_rows(conn) == [(job_id, "test.work", "work", 1)]
    assert conn.execute("SELECT payload::jsonb FROM conveyor.outbox").fetchone() == ({"n": 3},)
    detail = ops.run(ADMIN, str(job_id))
    assert [a.attempt for a in detail.attempts] == [1]  # the history stays
    assert detail.last_error == "boom"
    [row] = audit(conn)
    assert (row["action"], row["job_id"], row["result"], row["detail"]) == (
        "retry", job_id, "ok", {"from": "dead", "queue": "work"},
    )  # fmt: skip

    # Now pending: a second retry is refused, and nothing more is written.
    with pytest.raises(WrongState) as refused:
        ops.retry(ADMIN, str(job_id))
    assert refused.value.details == {"status": "pending"}
    assert len(outbox_rows(conn)) == 1
    assert [r["result"] for r in audit(conn)] == ["ok", "error"]


@pytest.mark.parametrize("status", ["queued", "running", "succeeded", "cancelled", "skipped"])
def test_retry_of_a_job_that_is_not_failed_or_dead_is_wrong_state(status, ops, conn):
    job_id = insert_run(conn, "test.work", status, queue="work")
    with pytest.raises(WrongState) as refused:
        ops.retry(ADMIN, str(job_id))
    assert refused.value.details == {"status": status}
    assert ledger(conn, job_id)["status"] == status
    assert outbox_rows(conn) == []
    [row] = audit(conn)
    assert (row["result"], row["detail"]["status"]) == ("error", status)


def test_retry_of_a_pending_job_is_wrong_state(ops, conn):
    job_id = enqueue(conn, WORK, {"n": 1})
    with pytest.raises(WrongState) as refused:
        ops.retry(ADMIN, str(job_id))
    assert refused.value.details == {"status": "pending"}


def test_retry_of_a_job_the_relay_gave_up_on_requeues_it(ops, conn):
    job_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts, last_error)"
        " VALUES (%s, 'test.work', 'work', '{\"n\": 2}', now(), now(), 20, 'AccessDenied')",
        (job_id,),
    )
    assert get_job(conn, job_id).status == "failed"
    done = ops.retry(ADMIN, str(job_id))
    assert done.status == "pending"
    assert conn.execute("SELECT count(*) FROM conveyor.outbox_dead").fetchone() == (0,)
    assert outbox_rows(conn) == [(job_id, "test.work", "work", 1)]
    assert get_job(conn, job_id).status == "pending"
    [row] = audit(conn)
    assert row["detail"] == {"from": "failed", "requeued": "outbox_dead"}


def test_a_retried_dead_job_runs_again_through_the_local_runtime_as_attempt_1_and_succeeds(
    runtime_factory, db_url, sqs, stage
):
    seen: list[int] = []

    def work(payload: Work, ctx: JobContext) -> None:
        seen.append(ctx.attempt)
        if len(seen) == 1:
            raise PermanentJobError("the first run fails for good")

    runtime = runtime_factory(handlers={"test.work": job_handler(WORK, work)})
    ops = make_ops(db_url, sqs, stage, registry=work_registry)
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = enqueue(conn, WORK, {"n": 1})
        assert runtime.wait_for(lambda: (get_job(conn, job_id) or None) and get_job(conn, job_id).status == "dead", 20)
        assert get_job(conn, job_id).attempt == 1
        [failed] = ops.run(READER, str(job_id)).attempts
        assert (failed.attempt, failed.error_type) == (1, "PermanentJobError")

        ops.retry(ADMIN, str(job_id))

        assert runtime.wait_for(lambda: get_job(conn, job_id).status == "succeeded", 20)
        record = get_job(conn, job_id)
        assert record.attempt == 1  # a fresh count: attempt 1 again, not 2
        assert seen == [1, 1]
        detail = ops.run(READER, str(job_id))
        assert [(a.attempt, a.error_type) for a in detail.attempts] == [(1, "PermanentJobError")]  # history kept
        assert detail.reason == "retried by ada"
        assert [r["action"] for r in audit(conn)] == ["retry"]


# -- runs --------------------------------------------------------------------------------------------------------------


def test_runs_pages_with_the_cursor_without_duplicates_or_gaps_while_jobs_arrive(ops, conn):
    first = [enqueue(conn, WORK, {"n": i}) for i in range(23)]
    seen: list[str] = []
    page = ops.runs(READER, limit=10)
    pages = 1
    while True:
        seen += [r.id for r in page.runs]
        enqueue(conn, WORK, {"n": 1000 + pages})  # newer than every cursor: never shows up in later pages
        if page.next_cursor is None:
            break
        page = ops.runs(READER, limit=10, cursor=page.next_cursor)
        pages += 1
    assert pages == 3
    assert seen == [str(j) for j in reversed(first)]


def test_a_full_last_page_still_gives_a_cursor_and_the_next_page_is_empty(ops, conn):
    for i in range(4):
        enqueue(conn, WORK, {"n": i})
    page = ops.runs(READER, limit=4)
    assert page.next_cursor is not None
    rest = ops.runs(READER, limit=4, cursor=page.next_cursor)
    assert (rest.runs, rest.next_cursor) == ([], None)


def test_runs_filters_by_job_and_status(ops, conn):
    dead = insert_run(conn, "test.work", "dead", queue="work")
    insert_run(conn, "test.work", "succeeded", queue="work")
    insert_run(conn, "email.send", "dead", queue="email-default")
    assert [r.id for r in ops.runs(READER, job="test.work", status="dead").runs] == [str(dead)]


def test_q_finds_a_job_by_id_dedup_key_error_or_reason(ops, conn):
    keyed = insert_run(conn, "test.work", "queued", queue="work", dedup_key="order-42")
    errored = insert_run(conn, "test.work", "dead", queue="work", last_error="socket timeout after 5s")
    reasoned = insert_run(conn, "test.work", "cancelled", queue="work", reason="Customer closed the account")
    insert_run(conn, "test.work", "succeeded", queue="work")

    def found(q):
        return {r.id for r in ops.runs(READER, q=q).runs}

    assert found("ORDER-4") == {str(keyed)}
    assert found("socket") == {str(errored)}
    assert found("closed the") == {str(reasoned)}
    assert found(str(errored)) == {str(errored)}
    assert found("%") == set()  # wildcards are literal text
    assert found(str(uuid.uuid4())) == set()


def test_each_run_lists_the_actions_this_caller_may_take_on_it(ops, conn):
    dead = insert_run(conn, "test.work", "dead", queue="work", created_days=0.3)
    queued = insert_run(conn, "test.work", "queued", queue="work", created_days=0.2)
    done = insert_run(conn, "test.work", "succeeded", queue="work", created_days=0.1)

    def actions(caller):
        return {r.id: r.actions for r in ops.runs(caller).runs}

    assert actions(ADMIN) == {str(dead): ["retry"], str(queued): ["cancel"], str(done): []}
    assert actions(READER) == {str(dead): [], str(queued): [], str(done): []}
    assert actions(Caller("c", frozenset({Scope.READ, Scope.CANCEL})))[str(queued)] == ["cancel"]


# -- run detail and masking --------------------------------------------------------------------------------------------

SECRET_PAYLOAD = {
    "user": "ada",
    "password": "hunter2",
    "api_key": None,
    "tok": "reset-123",
    "address": {"street": "1 Main St", "door_code": "4711"},
    "cards": [{"last4": "4242", "pin": "0000"}, {"last4": "1881", "pin": "9999"}],
    "by_name": {"work": {"last4": "5555", "pin": "1234"}},
}
MASKED = {
    "user": "ada",
    "password": MASK,
    "api_key": None,
    "tok": MASK,
    "address": {"street": "1 Main St", "door_code": MASK},
    "cards": [{"last4": "4242", "pin": MASK}, {"last4": "1881", "pin": MASK}],
    "by_name": {"work": {"last4": "5555", "pin": MASK}},
}


def test_masking_follows_secret_types_and_sensitive_fields_through_nested_models():
    assert mask_payload(Signup, SECRET_PAYLOAD) == MASKED
    assert SECRET_PAYLOAD["password"] == "hunter2"  # a copy: the input is untouched


def test_a_key_the_model_no_longer_declares_is_masked_whole():
    """A field renamed since the job was enqueued (``pin`` was ``pincode``): the old key's value may be a secret."""
    drifted = {**SECRET_PAYLOAD, "cards": [{"last4": "4242", "pincode": "0000"}], "old_token": {"v": "abc", "n": [1]}}
    masked = mask_payload(Signup, drifted)
    assert masked["cards"] == [{"last4": "4242", "pincode": MASK}]
    assert masked["old_token"] == {"v": MASK, "n": [MASK]}
    assert masked["user"] == "ada"


def test_a_validation_error_never_quotes_a_sensitive_input():
    """The message lands in the ledger's last_error (and the enqueue error), which read-only operators see."""
    from pydantic import ValidationError

    from shared.outbox import describe_validation_error

    bad = {**SECRET_PAYLOAD, "user": 42, "password": 123456, "cards": [{"last4": "4242", "pin": 7777}]}
    try:
        Signup.model_validate(bad)
    except ValidationError as exc:
        message = describe_validation_error(exc, Signup)
    assert "password" in message and "123456" not in message and "7777" not in message
    assert "(got 42)" in message  # a field that is not sensitive is still quoted, to help find the mistake


def test_run_shows_the_payload_masked_with_children_attempts_and_audit(ops, conn):
    parent = insert_run(conn, "test.signup", "waiting", queue="signup", payload=json.dumps(SECRET_PAYLOAD),
                        children_pending=1, attempts='[{"attempt": 1, "outcome": "failed", "error": "x"}]')  # fmt: skip
    child = insert_run(conn, "test.work", "queued", queue="work", parent_id=parent)
    ops.cancel(ADMIN, str(parent))
    detail = ops.run(READER, str(parent))
    assert detail.payload == MASKED
    assert detail.children_total == 1
    assert [c.id for c in detail.children] == [str(child)]
    assert [(a.attempt, a.outcome, a.error) for a in detail.attempts] == [(1, "failed", "x")]
    assert [(a.action, a.actor, a.result) for a in detail.audit] == [("cancel", "ada", "ok")]
    assert detail.status == "cancelled"


def test_email_variables_are_masked_because_they_carry_reset_tokens(ops, conn):
    job_id = enqueue(conn, EMAIL_SEND, {"to": "a@example.com", "template": "password_reset", "subject": "Reset",
                                        "variables": {"token": "secret-reset-token"}})  # fmt: skip
    assert ops.run(READER, str(job_id)).payload["variables"] == MASK
    assert ops.run(READER, str(job_id)).payload["to"] == "a@example.com"


def test_a_job_the_registry_does_not_know_has_every_payload_value_masked(ops, conn):
    job_id = insert_run(conn, "gone.job", "succeeded", queue="work", payload='{"a": "x", "b": {"c": [1, null]}}')
    assert ops.run(READER, str(job_id)).payload == {"a": MASK, "b": {"c": [MASK, None]}}


# -- queues ------------------------------------------------------------------------------------------------------------


def test_queues_reports_sqs_counts_and_the_ledger_view_of_each_job(ops, conn, sqs, queues):
    work_url, work_dlq = queues["work"]
    for i in range(3):
        sqs.send_message(QueueUrl=work_url, MessageBody=json.dumps({"n": i}))
    sqs.send_message(QueueUrl=work_url, MessageBody="{}", DelaySeconds=600)
    sqs.send_message(QueueUrl=work_dlq, MessageBody="{}")
    enqueue(conn, WORK, {"n": 1})
    enqueue(conn, WORK, {"n": 2}, delay=3600)
    conn.execute(
        "INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts, last_error)"
        " VALUES (gen_random_uuid(), 'test.work', 'work', '{}', now(), now(), 20, 'refused')"
    )
    insert_run(conn, "test.work", "running", queue="work")
    insert_run(conn, "test.work", "succeeded", queue="work", age_days=0.001)
    insert_run(conn, "test.work", "succeeded", queue="work", age_days=0.5)
    insert_run(conn, "test.work", "dead", queue="work", age_days=0.001)
    insert_run(conn, "test.work", "failed", queue="work", age_days=0.2)
    insert_run(conn, "test.work", "succeeded", queue="work", age_days=3)  # outside both windows
    insert_run(conn, "test.work", "queued", queue="work", published_at=sql.SQL("now() - interval '5 minutes'"))
    ops.pause(ADMIN, "signup")

    view = ops.queues(READER)
    by_name = {q.name: q for q in view.queues}
    assert set(by_name) == {"work", "email-high", "email-default", "signup"}
    work = by_name["work"]
    assert (work.visible, work.in_flight, work.delayed, work.dlq_depth, work.sqs_error) == (3, 0, 1, 1, None)
    assert work.resource_name.endswith("-work") and not work.paused
    assert by_name["signup"].paused
    assert 299 <= work.oldest_age_seconds < 400
    [stats] = work.jobs
    assert stats.model_dump() == {
        "name": "test.work", "queue": "work", "schedule": None, "timezone": None, "outbox_pending": 2,
        "outbox_dead": 1, "running": 1, "succeeded_1h": 1, "failed_1h": 1, "succeeded_24h": 2, "failed_24h": 2,
    }  # fmt: skip
    assert view.relay_lag_seconds is not None and view.relay_lag_seconds >= 0
    assert by_name["signup"].oldest_age_seconds is None


def test_a_queue_sqs_cannot_answer_for_gets_an_error_and_the_rest_still_answers(db_url, sqs, stage, queues):
    sqs.delete_queue(QueueUrl=queues["signup"][1])
    view = make_ops(db_url, sqs, stage).queues(READER)
    by_name = {q.name: q for q in view.queues}
    assert by_name["signup"].sqs_error
    assert (by_name["signup"].visible, by_name["signup"].dlq_depth) == (None, None)
    assert by_name["work"].sqs_error is None and by_name["work"].visible == 0


def test_relay_lag_is_none_when_nothing_is_due(ops, conn):
    enqueue(conn, WORK, {"n": 1}, delay=3600)
    assert ops.queues(READER).relay_lag_seconds is None


# -- health ------------------------------------------------------------------------------------------------------------


def test_health_is_healthy_on_a_quiet_system(ops):
    health = ops.health(READER)
    assert health.healthy and health.reasons == []
    assert [c.name for c in health.checks] == ["database", "relay_lag", "dead_letter_queues", "outbox_dead"]


def test_health_names_a_full_dead_letter_queue_a_lagging_relay_and_dead_outbox_rows(ops, conn, sqs, queues):
    for _ in range(2):
        sqs.send_message(QueueUrl=queues["work"][1], MessageBody="{}")
    enqueue(conn, WORK, {"n": 1}, run_at=conn.execute("SELECT now() - interval '10 minutes'").fetchone()[0])
    conn.execute(
        "INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts, last_error)"
        " VALUES (gen_random_uuid(), 'test.work', 'work', '{}', now(), now(), 20, 'refused')"
    )
    health = ops.health(READER)
    assert not health.healthy
    failed = {c.name: c.detail for c in health.checks if not c.ok}
    assert set(failed) == {"relay_lag", "dead_letter_queues", "outbox_dead"}
    assert "work (2)" in failed["dead_letter_queues"] and "signup" not in failed["dead_letter_queues"]
    assert "behind" in failed["relay_lag"]
    assert failed["outbox_dead"].startswith("1 outbox row")
    assert health.reasons == [c.detail for c in health.checks if not c.ok]


def test_health_without_a_database_reports_it_and_what_it_could_not_check(db_url, sqs, stage, queues):
    def unreachable():
        raise psycopg.OperationalError("connection refused")

    health = make_ops(db_url, sqs, stage, connect_to=unreachable).health(READER)
    assert not health.healthy
    checks = {c.name: c for c in health.checks}
    assert not checks["database"].ok and "unreachable" in checks["database"].detail
    assert not checks["relay_lag"].ok and not checks["outbox_dead"].ok
    assert checks["dead_letter_queues"].ok


def test_reads_without_a_database_are_unavailable(db_url, sqs, stage, queues):
    def unreachable():
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(Unavailable):
        make_ops(db_url, sqs, stage, connect_to=unreachable).runs(READER)


# -- throughput --------------------------------------------------------------------------------------------------------


def test_throughput_counts_finished_runs_per_bucket_zero_filled(ops, conn):
    minute = 1 / (24 * 60)
    insert_run(conn, "test.work", "succeeded", queue="work", age_days=2 * minute)
    insert_run(conn, "test.work", "succeeded", queue="work", age_days=2 * minute)
    insert_run(conn, "test.work", "dead", queue="work", age_days=10 * minute)
    insert_run(conn, "test.work", "failed", queue="work", age_days=30 * minute)
    insert_run(conn, "test.work", "cancelled", queue="work", age_days=5 * minute)  # neither
    insert_run(conn, "test.work", "succeeded", queue="work", age_days=120 * minute)  # the day only
    insert_run(conn, "test.work", "succeeded", queue="work", age_days=2)  # neither window

    hour = ops.throughput(READER, "1h")
    assert (hour.window, hour.bucket_seconds, len(hour.buckets)) == ("1h", 60, 60)
    assert sum(b.succeeded for b in hour.buckets) == 2
    assert sum(b.failed for b in hour.buckets) == 2
    assert [b.start for b in hour.buckets] == sorted(b.start for b in hour.buckets)
    assert sum(1 for b in hour.buckets if b.succeeded or b.failed) == 3

    day = ops.throughput(READER, "24h")
    assert (day.bucket_seconds, len(day.buckets)) == (900, 96)
    assert (sum(b.succeeded for b in day.buckets), sum(b.failed for b in day.buckets)) == (3, 2)


# -- pause and resume --------------------------------------------------------------------------------------------------


def test_pause_and_resume_write_the_pauses_table_and_the_audit_log(ops, conn):
    switch = ops.pause(ADMIN, "work")
    assert (switch.queue, switch.paused, switch.changed) == ("work", True, True)
    assert conn.execute("SELECT queue, paused_by FROM conveyor.paused_queues").fetchall() == [("work", "ada")]
    assert ops.pause(ADMIN, "work").changed is False
    assert ops.resume(ADMIN, "work").changed is True
    assert conn.execute("SELECT count(*) FROM conveyor.paused_queues").fetchone() == (0,)
    rows = audit(conn)
    assert [(r["action"], r["target"], r["result"], r["detail"]["changed"]) for r in rows] == [
        ("pause", "work", "ok", True), ("pause", "work", "ok", False), ("resume", "work", "ok", True),
    ]  # fmt: skip


class RefusingControls:
    """AWS refusing to switch the event source mapping (what AwsQueueControls raises then)."""

    def set_paused(self, queue: str, paused: bool) -> tuple[int, list[str]]:
        raise Unavailable(f"lambda:UpdateEventSourceMapping refused for {queue}")


def test_a_pause_aws_refuses_is_unavailable_audited_and_not_recorded(db_url, sqs, stage, queues, conn):
    ops = make_ops(db_url, sqs, stage, controls=RefusingControls())
    with pytest.raises(Unavailable):
        ops.pause(ADMIN, "work")
    assert conn.execute("SELECT count(*) FROM conveyor.paused_queues").fetchone() == (0,)
    [row] = audit(conn)
    assert (row["action"], row["result"], row["detail"]["error"]) == ("pause", "error", "unavailable")


class SwitchingControls:
    """AWS switching the queue's mapping and a schedule, as AwsQueueControls reports it; records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def set_paused(self, queue: str, paused: bool) -> tuple[int, list[str]]:
        self.calls.append((queue, paused))
        return 1, ["test.work"]


def test_a_pause_with_the_database_down_refuses_before_touching_aws(db_url, sqs, stage, queues):
    controls = SwitchingControls()
    down = Settings(stage=stage, database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    ops = make_ops(db_url, sqs, stage, controls=controls, connect_to=lambda: connect(down))
    with pytest.raises(Unavailable):
        ops.pause(ADMIN, "work")
    assert controls.calls == []


def test_a_pause_the_database_cannot_record_after_aws_switched_says_what_switched(db_url, sqs, stage, queues, conn):
    controls = SwitchingControls()
    settings = Settings(stage=stage, database_url=db_url)
    down = Settings(stage=stage, database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    opened: list[int] = []

    def database_gone_after_the_first_connection():
        opened.append(1)
        return connect(settings if len(opened) == 1 else down)

    ops = make_ops(db_url, sqs, stage, controls=controls, connect_to=database_gone_after_the_first_connection)
    with pytest.raises(Unavailable) as raised:
        ops.pause(ADMIN, "work")
    assert controls.calls == [("work", True)]
    message = raised.value.message
    assert "1 event source mapping(s) and the schedules of test.work disabled on AWS" in message, message
    assert "repeat the call to record it" in message
    assert raised.value.details["event_source_mappings"] == 1
    assert conn.execute("SELECT count(*) FROM conveyor.paused_queues").fetchone() == (0,)


# -- wiring ------------------------------------------------------------------------------------------------------------


def test_build_operations_for_the_local_runtime_reads_this_stage(db_url, stage, queues, aws_endpoint):
    ops = build_operations(REGISTRY, Settings(stage=stage, database_url=db_url), local=True)
    assert isinstance(ops.controls, LocalQueueControls)
    assert ops.redriver.move_task is False
    assert ops.health(READER).healthy
    assert {q.name for q in ops.queues(READER).queues} == set(REGISTRY.queues())


def test_build_operations_for_aws_reads_the_mappings_and_schedule_group(db_url, stage, monkeypatch, aws_endpoint):
    from shared.operations.controls import AwsQueueControls
    from shared.settings import EVENT_SOURCE_MAPPINGS, SCHEDULE_GROUP, SettingsError

    mapping = str(uuid.uuid4())
    monkeypatch.setenv(EVENT_SOURCE_MAPPINGS, json.dumps({"work": mapping}))
    monkeypatch.setenv(SCHEDULE_GROUP, "my-group")
    ops = build_operations(REGISTRY, Settings(stage=stage, database_url=db_url), local=False)
    assert isinstance(ops.controls, AwsQueueControls)
    assert (ops.controls.mappings, ops.controls.schedule_group, ops.controls.stage) == ({"work": mapping}, "my-group", stage)
    assert ops.redriver.move_task is True

    monkeypatch.setenv(EVENT_SOURCE_MAPPINGS, "[1, 2]")
    with pytest.raises(SettingsError, match=EVENT_SOURCE_MAPPINGS):
        build_operations(REGISTRY, Settings(stage=stage, database_url=db_url), local=False)


def test_health_calls_the_relay_behind_at_the_alarms_threshold(db_url, stage, queues, conn, monkeypatch, aws_endpoint):
    """The stack passes the relay-lag alarm's threshold, so /health and the alarm say the same thing."""
    enqueue(conn, WORK, {"n": 1}, run_at=conn.execute("SELECT now() - interval '90 seconds'").fetchone()[0])
    conn.commit()
    settings = Settings(stage=stage, database_url=db_url)

    def relay_check() -> HealthCheck:
        (check,) = [c for c in build_operations(REGISTRY, settings, local=True).health(READER).checks if c.name == "relay_lag"]
        return check

    assert relay_check().ok is False  # the default: 60 s
    monkeypatch.setenv("CONVEYOR_RELAY_LAG_SECONDS", "300")
    assert relay_check().ok is True
    monkeypatch.setenv("CONVEYOR_RELAY_LAG_SECONDS", "soon")
    with pytest.raises(SettingsError, match="CONVEYOR_RELAY_LAG_SECONDS='soon' is not a number of seconds"):
        build_operations(REGISTRY, settings, local=True)


# -- redrive -----------------------------------------------------------------------------------------------------------


def dlq_messages(sqs, url, *, job_name: str | None = None, count: int = 1) -> None:
    from shared.envelope import ATTR_JOB_NAME

    for i in range(count):
        attributes = {} if job_name is None else {ATTR_JOB_NAME: {"DataType": "String", "StringValue": job_name}}
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}), MessageAttributes=attributes)


def depth(sqs, url) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def test_redrive_moves_the_dead_letters_back_and_audits_the_counts(ops, conn, sqs, queues):
    queue_url, dlq_url = queues["work"]
    dlq_messages(sqs, dlq_url, job_name="test.work", count=3)
    result = ops.redrive(ADMIN, "work")
    assert (result.queue, result.mode, result.moved, result.failed, result.complete) == ("work", "copy", 3, 0, True)
    assert (depth(sqs, dlq_url), depth(sqs, queue_url)) == (0, 3)
    [row] = audit(conn)
    assert (row["action"], row["target"], row["result"], row["job_id"]) == ("redrive", "work", "ok", None)
    assert (row["detail"]["moved"], row["detail"]["mode"], row["detail"]["job"]) == (3, "copy", None)


def test_redrive_of_one_job_leaves_the_other_jobs_messages(db_url, sqs, stage, conn):
    shared_queue = Registry()
    shared_queue.job("a.one", payload=Work, queue="shared")
    shared_queue.job("a.two", payload=Work, queue="shared")
    urls = ensure_queues(sqs, shared_queue, stage=stage)
    queue_url, dlq_url = urls["shared"]
    dlq_messages(sqs, dlq_url, job_name="a.one", count=2)
    dlq_messages(sqs, dlq_url, job_name="a.two", count=1)
    ops = make_ops(db_url, sqs, stage, registry=shared_queue)
    result = ops.redrive(ADMIN, "shared", job="a.one")
    assert (result.job, result.moved, result.skipped) == ("a.one", 2, 1)
    assert (depth(sqs, queue_url), depth(sqs, dlq_url)) == (2, 1)
    [row] = audit(conn)
    assert (row["detail"]["job"], row["detail"]["moved"], row["detail"]["skipped"]) == ("a.one", 2, 1)


def test_a_redrive_whose_queue_is_gone_is_unavailable_and_audited_as_an_error(ops, conn, sqs, queues):
    sqs.delete_queue(QueueUrl=queues["work"][0])  # the queue to send back to no longer exists
    dlq_messages(sqs, queues["work"][1], job_name="test.work")
    with pytest.raises(Unavailable) as refused:
        ops.redrive(ADMIN, "work")
    assert "does not exist" in refused.value.message
    [row] = audit(conn)
    assert (row["action"], row["target"], row["result"], row["detail"]["error"]) == ("redrive", "work", "error", "unavailable")
    assert depth(sqs, queues["work"][1]) == 1
