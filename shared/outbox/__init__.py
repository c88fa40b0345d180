"""The transactional outbox: enqueue jobs on the caller's own database connection.

``enqueue`` runs one INSERT on the connection it is given and never commits. The job exists if and only if the
caller's transaction commits: a rolled-back order never sends its confirmation email, and a committed one always
does (the relay publishes it). Payloads are validated against the job's model before anything is written.

Dedup keys: at most one job per (job name, dedup key) is pending in the outbox (not yet published to SQS). Once
published, the key is free again, so a periodic "sync store 42" can be enqueued each period but never piles up
while one is waiting. What enqueueing a key that a pending job holds does is the ``dedup`` policy:

* ``Dedup.KEEP`` (the default): the pending job wins. Nothing is written; its id is returned, its payload, queue and
  run_at stay. pg-boss's ``singletonKey`` on a ``short`` queue (one queued job per key), except that pg-boss
  answers null where we answer the pending job's id.
* ``Dedup.REPLACE``: the pending job takes the new payload, queue and run_at (its publish failures are forgotten)
  and keeps its id, which is returned: the latest enqueue decides what runs (debouncing, rescheduling). If a relay
  has claimed the row, its old payload may already be on SQS, so the replacement becomes a job of its own with a
  new id (returned), published after it; nothing is lost. This is graphile-worker's ``job_key`` in its default
  ``replace`` mode ("locked jobs will cause a new job to be scheduled instead"); its ``preserve_run_at`` mode
  (keep the pending run_at) has no counterpart here.

``dedup_active=True`` extends the key to jobs already published and not finished: a job of the ledger
(``conveyor.runs``) with the key whose status is queued, running or retrying (or waiting/pending, a flow's parent)
makes the enqueue write nothing and return that job's id, whatever the policy, when no pending job holds the key
(a pending one is kept or replaced first, by the policy). REPLACE cannot change a message already on SQS, so the
live job wins, as River's unique jobs return the existing job. This is River's ``UniqueOpts.ByState`` over its
live states (River's default also counts completed jobs) and pg-boss's ``exclusive`` policy (one job queued or
active per key). Succeeded, failed, dead, cancelled and skipped jobs never hold a key.

With ``dedup_active`` the ledger check and the write are one statement. A pending job can still be published
(moved to the ledger) between that statement's snapshot and its INSERT: the snapshot saw it pending, the INSERT finds
the key free and adds a row. A second statement, run only then, sees the ledger row under READ COMMITTED (each
statement its own snapshot), takes our row back and returns the live job. What is left open: a job both enqueued by
another transaction and published after our statement began and before its INSERT (one statement's duration); and,
under REPEATABLE READ or SERIALIZABLE, the whole race, since the second statement sees the first one's snapshot.
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import psycopg
import pydantic_core
from psycopg import pq
from psycopg.rows import tuple_row
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.envelope import MAX_PAYLOAD_BYTES, check_payload_size
from shared.ids import new_job_id, new_job_ids
from shared.registry import JobSpec, Registry, default_registry
from shared.sensitive import SECRET_TYPES, has_secret_types, sensitive_names
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.outbox")


class InvalidPayload(ValueError):
    """A payload that does not fit its job's model. Nothing was written."""

    def __init__(self, job_name: str, error: ValidationError, model: type[BaseModel]) -> None:
        self.job_name = job_name
        self.errors = error.errors(include_url=False)
        super().__init__(f"invalid payload for job {job_name!r}: {describe_validation_error(error, model)}")


class EnqueueError(ValueError):
    """Enqueue options that cannot work (both delay and run_at, a naive run_at, …). Nothing was written."""


class Dedup(StrEnum):
    """What enqueueing a dedup key that a pending job holds does (see the module docstring for the peers matched)."""

    KEEP = "keep"  # the pending job wins, unchanged
    REPLACE = "replace"  # the pending job takes the new payload, queue and run_at


def describe_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """``to: value is not a valid email address (got 'x'); subject: Field required`` — every field, one line.

    The input is quoted to help find the mistake, except where ``model`` marks the field sensitive: the message ends
    up in the ledger's ``last_error``, which read-only operators see."""
    hidden = sensitive_names(model)
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(p) for p in item["loc"]) or "(payload)"
        message = item["msg"]
        quotable = not any(isinstance(p, str) and p in hidden for p in item["loc"])
        if quotable and item["type"] != "missing" and "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r:.80})"
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def resolve_job(job: JobSpec | str, registry: Registry | None = None) -> JobSpec:
    """A spec from a name (looked up in ``registry``, else the configured one) or a spec."""
    if isinstance(job, JobSpec) and registry is None:
        return job
    return (registry or default_registry()).get(job)


