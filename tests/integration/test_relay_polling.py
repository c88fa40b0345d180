"""Adaptive polling as the relay's loops use it, and the local runtime's rate-limited backpressure check.

Behaviour, not time: the waits the loops choose are recorded through ``on_wait``, moto's GetQueueAttributes calls
through the SQS client's own event hooks."""

import threading

import psycopg
import pytest

from shared.database import connect
from shared.jobs import EMAIL_SEND
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.outbox import enqueue
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.settings import Settings
from tests.integration.test_relay import WELCOME, wait_until
from tests.support import WORK, Work, make_work_handler

# The waits after a cycle that published, by the rule written out: 1 ms, then doubling, held at 4 ms for 128 idle
# cycles, then doubling on to the loop's idle interval.
IDLE_AFTER_WORK = [0.001, 0.002] + [0.004] * 127 + [0.008, 0.016, 0.032]


@pytest.fixture
def queues(sqs, stage):
    return ensure_queues(sqs, product, stage=stage)


def make_relay(db_url, sqs, stage):
    settings = Settings(stage=stage, database_url=db_url)
    return Relay(lambda: connect(settings), sqs, QueueDirectory(sqs, settings))


def test_run_polls_a_millisecond_after_work_and_backs_off_while_idle(conn, db_url, sqs, stage, queues):
    relay = make_relay(db_url, sqs, stage)
    stop = threading.Event()
    waits: list[float] = []

    def on_wait(wait: float) -> None:
        waits.append(wait)
        if len(waits) == len(IDLE_AFTER_WORK) + 2:
            enqueue(conn, EMAIL_SEND, WELCOME)  # committed (autocommit) before the next claim
        if len(waits) == len(IDLE_AFTER_WORK) + 5:
            stop.set()

    enqueue(conn, EMAIL_SEND, WELCOME)
    thread = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_interval": 0.05, "on_wait": on_wait})
    thread.start()
    thread.join(30)
    relay.close()
    assert not thread.is_alive()
    assert relay.totals.published == 2
    # The first cycle published; then idle cycles double the wait to the cap; the second job resets it.
    assert waits == IDLE_AFTER_WORK + [0.05, 0.05, 0.001, 0.002, 0.004]


def test_drain_staying_polls_adaptively_up_to_its_own_idle_interval(conn, db_url, sqs, stage, queues):
    relay = make_relay(db_url, sqs, stage)
    waits: list[float] = []
    enqueue(conn, EMAIL_SEND, WELCOME)
    try:
        # ~0.6 s of waits, and a few cycles more, fit well inside the budget, however slow the machine.
        stats = relay.drain(3, stay=True, idle_interval=0.1, on_wait=waits.append)
    finally:
        relay.close()
    assert stats.published == 1
    assert waits[: len(IDLE_AFTER_WORK) + 2] == IDLE_AFTER_WORK + [0.064, 0.1]
    assert stats.cycles == len(waits) or stats.cycles == len(waits) + 1


def test_drain_without_staying_never_waits(conn, db_url, sqs, stage, queues):
    relay = make_relay(db_url, sqs, stage)
    waits: list[float] = []
    enqueue(conn, EMAIL_SEND, WELCOME)
    try:
        stats = relay.drain(5, on_wait=waits.append)
    finally:
        relay.close()
    assert (stats.published, stats.cycles, waits) == (1, 1, [])


# -- the local runtime's backpressure check -------------------------------------------------------------------------


def count_depth_checks(sqs) -> list[str]:
    """Every GetQueueAttributes asking for a queue's depth, by URL, seen through the client's event hooks."""
    calls: list[str] = []

    def before(params, **_):
        if "ApproximateNumberOfMessages" in params.get("AttributeNames", []):
            calls.append(params["QueueUrl"])

    sqs.meta.events.register("provide-client-params.sqs.GetQueueAttributes", before)
    return calls


def outbox_rows(db_url) -> int:
    with psycopg.connect(db_url) as c:
        return c.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0]


