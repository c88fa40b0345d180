"""A registry with more queues than one CloudFormation stack can hold (each queue costs about a dozen resources)."""

from shared.registry import JobPayload, Registry

QUEUES = 45


class Nothing(JobPayload):
    pass


registry = Registry()
for number in range(QUEUES):
    registry.job(f"crowd.job{number}", payload=Nothing, queue=f"crowd-{number}")
