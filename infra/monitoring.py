"""Alarms, their SNS topic, and one dashboard for the whole system.

Alarms (all to one topic; subscribe an email with ``conveyor:alarms.email``):

* per queue: its DLQ holds any message (a job failed for good: look at ``conveyor.error``), and its oldest message
  is older than ``oldestMessageAgeSeconds`` (consumers are down, throttled or too slow);
* the relay: the oldest due outbox row has waited more than ``relayLagSeconds`` (a missing datapoint counts: no
  datapoint means the relay is not running), the relay function errored, and outbox rows the relay gave up on
  wait in ``conveyor.outbox_dead``;
* each function's invocation errors (a handler crashing before partial-batch reporting), and the schedule DLQ.

The topic is encrypted with a customer key because CloudWatch cannot publish to a topic under the AWS-managed SNS
key; the key allows CloudWatch only what publishing needs. The topic's policy must allow CloudWatch ``sns:Publish``
itself: ``enforce_ssl`` gives the topic a policy holding only the TLS deny, and CloudWatch is a service principal,
not an identity of the account, so without that allow every notification is refused, silently. Both grants hold
only for alarms of this account (``aws:SourceAccount``; the topic's also ``aws:SourceArn``), so another account's
alarms cannot use them (the confused-deputy problem). ``tests/infra/test_alarm_delivery.py`` walks every alarm to
its topic and key and evaluates these policies.

With no ``conveyor:alarms.email``, the synth warns: alarms then change state on the dashboard and reach no one.
"""

from __future__ import annotations

from aws_cdk import Annotations, ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.checks import acknowledge

from infra.config import AlarmConfig
from infra.job_queue import JobQueue
from infra.lambda_defaults import METRICS_NAMESPACE
from shared.names import APP

