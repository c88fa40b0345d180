"""Moving messages from a queue's dead-letter queue back to the queue.

Two modes:

- **move task** (a whole queue, on AWS): ``StartMessageMoveTask`` from the DLQ to the queue, named as the destination
  (the runtime dead-letters with SendMessage, so SQS has no source queue recorded for those messages). The move is
  asynchronous: the answer carries the task handle, and ``moved`` is the DLQ's ``ApproximateNumberOfMessages`` when
  the task started (what it is about to move, an approximation, not a count of moved messages). SQS allows one active
  task per DLQ; a start refused while ListMessageMoveTasks shows one running is
  :class:`~shared.operations.errors.WrongState`, any other refusal :class:`~shared.operations.errors.Unavailable`.
- **copy** (locally, where the emulator lacks StartMessageMoveTask, and everywhere for one job's messages): receive
  from the DLQ, send the same body and attributes to the queue, and delete from the DLQ only what SQS accepted.

What copy mode guarantees:

- **nothing is lost**: a message is deleted from the DLQ only after the queue accepted its copy. A send that fails
  leaves it in the DLQ (counted in ``failed``, its visibility released at the end); a crash between the send and the
  delete leaves the message in both places, and the next redrive sends it again: a duplicate the run ledger makes
  harmless (the second copy finds its run already running or finished);
- **the job starts over**: a copy carries ``conveyor.failed_at``, which tells the handler it is a deliberate redrive
  (the ledger restarts a dead run with a fresh attempt count). The runtime sets it on the copies it dead-letters; a
  message the queue's redrive policy moved (it ran out of receives) lacks it, so it is added here, with the attempt
  reset to 1 as the runtime's own copies have it;
- **it ends**: one pass stops when a receive brings nothing new (nothing at all, or only messages or jobs already
  handled this pass) and a long poll for a full batch confirms it, or at the deadline (then ``complete`` is False:
  run it again for the rest). Messages received are held invisible until past the deadline (at least
  ``MIN_VISIBILITY_SECONDS``), so none comes back within the pass. Ones whose send failed are made visible again at
  the end of every pass (ChangeMessageVisibilityBatch 0); ones passed over (another job's, with a job filter, or a
  copy seen already) only at the end of a complete pass;
- **a deep DLQ makes progress**: a pass cut short by its deadline leaves the messages it passed over invisible until
  their visibility timeout ends, so the next pass, run meanwhile, reads past them to the ones not reached yet
  instead of the same front of the queue. Those messages stay in the DLQ and reappear on their own a few minutes
  later.

Queues are standard queues (no message groups or deduplication ids to carry over).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.envelope import (
    ATTR_ATTEMPT,
    ATTR_ERROR,
    ATTR_ERROR_TYPE,
    ATTR_FAILED_AT,
    ATTR_JOB_ID,
    ATTR_JOB_NAME,
    SQS_BATCH_ENTRIES,
    SQS_MAX_ATTRIBUTES,
    attributes_size,
    sqs_batches,
)
from shared.operations.errors import Unavailable, WrongState
from shared.operations.models import RedriveResult

log = logging.getLogger("conveyor.operations.redrive")

# Received messages stay invisible at least this long (and past the deadline), so none reappears within one pass.
MIN_VISIBILITY_SECONDS = 120
MAX_VISIBILITY_SECONDS = 12 * 60 * 60
# Attributes that may give way when conveyor.failed_at must be added to a message already holding ten: the reason
# first (the ledger keeps it), then the producer's own, last in name order first.
DROPPABLE_FIRST = (ATTR_ERROR, ATTR_ERROR_TYPE)
# SQS's generic refusal, which StartMessageMoveTask gives (among other cases) while a task is active on the source queue.
UNSUPPORTED_OPERATION_CODES = frozenset({"AWS.SimpleQueueService.UnsupportedOperation", "UnsupportedOperation"})


@dataclass
class _Pass:
    """What one copy pass has seen and what it still has to give back."""

    seen_messages: set[str] = field(default_factory=set)
    sent_jobs: set[str] = field(default_factory=set)
    # SQS's clock (SentTimestamp, ms) is compared with ours: a copy sent to the DLQ after the pass began is new.
    # Strictly after the pass's first millisecond: a copy sent just before the pass can share that millisecond
    # (both are truncated), while a job cannot fail again within a millisecond of the pass starting.
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    # Receipt handles of messages that stay in the DLQ: ones whose send failed, released at the end of every pass...
    release: dict[str, str] = field(default_factory=dict)
    # ...and ones passed over (another job's, or seen already), released only at the end of a complete pass.
    passed_over: dict[str, str] = field(default_factory=dict)
    moved: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


class Redriver:
    def __init__(self, sqs: Any, *, move_task: bool) -> None:
        self.sqs = sqs
        self.move_task = move_task

    def redrive(self, queue: str, *, dlq_url: str, queue_url: str, job: str | None, deadline: float) -> RedriveResult:
        """Move ``queue``'s DLQ messages (only ``job``'s when given) back; stop at ``deadline`` (time.monotonic())."""
        if self.move_task and job is None:
            return self._start_move_task(queue, dlq_url=dlq_url, queue_url=queue_url)
        return self._copy(queue, dlq_url=dlq_url, queue_url=queue_url, job=job, deadline=deadline)

    # -- move task ---------------------------------------------------------------------------------------------------

    def _start_move_task(self, queue: str, *, dlq_url: str, queue_url: str) -> RedriveResult:
        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn", "ApproximateNumberOfMessages"]
            )["Attributes"]
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(f"could not read the dead-letter queue of {queue!r} ({dlq_url}): {exc}") from exc
        dlq_arn = attributes["QueueArn"]
        waiting = int(attributes.get("ApproximateNumberOfMessages", "0"))
        try:
            queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(f"could not read the queue {queue!r} ({queue_url}): {exc}") from exc
        try:
            # The destination named: the runtime dead-letters with SendMessage, so SQS has no source queue recorded
            # for those messages and a move "back to where each came from" could not move them.
            handle = self.sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=queue_arn)["TaskHandle"]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code", "") in UNSUPPORTED_OPERATION_CODES and self._move_task_running(dlq_arn):
                raise WrongState(
                    f"a message move task is already running on the dead-letter queue of {queue!r} ({dlq_arn}); "
                    f"wait for it to finish: {error.get('Message') or error.get('Code')}",
                    status="move_task_running",
                ) from exc
            raise Unavailable(f"SQS refused to start moving the dead-letter queue of {queue!r} ({dlq_arn}): {exc}") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"could not start moving the dead-letter queue of {queue!r} ({dlq_arn}): {exc}") from exc
        return RedriveResult(queue=queue, job=None, mode="move_task", moved=waiting, task_handle=handle, complete=True)

    def _move_task_running(self, dlq_arn: str) -> bool:
        """Whether the DLQ's latest move task is running: UnsupportedOperation is SQS's generic refusal, one active
        task per source queue only one of its causes. Unknown (the list failed) counts as not running."""
        try:
            tasks = self.sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1).get("Results", [])
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not list the message move tasks of %s: %s", dlq_arn, exc)
            return False
        return any(task.get("Status") == "RUNNING" for task in tasks)

    # -- copy ----------------------------------------------------------------------------------------------------

    def _copy(self, queue: str, *, dlq_url: str, queue_url: str, job: str | None, deadline: float) -> RedriveResult:
        state = _Pass()
        complete = False
        confirming = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    complete = False
                    break
                try:
                    messages = self.sqs.receive_message(
                        QueueUrl=dlq_url,
                        MaxNumberOfMessages=SQS_BATCH_ENTRIES,
                        VisibilityTimeout=_visibility(remaining),
                        MessageAttributeNames=["All"],
                        AttributeNames=["All"],
                        # A short poll asks only some of SQS's servers: it may come back empty, or with only a
                        # message already handled (SQS delivers at least once), while others wait. Such an answer is
                        # checked once with a long poll (which asks them all) before the end.
                        WaitTimeSeconds=1 if confirming else 0,
                    ).get("Messages", [])
                except (ClientError, BotoCoreError) as exc:
                    if not state.seen_messages:
                        raise Unavailable(f"could not receive from the dead-letter queue of {queue!r} ({dlq_url}): {exc}") from exc
                    state.errors.append(f"receive from the dead-letter queue failed: {exc}")
                    complete = False
                    break
                to_send: list[dict[str, Any]] = []
                anything_new = False
                for message in messages:
                    message_id = message["MessageId"]
                    job_id = _attribute(message, ATTR_JOB_ID)
                    if message_id in state.seen_messages or (
                        job_id is not None and job_id in state.sent_jobs and _sent_ms(message) > state.started_ms
                    ):
                        # Seen this pass, or a copy of a job already sent back that reached the DLQ during the pass
                        # (it failed again meanwhile): it stays in the DLQ, and it is not new, so it cannot keep the
                        # pass going. Older copies of the same job (it was retried and died again) all go back.
                        state.passed_over[message_id] = message["ReceiptHandle"]
                        continue
                    anything_new = True
                    state.seen_messages.add(message_id)
                    if job is not None and _attribute(message, ATTR_JOB_NAME) != job:
                        state.skipped += 1
                        state.passed_over[message_id] = message["ReceiptHandle"]
                        continue
                    to_send.append(message)
                    if job_id is not None:
                        state.sent_jobs.add(job_id)
                if not anything_new:
                    if confirming:
                        complete = True
                        break
                    if remaining <= 1:
                        # No time left to confirm that nothing waits.
                        complete = False
                        break
                    confirming = True
                    continue
                confirming = False
                self._send_back(to_send, dlq_url=dlq_url, queue_url=queue_url, state=state)
        finally:
            # A pass cut short leaves the messages it passed over invisible until their visibility timeout ends, so the
            # next pass, started meanwhile, reads past them instead of the same front of the queue again.
            self._release(dlq_url, [*state.release.values(), *(state.passed_over.values() if complete else ())])
        return RedriveResult(
            queue=queue, job=job, mode="copy", moved=state.moved, failed=state.failed, skipped=state.skipped,
            complete=complete, errors=state.errors,
        )  # fmt: skip

    def _send_back(self, messages: list[dict[str, Any]], *, dlq_url: str, queue_url: str, state: _Pass) -> None:
        """Send each message to the queue, then delete from the DLQ exactly the ones SQS accepted."""
        # Each message's attributes as it goes back, made once: they size the batches and are sent.
        prepared = [(m, redriven_attributes(m)) for m in messages]
        for batch in sqs_batches(prepared, lambda p: len(p[0]["Body"].encode("utf-8")) + attributes_size(p[1])):
            chunk = [m for m, _ in batch]
            entries = {str(i): m for i, m in enumerate(chunk)}
            accepted: list[dict[str, Any]] = []
            try:
                response = self.sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": attributes}
                        for i, (m, attributes) in enumerate(batch)
                    ],
                )
            except (ClientError, BotoCoreError) as exc:
                for m in chunk:
                    state.release[m["MessageId"]] = m["ReceiptHandle"]
                state.failed += len(chunk)
                state.errors.append(f"could not send {len(chunk)} message(s) back to the queue (left in the DLQ): {exc}")
                continue
            for failure in response.get("Failed", []):
                m = entries[failure["Id"]]
                state.release[m["MessageId"]] = m["ReceiptHandle"]
                state.failed += 1
                state.errors.append(
                    f"message {m['MessageId']}{_job_label(m)} not sent back (left in the DLQ): "
                    f"{failure.get('Code', 'error')}: {failure.get('Message', '')}".rstrip(": ")
                )
            for success in response.get("Successful", []):
                accepted.append(entries[success["Id"]])
            state.moved += len(accepted)
            if accepted:
                self._delete(dlq_url, accepted, state)

    def _delete(self, dlq_url: str, messages: list[dict[str, Any]], state: _Pass) -> None:
        """Delete sent messages from the DLQ. One left there by a failed delete is sent again by the next redrive: a
        duplicate the ledger absorbs, never a loss."""
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            response = self.sqs.delete_message_batch(QueueUrl=dlq_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            state.errors.append(
                f"{len(messages)} message(s) sent back but not deleted from the DLQ (a later redrive sends them again, "
                f"a harmless duplicate): {exc}"
            )
            return
        for failure in response.get("Failed", []):
            m = messages[int(failure["Id"])]
            state.errors.append(
                f"message {m['MessageId']}{_job_label(m)} sent back but not deleted from the DLQ (a later redrive sends "
                f"it again, a harmless duplicate): {failure.get('Code', 'error')}"
            )

    def _release(self, dlq_url: str, handles: list[str]) -> None:
        """Make these messages left in the DLQ visible again now rather than when their visibility timeout ends."""
        for start in range(0, len(handles), SQS_BATCH_ENTRIES):
            chunk = handles[start : start + SQS_BATCH_ENTRIES]
            try:
                self.sqs.change_message_visibility_batch(
                    QueueUrl=dlq_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)],
                )
            except (ClientError, BotoCoreError) as exc:
                # They stay in the DLQ either way; they only become visible later.
                log.warning("could not release %d DLQ message(s) at once: %s", len(chunk), exc)


def _sent_ms(message: dict[str, Any]) -> int:
    try:
        return int(message.get("Attributes", {}).get("SentTimestamp", "0"))
    except ValueError:
        return 0


def redriven_attributes(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The attributes a message goes back with: its own (in the shape SendMessage takes), plus ``conveyor.failed_at``
    (and the attempt reset to 1) when it lacks it, so the handler restarts the job rather than taking the copy for a
    late duplicate of a dead run. Within SQS's ten attributes: to make room, the reason goes first, then the
    producer's attributes last in name order."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        kept = {"DataType": value["DataType"]}
        if "StringValue" in value:
            kept["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            kept["BinaryValue"] = value["BinaryValue"]
        attributes[name] = kept
    if ATTR_FAILED_AT in attributes:
        return attributes
    attributes[ATTR_ATTEMPT] = {"DataType": "Number", "StringValue": "1"}
    droppable = [n for n in DROPPABLE_FIRST if n in attributes] + sorted(
        (n for n in attributes if not n.startswith("conveyor.")), reverse=True
    )
    while len(attributes) >= SQS_MAX_ATTRIBUTES and droppable:
        del attributes[droppable.pop(0)]
    attributes[ATTR_FAILED_AT] = {"DataType": "String", "StringValue": datetime.now(UTC).isoformat()}
    return attributes


def _visibility(remaining: float) -> int:
    """Hold received messages past the deadline, so none reappears within this pass."""
    return min(MAX_VISIBILITY_SECONDS, max(MIN_VISIBILITY_SECONDS, math.ceil(remaining) + 60))


def _attribute(message: dict[str, Any], name: str) -> str | None:
    value = (message.get("MessageAttributes") or {}).get(name)
    return None if value is None else value.get("StringValue")


def _job_label(message: dict[str, Any]) -> str:
    job_name, job_id = _attribute(message, ATTR_JOB_NAME), _attribute(message, ATTR_JOB_ID)
    return f" (job {job_name} {job_id})" if job_name or job_id else ""