def validate_payload(job: JobSpec, payload: BaseModel | dict[str, Any]) -> BaseModel:
    """The payload as the job's model: a model instance passes through, a dict is validated."""
    if isinstance(payload, job.payload):
        return payload
    if isinstance(payload, BaseModel):
        raise EnqueueError(
            f"job {job.name!r} takes a {job.payload.__name__} payload, got a {type(payload).__name__}"
        )
    try:
        return job.payload.model_validate(payload)
    except ValidationError as exc:
        raise InvalidPayload(job.name, exc, job.payload) from None


# A "\u0000" escape in JSON text whose backslash is not itself escaped (an even run of backslashes before it).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity in a dumped payload, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path or "(payload)"
    if isinstance(value, Decimal):
        return None if value.is_finite() else path or "(payload)"
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _reveal(value: Any) -> tuple[Any, bool]:
    if isinstance(value, SECRET_TYPES):
        return value.get_secret_value(), True
    if isinstance(value, dict):
        pairs = [(k, *_reveal(v)) for k, v in value.items()]
        return {k: v for k, v, _ in pairs}, any(found for *_, found in pairs)
    if isinstance(value, (list, tuple)):
        items = [_reveal(v) for v in value]
        return [v for v, _ in items], any(found for _, found in items)
    return value, False


def _with_secrets_revealed(model: BaseModel) -> str:
    """The body with each secret's value instead of pydantic's mask (which is for logs and reprs: the job needs the
    value). Walks the Python-mode dump, where secrets are still objects, and writes JSON from it."""
    data, _ = _reveal(model.model_dump(by_alias=True))
    return pydantic_core.to_json(data).decode()


def payload_body(job: JobSpec, model: BaseModel) -> str:
    """The exact JSON text the relay will send and the handler will parse, refused where it would not parse back.

    Secrets (``SecretStr`` and the like) are written with their values: masking them is for logs and the operations
    API, not for the job that needs them. By alias, because the handler validates by alias (a field ``from_`` with alias ``from`` must travel as
    ``from``; the registry refuses a model whose validation aliases do not accept what it writes). NaN and infinity
    are refused: JSON has no spelling for them and pydantic would write ``null``, which the handler's model then
    rejects. A NUL character is refused: PostgreSQL text cannot hold it, so the INSERT would fail and abort the
    caller's whole transaction. The size is measured on this text, which is stored and sent as is.
    """
    body = _with_secrets_revealed(model) if has_secret_types(type(model)) else model.model_dump_json(by_alias=True)
    # pydantic writes NaN and infinity as null, so only a body with a null can hold one: look closer only then.
    if "null" in body:
        where = _non_finite(model.model_dump(by_alias=True))
        if where:
            raise EnqueueError(
                f"payload of job {job.name!r}: {where} is not a finite number (NaN or infinity); JSON cannot carry it"
            )
    if "\\u0000" in body and _NUL_ESCAPE.search(body):
        raise EnqueueError(f"payload of job {job.name!r} contains a NUL character (U+0000), which PostgreSQL cannot store")
    check_payload_size(job.name, body)
    return body


# Far enough for any real schedule, near enough that PostgreSQL's timestamps (up to year 294276) never overflow.
MAX_DELAY = timedelta(days=366 * 100)


def _when(delay: timedelta | float | None, run_at: datetime | None) -> tuple[datetime | None, timedelta]:
    if delay is not None and run_at is not None:
        raise EnqueueError("give either delay or run_at, not both")
    if run_at is not None:
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise EnqueueError(f"run_at must be timezone-aware (got naive {run_at.isoformat()}); e.g. datetime.now(UTC)")
        return run_at, timedelta(0)
    if delay is None:
        return None, timedelta(0)
    if isinstance(delay, (int, float)):
        delay = timedelta(seconds=delay)
    if not isinstance(delay, timedelta):
        raise EnqueueError(f"delay must be a timedelta or a number of seconds, got {delay!r}")
    if delay < timedelta(0):
        raise EnqueueError(f"delay must not be negative, got {delay}")
    if delay > MAX_DELAY:
        raise EnqueueError(f"delay must be at most 100 years, got {delay.days} days; use run_at for a fixed time")
    return None, delay


