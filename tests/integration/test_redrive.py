"""Redrive: a DLQ's messages back to their queue, by StartMessageMoveTask (whole queue, AWS) or by copy (receive →
send → delete), never losing one: sent before deleted, a failed send left in the DLQ, a crash between a duplicate."""

from __future__ import annotations

import time
import uuid

import boto3
import psycopg
import pytest
from botocore.stub import Stubber

from shared.envelope import ATTR_ATTEMPT, ATTR_ERROR, ATTR_FAILED_AT, ATTR_JOB_ID, ATTR_JOB_NAME
from shared.ledger.read import get_job
from shared.local.aws import ensure_queues
from shared.operations.errors import Unavailable, WrongState
from shared.operations.redrive import Redriver
from shared.outbox import enqueue
from shared.runtime import JobContext, PermanentJobError, job_handler
from tests.support import WORK, Work
from tests.support import registry as test_registry


@pytest.fixture
def queues(sqs, stage):
    """The test registry's queue ``work`` and its DLQ: (queue_url, dlq_url)."""
    return ensure_queues(sqs, test_registry, stage=stage)["work"]


def string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def dead_message(sqs, dlq_url: str, n: int, *, job: str = "test.work", failed_at: bool = True, **extra) -> str:
    """A message in the DLQ as the runtime (``failed_at``) or the queue's redrive policy (without) leaves it."""
    job_id = str(uuid.uuid4())
    attributes = {ATTR_JOB_ID: string(job_id), ATTR_JOB_NAME: string(job), ATTR_ATTEMPT: {"DataType": "Number", "StringValue": "3"}}
    if failed_at:
        attributes[ATTR_FAILED_AT] = string("2026-01-01T00:00:00+00:00")
        attributes[ATTR_ERROR] = string("boom")
    attributes.update(extra)
    sqs.send_message(QueueUrl=dlq_url, MessageBody=f'{{"n":{n}}}', MessageAttributes=attributes)
    return job_id


def drain(sqs, url: str) -> list[dict]:
    """Every message on ``url`` (received, then left invisible so each is read once)."""
    found: dict[str, dict] = {}
    for _ in range(20):
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        if not batch:
            break
        found.update({m["MessageId"]: m for m in batch})
    return list(found.values())


def job_ids(messages: list[dict]) -> list[str]:
    return sorted(m["MessageAttributes"][ATTR_JOB_ID]["StringValue"] for m in messages)


def soon(seconds: float = 20.0) -> float:
    return time.monotonic() + seconds


# -- copy mode --------------------------------------------------------------------------------------------------------


def test_copy_moves_every_message_back_with_its_body_and_attributes(sqs, queues):
    queue_url, dlq_url = queues
    ids = [dead_message(sqs, dlq_url, n, **{"trace": string(f"t{n}")}) for n in range(13)]

    result = Redriver(sqs, move_task=True).redrive("work", dlq_url=dlq_url, queue_url=queue_url, job="test.work", deadline=soon())

    assert (result.mode, result.moved, result.failed, result.skipped, result.complete) == ("copy", 13, 0, 0, True)
    assert drain(sqs, dlq_url) == []
    back = drain(sqs, queue_url)
    assert job_ids(back) == sorted(ids)
    for m in back:
        n = int(m["Body"].split(":")[1].rstrip("}"))
        assert m["MessageAttributes"]["trace"]["StringValue"] == f"t{n}"
        # The runtime's own copy keeps its failed_at and attempt.
        assert m["MessageAttributes"][ATTR_FAILED_AT]["StringValue"] == "2026-01-01T00:00:00+00:00"
        assert m["MessageAttributes"][ATTR_ATTEMPT]["StringValue"] == "3"


def test_a_message_the_redrive_policy_moved_gets_failed_at_and_attempt_1_within_ten_attributes(sqs, queues):
    queue_url, dlq_url = queues
    producer = {f"p{i}": string(str(i)) for i in range(7)}  # 3 conveyor attributes + 7 = SQS's limit of 10
    dead_message(sqs, dlq_url, 1, failed_at=False, **producer)

    result = Redriver(sqs, move_task=False).redrive("work", dlq_url=dlq_url, queue_url=queue_url, job=None, deadline=soon())

    assert result.moved == 1
    [back] = drain(sqs, queue_url)
    attributes = back["MessageAttributes"]
    assert len(attributes) == 10
    assert ATTR_FAILED_AT in attributes and attributes[ATTR_ATTEMPT]["StringValue"] == "1"
    # The producer's attribute last in name order made room.
    assert sorted(n for n in attributes if n.startswith("p")) == [f"p{i}" for i in range(6)]


