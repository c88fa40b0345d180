"""orders.digest: one email per store owner with unprocessed items, one for operations, items marked with them."""

from datetime import UTC, datetime

import pytest

from functions.orders_digest.handler import handler
from shared.jobs import ORDERS_DIGEST
from shared.runtime import Outcome
from shared.testing import invoke


@pytest.fixture
def bound(bind_product):
    bind_product(handler)


def store(conn, name, email):
    user = conn.execute("INSERT INTO demo.users (email, name) VALUES (%s, %s) RETURNING id", (email, name)).fetchone()[0]
    return conn.execute("INSERT INTO demo.stores (name, owner_user_id) VALUES (%s, %s) RETURNING id", (name, user)).fetchone()[0]


def item(conn, store_id, summary, *, processed=False):
    conn.execute(
        "INSERT INTO demo.digest_items (store_id, kind, summary, processed_at) VALUES (%s, 'order', %s, %s)",
        (store_id, summary, datetime.now(UTC) if processed else None),
    )


def emails(conn):
    rows = conn.execute(
        "SELECT payload FROM conveyor.outbox WHERE job_name = 'email.send' ORDER BY payload->>'to'"
    ).fetchall()
    return {row[0]["to"]: row[0] for row in rows}


def test_one_email_per_owner_and_one_for_operations(bound, conn, stage, monkeypatch):
    monkeypatch.setenv("CONVEYOR_OPS_EMAIL", "night-shift@conveyor.example")
    books = store(conn, "Books", "books@example.com")
    tea = store(conn, "Tea", "tea@example.com")
    quiet = store(conn, "Quiet", "quiet@example.com")
    item(conn, books, "order 1 paid")
    item(conn, books, "order 2 paid")
    item(conn, tea, "order 3 cancelled")
    item(conn, quiet, "an old one", processed=True)

    result = invoke(handler, {}, stage=stage)

    assert result.succeeded
    sent = emails(conn)
    assert set(sent) == {"books@example.com", "tea@example.com", "night-shift@conveyor.example"}
    assert sent["books@example.com"]["template"] == "digest"
    assert sent["books@example.com"]["variables"] == {
        "name": "Books", "store": "Books", "date": datetime.now(UTC).date().isoformat(), "count": "2",
        "items": "- order: order 1 paid\n- order: order 2 paid",
    }  # fmt: skip
    assert sent["tea@example.com"]["variables"]["items"] == "- order: order 3 cancelled"
    ops = sent["night-shift@conveyor.example"]["variables"]
    assert ops["count"] == "3"
    assert ops["items"] == f"- Books (store {books}): 2\n- Tea (store {tea}): 1"
    assert conn.execute("SELECT count(*) FROM demo.digest_items WHERE processed_at IS NULL").fetchone()[0] == 0


def test_a_rerun_with_nothing_new_sends_nothing(bound, conn, stage):
    books = store(conn, "Books", "books@example.com")
    item(conn, books, "order 1 paid")
    assert invoke(handler, {}, stage=stage).succeeded
    before = conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0]
    assert before == 2

    again = invoke(handler, {}, stage=stage)

    assert again.succeeded
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == before
    # Something new later that day is sent the next time, and only it.
    item(conn, books, "order 9 paid")
    assert invoke(handler, {}, stage=stage).succeeded
    latest = conn.execute(
        "SELECT payload->'variables'->>'items' FROM conveyor.outbox WHERE payload->>'to' = 'books@example.com' "
        "ORDER BY created_at DESC LIMIT 1"
    ).fetchone()[0]
    assert latest == "- order: order 9 paid"


def test_items_beyond_the_limit_wait_for_the_next_run(bound, conn, stage):
    books = store(conn, "Books", "books@example.com")
    for n in range(5):
        item(conn, books, f"order {n}")

    assert invoke(handler, {"max_items_per_store": 3}, stage=stage).succeeded

    variables = emails(conn)["books@example.com"]["variables"]
    assert variables["count"] == "3"
    assert variables["items"].splitlines() == ["- order: order 0", "- order: order 1", "- order: order 2", "(and 2 more in the next digest)"]
    assert conn.execute("SELECT count(*) FROM demo.digest_items WHERE processed_at IS NULL").fetchone()[0] == 2


def test_items_stay_unprocessed_when_the_emails_cannot_be_enqueued(bound, conn, stage, monkeypatch):
    # An operations address email.send's model refuses: the run fails before its transaction commits, so no item is
    # marked and no email enqueued (marked if and only if their email is enqueued); the job retries.
    monkeypatch.setenv("CONVEYOR_OPS_EMAIL", "not-an-address")
    books = store(conn, "Books", "books@example.com")
    item(conn, books, "order 1 paid")

    result = invoke(handler, {}, stage=stage)

    assert result.outcomes == [Outcome.RETRYING]
    assert conn.execute("SELECT count(*) FROM demo.digest_items WHERE processed_at IS NULL").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 0


def test_an_owner_address_that_cannot_be_emailed_holds_back_only_its_store(bound, conn, stage):
    books = store(conn, "Books", "books@example.com")
    broken = store(conn, "Broken", "not-an-address")
    item(conn, books, "order 1 paid")
    item(conn, broken, "order 2 paid")

    assert invoke(handler, {}, stage=stage).succeeded

    sent = emails(conn)
    assert set(sent) == {"books@example.com", "ops@conveyor.example"}
    assert sent["ops@conveyor.example"]["variables"]["items"].splitlines() == [
        f"- Books (store {books}): 1",
        f"- Broken (store {broken}): not sent, the owner's address 'not-an-address' is not one email.send accepts; 1 items kept",
    ]
    unprocessed = conn.execute("SELECT store_id FROM demo.digest_items WHERE processed_at IS NULL").fetchall()
    assert unprocessed == [(broken,)]


def test_runs_daily_at_six_utc():
    # UTC has no daylight saving time: the weekend Europe moves its clocks (30 March 2025) changes nothing.
    schedule = ORDERS_DIGEST.parsed_schedule
    assert (ORDERS_DIGEST.schedule, ORDERS_DIGEST.timezone) == ("cron(0 6 * * ? *)", "UTC")
    start = datetime(2025, 3, 29, 6, 0, tzinfo=UTC)
    fires = list(schedule.fire_times(start, datetime(2025, 4, 1, 0, 0, tzinfo=UTC)))
    assert fires == [datetime(2025, 3, 30, 6, 0, tzinfo=UTC), datetime(2025, 3, 31, 6, 0, tzinfo=UTC)]


def test_the_digest_emails_carry_every_variable_the_digest_template_needs():
    """orders.digest and email.send meet at the template: an email missing a variable would die in email.send."""
    from functions.email_send.handler import render
    from functions.orders_digest.handler import operations_email, owner_email

    store = {"store_id": 1, "store_name": "Nomad Books", "owner_email": "bat@example.mn", "owner_name": "Bat"}
    items = [{"kind": "order", "summary": "order 7 paid", "id": 1, "created_at": datetime.now(UTC)}]
    for email in (owner_email(store, items, 0, "2026-11-26"), operations_email("ops@example.mn", [store], {1: 1}, {}, "2026-11-26", [])):
        rendered = render(email.model_copy(update={"subject": None}))
        assert "Nomad Books" in rendered.text or "all stores" in rendered.text