def _valid_dedup_key(dedup_key: str | None) -> bool:
    return dedup_key is None or (isinstance(dedup_key, str) and 0 < len(dedup_key) <= 512)


def _check_dedup_key(dedup_key: str | None) -> None:
    if not _valid_dedup_key(dedup_key):
        raise EnqueueError(f"dedup_key must be a non-empty string of at most 512 characters, got {dedup_key!r}")


def _dedup_policy(dedup: Dedup | str, dedup_active: bool) -> Dedup:
    if not isinstance(dedup_active, bool):
        raise EnqueueError(f"dedup_active must be True or False, got {dedup_active!r}")
    if isinstance(dedup, str):  # a Dedup is a str too
        try:
            return Dedup(dedup)
        except ValueError:
            pass
    raise EnqueueError(f"dedup must be 'keep' or 'replace' (Dedup.KEEP or Dedup.REPLACE), got {dedup!r}")


def enqueue(
    conn: psycopg.Connection,
    job: JobSpec | str,
    payload: BaseModel | dict[str, Any],
    *,
    delay: timedelta | float | None = None,
    run_at: datetime | None = None,
    dedup_key: str | None = None,
    dedup: Dedup | str = Dedup.KEEP,
    dedup_active: bool = False,
    queue: str | None = None,
    registry: Registry | None = None,
) -> uuid.UUID:
    """Add a job to the outbox in the caller's transaction and return its id. Never commits.

    ``delay``/``run_at`` may be any length (the relay publishes when due; SQS's 15-minute delay cap does not
    apply). ``queue`` overrides the job's route; it must be one of the job's queues. ``dedup`` and ``dedup_active``
    say what a ``dedup_key`` already taken does (module docstring); the id returned is then the job holding it, or
    the replacement. Without a ``dedup_key`` they change nothing.
    """
    spec = resolve_job(job, registry)
    policy = _dedup_policy(dedup, dedup_active)
    model = validate_payload(spec, payload)
    chosen_queue = spec.queue_for(model, queue)
    body = payload_body(spec, model)
    at, after = _when(delay, run_at)
    _check_dedup_key(dedup_key)
    if dedup_key is not None and (dedup_active or policy is Dedup.REPLACE):
        [job_id] = _write(conn, spec.name, [new_job_id()], [chosen_queue], [body], [dedup_key], at, after, policy, dedup_active)
        return job_id
    job_id = new_job_id()
    params: dict[str, Any] = {"id": job_id, "job_name": spec.name, "queue": chosen_queue, "payload": body}
    if dedup_key is None:
        # The common case: one plain INSERT, nothing to resolve or read back (benchmarked: every producer pays it).
        if at is None and not after:
            conn.execute(QUERIES["outbox_insert_now"], params)
        else:
            conn.execute(QUERIES["outbox_insert_unkeyed"], {**params, "run_at": at, "delay": after})
        return job_id
    params.update(run_at=at, delay=after, dedup_key=dedup_key)
    for _ in range(3):
        row = conn.execute(QUERIES["outbox_insert"], params).fetchone()
        if row is not None:
            return row[0]
        # A pending job holds the key. Read it in a new statement, which sees a row committed since ours began.
        existing = conn.execute(QUERIES["outbox_find_dedup"], params).fetchone()
        if existing is not None:
            return existing[0]
        # The holder was published (or rolled back) between the two statements: the key is free again.
    raise EnqueueError(
        f"job {spec.name!r} with dedup_key {dedup_key!r} kept conflicting with jobs that vanished before they could "
        "be read; enqueue again"
    )


@dataclass(frozen=True)
class Item:
    """One job of an :func:`enqueue_many` batch, when jobs in the batch need their own dedup key or queue."""

    payload: BaseModel | dict[str, Any]
    dedup_key: str | None = None
    queue: str | None = None