def test_redrive_of_one_job_leaves_the_other_jobs_messages_in_the_dlq(sqs, queues):
    queue_url, dlq_url = queues
    mine = [dead_message(sqs, dlq_url, n) for n in range(4)]
    others = [dead_message(sqs, dlq_url, n, job="test.other") for n in range(12)]

    result = Redriver(sqs, move_task=True).redrive("work", dlq_url=dlq_url, queue_url=queue_url, job="test.work", deadline=soon())

    assert (result.moved, result.skipped, result.complete) == (4, 12, True)
    assert job_ids(drain(sqs, queue_url)) == sorted(mine)
    # Released at the end: visible again at once, not after the redrive's visibility timeout.
    assert job_ids(drain(sqs, dlq_url)) == sorted(others)


def test_a_failed_send_leaves_the_message_in_the_dlq(sqs, queues, stage):
    _, dlq_url = queues
    ids = [dead_message(sqs, dlq_url, n) for n in range(3)]
    gone = sqs.create_queue(QueueName=f"conveyor-{stage}-gone")["QueueUrl"]
    sqs.delete_queue(QueueUrl=gone)  # the queue it should go back to no longer exists: every send fails

    result = Redriver(sqs, move_task=False).redrive("work", dlq_url=dlq_url, queue_url=gone, job=None, deadline=soon())

    assert (result.moved, result.failed, result.complete) == (0, 3, True)
    assert result.errors and "left in the DLQ" in result.errors[0]
    assert job_ids(drain(sqs, dlq_url)) == sorted(ids)


class Crash(BaseException):
    """The process dying: not an error anything catches."""


class CrashBeforeDelete:
    """The real SQS client, except that the process dies when it would delete from the DLQ (AWS stand-in, not ours)."""

    def __init__(self, sqs) -> None:
        self._sqs = sqs

    def __getattr__(self, name):
        return getattr(self._sqs, name)

    def delete_message_batch(self, **kwargs):
        raise Crash


def test_a_crash_between_send_and_delete_leaves_a_duplicate_not_a_loss(sqs, queues):
    queue_url, dlq_url = queues
    [job_id] = [dead_message(sqs, dlq_url, 1)]

    with pytest.raises(Crash):
        Redriver(CrashBeforeDelete(sqs), move_task=False).redrive(
            "work", dlq_url=dlq_url, queue_url=queue_url, job=None, deadline=soon()
        )
    # Sent, and still in the DLQ: in flight until the redrive's visibility timeout ends, then sent again by the next
    # redrive (a duplicate the ledger absorbs).
    assert job_ids(drain(sqs, queue_url)) == [job_id]
    counts = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")


def test_a_passed_deadline_stops_the_copy_incomplete_and_moves_nothing(sqs, queues):
    queue_url, dlq_url = queues
    ids = [dead_message(sqs, dlq_url, n) for n in range(2)]

    result = Redriver(sqs, move_task=False).redrive("work", dlq_url=dlq_url, queue_url=queue_url, job=None, deadline=time.monotonic())

    assert (result.moved, result.complete) == (0, False)
    assert job_ids(drain(sqs, dlq_url)) == sorted(ids)


def test_an_unreachable_dlq_is_unavailable(sqs, stage):
    url = sqs.create_queue(QueueName=f"conveyor-{stage}-x")["QueueUrl"]
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(Unavailable, match="could not receive"):
        Redriver(sqs, move_task=False).redrive("work", dlq_url=url, queue_url=url, job=None, deadline=soon())


# -- move task (moto has no StartMessageMoveTask: AWS's answers are stubbed on a real client) -------------------------

DLQ_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/conveyor-dev-work-dlq"
DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:conveyor-dev-work-dlq"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/conveyor-dev-work"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:conveyor-dev-work"


