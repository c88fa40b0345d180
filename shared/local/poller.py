"""A local stand-in for Lambda's SQS event source mapping: receive, invoke the handler, delete what succeeded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from shared.lambda_events import LocalLambdaContext, sqs_record
from shared.names import consumer_function_name
from shared.registry import QueueSettings
from shared.runtime.dispatch import QueueDispatcher

log = logging.getLogger("conveyor.local.poller")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

# How long a poller of a paused queue sleeps before asking again (the pause state itself is read at most once a second).
PAUSED_RECHECK_SECONDS = 0.25


class QueuePoller(threading.Thread):
    """Polls one queue and hands each batch to its function, as the event source mapping does on AWS.

    Like the real event source mapping: a batch is at most ``batch_size`` messages; the handler's
    ``batchItemFailures`` stay on the queue (invisible for whatever backoff the runtime set) and the rest are
    deleted; if the handler raises, the whole batch stays. Like Lambda, an invocation has the queue's function
    timeout: the handler sees it in ``get_remaining_time_in_millis()``, and a batch that returns after it stays
    whole on the queue, as if Lambda had ended it there (a thread cannot be stopped, so the work did run).
    Stopping lets the batch in hand finish first.
    """

    def __init__(
        self,
        *,
        sqs: Any,
        queue: QueueSettings,
        url: str,
        queue_arn: str,
        handlers: Mapping[str, Handler],
        stop: threading.Event,
        stage: str,
        region: str = "us-east-1",
        wait_seconds: int = 1,
        name: str | None = None,
        paused: Callable[[str], bool] = lambda queue: False,
    ) -> None:
        super().__init__(name=name or f"poller-{queue.name}", daemon=True)
        self.sqs = sqs
        self.queue = queue
        self.url = url
        self.queue_arn = queue_arn
        # The same dispatch as on AWS, where one function consumes the queue whatever jobs share it.
        self.dispatcher = QueueDispatcher(handlers)
        self.stop_event = stop
        self.stage = stage
        self.region = region
        self.wait_seconds = wait_seconds
        self.paused = paused
        self.busy = False

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling; the messages stay on the queue
                log.exception("poller for %s failed; retrying", self.queue.name)
                self.stop_event.wait(1.0)

    def poll_once(self) -> int:
        if self.paused(self.queue.name):
            self.stop_event.wait(PAUSED_RECHECK_SECONDS)
            return 0
        messages = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=self.queue.batch_size,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        self.busy = True
        try:
            self._invoke(messages)
        finally:
            self.busy = False
        return len(messages)

    def _invoke(self, batch: list[dict[str, Any]]) -> None:
        event = {"Records": [sqs_record(m, queue_arn=self.queue_arn, region=self.region) for m in batch]}
        context = LocalLambdaContext(
            function_name=consumer_function_name(self.queue.name, stage=self.stage),
            timeout_s=self.queue.function_timeout,
        )
        try:
            response = self.dispatcher(event, context) or {}
        except Exception:  # noqa: BLE001 - as on Lambda: an invocation error leaves the whole batch on the queue
            log.exception("handler for queue %s raised; the batch of %d stays on the queue", self.queue.name, len(batch))
            return
        if context.timed_out:
            log.error(
                "handler for queue %s ran past its %d s function timeout; as on Lambda, the batch of %d stays on the queue",
                self.queue.name, self.queue.function_timeout, len(batch),
            )  # fmt: skip
            return
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in batch if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
