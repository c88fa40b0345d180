import pytest
from pydantic import BaseModel

from shared.jobs import registry as product
from shared.names import (
    ResourceNameError,
    consumer_function_name,
    dlq_resource_name,
    queue_resource_name,
    slug,
    system_function_name,
)
from shared.payloads import EmailSend, EmailTemplate
from shared.registry import (
    JobPayload,
    JobSpec,
    Registry,
    RegistryError,
    RetryPolicy,
    UnknownJobError,
    function_timeout,
    max_receive_count,
)


class P(JobPayload):
    x: int = 0


def spec(**overrides):
    settings = {"name": "a.job", "payload": P, "queue": "q"}
    settings.update(overrides)
    return JobSpec(**settings)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"name": "Email.Send"}, "job name 'Email.Send' is invalid"),
        ({"name": "email-send"}, "job name 'email-send' is invalid"),
        ({"name": "email..send"}, "is invalid"),
        ({"queue": "Email_High"}, "queue 'Email_High' is invalid"),
        ({"queues": ("q",)}, "more than once"),
        ({"queue": "relay"}, "reserved for Conveyor's own relay function"),
        ({"route": lambda p: "q"}, "route is set but no other queues"),
        ({"timeout": 0}, "timeout must be between 1 and 890"),
        ({"timeout": 901}, "timeout must be between 1 and 890"),
        ({"batch_size": 11}, "batch_size must be between 1 and 10"),
        ({"batch_window": 301}, "batch_window must be between 0 and 300"),
        ({"permissions": ("ses:SendEmail",)}, "permissions must be AwsPermission values"),
        ({"concurrency": 1}, "concurrency must be at least 2"),
        ({"memory": 64}, "memory must be between 128"),
        ({"schedule": "cron(0 9 * * * *)"}, "bad schedule"),
        ({"schedule": "rate(15 minutes)", "timezone": "Mars/Base"}, "bad schedule"),
        ({"timezone": "Asia/Ulaanbaatar"}, "only apply to scheduled jobs"),
        ({"schedule": "rate(1 hour)", "schedule_payload": {"x": "nope"}}, "schedule_payload does not fit P"),
        ({"handler": "functions.x.handler:run"}, "must be a module path"),
        ({"schedule": "rate(1 hour)", "overlap": "queue"}, "overlap must be one of skip, allow, got 'queue'"),
        ({"schedule": "rate(1 hour)", "missed": "all"}, "missed must be one of skip, once, got 'all'"),
        ({"schedule": "rate(1 hour)", "pre_check": "jobs.checks:done"}, "pre_check must be a callable"),
        ({"overlap": "allow"}, "overlap, missed and pre_check only apply to scheduled jobs"),
        ({"missed": "skip"}, "only apply to scheduled jobs"),
        ({"pre_check": lambda ctx: None}, "only apply to scheduled jobs"),
        ({"keep_succeeded": 0}, "keep_succeeded must be a whole number of days from 1 to 36500"),
        ({"keep_failed": 1.5}, "keep_failed must be a whole number of days"),
        ({"keep_failed": True}, "keep_failed must be a whole number of days"),
        ({"keep_succeeded": 36501}, "keep_succeeded must be a whole number of days from 1 to 36500"),
        ({"integrations": ("reciepts",)}, "integrations names unknown integration\\(s\\) 'reciepts'; known: push, receipts, pos, bank, sms"),
        ({"integrations": "receipts"}, "integrations must be a tuple of names, got the string 'receipts'"),
        ({"optional_integrations": ("fax",)}, "optional_integrations names unknown integration\\(s\\) 'fax'"),
        ({"integrations": ("sms",), "optional_integrations": ("sms",)}, "list an integration more than once"),
        ({"environment": ("CONVEYOR_OPS_MAIL",)}, "environment names 'CONVEYOR_OPS_MAIL', which the stack does not set; it sets CONVEYOR_OPS_EMAIL"),
    ],
)
def test_impossible_settings_are_rejected_with_the_job_and_setting_named(overrides, message):
    with pytest.raises(RegistryError, match=message) as info:
        spec(**overrides)
    if "name" not in overrides:
        assert "'a.job'" in str(info.value)


