"""Times and durations as people type them: ``30s``, ``1h30m``, ``2d``; ISO 8601 with an offset; "a duration ago".

The CLI (``--delay``, ``--run-at``, ``--since``/``--until``) and the HTTP API (``?since=&until=``) parse with these,
so both accept the same text and refuse it with the same message. Errors are :class:`TimeParseError` (a
``ValueError``) whose message is one line meant for the user.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class TimeParseError(ValueError):
    """Text that is not a duration or a time; the message says what would be."""


def parse_duration(text: str) -> timedelta:
    """``90``, ``45s``, ``10m``, ``1h30m``, ``2d`` → a timedelta."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        try:
            return timedelta(seconds=float(text))
        except OverflowError:
            raise TimeParseError(f"duration {text!r} is too long") from None
    pos, total = 0, 0.0
    for match in DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if pos != len(text) or not text:
        raise TimeParseError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h30m, 2d")
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise TimeParseError(f"duration {text!r} is too long") from None


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 time with a UTC offset (a time without one is ambiguous, so refused)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise TimeParseError(f"invalid time {text!r}: use ISO 8601 with an offset, e.g. 2026-12-01T09:00:00+08:00") from None
    if value.tzinfo is None:
        raise TimeParseError(f"time {text!r} has no UTC offset: add one, e.g. {text}+00:00")
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        raise TimeParseError(f"time {text!r} is out of range: in UTC it falls outside years 1-9999") from None
    return value


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """A duration ago (``90m``, ``2d``) or an ISO 8601 time with an offset: ``--since``/``--until``, ``?since=``."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        return parse_datetime(text)  # a time: its own errors (no offset, out of range) say more
    try:
        ago = parse_duration(text)
    except TimeParseError:
        if re.fullmatch(rf"(?:{DURATION_RE.pattern})+|\d+(?:\.\d+)?", text.strip().lower()):
            raise  # a duration, too long for Python's timedelta: its own message says so
        raise TimeParseError(
            f"invalid time {text!r}: use a duration ago (30m, 2d) or ISO 8601 with an offset (2026-12-01T09:00:00+00:00)"
        ) from None
    try:
        return (now or datetime.now(timezone.utc)) - ago
    except OverflowError:
        raise TimeParseError(f"{text!r} ago is before year 1") from None
