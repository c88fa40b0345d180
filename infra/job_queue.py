"""A registry queue on AWS: the SQS queue, its dead-letter queue, and the policies that keep both safe.

Why these settings:

* SSE with SQS-owned keys: encrypted at rest with no KMS key to manage, pay for, or grant ``kms:Decrypt`` on.
* ``enforce_ssl``: a queue policy denying any request without ``aws:SecureTransport``.
* ``maxReceiveCount`` = ``max(max_attempts, 5)`` + a margin (``shared.registry.max_receive_count``): a throttled
  receive still counts, and AWS advises at least 5 where Lambda throttling can occur. The handler dead-letters a
  job itself after its ``max_attempts``-th run fails, so the redrive policy is only the backstop for runs that never
  report back (timeouts, crashes), and throttled or unstarted receives cannot push a job there early.
* 14-day retention on both queues (``QUEUE_RETENTION_DAYS``, SQS's maximum): a message that sits unprocessed (a
  paused consumer, a long outage) must not quietly expire before someone can act.
* The DLQ's redrive allow policy names its source queue, so a console or ``start-message-move-task`` redrive can
  only return messages where they came from. The source ARN is built from the derived queue name, not from the
  queue construct, which would make the two queues depend on each other.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.checks import acknowledge

from shared.names import dlq_resource_name, queue_resource_name
from shared.registry import QUEUE_RETENTION_DAYS, QueueSettings

# The run ledger's retention reads the same number: a dead job's row outlives its DLQ message.
RETENTION = Duration.days(QUEUE_RETENTION_DAYS)


class JobQueue(Construct):
    def __init__(self, scope: Construct, id: str, *, settings: QueueSettings, stage: str) -> None:
        super().__init__(scope, id)
        self.settings = settings
        name = queue_resource_name(settings.name, stage=stage)
        source_arn = Stack.of(self).format_arn(service="sqs", resource=name)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetters",
            queue_name=dlq_resource_name(settings.name, stage=stage),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=RETENTION,
            redrive_allow_policy=sqs.RedriveAllowPolicy(
                redrive_permission=sqs.RedrivePermission.BY_QUEUE,
                source_queues=[sqs.Queue.from_queue_arn(self, "Source", source_arn)],
            ),
        )
        acknowledge(
            self.dead_letter_queue,
            id="Serverless-SQSRedrivePolicy", reason="This queue is a dead-letter queue; failed jobs end here."
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=RETENTION,
            visibility_timeout=Duration.seconds(settings.visibility_timeout),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=settings.max_receive_count),
        )
