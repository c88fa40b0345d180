"""Job ids: UUIDv7, so ids sort by creation time and new rows land at the right edge of the primary-key index."""

from __future__ import annotations

import os
import time
import uuid

_MS_MASK = (1 << 48) - 1
# Of the 80 bits after the timestamp, the random ones: all but the version (4 bits at 76) and the variant (2 at 62).
_RANDOM_BITS = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)
_VERSION_VARIANT = (0x7 << 76) | (0x2 << 62)


def new_job_id() -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=(ms & _MS_MASK) << 80 | rand & _RANDOM_BITS | _VERSION_VARIANT)


def new_job_ids(count: int) -> list[uuid.UUID]:
    """``count`` version-7 UUIDs for one batch: one clock read and one ``os.urandom`` call for all of them (per-id
    calls cost most of a bulk enqueue's id time). They share the millisecond, and their random parts are sorted, so
    the batch's ids ascend in order and its rows still land at the right edge of the primary-key index."""
    if count <= 0:
        return []
    prefix = (time.time_ns() // 1_000_000 & _MS_MASK) << 80 | _VERSION_VARIANT
    rand = os.urandom(10 * count)
    from_bytes = int.from_bytes
    tails = sorted(from_bytes(rand[i : i + 10], "big") & _RANDOM_BITS for i in range(0, 10 * count, 10))
    return [uuid.UUID(int=prefix | tail) for tail in tails]


def parse_job_id(value: uuid.UUID | str, name: str | None = None) -> uuid.UUID:
    """A job id given as a UUID or its text (an API path, a CLI argument), refused with a one-line error otherwise;
    ``name`` says which argument it was."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        if name is not None:
            raise ValueError(f"{name} {value!r} is not a job id (a UUID)") from None
        raise ValueError(f"not a job id: {value!r} (job ids are UUIDs)") from None
