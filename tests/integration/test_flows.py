"""Flows (shared.ledger.flows and the trigger of migration 0005) against a real PostgreSQL and moto's SQS.

Children's ends are written the way the handler runtime writes them: an UPDATE of their conveyor.runs row. Their
ledger rows are made by `published()`, which does what the relay's mark does once it copies parent_id.
"""

import json
import threading
import time
import uuid

import psycopg
import pytest

from shared.envelope import ATTR_JOB_ID, ATTR_JOB_NAME
from shared.ledger.cancel import cancel
from shared.ledger.errors import JobNotFoundError
from shared.ledger.flows import Child, EnqueuedFlow, Flow, FlowJob, children, enqueue_flow, lock_parents
from shared.local.aws import ensure_queues
from shared.outbox import EnqueueError, enqueue
from shared.registry import JobPayload, Registry
from tests.integration.test_relay import make_relay, receive_all


class InvoiceRender(JobPayload):
    invoice_id: int


class InvoicePackage(JobPayload):
    customer_id: int
    urgent: bool = False


class StatementImport(JobPayload):
    account: str
    file: str


class Reconcile(JobPayload):
    account: str


registry = Registry()
RENDER = registry.job("invoices.render", payload=InvoiceRender, queue="invoices", queues=("invoices-bulk",))
PACKAGE = registry.job(
    "invoices.package", payload=InvoicePackage, queue="invoices", queues=("invoices-urgent",),
    route=lambda p: "invoices-urgent" if p.urgent else "invoices",
)  # fmt: skip
IMPORT = registry.job("statements.import", payload=StatementImport, queue="statements")
RECONCILE = registry.job("statements.reconcile", payload=Reconcile, queue="statements")


def invoice_package(conn, n=3, **options):
    return enqueue_flow(conn, (PACKAGE, {"customer_id": 7}), [(RENDER, {"invoice_id": i}) for i in range(n)], **options)


def published(conn, ids):
    """Move children from the outbox to the ledger as 'queued', as the relay's mark does (with their parent_id)."""
    conn.execute(
        """WITH moved AS (DELETE FROM conveyor.outbox WHERE id = ANY(%s) RETURNING *)
           INSERT INTO conveyor.runs (id, job_name, queue, payload, status, created_at, run_at, published_at, parent_id)
           SELECT id, job_name, queue, payload, 'queued', created_at, run_at, now(), parent_id FROM moved""",
        (list(ids),),
    )


def finish(conn, job_id, status, *, result=None, error=None):
    conn.execute(
        """UPDATE conveyor.runs SET status = %s, result = %s::json, last_error_type = %s, last_error = %s,
                  finished_at = now()
           WHERE id = %s""",
        (status, None if result is None else json.dumps(result), error and error[0], error and error[1], job_id),
    )


def parent_row(conn, parent_id):
    row = conn.execute(
        "SELECT status, children_pending, reason, finished_at IS NOT NULL FROM conveyor.runs WHERE id = %s", (parent_id,)
    ).fetchone()
    return dict(zip(("status", "children_pending", "reason", "finished"), row))


def released(conn, parent_id):
    """The parent's rows waiting in the outbox: (job_name, queue, payload) of each."""
    return [
        (r[0], r[1], json.loads(r[2]))
        for r in conn.execute(
            "SELECT job_name, queue, payload::text FROM conveyor.outbox WHERE job_id = %s", (parent_id,)
        )
    ]


def hold_until_blocked_or_done(check, own_pid, done, timeout=10.0):
    """Keep our locks until another session waits on a lock (it is blocked behind us) or the other side is done:
    proof that two transactions really overlapped."""
    deadline = time.monotonic() + timeout
    while not done and time.monotonic() < deadline:
        waiting = check.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s AND datname = current_database()",
            (own_pid,),
        ).fetchone()[0]
        if waiting:
            return True
        time.sleep(0.02)
    return False


# -- enqueue ---------------------------------------------------------------------------------------------------------