def test_payload_models_must_be_frozen_and_forbid_extra_fields():
    class Loose(BaseModel):
        x: int = 0

    with pytest.raises(RegistryError, match="must be frozen with extra='forbid'"):
        spec(payload=Loose)
    with pytest.raises(RegistryError, match="pydantic model class"):
        spec(payload=dict)


def test_retry_policy_limits():
    with pytest.raises(RegistryError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(RegistryError, match="max_delay"):
        RetryPolicy(base_delay=10, max_delay=5)
    with pytest.raises(RegistryError, match="12-hour|43200"):
        RetryPolicy(max_delay=50_000)


def test_exponential_and_fixed_backoff_with_cap_and_jitter():
    exp = RetryPolicy(base_delay=10, max_delay=60, jitter=False)
    assert [exp.delay_after(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    fixed = RetryPolicy(backoff="fixed", base_delay=7, jitter=False)
    assert [fixed.delay_after(n) for n in (1, 2, 9)] == [7, 7, 7]
    jittered = RetryPolicy(base_delay=10, max_delay=60, jitter=True)
    assert jittered.delay_after(2, rand=lambda: 0.0) == 10  # half of 20
    assert jittered.delay_after(2, rand=lambda: 1.0) == 20


def test_duplicate_names_and_unknown_lookups():
    registry = Registry([spec()])
    with pytest.raises(RegistryError, match="registered twice"):
        registry.add(spec())
    with pytest.raises(UnknownJobError, match="unknown job 'nope'; registered jobs: a.job"):
        registry["nope"]


def test_shared_queue_settings_take_the_strictest_values():
    registry = Registry([
        spec(name="a.one", queue="shared", timeout=10, batch_size=10, retry=RetryPolicy(max_attempts=3)),
        spec(name="a.two", queue="shared", timeout=60, batch_size=2, retry=RetryPolicy(max_attempts=7)),
    ])
    settings = registry.queue_settings("shared")
    assert settings.jobs == ("a.one", "a.two")
    assert settings.function_timeout == function_timeout(60, 2)  # the longest timeout, the smallest batch
    assert settings.visibility_timeout == 6 * function_timeout(60, 2)
    assert settings.max_receive_count == max_receive_count(7)
    assert settings.batch_size == 2


def test_email_send_routes_password_resets_to_the_high_queue():
    job = product["email.send"]
    reset = EmailSend(to="a@b.co", template=EmailTemplate.PASSWORD_RESET, subject="Reset")
    welcome = EmailSend(to="a@b.co", template=EmailTemplate.WELCOME, subject="Hi")
    assert job.queue_for(reset) == "email-high"
    assert job.queue_for(welcome) == "email-default"
    assert job.queue_for(welcome, "email-high") == "email-high"
    with pytest.raises(RegistryError, match="not one of"):
        job.queue_for(welcome, "reservations-cleanup")
    # One queue per job (shared/jobs.py), email.send's two apart: no function holds another job's permissions.
    assert set(product.queues()) == {q for job in product for q in job.all_queues}
    assert all(len(jobs) == 1 for jobs in product.queues().values())
    assert len(product.queues()) == len(product) + 1


def test_physical_names_are_derived_in_one_place_and_within_aws_limits():
    assert slug("email.send") == "email-send"
    assert queue_resource_name("email-high", stage="dev") == "conveyor-dev-email-high"
    assert dlq_resource_name("email-high", stage="dev") == "conveyor-dev-email-high-dlq"
    assert consumer_function_name("maintenance", stage="prod") == "conveyor-prod-maintenance"
    assert system_function_name("relay", stage="prod") == "conveyor-prod-relay"
    with pytest.raises(ResourceNameError, match="unknown system function"):
        system_function_name("nope", stage="dev")
    with pytest.raises(ValueError, match="at most 64"):
        consumer_function_name("a" * 70, stage="dev")
    for label in product.queues():
        for name in (consumer_function_name(label, stage="prod"), queue_resource_name(label, stage="prod")):
            assert all(c.isalnum() or c in "-_" for c in name)


def test_aws_permissions_must_name_exact_actions():
    from shared.registry import AwsPermission

    with pytest.raises(RegistryError, match="must be an exact 'service:Action'"):
        AwsPermission(actions=("ses:*",), resources=("arn:aws:ses:*:*:identity/*",))
    with pytest.raises(RegistryError, match="not '\\*'"):
        AwsPermission(actions=("ses:SendEmail",), resources=("*",))
    with pytest.raises(RegistryError, match="at least one action and one resource"):
        AwsPermission(actions=(), resources=("*",))


def test_a_permission_on_any_resource_needs_a_stated_reason_and_only_then():
    """IAM accepts only Resource '*' for actions without resource-level permissions (sns:Publish to a phone number):
    allowed only with the reason no ARN exists, which the stack repeats in its cdk-nag acknowledgement."""
    from shared.registry import AwsPermission

    sms = AwsPermission(
        actions=("sns:Publish",),
        resources=("*",),
        any_resource_reason="a phone number has no ARN",
        denied_resources=("arn:{partition}:sns:*:*:*",),
    )
    assert sms.any_resource and sms.placeholders() == {"partition"}
    with pytest.raises(RegistryError, match="only with any_resource_reason"):
        AwsPermission(actions=("sns:Publish",), resources=("*",), any_resource_reason="  ")
    with pytest.raises(RegistryError, match="any_resource_reason is only for resources=\\('\\*',\\)"):
        AwsPermission(actions=("s3:GetObject",), resources=("arn:aws:s3:::b/*",), any_resource_reason="why not")
    with pytest.raises(RegistryError, match="give '\\*' alone"):
        AwsPermission(actions=("sns:Publish",), resources=("*", "arn:aws:sns:*:*:t"), any_resource_reason="no ARN")
    with pytest.raises(RegistryError, match="denied_resources narrow a grant on '\\*'"):
        AwsPermission(actions=("s3:GetObject",), resources=("arn:aws:s3:::b/*",), denied_resources=("arn:aws:s3:::b/x",))
    with pytest.raises(RegistryError, match="would deny everything"):
        AwsPermission(actions=("sns:Publish",), resources=("*",), any_resource_reason="no ARN", denied_resources=("*",))


def test_permission_placeholders_are_the_ones_the_stack_fills_in():
    from shared.registry import PERMISSION_PLACEHOLDERS, AwsPermission

    secret = AwsPermission(
        actions=("secretsmanager:GetSecretValue",),
        resources=("arn:{partition}:secretsmanager:{region}:{account}:secret:conveyor/{stage}/push-??????",),
    )
    assert secret.placeholders() == {"partition", "region", "account", "stage"}
    with pytest.raises(RegistryError, match="unknown placeholder\\(s\\) bucket; the stack fills in account, "):
        AwsPermission(actions=("s3:PutObject",), resources=("arn:aws:s3:::{bucket}/*",))
    with pytest.raises(RegistryError, match="unknown placeholder\\(s\\) sender"):
        AwsPermission(actions=("ses:SendEmail",), resources=("arn:aws:ses:*:*:identity/*",), conditions=(("StringEquals", "ses:FromAddress", "{sender}"),))
    # The product's registry names only placeholders the stack knows, and among them the documents bucket.
    assert {"stage", "documents_bucket", "email_from"} <= product.permission_placeholders() <= PERMISSION_PLACEHOLDERS


def test_sms_send_may_publish_only_to_phone_numbers():
    sms = product["sms.send"]
    [publish] = [p for p in sms.permissions if "sns:Publish" in p.actions]
    assert publish.any_resource and publish.any_resource_reason
    # Every topic and platform endpoint has an ARN under sns; the Deny leaves only ARN-less phone numbers.
    assert publish.denied_resources == ("arn:{partition}:sns:*:*:*",)


def test_max_receive_count_leaves_room_for_throttled_receives():
    """A throttled receive counts like a run, so the redrive policy allows max(attempts, 5) plus a margin; the
    handler itself dead-letters after max_attempts runs (tests/integration/test_handlers.py)."""
    from shared.registry import RECEIVE_COUNT_MARGIN

    assert product.queue_settings("reservations-cleanup").max_receive_count == 5 + RECEIVE_COUNT_MARGIN  # 3 attempts
    assert max_receive_count(3) == max_receive_count(5) == 5 + RECEIVE_COUNT_MARGIN
    assert max_receive_count(8) == 8 + RECEIVE_COUNT_MARGIN
    with pytest.raises(RegistryError, match=f"max_attempts must be between 1 and {1000 - RECEIVE_COUNT_MARGIN}"):
        RetryPolicy(max_attempts=1000)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"queue": "jobs-dlq"}, "ends in '-dlq', which names dead-letter queues"),
        ({"queues": ("schedule-dlq",)}, "the stack's own schedule DLQ"),
        ({"queue": "q" * 39}, "at most 38"),
        ({"name": "reports." + "x" * 60, "schedule": "rate(1 day)"}, "EventBridge Scheduler allows at most 64"),
        ({"name": "relay", "schedule": "rate(1 day)"}, "the relay's own schedule"),
        ({"schedule": "rate(1 day)", "timezone": "posix/Europe/Berlin"}, "use 'Europe/Berlin'"),
        ({"schedule": "rate(1 day)", "timezone": "right/UTC"}, "use 'UTC'"),
    ],
)
def test_names_that_would_collide_or_overflow_in_aws_are_refused_naming_the_job(overrides, message):
    with pytest.raises(RegistryError) as info:
        spec(**overrides)
    assert message in str(info.value)
    assert f"job {overrides.get('name', 'a.job')!r}" in str(info.value)


