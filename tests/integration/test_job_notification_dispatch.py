"""notification.dispatch: pushes through the push integration (a local HTTP server), deletes the tokens it calls
invalid, emails critical notifications through email.send, and does each of those once."""

from __future__ import annotations

import uuid

import pytest

from functions.notification_dispatch.handler import handler as dispatch_handler
from shared.database import Database
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.queues import QueueDirectory
from shared.runtime import Outcome
from shared.settings import Settings
from shared.testing import invoke


@pytest.fixture
def bound(sqs, stage, db_url, fake_service):
    ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    dispatch_handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    fake_service.use("push")
    yield fake_service
    database.close()


def a_user(conn, *tokens: str, email: str = "ada@example.com") -> int:
    user_id = conn.execute("INSERT INTO demo.users (email, name) VALUES (%s, 'Ada') RETURNING id", (email,)).fetchone()[0]
    for token in tokens:
        conn.execute("INSERT INTO demo.device_tokens (user_id, token, platform) VALUES (%s, %s, 'ios')", (user_id, token))
    return user_id


def a_notification(conn, user_id: int, kind: str = "order_update") -> int:
    return conn.execute(
        "INSERT INTO demo.notifications (user_id, type, title, body) VALUES (%s, %s, 'Order 1042 shipped', 'It arrives Friday.') RETURNING id",
        (user_id, kind),
    ).fetchone()[0]


def tokens_of(conn, user_id: int) -> list[str]:
    return [t for (t,) in conn.execute("SELECT token FROM demo.device_tokens WHERE user_id = %s ORDER BY id", (user_id,))]


def emails(conn) -> list[tuple]:
    return conn.execute("SELECT queue, dedup_key, payload FROM conveyor.outbox WHERE job_name = 'email.send'").fetchall()


def test_pushes_to_every_token_deletes_invalid_ones_and_emails_a_critical_notification(bound, conn, stage):
    user = a_user(conn, "tok-a", "tok-b", "tok-c")
    other = a_user(conn, "tok-other", email="grace@example.com")
    notification = a_notification(conn, user, "order_update")
    # The service also names a token that is not this user's: it must not be deleted.
    bound.route("/send", 200, {"invalid_tokens": ["tok-b", "tok-other"]})

    result = invoke(dispatch_handler, {"notification_id": notification}, stage=stage)

    assert result.succeeded, result.reports
    [request] = bound.requests
    assert request.method == "POST" and request.path == "/send"
    assert request.json == {
        "tokens": ["tok-a", "tok-b", "tok-c"], "title": "Order 1042 shipped", "body": "It arrives Friday.",
        "data": {"notification_id": str(notification), "type": "order_update"},
    }
    assert request.header("Idempotency-Key").startswith(result.reports[0].job_id)
    assert tokens_of(conn, user) == ["tok-a", "tok-c"]
    assert tokens_of(conn, other) == ["tok-other"]
    [(queue, dedup_key, payload)] = emails(conn)
    assert (queue, dedup_key) == ("email-default", f"notification-email:{notification}")
    assert payload == {
        "to": "ada@example.com", "template": "notification", "subject": None,
        "variables": {"name": "Ada", "title": "Order 1042 shipped", "body": "It arrives Friday."},
    }


@pytest.mark.parametrize("kind", ["order_update", "payment_issue", "subscription_expiring"])
def test_every_critical_type_is_emailed(bound, conn, stage, kind):
    notification = a_notification(conn, a_user(conn, "tok-a"), kind)
    assert invoke(dispatch_handler, {"notification_id": notification}, stage=stage).succeeded
    assert len(emails(conn)) == 1


@pytest.mark.parametrize("kind", ["promotion", "reminder"])
def test_other_types_are_pushed_only(bound, conn, stage, kind):
    notification = a_notification(conn, a_user(conn, "tok-a"), kind)
    assert invoke(dispatch_handler, {"notification_id": notification}, stage=stage).succeeded
    assert len(bound.requests) == 1
    assert emails(conn) == []


def test_a_user_without_devices_is_only_emailed(bound, conn, stage):
    notification = a_notification(conn, a_user(conn), "payment_issue")
    assert invoke(dispatch_handler, {"notification_id": notification}, stage=stage).succeeded
    assert bound.requests == []
    assert len(emails(conn)) == 1


def test_a_notification_that_no_longer_exists_succeeds_doing_nothing(bound, conn, stage):
    result = invoke(dispatch_handler, {"notification_id": 999_999}, stage=stage)
    assert result.succeeded
    assert bound.requests == [] and emails(conn) == []


def test_running_twice_emails_once(bound, conn, stage):
    user = a_user(conn, "tok-a", "tok-b")
    notification = a_notification(conn, user, "payment_issue")
    bound.route("/send", 200, {"invalid_tokens": ["tok-b"]})
    job_id = str(uuid.uuid4())
    assert invoke(dispatch_handler, {"notification_id": notification}, stage=stage, job_id=job_id).succeeded
    # The same message again (SQS at-least-once): the run's success committed with the email, so nothing runs.
    again = invoke(dispatch_handler, {"notification_id": notification}, stage=stage, job_id=job_id, receive_count=2)
    assert again.outcomes == [Outcome.NOT_RUN]
    # A second dispatch job of the same notification while the first email waits: the dedup key keeps one email.
    assert invoke(dispatch_handler, {"notification_id": notification}, stage=stage).succeeded
    assert len(emails(conn)) == 1
    assert tokens_of(conn, user) == ["tok-a"]


def test_a_push_outage_is_retried_and_changes_nothing(bound, conn, stage):
    user = a_user(conn, "tok-a", "tok-b")
    notification = a_notification(conn, user, "order_update")
    bound.route("/send", 503, "unavailable")
    result = invoke(dispatch_handler, {"notification_id": notification}, stage=stage)
    assert result.outcomes == [Outcome.RETRYING]
    assert tokens_of(conn, user) == ["tok-a", "tok-b"] and emails(conn) == []


def test_a_push_refusal_is_permanent_with_its_body(bound, conn, stage):
    notification = a_notification(conn, a_user(conn, "tok-a"), "order_update")
    bound.route("/send", 400, {"error": "title too long"})
    result = invoke(dispatch_handler, {"notification_id": notification}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "title too long" in result.reports[0].error
    assert emails(conn) == []


def test_an_address_email_send_refuses_skips_the_email_but_still_pushes_once_and_deletes_invalid_tokens(
    bound, conn, stage, caplog
):
    # Refused only when the email is enqueued, after the push, the run would retry (pushing again every time) and
    # finally die without deleting the invalid tokens.
    user = a_user(conn, "tok-a", "tok-b", email="not-an-address")
    notification = a_notification(conn, user, "payment_issue")
    bound.route("/send", 200, {"invalid_tokens": ["tok-b"]})

    result = invoke(dispatch_handler, {"notification_id": notification}, stage=stage)

    assert result.succeeded, result.reports
    assert len(bound.requests) == 1
    assert tokens_of(conn, user) == ["tok-a"]
    assert emails(conn) == []
    assert any("not one email.send accepts" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