def stubbed_sqs():
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url="https://sqs.us-east-1.amazonaws.com")
    stubber = Stubber(client)
    stubber.add_response(
        "get_queue_attributes",
        {"Attributes": {"QueueArn": DLQ_ARN, "ApproximateNumberOfMessages": "42"}},
        {"QueueUrl": DLQ_URL, "AttributeNames": ["QueueArn", "ApproximateNumberOfMessages"]},
    )
    stubber.add_response(
        "get_queue_attributes", {"Attributes": {"QueueArn": QUEUE_ARN}}, {"QueueUrl": QUEUE_URL, "AttributeNames": ["QueueArn"]}
    )
    return client, stubber


def move(client) -> object:
    return Redriver(client, move_task=True).redrive("work", dlq_url=DLQ_URL, queue_url=QUEUE_URL, job=None, deadline=soon())


def test_whole_queue_on_aws_starts_a_move_task_to_the_queue():
    client, stubber = stubbed_sqs()
    # The destination named: the runtime dead-letters with SendMessage, so SQS has no source queue recorded for those
    # messages and could not move them "back to where they came from".
    stubber.add_response(
        "start_message_move_task", {"TaskHandle": "handle-1"}, {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN}
    )
    with stubber:
        result = move(client)
    stubber.assert_no_pending_responses()
    assert (result.mode, result.task_handle, result.moved, result.complete) == ("move_task", "handle-1", 42, True)


def refused(stubber, message: str = "There is already a task running.") -> None:
    stubber.add_client_error(
        "start_message_move_task",
        service_error_code="AWS.SimpleQueueService.UnsupportedOperation",
        service_message=message,
        http_status_code=400,
    )


def test_a_move_task_already_running_is_a_clear_wrong_state():
    client, stubber = stubbed_sqs()
    refused(stubber)
    stubber.add_response(
        "list_message_move_tasks",
        {"Results": [{"TaskHandle": "handle-0", "Status": "RUNNING", "SourceArn": DLQ_ARN}]},
        {"SourceArn": DLQ_ARN, "MaxResults": 1},
    )
    with stubber, pytest.raises(WrongState, match="already running") as raised:
        move(client)
    stubber.assert_no_pending_responses()
    assert raised.value.details == {"status": "move_task_running"}


@pytest.mark.parametrize(
    "tasks", [[], [{"TaskHandle": "handle-0", "Status": "COMPLETED", "SourceArn": DLQ_ARN}]], ids=["none", "finished"]
)
def test_an_unsupported_operation_without_a_running_task_is_unavailable_with_sqs_message(tasks):
    client, stubber = stubbed_sqs()
    refused(stubber, "Source queue must be configured as a Dead Letter Queue.")
    stubber.add_response("list_message_move_tasks", {"Results": tasks}, {"SourceArn": DLQ_ARN, "MaxResults": 1})
    with stubber, pytest.raises(Unavailable, match="Source queue must be configured as a Dead Letter Queue"):
        move(client)
    stubber.assert_no_pending_responses()


def test_an_unsupported_operation_whose_tasks_cannot_be_listed_is_unavailable():
    client, stubber = stubbed_sqs()
    refused(stubber, "Something else.")
    stubber.add_client_error("list_message_move_tasks", service_error_code="AccessDenied", http_status_code=403)
    with stubber, pytest.raises(Unavailable, match="Something else"):
        move(client)


def test_another_move_task_refusal_is_unavailable():
    client, stubber = stubbed_sqs()
    stubber.add_client_error("start_message_move_task", service_error_code="AccessDenied", http_status_code=403)
    with stubber, pytest.raises(Unavailable, match="refused"):
        move(client)


def test_an_unreadable_queue_arn_is_unavailable():
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url="https://sqs.us-east-1.amazonaws.com")
    stubber = Stubber(client)
    stubber.add_response(
        "get_queue_attributes",
        {"Attributes": {"QueueArn": DLQ_ARN, "ApproximateNumberOfMessages": "42"}},
        {"QueueUrl": DLQ_URL, "AttributeNames": ["QueueArn", "ApproximateNumberOfMessages"]},
    )
    stubber.add_client_error("get_queue_attributes", service_error_code="AWS.SimpleQueueService.NonExistentQueue", http_status_code=400)
    with stubber, pytest.raises(Unavailable, match="could not read the queue"):
        move(client)


