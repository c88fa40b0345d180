"""Job ids: UUIDv7, so ids sort by creation time and new rows land at the right edge of the primary-key index."""

from __future__ import annotations

import os
import time
import uuid


def new_job_id() -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48-bit Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant
    return uuid.UUID(int=value)


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