def test_a_label_and_another_label_plus_dlq_cannot_share_a_registry():
    registry = Registry([spec(name="a.one", queue="jobs")])
    with pytest.raises(RegistryError, match="job 'a.two': queue 'jobs-dlq' ends in '-dlq'.*DLQ of queue 'jobs'"):
        registry.job("a.two", payload=P, queue="jobs-dlq")


def test_function_timeout_covers_a_whole_batch_and_the_queue_visibility_follows():
    from shared.registry import INVOCATION_MARGIN_SECONDS, RECORD_MARGIN_SECONDS

    assert function_timeout(30, 10) == 10 * (30 + RECORD_MARGIN_SECONDS) + INVOCATION_MARGIN_SECONDS
    settings = product.queue_settings("email-default")  # email.send: 30 s x 10 records
    assert settings.function_timeout == function_timeout(30, 10) > 30 * 10
    assert settings.visibility_timeout == 6 * settings.function_timeout
    with pytest.raises(RegistryError, match=r"job 'a\.job': batch_size 10 x timeout 120 s needs a 1255 s function "
                       r"timeout .* over Lambda's 900 s; use batch_size <= 7 or timeout <= 84"):
        spec(timeout=120, batch_size=10)
    assert spec(timeout=120, batch_size=7).timeout == 120
    with pytest.raises(RegistryError, match="timeout must be between 1 and 890 seconds"):
        spec(timeout=895, batch_size=1)


