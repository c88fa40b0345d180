"""store.sync: the hourly fan-out (one job per integrated store, never piling up) and one store's sync."""

import json
from datetime import UTC, datetime

import psycopg
import pytest

from functions.store_sync.handler import handler
from shared.jobs import STORE_SYNC
from shared.runtime import Outcome
from shared.testing import invoke
from tests.support import publish


@pytest.fixture
def bound(bind_product):
    bind_product(handler)


@pytest.fixture
def owner(conn):
    return conn.execute("INSERT INTO demo.users (email, name) VALUES ('o@example.com', 'Owner') RETURNING id").fetchone()[0]


def store(conn, owner, name, ref):
    return conn.execute(
        "INSERT INTO demo.stores (name, owner_user_id, pos_store_ref) VALUES (%s, %s, %s) RETURNING id", (name, owner, ref)
    ).fetchone()[0]


def sync_jobs(conn):
    return sorted(
        (row[0]["store_id"], row[1])
        for row in conn.execute("SELECT payload, dedup_key FROM conveyor.outbox WHERE job_name = 'store.sync'")
    )


def inventory(conn, store_id):
    return conn.execute(
        "SELECT sku, name, price::text, on_hand, reserved FROM demo.inventory WHERE store_id = %s ORDER BY sku", (store_id,)
    ).fetchall()


# -- the fan-out ----------------------------------------------------------------------------------------------------


def test_fan_out_enqueues_one_sync_per_integrated_store(bound, conn, owner, stage):
    a = store(conn, owner, "A", "pos-a")
    b = store(conn, owner, "B", "pos-b")
    store(conn, owner, "No POS", None)

    result = invoke(handler, {}, stage=stage)

    assert result.succeeded
    assert sync_jobs(conn) == [(a, f"store-sync:{a}"), (b, f"store-sync:{b}")]


def test_a_second_fan_out_while_those_are_pending_adds_none(bound, conn, owner, stage):
    a = store(conn, owner, "A", "pos-a")
    assert invoke(handler, {}, stage=stage).succeeded
    b = store(conn, owner, "B", "pos-b")  # a store that joined meanwhile gets its first sync

    assert invoke(handler, {}, stage=stage).succeeded

    assert sync_jobs(conn) == [(a, f"store-sync:{a}"), (b, f"store-sync:{b}")]


def test_a_fan_out_adds_none_for_syncs_already_published_and_not_finished(bound, conn, db_url, sqs, owner, stage):
    store(conn, owner, "A", "pos-a")
    assert invoke(handler, {}, stage=stage).succeeded
    assert publish(db_url, sqs, stage) == 1  # the relay moved it to SQS: queued in the ledger, gone from the outbox

    assert invoke(handler, {}, stage=stage).succeeded

    assert sync_jobs(conn) == []


# -- one store ------------------------------------------------------------------------------------------------------


@pytest.fixture
def pos(fake_service):
    fake_service.use("pos")
    return fake_service


ITEMS = [
    {"sku": "tea-1", "name": "Green tea", "price": "4.50", "on_hand": 12},
    {"sku": "tea-2", "name": "Black tea", "price": 3.2, "on_hand": 0, "colour": "dark"},  # extra fields are ignored
]


def test_sync_upserts_the_stores_inventory_and_keeps_reservations(bound, conn, owner, pos, stage):
    s = store(conn, owner, "Tea", "pos/tea 1")
    other = store(conn, owner, "Other", "pos-other")
    conn.execute(
        "INSERT INTO demo.inventory (store_id, sku, name, price, on_hand, reserved) VALUES "
        "(%s, 'tea-1', 'Old name', 9.99, 1, 3), (%s, 'tea-1', 'Not ours', 1.00, 5, 0)", (s, other),
    )  # fmt: skip
    pos.route("/stores/pos%2Ftea%201/inventory", 200, {"items": ITEMS})

    result = invoke(handler, {"store_id": s}, stage=stage)

    assert result.succeeded
    [request] = pos.requests
    assert (request.method, request.path) == ("GET", "/stores/pos%2Ftea%201/inventory")
    assert inventory(conn, s) == [("tea-1", "Green tea", "4.50", 12, 3), ("tea-2", "Black tea", "3.20", 0, 0)]
    assert inventory(conn, other) == [("tea-1", "Not ours", "1.00", 5, 0)]
    assert conn.execute("SELECT synced_at FROM demo.stores WHERE id = %s", (s,)).fetchone()[0] is not None


def test_a_second_sync_of_the_same_inventory_changes_nothing(bound, conn, owner, pos, stage):
    s = store(conn, owner, "Tea", "pos-tea")
    pos.route("/stores/pos-tea/inventory", 200, {"items": ITEMS})
    assert invoke(handler, {"store_id": s}, stage=stage).succeeded
    before = conn.execute("SELECT sku, updated_at FROM demo.inventory WHERE store_id = %s ORDER BY sku", (s,)).fetchall()

    assert invoke(handler, {"store_id": s}, stage=stage).succeeded

    assert conn.execute("SELECT sku, updated_at FROM demo.inventory WHERE store_id = %s ORDER BY sku", (s,)).fetchall() == before
    assert len(pos.requests) == 2