def test_children_go_to_the_outbox_and_the_parent_waits_in_the_ledger(conn, db_url, sqs, stage):
    queues = ensure_queues(sqs, registry, stage=stage)
    flow = enqueue_flow(
        conn,
        (PACKAGE, InvoicePackage(customer_id=7, urgent=True)),
        [(RENDER, {"invoice_id": 1}), FlowJob(RENDER, {"invoice_id": 2}, queue="invoices-bulk")],
    )
    assert isinstance(flow, EnqueuedFlow) and len(flow.children) == 2

    rows = conn.execute("SELECT id, job_name, queue, parent_id FROM conveyor.outbox ORDER BY id").fetchall()
    assert rows == [
        (flow.children[0], "invoices.render", "invoices", flow.parent),
        (flow.children[1], "invoices.render", "invoices-bulk", flow.parent),
    ]
    parent = conn.execute(
        "SELECT job_name, queue, payload::text, status, children_pending, flow_policy FROM conveyor.runs WHERE id = %s",
        (flow.parent,),
    ).fetchone()
    # The queue is chosen like enqueue() chooses it: the route of an urgent package says invoices-urgent.
    assert parent[:2] == ("invoices.package", "invoices-urgent")
    assert json.loads(parent[2]) == {"customer_id": 7, "urgent": True}
    assert parent[3:] == ("waiting", 2, "fail")
    assert dict(conn.execute("SELECT id, status FROM conveyor.jobs").fetchall()) == {
        flow.parent: "waiting", flow.children[0]: "pending", flow.children[1]: "pending",
    }  # fmt: skip

    relay = make_relay(db_url, sqs, stage)
    try:
        assert relay.drain(5).published == 2  # the children only: the parent is not in the outbox
    finally:
        relay.close()
    sent = receive_all(sqs, queues["invoices"][0]) + receive_all(sqs, queues["invoices-bulk"][0])
    assert {m["MessageAttributes"][ATTR_JOB_ID]["StringValue"] for m in sent} == {str(c) for c in flow.children}
    assert receive_all(sqs, queues["invoices-urgent"][0]) == []
    assert parent_row(conn, flow.parent)["status"] == "waiting"


def test_enqueue_flow_never_commits(conn):
    with pytest.raises(RuntimeError), conn.transaction():
        invoice_package(conn)
        raise RuntimeError("the caller's transaction rolls back")
    assert conn.execute("SELECT (SELECT count(*) FROM conveyor.outbox) + (SELECT count(*) FROM conveyor.runs)").fetchone() == (0,)


