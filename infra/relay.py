"""The outbox relay on AWS: a function started every minute by EventBridge Scheduler.

``resident`` mode (default): each run drains for 65 s, so it overlaps the next minute's run by a few seconds:
there is always a relay polling, even across a cold start. It polls adaptively (``Relay.drain(stay=True)``: 1 ms
after a cycle that found work, doubling to 100 ms while idle), so commit → SQS takes milliseconds under load and at
most ~100 ms after a quiet spell. Two relays at once
are safe (each claims different rows), so no concurrency is reserved unless ``conveyor:relay.reservedConcurrency``
asks for it: Lambda refuses a reservation that leaves the account fewer than 100 unreserved executions, and a new
account's limit is 10, so reserving by default would fail its first deploy. At rest this costs about one 256 MB arm64 function running all month:
0.25 GB × 2.8 M s (65 s of every 60) ≈ 700,000 GB-seconds ≈ $9.40/month at the us-east-1 arm64 list price ($0.0000133334/GB-s), plus
43,200 invocations (≈ $0.01) and ~20 trivial PostgreSQL queries a second.

``on-demand`` mode: each run publishes what is due and returns, so an idle system costs almost nothing (~44,000
short invocations, a few seconds of GB-time each: well under $1/month), but a job committed just after a run waits for the next one: up to a minute.

Permissions: send to the job queues (no receive, no delete), read the database secret.
"""

from __future__ import annotations

import json

from aws_cdk import Duration
from constructs import Construct

from infra.checks import acknowledge

from infra.config import RelayConfig
from infra.database import DatabaseAccess
from infra.job_queue import JobQueue
from infra.lambda_defaults import FunctionFactory
from infra.scheduling import Scheduling
from shared import settings as env
from shared.cost import RELAY_MEMORY_MB
from shared.names import system_function_name, system_schedule_name
from shared.outbox.relay import SEND_BUDGET

RESIDENT_DRAIN_SECONDS = 65
ON_DEMAND_DRAIN_SECONDS = 50


class OutboxRelay(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: RelayConfig,
        queues: list[JobQueue],
        factory: FunctionFactory,
        database: DatabaseAccess,
        scheduling: Scheduling,
    ) -> None:
        super().__init__(scope, id)
        resident = config.mode == "resident"
        drain = RESIDENT_DRAIN_SECONDS if resident else ON_DEMAND_DRAIN_SECONDS
        self.function_name = system_function_name("relay", stage=factory.stage)
        self.function = factory.function(
            self,
            "Function",
            function_name=self.function_name,
            handler="functions.relay.handler.handler",
            description=f"Conveyor: publishes due outbox rows to SQS ({config.mode})",
            # Past the drain: one SendMessageBatch started just before it ends may take SEND_BUDGET (the relay starts
            # no send after the drain's end), and a final lag read.
            timeout=Duration.seconds(drain + int(SEND_BUDGET.total_seconds()) + 10),
            memory=RELAY_MEMORY_MB,  # measured, and priced by `conveyor cost` (shared/cost.py)
            reserved_concurrency=config.reserved_concurrency,
            environment={
                env.RELAY_MODE: config.mode,
                env.RELAY_DRAIN_SECONDS: str(drain),
                env.QUEUE_URLS: json.dumps({q.settings.name: q.queue.queue_url for q in queues}),
                **database.environment,
            },
            dead_letter_reason="Started every minute by Scheduler; a failed run is not retried (retry_attempts=0) "
            "because the next run, a minute later, does the same work, and the outbox keeps every job meanwhile.",
        )
        # Also drop start events that waited (throttled by a reservation or the account's limit): a newer one is always coming.
        self.function.configure_async_invoke(retry_attempts=0, max_event_age=Duration.seconds(90))
        acknowledge(
            self.function,
            id="Serverless-LambdaAsyncFailureDestination",
            reason="A failed relay run needs no destination: it carries no event, only 'publish what is due', which the "
            "next run does a minute later; the relay-errors alarm reports failures.",
        )
        for job_queue in queues:
            job_queue.queue.grant_send_messages(self.function)
        database.grant_connect(self.function)
        self.schedule = scheduling.add(
            "RelaySchedule",
            name=system_schedule_name("relay"),
            expression="rate(1 minute)",
            timezone="UTC",
            function=self.function,
            payload={"source": "conveyor.relay"},
            description=f"Conveyor: start the outbox relay ({config.mode}) every minute",
        )