def test_the_runtime_reads_queue_depth_once_per_interval_not_every_cycle(runtime_factory, db_url, calls):
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, workers_per_queue=0, relay_idle_interval=0.002, queue_depth_ttl=3600)
    calls = count_depth_checks(runtime.sqs)
    url = runtime.urls["work"][0]
    start = runtime.relay.totals.cycles
    wait_until(lambda: runtime.relay.totals.cycles >= start + 50)
    # One reading (or none, if it came before the hook) stands for every later cycle.
    assert calls.count(url) <= 1


def test_backpressure_still_stops_publishing_at_max_queue_depth(runtime_factory, db_url, calls):
    """No pollers: nothing leaves the queue. The reading (0) plus what the relay sent counts against the limit."""
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, workers_per_queue=0, max_queue_depth=3, relay_idle_interval=0.002, queue_depth_ttl=3600)
    url = runtime.urls["work"][0]
    with psycopg.connect(db_url, autocommit=True) as c:
        for n in range(3):
            enqueue(c, WORK, Work(n=n))
        wait_until(lambda: outbox_rows(db_url) == 0)
        for n in range(3, 6):
            enqueue(c, WORK, Work(n=n))
    cycles = runtime.relay.totals.cycles
    wait_until(lambda: runtime.relay.totals.cycles >= cycles + 50)
    assert outbox_rows(db_url) == 3
    depth = runtime.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert int(depth["Attributes"]["ApproximateNumberOfMessages"]) == 3
    assert runtime.relay.totals.published_by_queue == {"work": 3}


# -- the next batch leased while this one is published ----------------------------------------------------------------


def leased_rows(conn) -> int:
    return conn.execute("SELECT count(*) FROM conveyor.outbox WHERE claim_token IS NOT NULL").fetchone()[0]


def test_a_batch_leased_ahead_is_published_by_the_next_cycle_or_released_at_close(conn, db_url, sqs, stage, queues):
    from shared.outbox import enqueue_many

    from tests.integration.test_relay import receive_all

    ids = enqueue_many(conn, EMAIL_SEND, [WELCOME] * 5)
    settings = Settings(stage=stage, database_url=db_url)
    relay = Relay(lambda: connect(settings), sqs, QueueDirectory(sqs, settings), batch_size=2)
    try:
        assert relay.run_once().published == 2
        assert relay.run_once().published == 2  # the batch the first cycle leased ahead
    finally:
        relay.close()  # gives back the last row, leased ahead by the second cycle
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0] == 1
    assert leased_rows(conn) == 0
    second = make_relay(db_url, sqs, stage)
    try:
        assert second.drain(5).published == 1
    finally:
        second.close()
    assert {r[0] for r in conn.execute("SELECT id FROM conveyor.runs")} == set(ids)
    assert len(receive_all(sqs, queues["email-default"][0], expected=5)) == 5


def test_drain_releases_what_it_leased_ahead_when_its_time_is_up(conn, db_url, sqs, stage, queues):
    """The last full cycle of a drain leases ahead; the drain ends before publishing it, so it must let go of it
    (a row left leased would wait the whole lease for the next invocation)."""
    from shared.outbox import enqueue_many

    enqueue_many(conn, EMAIL_SEND, [WELCOME] * 4)
    settings = Settings(stage=stage, database_url=db_url)
    relay = Relay(lambda: connect(settings), sqs, QueueDirectory(sqs, settings), batch_size=2)
    try:
        stats = relay.drain(0)  # no time at all: only the release at the end runs
        assert stats.cycles == 0
        relay.run_once()  # publishes 2, leases the other 2 ahead (in the background)
        wait_until(lambda: leased_rows(conn) == 2)
        relay.drain(0)
        assert leased_rows(conn) == 0
    finally:
        relay.close()


def test_no_batch_is_leased_ahead_when_admit_decides(conn, db_url, sqs, stage, queues):
    """Backpressure asks before each claim; a batch leased ahead would be claimed before the last one was counted."""
    from shared.outbox import enqueue_many

    enqueue_many(conn, EMAIL_SEND, [WELCOME] * 4)
    settings = Settings(stage=stage, database_url=db_url)
    relay = Relay(lambda: connect(settings), sqs, QueueDirectory(sqs, settings), batch_size=2,
                  admit=lambda _queue: True, known_queues=list(queues))
    try:
        assert relay.run_once().published == 2
        assert leased_rows(conn) == 0
    finally:
        relay.close()