@pytest.mark.parametrize(
    ("parent", "children", "options", "message"),
    [
        ((PACKAGE, {"customer_id": 7}), [], {}, "a flow needs at least one child"),
        ((PACKAGE, {"customer_id": 7}), [(RENDER, {"invoice_id": 1}), ("invoices.nope", {})], {},
         "child 1: unknown job 'invoices.nope'"),
        ((PACKAGE, {"customer_id": 7}), [(RENDER, {"invoice_id": "one"})], {},
         "child 0: invalid payload for job 'invoices.render': invoice_id: Input should be a valid integer"),
        ((PACKAGE, {"customer": 7}), [(RENDER, {"invoice_id": 1})], {}, "parent: invalid payload for job 'invoices.package'"),
        ((PACKAGE, {"customer_id": 7}), [(RENDER, {"invoice_id": 1}, {"queue": "email-high"})], {},
         "child 0: job 'invoices.render': queue= chose queue 'email-high', which is not one of"),
        ((PACKAGE, {"customer_id": 7}), [(RENDER, {"invoice_id": 1}, {"dedup_key": "k"})], {},
         "child 0: unknown option(s) 'dedup_key'; a flow job takes only 'queue'"),
        ((PACKAGE, {"customer_id": 7}), [RENDER], {}, "child 0: expected (job, payload), (job, payload, options) or a FlowJob"),
        ((PACKAGE, {"customer_id": 7}), [(RENDER, {"invoice_id": 1})], {"policy": "retry"},
         "policy must be 'fail' or 'continue', got 'retry'"),
        ((PACKAGE, {"customer_id": 7}), [Flow((PACKAGE, {"customer_id": 8}), [])], {},
         "child 0 (a flow): a flow needs at least one child"),
        (Flow((PACKAGE, {"customer_id": 8}), [(RENDER, {"invoice_id": 1})]), [(RENDER, {"invoice_id": 1})], {},
         "parent: a flow's parent is one job; nest flows as children instead"),
        ((PACKAGE, {"customer_id": 7}), {"invoice_id": 1}, {}, "children must be a list of jobs, got dict"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_where_and_nothing_is_written(conn, parent, children, options, message):
    with pytest.raises(EnqueueError) as refused:
        enqueue_flow(conn, parent, children, registry=registry, **options)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert conn.execute("SELECT (SELECT count(*) FROM conveyor.outbox) + (SELECT count(*) FROM conveyor.runs)").fetchone() == (0,)


# -- release ---------------------------------------------------------------------------------------------------------


def test_the_parent_goes_to_the_outbox_once_its_last_child_succeeds(conn, db_url, sqs, stage):
    queues = ensure_queues(sqs, registry, stage=stage)
    flow = invoice_package(conn, 3)
    published(conn, flow.children)
    for child in flow.children[:2]:
        finish(conn, child, "succeeded")
    assert parent_row(conn, flow.parent) == {"status": "waiting", "children_pending": 1, "reason": None, "finished": False}
    assert released(conn, flow.parent) == []

    finish(conn, flow.children[2], "succeeded")

    assert parent_row(conn, flow.parent)["status"] == "pending"
    assert parent_row(conn, flow.parent)["children_pending"] == 0
    assert released(conn, flow.parent) == [("invoices.package", "invoices", {"customer_id": 7, "urgent": False})]
    # Shown once in conveyor.jobs (the ledger row), not again for its outbox row.
    assert conn.execute("SELECT status FROM conveyor.jobs WHERE id = %s", (flow.parent,)).fetchall() == [("pending",)]

    relay = make_relay(db_url, sqs, stage)
    try:
        assert relay.drain(5).published == 1
    finally:
        relay.close()
    [message] = receive_all(sqs, queues["invoices"][0])
    assert message["MessageAttributes"][ATTR_JOB_ID]["StringValue"] == str(flow.parent)
    assert message["MessageAttributes"][ATTR_JOB_NAME]["StringValue"] == "invoices.package"
    assert json.loads(message["Body"]) == {"customer_id": 7, "urgent": False}


def test_children_finishing_in_one_statement_release_the_parent_once(conn):
    flow = invoice_package(conn, 4)
    published(conn, flow.children)
    conn.execute("UPDATE conveyor.runs SET status = 'succeeded' WHERE id = ANY(%s)", (list(flow.children),))
    assert len(released(conn, flow.parent)) == 1
    assert parent_row(conn, flow.parent)["status"] == "pending"


def test_two_children_finishing_at_the_same_instant_release_the_parent_exactly_once(conn, db_url):
    """Two handlers record the last two children's success in concurrent transactions. Each counts under the
    parent's row lock, so the second waits for the first and sees its count: one release, never none (two counts
    read before either wrote) and never two."""
    for _ in range(3):
        flow = invoice_package(conn, 2)
        published(conn, flow.children)
        go = threading.Barrier(2, timeout=10)
        done: list[uuid.UUID] = []
        saw_a_waiter: list[bool] = []
        errors: list[Exception] = []

        def finish_and_commit(child):
            try:
                with psycopg.connect(db_url) as own:
                    pid = own.info.backend_pid
                    go.wait()
                    finish(own, child, "succeeded")  # the second to get here waits for the first's parent lock
                    # Commit only once the other one is blocked behind us (or done): the two really overlap.
                    if hold_until_blocked_or_done(conn_for_checks, pid, done):
                        saw_a_waiter.append(True)
                    own.commit()
                    done.append(child)
            except Exception as exc:  # reported below
                errors.append(exc)

        with psycopg.connect(db_url, autocommit=True) as conn_for_checks:
            threads = [threading.Thread(target=finish_and_commit, args=(c,)) for c in flow.children]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        assert errors == []
        assert saw_a_waiter == [True]
        assert len(released(conn, flow.parent)) == 1
        assert parent_row(conn, flow.parent) == {"status": "pending", "children_pending": 0, "reason": None, "finished": False}


# -- policies --------------------------------------------------------------------------------------------------------


def test_policy_fail_a_dead_child_fails_the_parent_at_once_and_it_never_runs(conn):
    flow = enqueue_flow(
        conn, (RECONCILE, {"account": "NL01"}),
        [(IMPORT, {"account": "NL01", "file": "jan.csv"}), (IMPORT, {"account": "NL01", "file": "feb.csv"})],
    )  # fmt: skip
    published(conn, flow.children)
    bad, good = flow.children

    finish(conn, bad, "dead", error=("ValueError", "line 12: amount 'abc' is not a number"))

    assert parent_row(conn, flow.parent) == {
        "status": "failed", "children_pending": 1, "finished": True,
        "reason": f"child {bad} (statements.import) ended dead: ValueError: line 12: amount 'abc' is not a number",
    }  # fmt: skip
    # The other child keeps running; its success releases nothing.
    finish(conn, good, "succeeded")
    assert parent_row(conn, flow.parent)["status"] == "failed"
    assert parent_row(conn, flow.parent)["children_pending"] == 0
    assert released(conn, flow.parent) == []


def test_policy_continue_the_parent_runs_once_every_child_has_ended(conn):
    flow = invoice_package(conn, 3, policy="continue")
    published(conn, flow.children)
    finish(conn, flow.children[0], "dead", error=("RuntimeError", "renderer crashed"))
    finish(conn, flow.children[1], "succeeded")
    assert parent_row(conn, flow.parent)["status"] == "waiting"
    assert conn.execute("SELECT flow_policy FROM conveyor.runs WHERE id = %s", (flow.parent,)).fetchone() == ("continue",)

    finish(conn, flow.children[2], "skipped")

    assert parent_row(conn, flow.parent)["status"] == "pending"
    assert len(released(conn, flow.parent)) == 1


def test_a_finished_child_that_runs_again_is_not_counted_twice(conn):
    """A dead child redriven from its DLQ runs again: it counts as unfinished again, so its second end does not
    release the parent while another child is still running."""
    flow = invoice_package(conn, 2, policy="continue")
    published(conn, flow.children)
    redriven, slow = flow.children
    finish(conn, redriven, "dead", error=("RuntimeError", "renderer crashed"))
    assert parent_row(conn, flow.parent)["children_pending"] == 1
    finish(conn, redriven, "queued")  # the redrive's first receive
    assert parent_row(conn, flow.parent)["children_pending"] == 2
    finish(conn, redriven, "succeeded")
    assert parent_row(conn, flow.parent) == {"status": "waiting", "children_pending": 1, "reason": None, "finished": False}
    finish(conn, slow, "succeeded")
    assert len(released(conn, flow.parent)) == 1


def test_a_child_the_relay_cannot_publish_fails_the_parent_and_a_requeue_counts_it_again(conn):
    """A child moved to conveyor.outbox_dead (SQS refused it for good) is a failed child; put back with
    conveyor.requeue_dead_outbox() it keeps its flow and is unfinished again."""
    flow = invoice_package(conn, 2, policy="continue")
    stuck = flow.children[0]
    # What the relay's mark_failed does, carrying parent_id.
    conn.execute(
        """WITH gone AS (DELETE FROM conveyor.outbox WHERE id = %s RETURNING *)
           INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts,
                                             last_error, parent_id)
           SELECT id, job_name, queue, payload, run_at, created_at, 20, 'AWS.SimpleQueueService.NonExistentQueue', parent_id
           FROM gone""",
        (stuck,),
    )
    assert parent_row(conn, flow.parent)["children_pending"] == 1
    assert conn.execute("SELECT status FROM conveyor.jobs WHERE id = %s", (stuck,)).fetchone() == ("failed",)

    assert conn.execute("SELECT conveyor.requeue_dead_outbox()").fetchone() == (1,)

    assert parent_row(conn, flow.parent)["children_pending"] == 2
    assert conn.execute("SELECT parent_id FROM conveyor.outbox WHERE id = %s", (stuck,)).fetchone() == (flow.parent,)


def test_policy_fail_a_child_the_relay_cannot_publish_fails_the_parent(conn):
    flow = invoice_package(conn, 2)
    conn.execute(
        """WITH gone AS (DELETE FROM conveyor.outbox WHERE id = %s RETURNING *)
           INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts,
                                             last_error, parent_id)
           SELECT id, job_name, queue, payload, run_at, created_at, 1, 'MessageTooLong', parent_id FROM gone""",
        (flow.children[1],),
    )
    assert parent_row(conn, flow.parent)["status"] == "failed"
    assert parent_row(conn, flow.parent)["reason"] == (
        f"child {flow.children[1]} (invoices.render) ended failed: the relay could not publish it: MessageTooLong"
    )


# -- cancel ----------------------------------------------------------------------------------------------------------


def test_cancelling_a_waiting_parent_keeps_it_from_ever_running(conn):
    flow = invoice_package(conn, 2)
    published(conn, flow.children)
    assert cancel(conn, flow.parent, reason="customer left") == "waiting"
    assert parent_row(conn, flow.parent) == {"status": "cancelled", "children_pending": 2, "reason": "customer left", "finished": True}
    for child in flow.children:  # its children are not cancelled; their ends release nothing
        finish(conn, child, "succeeded")
    assert parent_row(conn, flow.parent)["status"] == "cancelled"
    assert released(conn, flow.parent) == []


def test_sql_cancel_job_cancels_a_waiting_parent(conn):
    flow = invoice_package(conn, 1)
    assert conn.execute("SELECT conveyor.cancel_job(%s)", (flow.parent,)).fetchone() == ("waiting",)
    assert parent_row(conn, flow.parent)["status"] == "cancelled"


def test_cancelling_a_released_parent_takes_its_row_out_of_the_outbox(conn):
    flow = invoice_package(conn, 1)
    published(conn, flow.children)
    finish(conn, flow.children[0], "succeeded")
    assert len(released(conn, flow.parent)) == 1

    assert cancel(conn, flow.parent) == "pending"

    assert released(conn, flow.parent) == []
    assert parent_row(conn, flow.parent)["status"] == "cancelled"


def test_cancelling_a_pending_child_under_policy_fail_fails_the_parent(conn):
    flow = invoice_package(conn, 2)
    assert cancel(conn, flow.children[0], reason="invoice voided") == "pending"
    assert conn.execute("SELECT parent_id FROM conveyor.runs WHERE id = %s", (flow.children[0],)).fetchone() == (flow.parent,)
    assert parent_row(conn, flow.parent)["status"] == "failed"
    assert parent_row(conn, flow.parent)["reason"] == (
        f"child {flow.children[0]} (invoices.render) ended cancelled: invoice voided"
    )


def test_cancelling_a_child_under_policy_continue_counts_as_its_end(conn):
    flow = invoice_package(conn, 2, policy="continue")
    published(conn, flow.children[1:])
    cancel(conn, flow.children[0])  # pending
    assert parent_row(conn, flow.parent)["children_pending"] == 1
    cancel(conn, flow.children[1])  # queued
    assert parent_row(conn, flow.parent)["status"] == "pending"
    assert len(released(conn, flow.parent)) == 1


# -- reading children ------------------------------------------------------------------------------------------------


def test_children_gives_the_parent_each_childs_status_result_and_error_in_the_order_given(conn):
    flow = enqueue_flow(conn, (PACKAGE, {"customer_id": 7}), [(RENDER, {"invoice_id": i}) for i in range(4)], policy="continue")
    first, second, third, fourth = flow.children
    published(conn, [first, second, third])
    finish(conn, first, "succeeded", result={"pdf": "s3://invoices/1.pdf", "pages": 2})
    finish(conn, second, "dead", error=("TimeoutError", "renderer timed out"))
    cancel(conn, fourth, reason="invoice voided")

    assert children(conn, flow.parent) == [
        Child(first, "invoices.render", "succeeded", {"pdf": "s3://invoices/1.pdf", "pages": 2}, None, None, None),
        Child(second, "invoices.render", "dead", None, "TimeoutError", "renderer timed out", None),
        Child(third, "invoices.render", "queued", None, None, None, None),
        Child(fourth, "invoices.render", "cancelled", None, None, None, "invoice voided"),
    ]
    assert [c.id for c in children(conn, str(flow.parent))] == list(flow.children)


def test_children_lists_children_still_in_the_outbox(conn):
    flow = invoice_package(conn, 2)
    assert [(c.id, c.status) for c in children(conn, flow.parent)] == [(c, "pending") for c in flow.children]


def test_children_of_a_job_that_is_not_a_parent_or_does_not_exist_is_an_error(conn, db_url, sqs, stage):
    ensure_queues(sqs, registry, stage=stage)
    plain = enqueue(conn, RENDER, {"invoice_id": 1})
    relay = make_relay(db_url, sqs, stage)
    try:
        relay.drain(5)
    finally:
        relay.close()
    with pytest.raises(ValueError, match=f"^job {plain} is not a flow's parent"):
        children(conn, plain)
    missing = uuid.uuid4()
    with pytest.raises(JobNotFoundError, match=f"^no job has id {missing}$"):
        children(conn, missing)


# -- nesting ---------------------------------------------------------------------------------------------------------


def test_a_child_may_be_a_flow_whose_end_counts_for_the_outer_parent(conn):
    """Import two statements, reconcile each account, then package: the inner flows' parents are children of
    the outer one and run (and end) like any child once their own children are done."""
    flow = enqueue_flow(
        conn,
        (PACKAGE, {"customer_id": 7}),
        [
            (RENDER, {"invoice_id": 1}),
            Flow((RECONCILE, {"account": "NL01"}), [(IMPORT, {"account": "NL01", "file": "jan.csv"})], policy="continue"),
        ],
    )
    render, inner = flow.children
    assert isinstance(inner, EnqueuedFlow)
    assert conn.execute(
        "SELECT status, parent_id, children_pending, flow_policy FROM conveyor.runs WHERE id = %s", (inner.parent,)
    ).fetchone() == ("waiting", flow.parent, 1, "continue")
    assert [c.id for c in children(conn, flow.parent)] == [render, inner.parent]

    published(conn, [render, *inner.children])
    finish(conn, render, "succeeded")
    finish(conn, inner.children[0], "succeeded")
    assert released(conn, inner.parent) == [("statements.reconcile", "statements", {"account": "NL01"})]
    assert parent_row(conn, flow.parent)["status"] == "waiting"

    # The inner parent is published and runs (the relay's mark, then the handler), and succeeds.
    conn.execute("DELETE FROM conveyor.outbox WHERE job_id = %s", (inner.parent,))
    finish(conn, inner.parent, "queued")
    finish(conn, inner.parent, "succeeded")
    assert parent_row(conn, flow.parent)["status"] == "pending"
    assert len(released(conn, flow.parent)) == 1


def test_a_failed_inner_flow_fails_the_outer_parent(conn):
    flow = enqueue_flow(
        conn, (PACKAGE, {"customer_id": 7}),
        [Flow((RECONCILE, {"account": "NL01"}), [(IMPORT, {"account": "NL01", "file": "jan.csv"})])],
    )  # fmt: skip
    [inner] = flow.children
    published(conn, inner.children)
    finish(conn, inner.children[0], "dead", error=("ValueError", "bad file"))
    assert parent_row(conn, inner.parent)["status"] == "failed"
    outer = parent_row(conn, flow.parent)
    assert outer["status"] == "failed"
    assert outer["reason"].startswith(f"child {inner.parent} (statements.reconcile) ended failed: child {inner.children[0]}")


# -- lock order for writers that end many jobs at once ---------------------------------------------------------------


@pytest.mark.parametrize("locked_first", [False, True])
def test_batches_ending_children_of_the_same_flows_in_opposite_orders(conn, db_url, locked_first):
    """Two batches each end one child of flow P and one of flow Q, in opposite orders. Without lock_parents the
    trigger takes the parents' locks in row order and PostgreSQL aborts one batch as a deadlock (its outcome
    would be lost); with it both take them in id order and both commit."""
    p = invoice_package(conn, 2)
    q = invoice_package(conn, 2)
    published(conn, [*p.children, *q.children])
    batches = [(p.children[0], q.children[0]), (q.children[1], p.children[1])]
    first_done = threading.Barrier(2, timeout=10)
    errors: list[Exception] = []

    overlapped: list[bool] = []
    done: list[bool] = []

    def end_batch(batch, check):
        try:
            with psycopg.connect(db_url) as own:
                if locked_first:
                    assert lock_parents(own, batch) == 2
                    if hold_until_blocked_or_done(check, own.info.backend_pid, done):
                        overlapped.append(True)  # the other batch waits in its lock_parents
                finish(own, batch[0], "succeeded")
                if not locked_first:
                    first_done.wait()  # both hold their first parent before either asks for the second
                finish(own, batch[1], "succeeded")
                own.commit()
                done.append(True)
        except psycopg.errors.DeadlockDetected as exc:
            errors.append(exc)

    with psycopg.connect(db_url, autocommit=True) as check:
        threads = [threading.Thread(target=end_batch, args=(b, check)) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    if locked_first:
        assert errors == []
        assert overlapped == [True]
        assert parent_row(conn, p.parent)["status"] == parent_row(conn, q.parent)["status"] == "pending"
    else:
        assert len(errors) == 1
