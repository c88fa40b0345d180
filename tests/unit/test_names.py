"""Physical names: the rules that keep every derived AWS name unique and within AWS's limits, for any stage."""

from __future__ import annotations

import pytest

from shared.names import (
    QUEUE_LABEL_MAX,
    ResourceNameError,
    check_queue_label,
    consumer_function_name,
    dlq_resource_name,
    queue_label_from_resource,
    queue_resource_name,
    schedule_dlq_resource_name,
    schedule_group_name,
    schedule_name,
    system_schedule_name,
)

LONGEST_STAGE = "s" * 16


def test_the_stacks_own_schedule_dlq_is_named_here():
    assert schedule_dlq_resource_name(stage="dev") == "conveyor-dev-schedule-dlq"
    assert schedule_group_name(stage="dev") == "conveyor-dev"


@pytest.mark.parametrize(
    "label, message",
    [
        ("jobs-dlq", "queue 'jobs-dlq' ends in '-dlq', which names dead-letter queues: conveyor-<stage>-jobs-dlq is the DLQ of queue 'jobs'"),
        ("schedule-dlq", "conveyor-<stage>-schedule-dlq is the stack's own schedule DLQ"),
        ("relay", "queue 'relay' is reserved for Conveyor's own relay function"),
        ("Email_High", "queue 'Email_High' is invalid"),
        ("q" * (QUEUE_LABEL_MAX + 1), f"is {QUEUE_LABEL_MAX + 1} characters; at most {QUEUE_LABEL_MAX}"),
    ],
)
def test_queue_labels_that_would_collide_or_overflow_are_refused(label, message):
    with pytest.raises(ResourceNameError) as error:
        check_queue_label(label)
    assert message in str(error.value)


def test_the_longest_label_fits_every_name_for_the_longest_stage():
    label = "q" * QUEUE_LABEL_MAX
    assert check_queue_label(label) == label
    consumer_function_name(label, stage=LONGEST_STAGE)
    dlq_resource_name(label, stage=LONGEST_STAGE)


def test_no_two_labels_share_a_physical_queue_name_and_dlqs_map_back():
    # With '-dlq' refused as a label ending, a queue name and a DLQ name can never be the same text, and a resource
    # name maps back to exactly one label.
    labels = ["jobs", "jobs-high", "dlq", "dlq-jobs"]
    names = []
    for label in labels:
        check_queue_label(label)
        names += [queue_resource_name(label, stage="dev"), dlq_resource_name(label, stage="dev")]
    assert len(set(names)) == len(names)
    assert [queue_label_from_resource(dlq_resource_name(label, stage="dev"), stage="dev") for label in labels] == labels


def test_schedule_names_follow_the_job_name_within_schedulers_limit():
    assert schedule_name("bills.monthly") == "bills-monthly"
    assert system_schedule_name("relay") == "relay"
    assert schedule_name("a" * 64) == "a" * 64
    with pytest.raises(ResourceNameError, match="is 65 characters; EventBridge Scheduler allows at most 64"):
        schedule_name("a" * 65)
    with pytest.raises(ResourceNameError, match="schedule 'relay' is the relay's own schedule"):
        schedule_name("relay")
