"""Flows: a parent job that runs once its children are done (BullMQ's FlowProducer, pg-boss's createFlow).

``enqueue_flow(conn, parent, children)`` writes, in the caller's transaction (never committing): the children as
ordinary outbox rows that name their parent (the relay publishes them at once and they run in parallel), and the
parent as a ledger row with status ``waiting``, its payload, its queue and the number of children not yet finished.
Payloads are validated exactly as :func:`shared.outbox.enqueue` does, all of them before anything is written.

The rest happens in PostgreSQL (a trigger on ``conveyor.runs``, migration 0005), in the transaction that records a
child's end, so it holds whichever process writes that end (the handler runtime, ``ctx.transaction()``, a cancel):

- a child that ends (succeeded, skipped, dead, failed, cancelled) is counted under the parent's row lock, so two
  children finishing at the same instant are counted one after the other and the parent is released exactly once;
- when the last child is done, the parent goes to the outbox (a new row carrying the parent's id, due now) and its
  status becomes ``pending``; the relay publishes it like any job and its handler reads its children's results
  with :func:`children`;
- policy ``fail`` (the default): a child that ends dead, failed or cancelled fails the parent at once (status
  ``failed``, the reason naming the child, its job and its error). The other children keep running; nothing
  releases the parent any more. Policy ``continue``: the parent runs once every child has ended, however.

A child may itself be a :class:`Flow` (nested flows): its parent waits for its own children, and its end counts for
the outer parent. Dedup keys and delays do not apply inside a flow (a dedup key would hand back a pending job that
is not part of the flow). Cancelling a waiting parent (:func:`shared.ledger.cancel.cancel`) does not cancel its
children; cancelling a child counts as that child ending ``cancelled``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from pydantic import BaseModel

from shared.ids import new_job_id, parse_job_id
from shared.ledger.errors import JobNotFoundError
from shared.outbox import EnqueueError, InvalidPayload, payload_body, resolve_job, validate_payload
from shared.registry import JobSpec, Registry, RegistryError
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.ledger", "flows.sql")


class FlowPolicy(StrEnum):
    """What a child that ends dead, failed or cancelled does to its parent."""

    FAIL = "fail"  # the parent fails at once, with the child named in its reason
    CONTINUE = "continue"  # the parent runs once every child has ended, whatever their ends


@dataclass(frozen=True)
class FlowJob:
    """One job of a flow. A ``(job, payload)`` or ``(job, payload, {"queue": …})`` tuple means the same."""

    job: JobSpec | str
    payload: BaseModel | dict[str, Any]
    queue: str | None = None


@dataclass(frozen=True)
class Flow:
    """A parent and its children, for nesting: a child given as a Flow is itself a parent with children."""

    parent: FlowJob | tuple[Any, ...]
    children: Sequence[FlowJob | tuple[Any, ...] | Flow]
    policy: FlowPolicy | str = FlowPolicy.FAIL


@dataclass(frozen=True)
class EnqueuedFlow:
    """The ids :func:`enqueue_flow` gave: the parent's, and each child's in the order given (a nested flow's entry
    is its own EnqueuedFlow)."""

    parent: uuid.UUID
    children: tuple[uuid.UUID | EnqueuedFlow, ...]


@dataclass(frozen=True)
class Child:
    """A child as its parent's handler sees it: where it is and what it left."""

    id: uuid.UUID
    job_name: str
    status: str
    result: Any
    error_type: str | None
    error: str | None
    reason: str | None


@dataclass
class _Rows:
    """What one enqueue_flow writes: parents for conveyor.runs, children for conveyor.outbox (columns side by side)."""

    parents: dict[str, list[Any]] = field(
        default_factory=lambda: {k: [] for k in ("ids", "job_names", "queues", "payloads", "parent_ids",
                                                 "children_pending", "policies")}
    )  # fmt: skip
    children: dict[str, list[Any]] = field(
        default_factory=lambda: {k: [] for k in ("ids", "job_names", "queues", "payloads", "parent_ids")}
    )


def _add(columns: dict[str, list[Any]], **row: Any) -> None:
    for key, value in row.items():
        columns[key].append(value)


_OPTIONS = frozenset({"queue"})


def _flow_job(entry: Any, where: str) -> FlowJob:
    if isinstance(entry, FlowJob):
        return entry
    if isinstance(entry, tuple) and len(entry) in (2, 3):
        job, payload, *rest = entry
        options = rest[0] if rest else {}
        if not isinstance(options, Mapping):
            raise EnqueueError(f"{where}: options must be a dict such as {{'queue': 'name'}}, got {options!r:.80}")
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise EnqueueError(
                f"{where}: unknown option(s) {', '.join(map(repr, unknown))}; a flow job takes only 'queue' "
                "(dedup keys and delays do not apply inside a flow)"
            )
        return FlowJob(job, payload, options.get("queue"))
    raise EnqueueError(f"{where}: expected (job, payload), (job, payload, options) or a FlowJob, got {entry!r:.80}")


