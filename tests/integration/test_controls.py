"""Pause and resume on AWS (moto in-process): the queue's event source mapping and its jobs' schedules switch, every
other field of a schedule survives UpdateSchedule, and another queue's schedule is left as it was."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from shared.names import consumer_function_name, queue_resource_name, schedule_group_name, schedule_name
from shared.operations.controls import AwsQueueControls
from shared.operations.errors import NotFound, Unavailable
from shared.registry import JobPayload, Registry

STAGE = "dev"


class Nothing(JobPayload):
    pass


registry = Registry()
registry.job("ops.tick", payload=Nothing, queue="ticks", schedule="cron(0 9 * * ? *)", timezone="Europe/Paris")
registry.job("ops.other", payload=Nothing, queue="others", schedule="rate(5 minutes)", timezone="UTC")
registry.job("ops.plain", payload=Nothing, queue="ticks")


def trivial_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


@pytest.fixture
def aws(monkeypatch):
    """In-process moto with the ``ticks`` queue, its consumer function and mapping, and both jobs' schedules."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the session's moto server is not this one
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        lam = boto3.client("lambda", region_name="us-east-1")
        scheduler = boto3.client("scheduler", region_name="us-east-1")
        iam = boto3.client("iam", region_name="us-east-1")
        role = iam.create_role(
            RoleName="consumer", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )["Role"]["Arn"]
        mappings = {}
        for label in ("ticks", "others"):
            url = sqs.create_queue(QueueName=queue_resource_name(label, stage=STAGE))["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            function = consumer_function_name(label, stage=STAGE)
            lam.create_function(
                FunctionName=function, Runtime="python3.12", Role=role, Handler="handler.handler",
                Code={"ZipFile": trivial_zip()},
            )  # fmt: skip
            mappings[label] = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function, BatchSize=10)["UUID"]
        group = schedule_group_name(stage=STAGE)
        scheduler.create_schedule_group(Name=group)
        target = {"Arn": "arn:aws:lambda:us-east-1:123456789012:function:conveyor-dev-schedule", "RoleArn": role,
                  "Input": '{"job":"ops.tick"}', "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600}}
        scheduler.create_schedule(
            Name=schedule_name("ops.tick"), GroupName=group, ScheduleExpression="cron(0 9 * * ? *)",
            ScheduleExpressionTimezone="Europe/Paris", FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 5},
            Target=target, Description="ops.tick's schedule", State="ENABLED",
        )  # fmt: skip
        scheduler.create_schedule(
            Name=schedule_name("ops.other"), GroupName=group, ScheduleExpression="rate(5 minutes)",
            ScheduleExpressionTimezone="UTC", FlexibleTimeWindow={"Mode": "OFF"},
            Target={**target, "Input": '{"job":"ops.other"}'}, Description="ops.other's schedule", State="ENABLED",
        )  # fmt: skip
        yield lam, scheduler, mappings


def schedule(scheduler, job_name: str) -> dict:
    found = scheduler.get_schedule(Name=schedule_name(job_name), GroupName=schedule_group_name(stage=STAGE))
    return {k: v for k, v in found.items() if k not in ("ResponseMetadata", "LastModificationDate", "CreationDate")}


def controls(lam, scheduler, **options) -> AwsQueueControls:
    return AwsQueueControls(registry, stage=STAGE, lambda_client=lam, scheduler_client=scheduler, **options)


def test_pause_disables_the_queues_mapping_and_schedules_keeping_every_other_field(aws):
    lam, scheduler, mappings = aws
    tick_before, other_before = schedule(scheduler, "ops.tick"), schedule(scheduler, "ops.other")

    assert controls(lam, scheduler).set_paused("ticks", True) == (1, ["ops.tick"])

    assert lam.get_event_source_mapping(UUID=mappings["ticks"])["State"] == "Disabled"
    assert lam.get_event_source_mapping(UUID=mappings["others"])["State"] == "Enabled"
    tick = schedule(scheduler, "ops.tick")
    assert tick["State"] == "DISABLED"
    # UpdateSchedule replaced the whole definition: everything else came back as it was.
    assert {k: v for k, v in tick.items() if k != "State"} == {k: v for k, v in tick_before.items() if k != "State"}
    assert schedule(scheduler, "ops.other") == other_before

    # Again: nothing left to switch.
    assert controls(lam, scheduler).set_paused("ticks", True) == (0, [])

    assert controls(lam, scheduler).set_paused("ticks", False) == (1, ["ops.tick"])
    assert lam.get_event_source_mapping(UUID=mappings["ticks"])["State"] == "Enabled"
    assert schedule(scheduler, "ops.tick") == {**tick_before, "State": "ENABLED"}


def test_configured_mapping_ids_are_used_as_given(aws):
    lam, scheduler, mappings = aws
    assert controls(lam, scheduler, mappings={"ticks": mappings["ticks"]}).set_paused("ticks", True)[0] == 1
    assert lam.get_event_source_mapping(UUID=mappings["ticks"])["State"] == "Disabled"


def test_a_missing_schedule_is_unavailable_naming_it(aws):
    lam, scheduler, _ = aws
    scheduler.delete_schedule(Name=schedule_name("ops.tick"), GroupName=schedule_group_name(stage=STAGE))
    with pytest.raises(Unavailable, match="conveyor-dev/ops-tick"):
        controls(lam, scheduler).set_paused("ticks", True)


def test_an_unknown_queue_is_not_found(aws):
    lam, scheduler, _ = aws
    with pytest.raises(NotFound):
        controls(lam, scheduler).set_paused("nope", True)