def enqueue_many(
    conn: psycopg.Connection,
    job: JobSpec | str,
    payloads: Iterable[BaseModel | dict[str, Any] | Item],
    *,
    delay: timedelta | float | None = None,
    run_at: datetime | None = None,
    dedup: Dedup | str = Dedup.KEEP,
    dedup_active: bool = False,
    registry: Registry | None = None,
) -> list[uuid.UUID]:
    """Add many jobs of one kind in one write; returns their ids in input order. Never commits.

    Every payload is validated first: one bad payload raises :class:`EnqueueError` naming its index (and the field)
    and nothing is written. ``dedup`` and ``dedup_active`` apply to every item that has a dedup key, as in
    :func:`enqueue`; an item whose key a job holds gets that job's id. Several items with one key are one job: with
    ``keep`` the first item's payload, with ``replace`` the last one's.

    A batch without dedup keys (the common bulk case) is validated as one list, gets its ids in one call and is
    written by binary ``COPY``: about three times the jobs per second of one ``INSERT … SELECT FROM unnest(…)``
    (docs/BENCHMARKS.md, issue 16). Its rows are the rows :func:`enqueue` would write, and its delays count from the
    statement just before the COPY (one round trip earlier than an INSERT's would). A batch with any key is one
    ``INSERT … ON CONFLICT`` over arrays, which resolves the keys; so is a batch inside ``conn.pipeline()``, where
    COPY cannot run.
    """
    spec = resolve_job(job, registry)
    policy = _dedup_policy(dedup, dedup_active)
    at, after = _when(delay, run_at)
    entries = list(payloads)
    if not entries:
        return []
    if any(isinstance(entry, Item) for entry in entries):
        raw = [entry.payload if isinstance(entry, Item) else entry for entry in entries]
        explicit = [entry.queue if isinstance(entry, Item) else None for entry in entries]
        keys = [entry.dedup_key if isinstance(entry, Item) else None for entry in entries]
    else:
        raw, explicit, keys = entries, [None] * len(entries), [None] * len(entries)
    models = _validate_batch(spec, raw)
    if models is None or not all(_valid_dedup_key(key) for key in keys):
        bodies, queues = _prepare_items(spec, raw, models, keys, explicit)
    else:
        bodies = _batch_bodies(spec, models)
        queues = _batch_queues(spec, models, explicit)
    ids = new_job_ids(len(bodies))
    # COPY cannot run in pipeline mode: a batch enqueued inside conn.pipeline() takes the INSERT, as it did before.
    if any(key is not None for key in keys) or conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        return _write(conn, spec.name, ids, queues, bodies, keys, at, after, policy, dedup_active)
    _copy(conn, spec.name, ids, queues, bodies, at, after)
    return ids


def _prepare_items(
    spec: JobSpec,
    payloads: list[Any],
    models: list[BaseModel] | None,
    keys: list[str | None],
    explicit: list[str | None],
) -> tuple[list[str], list[str]]:
    """Each item's body and queue, one item at a time and in order, so that the first bad item raises what
    :func:`enqueue` would for it (``models`` None: some payload is invalid, each is validated again here; or some
    dedup key is, whose refusal must not overtake an earlier item's body refusal)."""
    bodies: list[str] = []
    queues: list[str] = []
    for index, (payload, key, chosen) in enumerate(zip(payloads, keys, explicit)):
        if models is None:
            try:
                model = validate_payload(spec, payload)
            except InvalidPayload as exc:
                raise EnqueueError(f"item {index}: {exc}") from None
        else:
            model = models[index]
        _check_dedup_key(key)
        try:
            bodies.append(payload_body(spec, model))
        except ValueError as exc:
            raise EnqueueError(f"item {index}: {exc}") from None
        queues.append(spec.queue_for(model, chosen))
    if models is None:  # pragma: no cover - the list and the items are validated by the same schema
        raise AssertionError("a batch that failed validation as a list passed item by item")
    return bodies, queues


