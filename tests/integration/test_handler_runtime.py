"""The handler runtime called the way Lambda calls it: per-record state, deadlines, retry delays, DLQ copies.

Events are built from real moto SQS receives where the test looks at what the runtime did to a message.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shared.registry import JobPayload, Registry, RetryPolicy
from shared.runtime import JobContext, job_handler
from shared.testing import sqs_event


class Item(JobPayload):
    n: int


registry = Registry()
ITEM = registry.job("test.item", payload=Item, queue="items", timeout=5, retry=RetryPolicy(max_attempts=3, jitter=False))


class FakeLambdaContext:
    """What Lambda passes a handler (the parts the runtime reads). Not Conveyor's code: a stand-in for AWS."""

    def __init__(self, name: str, remaining_ms: int = 600_000) -> None:
        self.function_name = name
        self.remaining_ms = remaining_ms
        self.aws_request_id = name

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@contextmanager
def captured_logs(handler) -> Iterator[io.StringIO]:
    """The handler logger's JSON lines, formatted exactly as on Lambda."""
    stream = io.StringIO()
    sink = logging.StreamHandler(stream)
    sink.setFormatter(handler.logger.registered_formatter)
    handler.logger.addHandler(sink)
    try:
        yield stream
    finally:
        handler.logger.removeHandler(sink)


def test_concurrent_runs_of_one_handler_keep_their_own_log_keys_and_lambda_context():
    """The local runtime polls a queue with two workers that share one handler: each run's log lines and
    ``ctx.lambda_context`` must be its own, not whichever run started last."""
    both_running = threading.Barrier(2, timeout=10)
    seen: dict[int, object] = {}

    def run(payload: Item, ctx: JobContext) -> None:
        both_running.wait()  # both runs have started (and set their state) before either logs
        ctx.logger.warning("working", extra={"n": payload.n})
        seen[payload.n] = ctx.lambda_context
        both_running.wait()  # neither run ends (and clears its state) before the other has logged

    handler = job_handler(ITEM, run)
    events = {n: sqs_event(ITEM, {"n": n}, job_id=f"job-{n}") for n in (1, 2)}
    contexts = {n: FakeLambdaContext(f"invocation-{n}") for n in (1, 2)}
    responses: dict[int, dict] = {}
    threads = [
        threading.Thread(target=lambda n=n: responses.__setitem__(n, handler(events[n], contexts[n]))) for n in (1, 2)
    ]
    with captured_logs(handler) as stream:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert responses == {1: {"batchItemFailures": []}, 2: {"batchItemFailures": []}}
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    working = [line for line in lines if line["message"] == "working"]
    assert sorted((line["n"], line.get("job_id")) for line in working) == [(1, "job-1"), (2, "job-2")]
    assert seen == contexts