# -- end to end with the local runtime ---------------------------------------------------------------------------------


def test_a_dead_job_redriven_runs_again_and_succeeds_with_a_fresh_attempt_count(runtime_factory, db_url):
    broken = {"on": True}
    seen: list[tuple[int, int]] = []

    def work(payload: Work, ctx: JobContext) -> None:
        seen.append((payload.n, ctx.attempt))
        if broken["on"]:
            raise PermanentJobError("not yet")

    runtime = runtime_factory(handlers={"test.work": job_handler(WORK, work)})
    queue_url, dlq_url = runtime.urls["work"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = enqueue(conn, WORK, {"n": 7}, registry=test_registry)
        # Another job's message in the same DLQ: a redrive of test.work leaves it there.
        runtime.sqs.send_message(
            QueueUrl=dlq_url, MessageBody="{}",
            MessageAttributes={ATTR_JOB_NAME: string("test.other"), ATTR_JOB_ID: string(str(uuid.uuid4()))},
        )  # fmt: skip

        def status() -> str | None:
            record = get_job(conn, job_id)
            return None if record is None else str(record.status)

        assert runtime.wait_for(lambda: status() == "dead", timeout=20), runtime.lines
        broken["on"] = False

        result = Redriver(runtime.sqs, move_task=False).redrive(
            "work", dlq_url=dlq_url, queue_url=queue_url, job="test.work", deadline=soon()
        )
        assert (result.moved, result.skipped) == (1, 1)

        assert runtime.wait_for(lambda: status() == "succeeded", timeout=20), runtime.lines
        assert get_job(conn, job_id).attempt == 1
    assert seen == [(7, 1), (7, 1)]
    [other] = drain(runtime.sqs, dlq_url)
    assert other["MessageAttributes"][ATTR_JOB_NAME]["StringValue"] == "test.other"


def test_two_copies_of_one_job_already_in_the_dlq_both_go_back(sqs, queues):
    """A retried job that died again leaves a second copy: both are the operator's to move (the ledger runs the job
    once), and a DLQ left holding one would keep the health check failing."""
    queue_url, dlq_url = queues
    job_id = dead_message(sqs, dlq_url, 1)
    sqs.send_message(
        QueueUrl=dlq_url, MessageBody='{"n":1}',
        MessageAttributes={ATTR_JOB_ID: string(job_id), ATTR_JOB_NAME: string("test.work"), ATTR_FAILED_AT: string("2026-01-02T00:00:00+00:00")},
    )  # fmt: skip

    result = Redriver(sqs, move_task=False).redrive("work", dlq_url=dlq_url, queue_url=queue_url, job=None, deadline=soon())

    assert (result.moved, result.complete) == (2, True)
    assert drain(sqs, dlq_url) == []
    assert job_ids(drain(sqs, queue_url)) == [job_id, job_id]


def test_a_copy_that_fails_again_during_the_pass_stays_in_the_dlq(sqs, queues):
    """The job dies again while the pass runs (a consumer took the moved copy at once): its new copy is not moved
    again, so a job that always fails cannot keep one pass going until its deadline."""
    queue_url, dlq_url = queues
    job_id = dead_message(sqs, dlq_url, 1)

    class DiesAgainAtOnce:
        """SQS, where every message sent back is dead-lettered again the moment it arrives."""

        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            return getattr(self.client, name)

        def send_message_batch(self, **kwargs):
            answer = self.client.send_message_batch(**kwargs)
            time.sleep(0.002)  # the job runs (a little while) and fails again
            for entry in kwargs["Entries"]:
                self.client.send_message(QueueUrl=dlq_url, MessageBody=entry["MessageBody"], MessageAttributes=entry["MessageAttributes"])
            return answer

    result = Redriver(DiesAgainAtOnce(sqs), move_task=False).redrive(
        "work", dlq_url=dlq_url, queue_url=queue_url, job=None, deadline=soon()
    )

    assert (result.moved, result.complete) == (1, True)
    assert job_ids(drain(sqs, dlq_url)) == [job_id]


def test_a_receive_bringing_only_messages_already_handled_is_confirmed_before_the_pass_ends(sqs, queues):
    """SQS delivers at least once, and a short poll samples only some of its servers: a receive may bring back only
    a message this pass already handled while others wait. That is checked like an empty receive, with a long poll."""
    queue_url, dlq_url = queues
    ids = [dead_message(sqs, dlq_url, n) for n in range(2)]

    class RedeliversFirst:
        """SQS whose first receive samples one message and whose second delivers that same message again."""

        def __init__(self, client):
            self.client = client
            self.receives: list[dict] = []
            self.first: dict | None = None

        def __getattr__(self, name):
            return getattr(self.client, name)

        def receive_message(self, **kwargs):
            self.receives.append(kwargs)
            if len(self.receives) == 1:
                self.first = self.client.receive_message(**{**kwargs, "MaxNumberOfMessages": 1})
                return self.first
            if len(self.receives) == 2:
                return self.first
            return self.client.receive_message(**kwargs)

    fake = RedeliversFirst(sqs)
    result = Redriver(fake, move_task=False).redrive("work", dlq_url=dlq_url, queue_url=queue_url, job=None, deadline=soon())

    assert (result.moved, result.complete) == (2, True)
    assert drain(sqs, dlq_url) == []
    assert job_ids(drain(sqs, queue_url)) == sorted(ids)
    # The receive after the one that brought nothing new was the long poll, for a full batch.
    assert (fake.receives[2]["WaitTimeSeconds"], fake.receives[2]["MaxNumberOfMessages"]) == (1, 10)


class DeadlineAfter:
    """SQS, slow enough that the redrive's deadline is past once the ``receives``-th receive has answered."""

    def __init__(self, client, receives: int, deadline: float):
        self.client, self.receives, self.deadline = client, receives, deadline
        self.count = 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def receive_message(self, **kwargs):
        answer = self.client.receive_message(**kwargs)
        self.count += 1
        if self.count == self.receives:
            while time.monotonic() <= self.deadline:
                time.sleep(0.05)
        return answer


def cut_short(sqs, queues, *, receives: int, job: str | None = "test.work"):
    """One redrive pass whose deadline passes after ``receives`` receives."""
    queue_url, dlq_url = queues
    deadline = time.monotonic() + 3
    return Redriver(DeadlineAfter(sqs, receives, deadline), move_task=False).redrive(
        "work", dlq_url=dlq_url, queue_url=queue_url, job=job, deadline=deadline
    )


def test_a_pass_cut_short_leaves_the_other_jobs_messages_invisible_so_the_next_reaches_further(sqs, queues):
    """A deep DLQ with one job's messages behind many others': each pass cut short by its deadline must get further
    than the last, not re-read the same front of the queue."""
    queue_url, dlq_url = queues
    others = [dead_message(sqs, dlq_url, n, job="test.other") for n in range(30)]
    mine = [dead_message(sqs, dlq_url, n) for n in range(5)]

    first = cut_short(sqs, queues, receives=2)
    assert (first.moved, first.skipped, first.complete) == (0, 20, False)
    # The twenty skipped stay in the DLQ, out of sight until their visibility timeout ends.
    counts = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == ("15", "20")

    second = cut_short(sqs, queues, receives=2)
    assert (second.moved, second.skipped, second.complete) == (5, 10, False)
    assert job_ids(drain(sqs, queue_url)) == sorted(mine)
    # Every other job's message is still in the DLQ.
    counts = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert int(counts["ApproximateNumberOfMessages"]) + int(counts["ApproximateNumberOfMessagesNotVisible"]) == len(others)


def test_a_pass_cut_short_still_releases_the_messages_it_could_not_send(sqs, queues, stage):
    _, dlq_url = queues
    ids = [dead_message(sqs, dlq_url, n) for n in range(3)]
    gone = sqs.create_queue(QueueName=f"conveyor-{stage}-gone")["QueueUrl"]
    sqs.delete_queue(QueueUrl=gone)

    result = cut_short(sqs, (gone, dlq_url), receives=1, job=None)

    assert (result.moved, result.failed, result.complete) == (0, 3, False)
    # Visible again at once: the next pass tries them first.
    assert job_ids(drain(sqs, dlq_url)) == sorted(ids)