def test_a_backoff_sqs_cannot_hold_after_a_whole_batch_is_refused():
    """SQS hides a message at most 12 h after its receive; a retry delay is set up to a batching window plus a
    function timeout after it, so the policy's longest delay must fit in what is left."""
    from shared.registry import SQS_MAX_VISIBILITY_SECONDS, max_retry_delay

    most = max_retry_delay(function_timeout(30, 10), 0)
    assert most < SQS_MAX_VISIBILITY_SECONDS - function_timeout(30, 10)
    assert spec(retry=RetryPolicy(max_delay=most)).retry.max_delay == most
    with pytest.raises(RegistryError, match=rf"job 'a\.job': retry max_delay {most + 1} s .* use max_delay <= {most}"):
        spec(retry=RetryPolicy(max_delay=most + 1))


def test_a_payload_model_that_cannot_read_back_what_it_sends_is_refused():
    """The relay sends the model's JSON by alias; a field read under another name would be dead-lettered by its own
    handler (`PayloadInvalid: from: Field required`)."""
    from pydantic import AliasChoices, Field

    from shared.registry import JobPayload, JobSpec, RegistryError

    class OneWay(JobPayload):
        from_: str = Field(validation_alias="from")

    class Inner(JobPayload):
        reply: str = Field(serialization_alias="reply-to")

    class Outer(JobPayload):
        inner: list[Inner]

    class Fine(JobPayload):
        from_: str = Field(alias="from")
        to: str = Field(validation_alias=AliasChoices("to", "recipient"))

    with pytest.raises(RegistryError, match=r"job 'x\.one': payload model OneWay cannot read back what it sends: from_ is sent as 'from_'"):
        JobSpec(name="x.one", payload=OneWay, queue="a")
    with pytest.raises(RegistryError, match=r"inner\.reply is sent as 'reply-to' but read back only as 'reply'"):
        JobSpec(name="x.two", payload=Outer, queue="a")
    JobSpec(name="x.three", payload=Fine, queue="a")


