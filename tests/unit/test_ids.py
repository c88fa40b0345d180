"""Bulk job ids are valid version-7 UUIDs, distinct, in ascending order, and carry the current millisecond."""

from __future__ import annotations

import time
import uuid

from shared.ids import new_job_id, new_job_ids


def _ms(value: uuid.UUID) -> int:
    return value.int >> 80


def test_bulk_ids_are_distinct_ascending_v7_of_now() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_job_ids(5000)
    after = time.time_ns() // 1_000_000
    assert len(ids) == 5000 and len(set(ids)) == 5000
    assert ids == sorted(ids)
    for value in ids:
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert before <= _ms(value) <= after
        assert uuid.UUID(str(value)) == value


def test_bulk_ids_differ_between_calls_and_sort_with_single_ids() -> None:
    first = new_job_ids(3)
    time.sleep(0.002)
    single = new_job_id()
    time.sleep(0.002)
    second = new_job_ids(3)
    assert not set(first) & set(second)
    assert max(first) < single < min(second)
    assert single.version == 7 and single.variant == uuid.RFC_4122


def test_no_ids_for_an_empty_batch() -> None:
    assert new_job_ids(0) == []