def test_a_sync_that_fetched_before_a_newer_one_stored_writes_nothing(bound, conn, db_url, owner, pos, stage):
    # A manual trigger and the hourly run for one store: this run's GET is answered only after the other run fetched
    # later and committed its newer snapshot. Storing this answer would put the older stock back.
    s = store(conn, owner, "Tea", "pos-tea")

    def newer_sync_commits(_request):
        with psycopg.connect(db_url, autocommit=True) as other, other.transaction():
            other.execute(
                "INSERT INTO demo.inventory (store_id, sku, name, price, on_hand) VALUES (%s, 'tea-1', 'Green tea', 4.50, 2)", (s,)
            )
            other.execute("UPDATE demo.stores SET synced_at = clock_timestamp() WHERE id = %s", (s,))

    pos.reply(200, {"items": ITEMS}, path="/stores/pos-tea/inventory", before=newer_sync_commits)

    result = invoke(handler, {"store_id": s}, stage=stage)

    assert result.succeeded
    assert json.loads(result.reports[0].result) == {"store_id": s, "skipped": "a newer sync already stored"}
    assert inventory(conn, s) == [("tea-1", "Green tea", "4.50", 2, 0)]
    synced_at = conn.execute("SELECT synced_at FROM demo.stores WHERE id = %s", (s,)).fetchone()[0]
    assert synced_at is not None
    # The next sync fetches after it, and stores.
    pos.route("/stores/pos-tea/inventory", 200, {"items": ITEMS})
    assert invoke(handler, {"store_id": s}, stage=stage).succeeded
    assert [row[:4] for row in inventory(conn, s)] == [("tea-1", "Green tea", "4.50", 12), ("tea-2", "Black tea", "3.20", 0)]
    assert conn.execute("SELECT synced_at FROM demo.stores WHERE id = %s", (s,)).fetchone()[0] > synced_at


def test_synced_at_is_when_the_stored_inventory_was_fetched(bound, conn, owner, pos, stage):
    # Not when it committed: a run that fetched later but committed first must not look older than this one.
    s = store(conn, owner, "Tea", "pos-tea")
    seen = []

    def note_the_time(_request):
        seen.append(conn.execute("SELECT clock_timestamp()").fetchone()[0])

    pos.reply(200, {"items": ITEMS}, path="/stores/pos-tea/inventory", before=note_the_time)

    assert invoke(handler, {"store_id": s}, stage=stage).succeeded

    assert conn.execute("SELECT synced_at FROM demo.stores WHERE id = %s", (s,)).fetchone()[0] < seen[0]


def test_the_upsert_writes_rows_in_sku_order(bound, conn, owner, pos, stage):
    # Its row locks follow (store_id, sku) like reservations.cleanup's, so the two cannot deadlock. New rows go to the
    # end of the (fresh) table in the order written, which their ctid shows.
    s = store(conn, owner, "Tea", "pos-tea")
    items = [{"sku": sku, "name": sku, "price": "1.00", "on_hand": 1} for sku in ("c", "a", "d", "b")]
    pos.route("/stores/pos-tea/inventory", 200, {"items": items})

    assert invoke(handler, {"store_id": s}, stage=stage).succeeded

    written = [row[0] for row in conn.execute("SELECT sku FROM demo.inventory WHERE store_id = %s ORDER BY ctid", (s,))]
    assert written == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("status", "headers", "outcome"),
    [(500, {}, Outcome.RETRYING), (429, {"Retry-After": "30"}, Outcome.RETRYING), (404, {}, Outcome.DEAD)],
    ids=["5xx retried", "429 waits", "4xx permanent"],
)
def test_http_errors(bound, conn, owner, pos, stage, status, headers, outcome):
    s = store(conn, owner, "Tea", "pos-tea")
    pos.reply(status, "no such store at the POS", headers=headers)

    result = invoke(handler, {"store_id": s}, stage=stage)

    assert result.outcomes == [outcome]
    if status == 404:
        assert "no such store at the POS" in result.reports[0].error
    if status == 429:
        # The fake receipt handle cannot be hidden on SQS, so the delay shows in the reason, not retry_in.
        assert "retry after 30s" in result.reports[0].error
    assert inventory(conn, s) == []
    assert conn.execute("SELECT synced_at FROM demo.stores WHERE id = %s", (s,)).fetchone()[0] is None


@pytest.mark.parametrize(
    "answer",
    [{"items": [{"sku": "x", "name": "X", "price": "-1", "on_hand": 1}]}, {"stock": []}, "<html>oops</html>",
     {"items": [{"sku": "x", "name": "X", "price": "1", "on_hand": 1}, {"sku": "x", "name": "Y", "price": "1", "on_hand": 2}]}],
    ids=["negative price", "no items", "not json", "sku twice"],
)
def test_an_answer_that_is_not_an_inventory_is_permanent(bound, conn, owner, pos, stage, answer):
    s = store(conn, owner, "Tea", "pos-tea")
    pos.reply(200, answer)

    result = invoke(handler, {"store_id": s}, stage=stage)

    assert result.outcomes == [Outcome.DEAD]
    assert inventory(conn, s) == []


def test_an_unknown_store_or_one_without_a_pos_is_permanent(bound, conn, owner, pos, stage):
    plain = store(conn, owner, "No POS", None)

    unknown = invoke(handler, {"store_id": 999_999}, stage=stage)
    without = invoke(handler, {"store_id": plain}, stage=stage)

    assert unknown.outcomes == [Outcome.DEAD] and "store 999999 does not exist" in unknown.reports[0].error
    assert without.outcomes == [Outcome.DEAD] and "no inventory integration" in without.reports[0].error
    assert pos.requests == []


def test_runs_hourly_on_the_hour():
    # rate(1 hour) is anchored at the epoch in UTC; UTC has no daylight saving time to move it.
    assert (STORE_SYNC.schedule, STORE_SYNC.timezone) == ("rate(1 hour)", "UTC")
    fires = list(STORE_SYNC.parsed_schedule.fire_times(datetime(2025, 3, 30, 0, 30, tzinfo=UTC), datetime(2025, 3, 30, 3, 0, tzinfo=UTC)))
    assert fires == [datetime(2025, 3, 30, h, 0, tzinfo=UTC) for h in (1, 2, 3)]