def _prepared(entry: Any, where: str, registry: Registry | None) -> tuple[str, str, str]:
    """(job name, queue, payload text) of one flow job, checked by the same functions as enqueue()."""
    item = _flow_job(entry, where)
    try:
        spec = resolve_job(item.job, registry)
        model = validate_payload(spec, item.payload)
        queue = spec.queue_for(model, item.queue)
        body = payload_body(spec, model)
    except (InvalidPayload, EnqueueError, RegistryError) as exc:
        raise EnqueueError(f"{where}: {exc}") from None
    return spec.name, queue, body


def _plan(
    flow: Flow, own_id: uuid.UUID, outer: uuid.UUID | None, where: str, rows: _Rows, registry: Registry | None
) -> EnqueuedFlow:
    """Check ``flow`` (its parent gets ``own_id``; ``outer`` is the flow it is a child of) and add its rows."""
    try:
        policy = FlowPolicy(flow.policy)
    except ValueError:
        raise EnqueueError(f"{where}policy must be 'fail' or 'continue', got {flow.policy!r}") from None
    if isinstance(flow.children, (str, bytes, Mapping)) or not isinstance(flow.children, Iterable):
        raise EnqueueError(f"{where}children must be a list of jobs, got {type(flow.children).__name__}")
    children = list(flow.children)
    if not children:
        raise EnqueueError(f"{where}a flow needs at least one child (enqueue a job with no children on its own)")
    if isinstance(flow.parent, Flow):
        raise EnqueueError(f"{where}parent: a flow's parent is one job; nest flows as children instead")
    name, queue, body = _prepared(flow.parent, f"{where}parent", registry)
    _add(rows.parents, ids=own_id, job_names=name, queues=queue, payloads=body, parent_ids=outer,
         children_pending=len(children), policies=policy.value)  # fmt: skip
    # Ids are time-ordered (UUIDv7) but random within a millisecond: sorted, and handed out in the order given, so
    # children() lists them in that order.
    ids = sorted(new_job_id() for _ in children)
    given: list[uuid.UUID | EnqueuedFlow] = []
    for index, (child, child_id) in enumerate(zip(children, ids)):
        here = f"{where}child {index}"
        if isinstance(child, Flow):
            given.append(_plan(child, child_id, own_id, f"{here} (a flow): ", rows, registry))
            continue
        name, queue, body = _prepared(child, here, registry)
        _add(rows.children, ids=child_id, job_names=name, queues=queue, payloads=body, parent_ids=own_id)
        given.append(child_id)
    return EnqueuedFlow(own_id, tuple(given))


def enqueue_flow(
    conn: psycopg.Connection,
    parent: FlowJob | tuple[Any, ...],
    children: Sequence[FlowJob | tuple[Any, ...] | Flow],
    *,
    policy: FlowPolicy | str = FlowPolicy.FAIL,
    registry: Registry | None = None,
) -> EnqueuedFlow:
    """Enqueue ``children`` to run now, in parallel, and ``parent`` to run once they have all ended (see the module
    docstring for ``policy``). Jobs are ``(job, payload)`` or ``(job, payload, {"queue": …})`` tuples or
    :class:`FlowJob`; a child may be a :class:`Flow`. Returns the ids given. Never commits.

    Everything is checked before anything is written: a bad payload, an unknown job or queue, an empty list of
    children raises :class:`~shared.outbox.EnqueueError` naming where (``child 2: invalid payload …``).
    """
    rows = _Rows()
    enqueued = _plan(Flow(parent, children, policy), new_job_id(), None, "", rows, registry)
    conn.execute(QUERIES["flow_insert_parents"], rows.parents)
    if rows.children["ids"]:
        conn.execute(QUERIES["flow_insert_children"], rows.children)
    return enqueued


def children(conn: psycopg.Connection, parent_id: uuid.UUID | str) -> list[Child]:
    """The children of flow parent ``parent_id``, in the order they were given, wherever each is (pending in the
    outbox, in the ledger, given up by the relay), with their status, result and last error. For the parent's
    handler (``ctx.children()``) and for operators."""
    identity = parse_job_id(parent_id)
    found = [
        Child(row[0], row[1], row[2], row[3], row[4], row[5], row[6])
        for row in conn.execute(QUERIES["flow_children"], {"parent_id": identity})
    ]
    if not found:
        parent = conn.execute(QUERIES["flow_parent_exists"], {"parent_id": identity}).fetchone()
        if parent is None:
            raise JobNotFoundError(identity)
        if not parent[0]:
            raise ValueError(f"job {identity} is not a flow's parent (it was not enqueued with enqueue_flow)")
    return found


def lock_parents(conn: psycopg.Connection, job_ids: Iterable[uuid.UUID | str]) -> int:
    """Lock the flow parents of ``job_ids`` in one fixed order (by id), in the caller's transaction; returns how
    many. For a writer that ends several jobs in one transaction (the handler runtime's batch outcome): without it
    the trigger locks parents in whatever order the rows are updated, and two such batches finishing children of the
    same two flows in opposite orders wait on each other until PostgreSQL aborts one (a deadlock)."""
    ids = [parse_job_id(job_id) for job_id in job_ids]
    return len(conn.execute(QUERIES["flow_lock_parents"], {"ids": ids}).fetchall())


__all__ = ("enqueue_flow", "children", "lock_parents", "Flow", "FlowJob", "FlowPolicy", "EnqueuedFlow", "Child")
