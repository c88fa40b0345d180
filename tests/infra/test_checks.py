"""The synth-time checks really run: cdk-nag findings and the project's schedule rules fail the synth."""

from __future__ import annotations

import pytest
from aws_cdk import App, Aspects, Stack, Validations
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from infra.checks import ScheduleChecks, schedule_problems


def schedule(stack, **target_extra):
    return scheduler.CfnSchedule(
        stack,
        "Nightly",
        flexible_time_window={"mode": "OFF"},
        schedule_expression="cron(0 9 10 * ? *)",
        target={"arn": "arn:aws:lambda:us-east-1:123456789012:function:f", "roleArn": "arn:aws:iam::123456789012:role/r", **target_extra},
    )


def test_schedule_without_dlq_retry_or_timezone_fails_the_synth(tmp_path):
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "S")
    schedule(stack)
    Aspects.of(app).add(ScheduleChecks())
    with pytest.raises(RuntimeError) as error:
        app.synth()
    text = str(error.value)
    for rule in ("Conveyor-Schedule1", "Conveyor-Schedule2", "Conveyor-Schedule3"):
        assert rule in text


def test_a_complete_schedule_passes():
    app = App()
    stack = Stack(app, "S")
    node = schedule(
        stack,
        deadLetterConfig={"arn": "arn:aws:sqs:us-east-1:123456789012:dlq"},
        retryPolicy={"maximumRetryAttempts": 3, "maximumEventAgeInSeconds": 3600},
    )
    node.schedule_expression_timezone = "Asia/Ulaanbaatar"
    assert schedule_problems(node) == []


def test_cdk_nag_fails_the_synth_on_an_unacknowledged_finding(tmp_path):
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "S")
    sqs.Queue(stack, "Plain")  # no TLS-only policy, no DLQ
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="AwsSolutions-SQS4"):
        app.synth()