def test_schedule_policies_default_to_skip_overlap_and_one_catch_up_and_take_their_names():
    from shared.scheduled.policy import MissedPolicy, OverlapPolicy

    job = spec(schedule="rate(1 hour)")
    assert (job.overlap, job.missed, job.pre_check) == (OverlapPolicy.SKIP, MissedPolicy.ONCE, None)
    job = spec(schedule="rate(1 hour)", overlap="allow", missed="skip", pre_check=lambda ctx: None)
    assert (job.overlap, job.missed) == (OverlapPolicy.ALLOW, MissedPolicy.SKIP)


def test_the_registry_loads_without_psycopg():
    # The CDK app and the CLI import the registry; a pre_check is a callable, so nothing database-side is loaded.
    import subprocess
    import sys

    code = "import sys, shared.jobs; assert 'psycopg' not in sys.modules, sorted(m for m in sys.modules if 'psycopg' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_integration_secret_grant_matches_its_secret_and_not_a_longer_name():
    """Secrets Manager appends '-' and six random characters to a secret's name in its ARN: '-??????' matches exactly
    that, where '-*' would also match conveyor/<stage>/sms-admin-XXXXXX. (IAM's '*' and '?' are fnmatch's.)"""
    from fnmatch import fnmatchcase

    from shared.registry import integration_secret

    [pattern] = integration_secret("sms").resources
    pattern = pattern.format(partition="aws", region="us-east-1", account="123456789012", stage="prod")
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:conveyor/prod/"
    assert fnmatchcase(arn + "sms-AbC123", pattern)
    assert not fnmatchcase(arn + "sms-admin-AbC123", pattern)
    assert not fnmatchcase(arn + "sms-x-AbC123", pattern)


def test_integrations_grant_reading_their_token_secret_and_nothing_else():
    """A job's integrations, not a hand-written permission, give its function the token secrets it may read."""
    from shared.registry import integration_secret

    job = spec(integrations=("receipts",), optional_integrations=("sms",))
    assert job.permissions == ()
    assert [p.resources for p in job.granted_permissions] == [
        ("arn:{partition}:secretsmanager:{region}:{account}:secret:conveyor/{stage}/receipts-??????",),
        ("arn:{partition}:secretsmanager:{region}:{account}:secret:conveyor/{stage}/sms-??????",),
    ]
    assert all(p.actions == ("secretsmanager:GetSecretValue",) and p.reason for p in job.granted_permissions)
    assert spec().granted_permissions == ()
    # The product's jobs declare what they call; the queue's permissions (what the stack grants) include the secret.
    declared = {job.name: (job.integrations, job.optional_integrations) for job in product if job.integrations or job.optional_integrations}
    assert declared == {
        "notification.dispatch": (("push",), ()),
        "sms.send": ((), ("sms",)),
        "receipt.push": (("receipts",), ()),
        "store.sync": (("pos",), ()),
        "statements.poll": (("bank",), ()),
    }
    assert integration_secret("receipts") in product.queue_settings("receipt-push").permissions
    assert "stage" in product.permission_placeholders()
    assert product["orders.digest"].environment == ("CONVEYOR_OPS_EMAIL",)
