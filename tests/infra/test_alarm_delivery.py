"""Every alarm can reach a human: alarm -> its actions -> the SNS topic -> the topic policy and the topic's key policy.

A topic created with ``enforce_ssl`` gets a policy holding only the TLS deny, and CloudWatch (a service principal,
not an IAM identity of the account) is then refused ``sns:Publish``; an encrypted topic also needs CloudWatch to be
allowed ``kms:GenerateDataKey`` and ``kms:Decrypt`` on its key. Neither shows at synth or deploy time: the alarm just
goes off in silence. So this test evaluates the synthesized policies the way IAM would for CloudWatch publishing on
behalf of each alarm, in this account and in another one.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from aws_cdk.assertions import Annotations, Match

ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
CLOUDWATCH = "cloudwatch.amazonaws.com"


@pytest.fixture(params=["existing", "create"])
def synth(request, existing_synth, create_synth):
    return existing_synth if request.param == "existing" else create_synth


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


class Template:
    """Just enough of CloudFormation's intrinsics to turn ARNs in policies into text."""

    def __init__(self, template: dict) -> None:
        self.resources = template["Resources"]

    def arn(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        if resource["Type"] == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{resource['Properties'].get('TopicName', logical_id)}"
        if resource["Type"] == "AWS::KMS::Key":
            return f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{logical_id}"
        raise AssertionError(f"no ARN rule for {resource['Type']}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION, "AWS::URLSuffix": "amazonaws.com"}
            return pseudo.get(value["Ref"]) or self.arn(value["Ref"])
        if set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][1] == "Arn":
            return self.arn(value["Fn::GetAtt"][0])
        if set(value) == {"Fn::Join"}:
            separator, parts = value["Fn::Join"]
            return separator.join(str(self.resolve(p)) for p in parts)
        return {k: self.resolve(v) for k, v in value.items()}


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, str]) -> bool:
    if key not in context:
        return operator.endswith("IfExists")
    actual = context[key]
    operator = operator.removesuffix("IfExists")
    patterns = [str(e) for e in as_list(expected)]
    if operator in ("StringEquals", "ArnEquals", "Bool"):
        return actual in patterns
    if operator in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(actual, p) for p in patterns)
    raise AssertionError(f"the test's evaluator does not know condition operator {operator}")


def _applies(statement: dict, *, action: str, resource: str, context: dict[str, str]) -> bool:
    principal = statement.get("Principal")
    if principal != "*":
        services = as_list((principal or {}).get("Service", []))
        if CLOUDWATCH not in services and "*" not in as_list((principal or {}).get("AWS", [])):
            return False
    if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in as_list(statement["Action"])):
        return False
    if not any(r == "*" or fnmatch.fnmatchcase(resource, r) for r in as_list(statement["Resource"])):
        return False
    return all(
        _condition_holds(operator, key, expected, context)
        for operator, keys in statement.get("Condition", {}).items()
        for key, expected in keys.items()
    )


def allowed(statements: list[dict], *, action: str, resource: str, context: dict[str, str]) -> bool:
    """IAM's rule for one resource policy: some Allow applies and no Deny does."""
    matching = [s for s in statements if _applies(s, action=action, resource=resource, context=context)]
    return any(s["Effect"] == "Allow" for s in matching) and not any(s["Effect"] == "Deny" for s in matching)


def cloudwatch_request(alarm_name: str, *, account: str = ACCOUNT) -> dict[str, str]:
    return {
        "aws:SourceAccount": account,
        "aws:SourceArn": f"arn:{PARTITION}:cloudwatch:{REGION}:{account}:alarm:{alarm_name}",
        "aws:SecureTransport": "true",
    }


def delivery_problems(template_json: dict, *, account: str = ACCOUNT) -> list[str]:
    """Why each alarm's notifications would not arrive, for CloudWatch acting for an alarm in ``account``."""
    template = Template(template_json)
    resources = template.resources
    topic_policies = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SNS::TopicPolicy"]
    problems = []
    alarms = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms
    for alarm_id, alarm in alarms.items():
        actions = alarm.get("AlarmActions", []) + alarm.get("OKActions", [])
        if not alarm.get("AlarmActions"):
            problems.append(f"{alarm_id}: no alarm action")
        context = cloudwatch_request(alarm.get("AlarmName", f"Conveyor-{alarm_id}-ABC123"), account=account)
        for action in actions:
            topic_id = action["Ref"]
            assert resources[topic_id]["Type"] == "AWS::SNS::Topic", action
            topic_arn = template.arn(topic_id)
            statements = [
                s for p in topic_policies if {"Ref": topic_id} in p["Topics"] for s in template.resolve(p["PolicyDocument"])["Statement"]
            ]
            if not allowed(statements, action="sns:Publish", resource=topic_arn, context=context):
                problems.append(f"{alarm_id}: the policy of topic {topic_id} does not let CloudWatch publish")
            key = resources[topic_id]["Properties"].get("KmsMasterKeyId")
            if key is None:
                continue
            if not isinstance(key, dict):
                problems.append(f"{alarm_id}: topic {topic_id} uses {key!r}, whose policy CloudWatch cannot be granted")
                continue
            key_id = key["Fn::GetAtt"][0]
            key_statements = template.resolve(resources[key_id]["Properties"]["KeyPolicy"])["Statement"]
            for kms_action in ("kms:GenerateDataKey", "kms:Decrypt"):
                if not allowed(key_statements, action=kms_action, resource=template.arn(key_id), context=context):
                    problems.append(f"{alarm_id}: key {key_id} of topic {topic_id} does not allow CloudWatch {kms_action}")
    return problems


def test_every_alarm_can_publish_to_its_topic_and_use_its_key(synth):
    assert delivery_problems(synth.template) == []


def test_alarms_of_other_accounts_cannot_publish(synth):
    # The allow is for this account's alarms only (confused deputy): the same request from elsewhere is refused.
    problems = delivery_problems(synth.template, account="210987654321")
    alarms = [k for k, r in synth.template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert {p.split(":")[0] for p in problems if "does not let CloudWatch publish" in p} == set(alarms)


def test_the_evaluator_sees_a_topic_that_holds_only_the_tls_deny(existing_synth):
    # What the stack had before alarm delivery was fixed: the test above must be able to fail.
    import copy

    broken = copy.deepcopy(existing_synth.template)
    for resource in broken["Resources"].values():
        if resource["Type"] == "AWS::SNS::TopicPolicy":
            statements = resource["Properties"]["PolicyDocument"]["Statement"]
            statements[:] = [s for s in statements if s["Effect"] == "Deny"]
    assert delivery_problems(broken) and all("does not let CloudWatch publish" in p for p in delivery_problems(broken))


def unsubscribed_warnings(synth) -> list:
    return Annotations.from_stack(synth.stack).find_warning("*", Match.string_like_regexp("No one is subscribed to alarms"))


def test_synth_warns_when_no_one_is_subscribed_to_alarms(existing_synth, create_synth):
    assert not existing_synth.resources("AWS::SNS::Subscription")
    [warning] = unsubscribed_warnings(existing_synth)
    assert "conveyor:alarms" in warning.entry.data and "email" in warning.entry.data
    assert create_synth.resources("AWS::SNS::Subscription")
    assert unsubscribed_warnings(create_synth) == []
