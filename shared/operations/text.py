"""The answers of :mod:`shared.operations.service` as aligned plain text, for ``conveyor <verb>`` in a terminal.

Scripts use ``--json``, which prints the same models the HTTP API returns; these tables are for people and may change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.operations.models import (
    ActionResult,
    Health,
    QueuesView,
    QueueSwitch,
    RedriveResult,
    RunDetail,
    RunSummary,
)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns; the last column is not padded (it may be long, like an error)."""
    rows = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip() for row in rows
    )


def short_time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def queues_text(view: QueuesView) -> str:
    lines = [
        table(
            ("QUEUE", "STATE", "VISIBLE", "IN FLIGHT", "DELAYED", "DLQ", "OLDEST"),
            [
                (q.name, "paused" if q.paused else "active", _count(q.visible), _count(q.in_flight), _count(q.delayed),
                 _count(q.dlq_depth), _age(q.oldest_age_seconds) + (f"  SQS: {q.sqs_error}" if q.sqs_error else ""))
                for q in view.queues
            ],
        ),  # fmt: skip
        "",
        table(
            ("JOB", "QUEUE", "OUTBOX", "DEAD ROWS", "RUNNING", "OK 1H", "FAILED 1H", "OK 24H", "FAILED 24H"),
            [
                (j.name, j.queue, str(j.outbox_pending), str(j.outbox_dead), str(j.running), str(j.succeeded_1h),
                 str(j.failed_1h), str(j.succeeded_24h), str(j.failed_24h))
                for q in view.queues for j in q.jobs
            ],
        ),  # fmt: skip
        "",
        f"relay lag: {_age(view.relay_lag_seconds) or 'none (nothing due)'}",
    ]
    return "\n".join(lines)


def runs_text(runs: Sequence[RunSummary]) -> str:
    """One job per line: what `conveyor runs` and the children of `conveyor show` print."""
    rows = []
    for r in runs:
        error = f"{r.last_error_type}: {r.last_error}" if r.last_error_type and r.last_error else (r.last_error or r.reason or "")
        error = " ".join(error.split())
        rows.append((
            r.id, r.job, r.status, str(r.attempt), short_time(r.created_at), short_time(r.finished_at),
            "" if r.duration_seconds is None else f"{r.duration_seconds:.1f}s", error if len(error) <= 80 else error[:79] + "…",
        ))  # fmt: skip
    return table(("ID", "JOB", "STATUS", "ATTEMPT", "CREATED", "FINISHED", "DURATION", "LAST ERROR"), rows)


_DETAIL_SKIP = frozenset({"children", "attempts", "audit", "actions"})


def run_text(run: RunDetail) -> str:
    values = run.model_dump(mode="json", exclude=set(_DETAIL_SKIP))
    width = max(map(len, values))
    out = []
    for name, value in values.items():
        if name in ("payload", "result") and value is not None:
            text = json.dumps(value, indent=2)
        else:
            text = "" if value is None else str(value)
        text = text.replace("\n", "\n" + " " * (width + 2))  # continuation lines under the value
        out.append(f"{name + ':':<{width + 1}} {text}".rstrip())
    if run.attempts:
        out += ["", f"failed attempts ({len(run.attempts)}):"]
        out.append(table(
            ("ATTEMPT", "OUTCOME", "STARTED", "FINISHED", "ERROR"),
            [(str(a.attempt), a.outcome, short_time(a.started_at), short_time(a.finished_at),
              " ".join(f"{a.error_type or ''}: {a.error or ''}".split())[:120]) for a in run.attempts],
        ))  # fmt: skip
    if run.children_total:
        out += ["", f"children ({run.children_total}):", runs_text(run.children)]
        if run.children_total > len(run.children):
            out.append(f"(all of them: conveyor runs --parent {run.id})")
    if run.audit:
        out += ["", "operator actions:"]
        out.append(table(
            ("AT", "ACTOR", "ACTION", "RESULT", "DETAIL"),
            [(short_time(a.at), a.actor, a.action, a.result, json.dumps(a.detail) if a.detail else "") for a in run.audit],
        ))  # fmt: skip
    return "\n".join(out)


def action_text(result: ActionResult) -> str:
    return result.message


def _messages(count: int, what: str) -> str:
    return f"{count} {what[:-1] if count == 1 and what.endswith('s') else what}"


def redrive_text(result: RedriveResult) -> str:
    what = f"{result.job}'s messages" if result.job else "messages"
    if result.mode == "move_task":
        text = (
            f"redrive of {result.queue}: SQS is moving about {_messages(result.moved, what)} back (task {result.task_handle}); "
            "they arrive over the next minutes"
        )
    else:
        text = f"redrive of {result.queue}: moved {_messages(result.moved, what)} back, {result.failed} failed"
        if result.skipped:
            text += f", {result.skipped} of other jobs left in the dead-letter queue"
        if not result.complete:
            text += "; stopped at the time limit: run it again for the rest"
    for error in result.errors[:5]:
        text += f"\n  {error}"
    return text


def switch_text(result: QueueSwitch) -> str:
    state = "paused" if result.paused else "resumed"
    if not result.changed:
        return f"queue {result.queue} was already {'paused' if result.paused else 'active'}"
    extra = []
    if result.event_source_mappings:
        extra.append(f"{result.event_source_mappings} event source mapping(s)")
    if result.schedules:
        extra.append("schedules of " + ", ".join(result.schedules))
    return f"queue {result.queue} {state}" + (f" ({'; '.join(extra)})" if extra else "")


def health_text(health: Health) -> str:
    lines = [f"{'ok' if c.ok else 'FAIL':<5} {c.name:<20} {c.detail}" for c in health.checks]
    lines.append("healthy" if health.healthy else "unhealthy: " + "; ".join(health.reasons))
    return "\n".join(lines)