def _batch_bodies(spec: JobSpec, models: list[BaseModel]) -> list[str]:
    """:func:`payload_body` of each model, with its checks run only on a text that could fail them.

    The body is the same text (``model_dump_json(by_alias=True)`` is this ``to_json(…).decode()``); NaN and infinity
    can only hide behind a ``null``, a NUL only in a ``\\u0000``, and a text over the size limit in UTF-8 is over it
    here (bytes are UTF-8): those go through payload_body itself, for its exact refusal. A model with secrets, or an
    instance of a subclass, goes through payload_body too."""
    model_type = spec.payload
    if has_secret_types(model_type) or any(type(model) is not model_type for model in models):
        return _prepare_items(spec, models, models, [None] * len(models), [None] * len(models))[0]
    to_json = model_type.__pydantic_serializer__.to_json
    bodies: list[str] = []
    for index, model in enumerate(models):
        try:
            text = to_json(model, by_alias=True)
        except ValueError as exc:  # e.g. a lone surrogate, which UTF-8 cannot carry: refused as the item-by-item path does
            raise EnqueueError(f"item {index}: {exc}") from None
        if b"null" in text or b"\\u0000" in text or len(text) > MAX_PAYLOAD_BYTES:
            try:
                bodies.append(payload_body(spec, model))
            except ValueError as exc:
                raise EnqueueError(f"item {index}: {exc}") from None
        else:
            bodies.append(text.decode())
    return bodies


def _batch_queues(spec: JobSpec, models: list[BaseModel], explicit: list[str | None]) -> list[str]:
    """Each item's queue; without a route or an item's own queue, the job's one queue, checked once."""
    if not spec.route and all(chosen is None for chosen in explicit):
        return [spec.queue_for(models[0])] * len(models)
    return [spec.queue_for(model, chosen) for model, chosen in zip(models, explicit)]


@functools.cache
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _validate_batch(spec: JobSpec, payloads: list[Any]) -> list[BaseModel] | None:
    """The payloads as the job's model, validated as one list (one call into pydantic's core rather than one per
    item), or None if any is not valid. As :func:`validate_payload`: an instance of the model passes through, a
    dict is validated, anything else fails."""
    model = spec.payload
    todo = [index for index, payload in enumerate(payloads) if not isinstance(payload, model)]
    if not todo:
        return list(payloads)
    if any(isinstance(payloads[index], BaseModel) for index in todo):
        return None  # another model's instance: validate_payload says which
    models = list(payloads)
    try:
        validated = _list_adapter(model).validate_python([payloads[index] for index in todo])
    except ValidationError:
        return None
    for index, value in zip(todo, validated):
        models[index] = value
    return models


def _copy(
    conn: psycopg.Connection,
    job_name: str,
    ids: list[uuid.UUID],
    queues: list[str],
    bodies: list[str],
    at: datetime | None,
    after: timedelta,
) -> None:
    """Write a keyless batch by binary COPY, run_at computed once by the INSERT's expression (queries.sql)."""
    with conn.cursor(row_factory=tuple_row) as cursor:  # whatever rows the caller's connection makes
        row = cursor.execute(QUERIES["outbox_copy_run_at"], {"run_at": at, "delay": after}).fetchone()
    assert row is not None
    when = row[0]
    with conn.cursor() as cursor, cursor.copy(QUERIES["outbox_copy"]) as copy:
        # The payload travels as text: in a binary COPY the server reads each field with its column's receive
        # function, and json's takes the text as is, as the INSERT's ::json cast does.
        copy.set_types(["uuid", "text", "text", "text", "timestamptz"])
        write_row = copy.write_row
        for job_id, queue, body in zip(ids, queues, bodies):
            write_row((job_id, job_name, queue, body, when))