PERIOD = Duration.minutes(1)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: AlarmConfig,
        stage: str,
        queues: list[JobQueue],
        consumers: dict[str, lambda_.Function],
        relay: lambda_.Function,
        relay_service: str,
        schedule_dead_letters: sqs.IQueue,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        # Deleted with the stack (after KMS's waiting period): it protects notifications in flight, no stored data.
        key = kms.Key(
            self, "AlarmTopicKey", enable_key_rotation=True, description=f"{APP}-{stage} alarm topic",
            removal_policy=RemovalPolicy.DESTROY,
        )  # fmt: skip
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )
        self.topic = sns.Topic(self, "Alarms", topic_name=f"{APP}-{stage}-alarms", master_key=key, enforce_ssl=True)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsOfThisAccountPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch", resource="alarm", resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME
                        )
                    },
                },
            )
        )
        if not config.email:
            Annotations.of(self).add_warning_v2(
                "conveyor:alarmsUnsubscribed",
                "No one is subscribed to alarms: set conveyor:alarms.email (e.g. -c 'conveyor:alarms={\"email\": "
                "\"ops@example.org\"}') or subscribe to the alarm topic yourself; until then alarms reach no one.",
            )
        else:
            subscription = self.topic.add_subscription(subscriptions.EmailSubscription(config.email))
            acknowledge(
                subscription,
                id="Serverless-SNSRedrivePolicy",
                reason="An alarm email that cannot be delivered has nowhere useful to go; the alarm's state stays in "
                "CloudWatch and on the dashboard, and OK/ALARM transitions send again.",
            )
        self.alarms: list[cloudwatch.Alarm] = []
        # The alarms each registry queue brings, so the stack can say what a queue costs in resources.
        self.queue_alarms: dict[str, list[cloudwatch.Alarm]] = {}

        for job_queue in queues:
            label = job_queue.settings.name
            self._alarm(
                f"{label}DeadLetters",
                job_queue.dead_letter_queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
                threshold=0,
                description=f"Queue {label}: jobs failed for good and wait in the DLQ (see the conveyor.error attribute)",
                queue=label,
                # SQS stops reporting an idle queue's metrics after ~6 hours even if it still holds messages: keep
                # the alarm where it was instead of letting it fall back to OK.
                missing=cloudwatch.TreatMissingData.IGNORE,
            )
            self._alarm(
                f"{label}OldestMessage",
                job_queue.queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum"),
                threshold=config.oldest_message_age_seconds,
                evaluation_periods=3,
                description=f"Queue {label}: a job has waited over {config.oldest_message_age_seconds}s to run",
                queue=label,
            )
        for label, function in consumers.items():
            self._alarm(
                f"{label}Errors",
                function.metric_errors(period=PERIOD, statistic="Sum"),
                threshold=0,
                description=f"Function for queue {label} failed whole invocations (not single jobs)",
                queue=label,
            )
        self.relay_lag = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name="OutboxLagSeconds",
            dimensions_map={"service": relay_service},
            period=PERIOD,
            statistic="Maximum",
        )
        self._alarm(
            "RelayLag",
            self.relay_lag,
            threshold=config.relay_lag_seconds,
            evaluation_periods=3,
            missing=cloudwatch.TreatMissingData.BREACHING,
            description=f"Outbox: the oldest due job has waited over {config.relay_lag_seconds}s, or the relay is not reporting",
        )
        self._alarm("RelayErrors", relay.metric_errors(period=PERIOD, statistic="Sum"), threshold=0, description="Relay function failed")
        self._alarm(
            "OutboxDeadRows",
            cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name="OutboxDeadRows",
                dimensions_map={"service": relay_service},
                period=PERIOD,
                statistic="Maximum",
            ),
            threshold=0,
            description="Outbox: jobs SQS refused for good or after every publish attempt wait in conveyor.outbox_dead "
            "(`conveyor outbox --failed`; requeue once fixed)",
            # The relay reports the count every run; while it does not, the lag alarm speaks, and this one holds.
            missing=cloudwatch.TreatMissingData.IGNORE,
        )
        self._alarm(
            "ScheduleDeadLetters",
            schedule_dead_letters.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
            threshold=0,
            description="A schedule could not start its job (see the schedule DLQ)",
            missing=cloudwatch.TreatMissingData.IGNORE,
        )
        self.dashboard = self._dashboard(stage, queues, consumers, relay, relay_service)

    def _alarm(
        self,
        id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
        queue: str | None = None,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=missing,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        if queue is not None:
            self.queue_alarms.setdefault(queue, []).append(alarm)
        return alarm

    def _dashboard(
        self,
        stage: str,
        queues: list[JobQueue],
        consumers: dict[str, lambda_.Function],
        relay: lambda_.Function,
        relay_service: str,
    ) -> cloudwatch.Dashboard:
        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=f"{APP}-{stage}")
        for job_queue in queues:
            label = job_queue.settings.name
            function = consumers[label]
            dashboard.add_widgets(
                cloudwatch.GraphWidget(
                    title=f"{label}: queue",
                    left=[
                        job_queue.queue.metric_approximate_number_of_messages_visible(period=PERIOD, label="waiting"),
                        job_queue.queue.metric_approximate_number_of_messages_not_visible(period=PERIOD, label="in flight / backing off"),
                        job_queue.dead_letter_queue.metric_approximate_number_of_messages_visible(period=PERIOD, label="DLQ"),
                    ],
                    width=12,
                ),
                cloudwatch.GraphWidget(
                    title=f"{label}: function",
                    left=[function.metric_errors(period=PERIOD, label="errors"), function.metric_throttles(period=PERIOD, label="throttles")],
                    right=[function.metric_duration(period=PERIOD, statistic="p95", label="duration p95")],
                    width=12,
                ),
            )
        published = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE, metric_name="RelayPublished", dimensions_map={"service": relay_service},
            period=PERIOD, statistic="Sum", label="published",
        )  # fmt: skip
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="relay: throughput", left=[published], right=[relay.metric_errors(period=PERIOD, label="errors")], width=12),
            cloudwatch.GraphWidget(title="relay: lag (oldest due job, s)", left=[self.relay_lag], width=12),
        )
        return dashboard
