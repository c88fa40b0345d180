"""The project's own synth-time check for EventBridge Scheduler schedules, which cdk-nag has no rule for.

Every ``AWS::Scheduler::Schedule`` in the app must have a dead-letter queue, a retry policy and an explicit
``ScheduleExpressionTimezone`` on cron schedules (a cron without one runs in UTC, which is rarely what "09:00 on the
10th" meant). A schedule that breaks a rule fails the synth, like a cdk-nag finding.
"""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import Acknowledgment, IAspect, Stack, Token, Validations
from aws_cdk import aws_scheduler as scheduler
from constructs import IConstruct, IValidation


@jsii.implements(IValidation)
class _ScheduleRules:
    def __init__(self, schedule: scheduler.CfnSchedule) -> None:
        self.schedule = schedule

    def validate(self) -> list[str]:
        return schedule_problems(self.schedule)


def schedule_problems(schedule: scheduler.CfnSchedule) -> list[str]:
    stack = Stack.of(schedule)
    target: Any = stack.resolve(schedule.target) or {}
    expression = stack.resolve(schedule.schedule_expression)
    timezone = stack.resolve(schedule.schedule_expression_timezone)
    path = schedule.node.path
    problems = []
    if not (target.get("deadLetterConfig") or {}).get("arn"):
        problems.append(f"Conveyor-Schedule1: {path} has no dead-letter queue: failed deliveries would be lost")
    if "retryPolicy" not in target:
        problems.append(f"Conveyor-Schedule2: {path} has no retry policy: set retry attempts and a maximum event age")
    if isinstance(expression, str) and expression.startswith("cron(") and not timezone:
        problems.append(f"Conveyor-Schedule3: {path} is a cron schedule without ScheduleExpressionTimezone (it would run in UTC)")
    if timezone is not None and not Token.is_unresolved(timezone) and not isinstance(timezone, str):
        problems.append(f"Conveyor-Schedule3: {path} has a non-text timezone {timezone!r}")
    return problems


@jsii.implements(IAspect)
class ScheduleChecks:
    """``Aspects.of(app).add(ScheduleChecks())``: attach the rules to every schedule in the app."""

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, scheduler.CfnSchedule):
            node.node.add_validation(_ScheduleRules(node))


def acknowledge(scope: IConstruct, *, id: str, reason: str) -> None:
    """Accept one cdk-nag finding (``Rule`` or ``Rule[Finding]``) on ``scope`` and below, with the reason in code."""
    Validations.of(scope).acknowledge(Acknowledgment(id=id, reason=reason))
