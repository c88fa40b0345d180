"""The synthesized template, checked for behaviour (what each job gets, who may do what), not logical ids."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from shared.jobs import registry
from tests.infra.conftest import EXISTING, SENDER
from shared.names import consumer_function_name, dlq_resource_name, queue_resource_name, system_function_name
from shared.registry import QUEUE_RETENTION_DAYS, RECEIVE_COUNT_MARGIN, function_timeout


def by_property(resources: dict, key: str, value) -> dict:
    matches = [r for r in resources.values() if r["Properties"].get(key) == value]
    assert len(matches) == 1, f"expected one resource with {key}={value!r}, found {len(matches)}"
    return matches[0]


def logical_id(resources: dict, key: str, value) -> str:
    [found] = [k for k, r in resources.items() if r["Properties"].get(key) == value]
    return found


def statements_of_role(synth, role_id: str) -> list[dict]:
    """Every statement the role holds: its inline policy and, once that outgrows IAM's limit (the operations role
    names every queue), the managed policies CDK moves the rest into."""
    statements = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in synth.resources(kind).values():
            if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.fixture(params=["existing", "create"])
def synth(request, existing_synth, create_synth):
    return existing_synth if request.param == "existing" else create_synth


def stage_of(synth) -> str:
    return synth.stack.config.stage


def test_every_registry_queue_gets_a_queue_and_dlq_with_the_jobs_attempts(synth):
    queues = synth.resources("AWS::SQS::Queue")
    stage = stage_of(synth)
    for label in registry.queues():
        settings = registry.queue_settings(label)
        queue = by_property(queues, "QueueName", queue_resource_name(label, stage=stage))["Properties"]
        dlq_id = logical_id(queues, "QueueName", dlq_resource_name(label, stage=stage))
        assert queue["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
            "maxReceiveCount": settings.max_receive_count,
        }
        function = by_property(synth.resources("AWS::Lambda::Function"), "FunctionName", consumer_function_name(label, stage=stage))
        # The function outlasts a whole batch of records that each use their job's timeout.
        assert function["Properties"]["Timeout"] == settings.function_timeout >= settings.batch_size * settings.timeout
        assert queue["VisibilityTimeout"] >= 6 * function["Properties"]["Timeout"]
        dlq = queues[dlq_id]["Properties"]
        # The run ledger's retention keeps a dead job's row as long as its DLQ may hold the message: the same number.
        assert dlq["MessageRetentionPeriod"] == queue["MessageRetentionPeriod"] == QUEUE_RETENTION_DAYS * 24 * 3600 == 14 * 24 * 3600
        # Console / StartMessageMoveTask redrive may only return messages to their source queue.
        assert dlq["RedriveAllowPolicy"]["redrivePermission"] == "byQueue"
        assert queue_resource_name(label, stage=stage) in json.dumps(dlq["RedriveAllowPolicy"]["sourceQueueArns"])


def test_every_queue_is_encrypted_and_refuses_plain_http(synth):
    queues = synth.resources("AWS::SQS::Queue")
    policies = synth.resources("AWS::SQS::QueuePolicy").values()
    tls_only = set()
    for policy in policies:
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                tls_only.update(q["Ref"] for q in policy["Properties"]["Queues"])
    assert queues and set(queues) == tls_only
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_consumers_report_partial_failures_with_the_registry_batch_and_concurrency(synth):
    mappings = list(synth.resources("AWS::Lambda::EventSourceMapping").values())
    functions = synth.resources("AWS::Lambda::Function")
    stage = stage_of(synth)
    assert len(mappings) == len(registry.queues())
    for label in registry.queues():
        settings = registry.queue_settings(label)
        function_id = logical_id(functions, "FunctionName", consumer_function_name(label, stage=stage))
        [mapping] = [m["Properties"] for m in mappings if m["Properties"]["FunctionName"] == {"Ref": function_id}]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["BatchSize"] == settings.batch_size
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": settings.concurrency}
        assert queue_resource_name(label, stage=stage) in json.dumps(synth.resources("AWS::SQS::Queue")[mapping["EventSourceArn"]["Fn::GetAtt"][0]])


def test_functions_use_the_project_defaults_and_real_handlers(synth):
    # Ours, not CDK's own custom-resource handlers (create mode's default-security-group lockdown is one).
    functions = {
        k: f for k, f in synth.resources("AWS::Lambda::Function").items()
        if str(f["Properties"].get("FunctionName", "")).startswith("conveyor-")
    }  # fmt: skip
    assert len(functions) == len(registry.queues()) + 4  # + relay, schedule, migrate, ops
    sys.path.insert(0, str(synth.code_dir))
    try:
        for function in functions.values():
            props = function["Properties"]
            assert props["Runtime"] == "python3.14"
            assert props["Architectures"] == ["arm64"]
            assert props["LoggingConfig"]["LogFormat"] == "JSON"
            assert props["TracingConfig"] == {"Mode": "Active"}
            assert "VpcConfig" in props
            variables = props["Environment"]["Variables"]
            assert "CONVEYOR_DB_SECRET_ARN" in variables and "CONVEYOR_DATABASE_URL" not in variables
            assert not any("password" in key.lower() for key in variables)
            # The handler string must name a module in the staged code.
            module, _, attribute = props["Handler"].rpartition(".")
            assert importlib.util.find_spec(module) is not None, props["Handler"]
            assert (synth.code_dir / (module.replace(".", "/") + ".py")).is_file(), props["Handler"]
    finally:
        sys.path.remove(str(synth.code_dir))
    for group in synth.resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30


def test_schedules_follow_the_registry_with_timezone_retries_and_dlq(synth):
    schedules = {s["Properties"]["Name"]: s["Properties"] for s in synth.resources("AWS::Scheduler::Schedule").values()}
    scheduled = registry.scheduled()
    assert set(schedules) == {job.name.replace(".", "-") for job in scheduled} | {"relay"}
    for job in scheduled:
        props = schedules[job.name.replace(".", "-")]
        assert props["ScheduleExpression"] == job.schedule
        assert props["ScheduleExpressionTimezone"] == job.timezone
        target = props["Target"]
        assert json.loads(target["Input"]) == {"job": job.name, "scheduled_time": "<aws.scheduler.scheduled-time>"}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] == 3
        assert "Arn" in target["DeadLetterConfig"]
    assert schedules["relay"]["ScheduleExpression"] == "rate(1 minute)"


def test_each_consumer_may_touch_only_its_own_queues(synth):
    functions = synth.resources("AWS::Lambda::Function")
    queues = synth.resources("AWS::SQS::Queue")
    stage = stage_of(synth)
    for label in registry.queues():
        function = by_property(functions, "FunctionName", consumer_function_name(label, stage=stage))
        own = {
            logical_id(queues, "QueueName", queue_resource_name(label, stage=stage)),
            logical_id(queues, "QueueName", dlq_resource_name(label, stage=stage)),
        }
        sqs_resources = set()
        for statement in statements_of_role(synth, function["Properties"]["Role"]["Fn::GetAtt"][0]):
            if any(action.startswith("sqs:") for action in as_list(statement["Action"])):
                sqs_resources.update(r["Fn::GetAtt"][0] for r in as_list(statement["Resource"]))
        assert sqs_resources == own, label


def test_relay_may_only_send_to_job_queues(synth):
    stage = stage_of(synth)
    relay = by_property(synth.resources("AWS::Lambda::Function"), "FunctionName", system_function_name("relay", stage=stage))
    queues = synth.resources("AWS::SQS::Queue")
    job_queues = {logical_id(queues, "QueueName", queue_resource_name(label, stage=stage)) for label in registry.queues()}
    sent_to = set()
    for statement in statements_of_role(synth, relay["Properties"]["Role"]["Fn::GetAtt"][0]):
        actions = as_list(statement["Action"])
        if any(a.startswith("sqs:") for a in actions):
            assert set(actions) <= {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
            sent_to.update(r["Fn::GetAtt"][0] for r in as_list(statement["Resource"]))
    assert sent_to == job_queues
    # No reservation by default: it would need 100 + N unreserved executions, more than a new account has.
    assert "ReservedConcurrentExecutions" not in relay["Properties"]
    [invoke_config] = [
        c for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": logical_id(synth.resources("AWS::Lambda::Function"), "FunctionName", system_function_name("relay", stage=stage))}
    ]
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 0
    assert invoke_config["Properties"]["MaximumEventAgeInSeconds"] == 90
    assert relay["Properties"]["Environment"]["Variables"]["CONVEYOR_RELAY_MODE"] == "resident"
    # A send started just before the drain ends may take the relay's whole send budget: the function outlives it,
    # so a run is never killed mid-publish (which would only duplicate, but after a 60 s lease).
    from shared.outbox.relay import SEND_BUDGET

    drain = float(relay["Properties"]["Environment"]["Variables"]["CONVEYOR_RELAY_DRAIN_SECONDS"])
    assert relay["Properties"]["Timeout"] >= drain + SEND_BUDGET.total_seconds() + 5


def test_relay_has_the_memory_the_cost_model_prices(synth):
    # 128 MB holds the relay with a margin (bench/relay_memory.py) and halves its resident cost.
    relay = by_property(
        synth.resources("AWS::Lambda::Function"), "FunctionName", system_function_name("relay", stage=stage_of(synth))
    )
    assert relay["Properties"]["MemorySize"] == 128


def test_no_policy_grants_a_wildcard_action(synth):
    for policy in synth.resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in as_list(statement["Action"]):
                assert "*" not in action, (statement, policy)


def kms_statements(synth) -> list[dict]:
    return [
        statement
        for policy in synth.resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(a.startswith("kms:") for a in as_list(statement["Action"]))
    ]


def test_kms_decrypt_only_where_a_customer_key_is_used(existing_synth, create_synth):
    assert kms_statements(create_synth) == []  # SQS-managed SSE and a Secrets Manager default key: nothing to grant
    statements = kms_statements(existing_synth)
    assert statements, "the existing secret's customer key must be decryptable"
    for statement in statements:
        assert statement["Resource"] == EXISTING["secretKmsKeyArn"]
        assert "kms:Decrypt" in as_list(statement["Action"])
        assert "kms:ViaService" in json.dumps(statement["Condition"])  # only through Secrets Manager


def test_every_dlq_and_queue_age_has_an_alarm_to_the_topic(synth):
    stage = stage_of(synth)
    alarms = list(synth.resources("AWS::CloudWatch::Alarm").values())
    queues = synth.resources("AWS::SQS::Queue")
    watched = {
        (a["Properties"]["MetricName"], d["Value"]["Fn::GetAtt"][0])
        for a in alarms
        for d in a["Properties"].get("Dimensions", [])
        if d["Name"] == "QueueName"
    }
    for label in registry.queues():
        dlq = logical_id(queues, "QueueName", dlq_resource_name(label, stage=stage))
        queue = logical_id(queues, "QueueName", queue_resource_name(label, stage=stage))
        assert ("ApproximateNumberOfMessagesVisible", dlq) in watched
        assert ("ApproximateAgeOfOldestMessage", queue) in watched
    dlq_alarms = [a["Properties"] for a in alarms if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert dlq_alarms and all(a["TreatMissingData"] == "ignore" for a in dlq_alarms)
    lag = [a["Properties"] for a in alarms if a["Properties"].get("MetricName") == "OutboxLagSeconds"]
    assert lag and lag[0]["TreatMissingData"] == "breaching"
    # Outbox rows the relay gave up on wait in conveyor.outbox_dead: any at all is an alarm, and it keeps its state
    # when the relay is briefly not reporting.
    dead = [a["Properties"] for a in alarms if a["Properties"].get("MetricName") == "OutboxDeadRows"]
    assert dead and dead[0]["Threshold"] == 0 and dead[0]["ComparisonOperator"] == "GreaterThanThreshold"
    assert dead[0]["TreatMissingData"] == "ignore"
    topic_ids = set(synth.resources("AWS::SNS::Topic"))
    for alarm in alarms:
        assert {action["Ref"] for action in alarm["Properties"]["AlarmActions"]} <= topic_ids


def test_existing_mode_uses_the_given_network_and_proxy(existing_synth):
    for function in existing_synth.resources("AWS::Lambda::Function").values():
        props = function["Properties"]
        assert props["VpcConfig"]["SubnetIds"] == ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
        assert props["VpcConfig"]["SecurityGroupIds"] == ["sg-0123456789abcdef0"]
        assert props["Environment"]["Variables"]["CONVEYOR_DB_HOST"] == "conveyor.proxy-abc.us-east-1.rds.amazonaws.com"
    assert not existing_synth.resources("AWS::RDS::DBCluster")
    assert not existing_synth.resources("AWS::EC2::VPC")


def test_email_send_may_only_send_as_the_configured_sender(synth):
    stage = stage_of(synth)
    for label in ("email-default", "email-high"):
        function = by_property(synth.resources("AWS::Lambda::Function"), "FunctionName", consumer_function_name(label, stage=stage))
        assert function["Properties"]["Environment"]["Variables"]["CONVEYOR_EMAIL_FROM"] == SENDER
        [ses] = [s for s in statements_of_role(synth, function["Properties"]["Role"]["Fn::GetAtt"][0]) if s["Action"] == "ses:SendEmail"]
        assert ses["Condition"] == {"StringEquals": {"ses:FromAddress": SENDER}}


def test_create_mode_builds_aurora_proxy_and_rotation(create_synth):
    [cluster] = create_synth.resources("AWS::RDS::DBCluster").values()
    assert cluster["Properties"]["Engine"] == "aurora-postgresql"
    assert cluster["Properties"]["StorageEncrypted"] is True
    assert cluster["Properties"]["ServerlessV2ScalingConfiguration"] == {"MinCapacity": 0.5, "MaxCapacity": 4}
    [proxy] = create_synth.resources("AWS::RDS::DBProxy").values()
    assert proxy["Properties"]["RequireTLS"] is True
    assert proxy["Properties"]["DBProxyName"] == "conveyor-prod"
    assert create_synth.resources("AWS::SecretsManager::RotationSchedule")
    subscriptions = list(create_synth.resources("AWS::SNS::Subscription").values())
    assert [s["Properties"]["Endpoint"] for s in subscriptions] == ["ops@example.com"]


@pytest.fixture(scope="module")
def alt_synth(tmp_path_factory):
    from tests.infra.conftest import synthesize

    return synthesize(
        tmp_path_factory.mktemp("alt"),
        {
            "conveyor:stage": "alt",
            "conveyor:database": EXISTING,
            "conveyor:registry": "tests.infra.sample_registry:registry",
            "conveyor:relay": {"mode": "on-demand", "reservedConcurrency": 1},
        },
    )


def test_relay_concurrency_is_reserved_only_when_configured(alt_synth):
    relay = by_property(alt_synth.resources("AWS::Lambda::Function"), "FunctionName", system_function_name("relay", stage="alt"))
    assert relay["Properties"]["ReservedConcurrentExecutions"] == 1
    assert relay["Properties"]["Environment"]["Variables"]["CONVEYOR_RELAY_MODE"] == "on-demand"


def test_a_shared_queue_gets_one_queue_and_one_dispatching_function(alt_synth):
    synth = alt_synth
    queues = synth.resources("AWS::SQS::Queue")
    names = sorted(q["Properties"]["QueueName"] for q in queues.values())
    assert names == [
        "conveyor-alt-billing", "conveyor-alt-billing-cron", "conveyor-alt-billing-cron-dlq", "conveyor-alt-billing-dlq",
        "conveyor-alt-schedule-dlq",
    ]  # fmt: skip
    billing = by_property(queues, "QueueName", "conveyor-alt-billing")["Properties"]
    assert billing["RedrivePolicy"]["maxReceiveCount"] == 5 + RECEIVE_COUNT_MARGIN  # the larger of 4 and 5, + margin
    # A batch of 5 (the smaller batch) of the longer job's timeout, x6, plus the (shorter) batching window.
    assert billing["VisibilityTimeout"] == 6 * function_timeout(60, 5) + 10
    function = by_property(synth.resources("AWS::Lambda::Function"), "FunctionName", "conveyor-alt-billing")["Properties"]
    assert function["Handler"] == "shared.runtime.dispatch.handler"
    assert function["Environment"]["Variables"]["CONVEYOR_QUEUE"] == "billing"
    assert (function["Timeout"], function["MemorySize"]) == (function_timeout(60, 5), 512)
    function_id = logical_id(synth.resources("AWS::Lambda::Function"), "FunctionName", "conveyor-alt-billing")
    [mapping] = [
        m["Properties"] for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert (mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"]) == (5, 10)
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 6}
    schedules = {s["Properties"]["Name"]: s["Properties"] for s in synth.resources("AWS::Scheduler::Schedule").values()}
    assert schedules["bills-monthly"]["ScheduleExpression"] == "cron(0 9 10 * ? *)"
    assert schedules["bills-monthly"]["ScheduleExpressionTimezone"] == "Asia/Ulaanbaatar"


def test_a_registry_whose_jobs_store_no_documents_gets_no_bucket(alt_synth):
    # The documents bucket is retained on delete, so only a registry that names {documents_bucket} creates one.
    assert not alt_synth.resources("AWS::S3::Bucket")
    assert "DocumentsBucket" not in alt_synth.template["Outputs"]