def _write(
    conn: psycopg.Connection,
    job_name: str,
    ids: list[uuid.UUID],
    queues: list[str],
    bodies: list[str],
    keys: list[str | None],
    at: datetime | None,
    after: timedelta,
    policy: Dedup,
    active: bool,
) -> list[uuid.UUID]:
    """Write a batch (the rows given side by side) under a dedup policy; the id each row ended up with, in order.

    A row without a key is always inserted with its own id. A keyed row's id is the one its key ended with: its
    own (inserted), the pending job's (kept or replaced in place), the replacement's new id (the holder was claimed
    by a relay), or a live job's (dedup_active). Keys taken by a pending job under ``keep`` are looked up in a
    second statement; a key whose holder vanished meanwhile (published or rolled back) is written again.
    """
    if policy is Dedup.REPLACE:
        query = QUERIES["outbox_replace_many"]
        # An upsert cannot touch one row twice in a statement: of the rows sharing a key, the last one is written.
        last = {key: index for index, key in enumerate(keys) if key is not None}
        todo = [index for index, key in enumerate(keys) if key is None or last[key] == index]
    else:
        query = QUERIES["outbox_insert_many_unless_active" if active else "outbox_insert_many"]
        todo = list(range(len(ids)))
    by_key: dict[str, uuid.UUID] = {}
    for _ in range(3):
        params = {
            "job_name": job_name,
            "ids": [ids[i] for i in todo],
            "queues": [queues[i] for i in todo],
            "payloads": [bodies[i] for i in todo],
            "dedup_keys": [keys[i] for i in todo],
            "run_at": at,
            "delay": after,
            "active": active,
        }
        raced: dict[str, uuid.UUID] = {}
        for job_id, key, outcome in conn.execute(query, params):
            if key is not None:
                by_key[key] = job_id
                if outcome == "raced":
                    raced[key] = job_id
        if raced:
            # The pending job seen holding these keys was published before our INSERT: look at the ledger again.
            yielded = conn.execute(
                QUERIES["outbox_yield_to_active"],
                {"job_name": job_name, "dedup_keys": list(raced), "ids": list(raced.values())},
            )
            by_key.update((key, job_id) for key, job_id in yielded)
        missing = sorted({key for i in todo if (key := keys[i]) is not None and key not in by_key})
        if missing:
            # Held by a pending job (keep). Read it in a new statement, which sees a row committed since ours began.
            found = conn.execute(QUERIES["outbox_find_dedup_many"], {"job_name": job_name, "dedup_keys": missing})
            by_key.update((key, job_id) for key, job_id in found)
        todo = [i for i in todo if keys[i] is not None and keys[i] not in by_key]
        if not todo:
            return [job_id if key is None else by_key[key] for job_id, key in zip(ids, keys)]
        # The holders of these keys were published (or rolled back) between the two statements: write them again.
    vanished = sorted({keys[i] or "" for i in todo})
    raise EnqueueError(
        f"job {job_name!r} with dedup_key {', '.join(map(repr, vanished))} kept conflicting with jobs that vanished "
        "before they could be read; enqueue again"
    )


def enqueue_retry(
    conn: psycopg.Connection,
    job: JobSpec,
    body: str,
    *,
    job_id: str,
    attempt: int,
    queue: str,
    delay: timedelta,
    enqueued_at: datetime | None = None,
) -> uuid.UUID:
    """Hold the next attempt of a job that already ran in the outbox for ``delay`` (longer than SQS can hide a
    message). The job keeps its id, its enqueue time and its attempt count, so it still reaches the dead-letter
    queue after ``max_attempts``; the same retry asked for twice (the message delivered again) is written once.
    Returns the job's id. For the handler runtime; applications use :func:`enqueue`. Never commits."""
    if delay > MAX_DELAY:
        raise EnqueueError(f"retry delay must be at most 100 years, got {delay.days} days")
    try:
        identity = uuid.UUID(job_id)
    except ValueError:  # a foreign producer's message without a job id of ours: the retry gets one
        identity = new_job_id()
    check_payload_size(job.name, body)
    conn.execute(
        QUERIES["outbox_insert_retry"],
        {"id": new_job_id(), "job_id": identity, "job_name": job.name, "queue": queue, "payload": body,
         "delay": delay, "created_at": enqueued_at, "attempt": attempt},
    )  # fmt: skip
    return identity


def enqueue_scheduled_run(
    conn: psycopg.Connection, job: JobSpec, period: datetime, *, registry: Registry | None = None
) -> uuid.UUID:
    """Add one scheduled run of ``job`` to the outbox: the job's ``schedule_payload``, with ``scheduled_for`` set
    to ``period`` so its ledger row and its message say which period it is for. Never commits.

    This writes the row and nothing else: whether a period runs at all (once per period, overlap, the enable flag,
    missed periods) is decided by ``shared.scheduled.fire.fire_schedule``, the only caller.
    """
    spec = resolve_job(job, registry)
    model = validate_payload(spec, dict(spec.schedule_payload))
    row = conn.execute(
        QUERIES["outbox_insert_scheduled"],
        {"id": new_job_id(), "job_name": spec.name, "queue": spec.queue_for(model), "payload": payload_body(spec, model),
         "scheduled_for": period},
    ).fetchone()  # fmt: skip
    assert row is not None
    return row[0]


__all__: Sequence[str] = (
    "enqueue_scheduled_run",
    "enqueue",
    "enqueue_many",
    "Item",
    "Dedup",
    "InvalidPayload",
    "EnqueueError",
    "validate_payload",
    "payload_body",
    "enqueue_retry",
)
