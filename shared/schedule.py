"""EventBridge Scheduler schedule expressions, evaluated locally with AWS's semantics.

In AWS, EventBridge Scheduler decides when a schedule fires. The local runtime has no EventBridge, so it must
compute the same fire times itself, or a job that runs monthly in production would run at different times (or
never) under ``conveyor`` locally. This module parses the three expression kinds Scheduler accepts and answers
"when does this fire next?":

* ``cron(minutes hours day-of-month month day-of-week year)``: EventBridge's six-field, Quartz-like cron. Note
  day-of-week ``1`` is **Sunday** (``7`` is Saturday), not Unix's ``0``, and exactly one of day-of-month /
  day-of-week must be ``?``. ``L``, ``W``, ``LW``, ``<d>L`` and ``<d>#<n>`` are supported.
* ``rate(value unit)``: every N minutes, hours or days; EventBridge's shortest is ``rate(1 minute)``.
* ``at(yyyy-mm-ddThh:mm:ss)``: once.

Cron and ``at`` fields are local wall-clock time in the schedule's IANA timezone, with Scheduler's documented DST
rules: a wall time that does not exist (the spring-forward gap) is skipped, and a wall time that occurs twice (the
fall-back overlap) fires once, at its first occurrence.

Parsing validates everything eagerly, so a bad expression fails when the registry loads rather than months later
when it was due to fire; the messages say which expression, which field and what is wrong.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone as _timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Schedule", "ScheduleError", "parse_schedule"]

YEAR_MIN = 1970
YEAR_MAX = 2199

UTC = _timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
# EventBridge numbers weekdays 1 = SUN … 7 = SAT.
_DAY_NAMES = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}

_EXPRESSION_RE = re.compile(r"^(cron|rate|at)\((.*)\)$", re.DOTALL)
_RANGE_RE = re.compile(r"^(?P<start>\*|[A-Za-z0-9]+)(?:-(?P<end>[A-Za-z0-9]+))?(?:/(?P<step>[^/]*))?$")
_RATE_RE = re.compile(r"^(\S+) (\S+)$")
_AT_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})$")


class ScheduleError(ValueError):
    """A schedule expression or timezone that EventBridge Scheduler would reject."""


@dataclass(frozen=True)
class _Field:
    """What one plain cron field (no ``L``/``W``/``#``) accepts: its name, bounds and optional value names."""

    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_MINUTES = _Field("minutes", 0, 59)
_HOURS = _Field("hours", 0, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _Field("day-of-week", 1, 7, _DAY_NAMES)
_YEAR = _Field("year", YEAR_MIN, YEAR_MAX)


def _aws_weekday(day: date) -> int:
    """EventBridge's weekday number (1 = Sunday … 7 = Saturday) of ``day``."""
    return (day.weekday() + 1) % 7 + 1


@dataclass(frozen=True)
class _Cron:
    """A parsed cron expression: sorted allowed values per field, plus the day rule.

    Exactly one of the day-of-month and day-of-week rules is active (the other field was ``?``), so the day rule is
    stored as one of several mutually exclusive attributes; ``days_in`` applies whichever is set.
    """

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    years: tuple[int, ...]
    month_days: frozenset[int] | None = None  # plain day-of-month values
    last_day: bool = False  # L
    last_weekday: bool = False  # LW
    nearest_weekday: int | None = None  # nW
    weekdays: frozenset[int] | None = None  # plain day-of-week values, 1 = Sunday
    last_of_weekday: int | None = None  # dL
    nth_weekday: tuple[int, int] | None = None  # d#n

    def days_in(self, year: int, month: int) -> list[int]:
        """The days of ``year``-``month`` this schedule fires on, ascending."""
        last = calendar.monthrange(year, month)[1]
        if self.month_days is not None:
            return sorted(d for d in self.month_days if d <= last)
        if self.last_day:
            return [last]
        if self.last_weekday:
            return [_nearest_weekday(year, month, last, last)]
        if self.nearest_weekday is not None:
            # Quartz (and so EventBridge) does not fire in months that lack day n, e.g. 31W in April.
            n = self.nearest_weekday
            return [_nearest_weekday(year, month, n, last)] if n <= last else []
        first_weekday = _aws_weekday(date(year, month, 1))
        if self.weekdays is not None:
            return [d for d in range(1, last + 1) if (first_weekday + d - 2) % 7 + 1 in self.weekdays]
        if self.last_of_weekday is not None:
            last_weekday = _aws_weekday(date(year, month, last))
            return [last - (last_weekday - self.last_of_weekday) % 7]
        assert self.nth_weekday is not None
        weekday, nth = self.nth_weekday
        day = 1 + (weekday - first_weekday) % 7 + 7 * (nth - 1)
        return [day] if day <= last else []


def _nearest_weekday(year: int, month: int, day: int, last: int) -> int:
    """The Monday-Friday day nearest ``day`` without leaving the month (``W``'s rule)."""
    weekday = _aws_weekday(date(year, month, day))
    if weekday == 7:  # Saturday: the Friday before, unless that is last month
        return day - 1 if day > 1 else day + 2
    if weekday == 1:  # Sunday: the Monday after, unless that is next month
        return day + 1 if day < last else day - 2
    return day


@dataclass(frozen=True)
class _Rate:
    period: timedelta


@dataclass(frozen=True)
class _At:
    instant: datetime  # UTC


def _parse_value(text: str, spec: _Field, expression: str) -> int:
    if text.isdigit():
        value = int(text)
    elif spec.names and text.upper() in spec.names:
        value = spec.names[text.upper()]
    else:
        raise ScheduleError(f"{expression}: {spec.name}: invalid value '{text}'")
    if not spec.low <= value <= spec.high:
        raise ScheduleError(f"{expression}: {spec.name} value {value} out of range {spec.low}-{spec.high}")
    return value


def _parse_plain(text: str, spec: _Field, expression: str) -> tuple[int, ...]:
    """A field made of ``*``, values, ranges and steps, comma-separated: the sorted set of values it allows."""
    values: set[int] = set()
    for item in text.split(","):
        if item == "":
            raise ScheduleError(f"{expression}: {spec.name}: empty item in '{text}'")
        if "?" in item:
            raise ScheduleError(f"{expression}: {spec.name}: '?' is only allowed alone in day-of-month or day-of-week")
        match = _RANGE_RE.match(item)
        if not match:
            raise ScheduleError(f"{expression}: {spec.name}: invalid value '{item}'")
        start_text, end_text, step_text = match["start"], match["end"], match["step"]
        if start_text == "*":
            if end_text is not None:
                raise ScheduleError(f"{expression}: {spec.name}: invalid value '{item}'")
            start, end = spec.low, spec.high
        else:
            start = _parse_value(start_text, spec, expression)
            if end_text is not None:
                end = _parse_value(end_text, spec, expression)
                if end < start:
                    raise ScheduleError(f"{expression}: {spec.name} range {start_text}-{end_text} is reversed")
            else:
                # "5/15" means from 5 to the end of the field every 15; a bare "5" means just 5.
                end = spec.high if step_text is not None else start
        step = 1
        if step_text is not None:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{expression}: {spec.name}: step '{step_text}' must be a positive integer")
            step = int(step_text)
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


def _parse_day_of_month(text: str, expression: str) -> dict[str, object]:
    if text == "L":
        return {"last_day": True}
    if text == "LW":
        return {"last_weekday": True}
    if match := re.fullmatch(r"(\d+)W", text):
        return {"nearest_weekday": _parse_value(match[1], _DAY_OF_MONTH, expression)}
    if "L" in text or "W" in text:
        raise ScheduleError(
            f"{expression}: day-of-month: invalid value '{text}' ('L', 'LW' and '<n>W' must be used alone)"
        )
    return {"month_days": frozenset(_parse_plain(text, _DAY_OF_MONTH, expression))}


def _parse_day_of_week(text: str, expression: str) -> dict[str, object]:
    if text == "L":
        return {"weekdays": frozenset({7})}  # a bare L in day-of-week means 7, Saturday
    if match := re.fullmatch(r"([A-Za-z0-9]+)L", text):
        return {"last_of_weekday": _parse_value(match[1], _DAY_OF_WEEK, expression)}
    if match := re.fullmatch(r"([A-Za-z0-9]+)#(\d+)", text):
        weekday = _parse_value(match[1], _DAY_OF_WEEK, expression)
        nth = int(match[2])
        if not 1 <= nth <= 5:
            raise ScheduleError(f"{expression}: day-of-week occurrence {nth} out of range 1-5 in '{text}'")
        return {"nth_weekday": (weekday, nth)}
    if "#" in text or re.search(r"\dL|L$", text.upper()):
        raise ScheduleError(
            f"{expression}: day-of-week: invalid value '{text}' ('<d>L' and '<d>#<n>' must be used alone)"
        )
    return {"weekdays": frozenset(_parse_plain(text, _DAY_OF_WEEK, expression))}


def _parse_cron(body: str, expression: str) -> _Cron:
    fields = body.split()
    if len(fields) != 6:
        raise ScheduleError(
            f"{expression}: expected 6 space-separated fields (minutes hours day-of-month month day-of-week year),"
            f" got {len(fields)}"
        )
    minutes, hours, day_of_month, month, day_of_week, year = fields
    rule = {
        "minutes": _parse_plain(minutes, _MINUTES, expression),
        "hours": _parse_plain(hours, _HOURS, expression),
        "months": _parse_plain(month, _MONTH, expression),
        "years": _parse_plain(year, _YEAR, expression),
    }
    if day_of_month == "?" and day_of_week == "?":
        raise ScheduleError(f"{expression}: day-of-month and day-of-week cannot both be '?'; specify one of them")
    if day_of_month != "?" and day_of_week != "?":
        raise ScheduleError(
            f"{expression}: day-of-month and day-of-week cannot both be specified; use '?' in one of them"
        )
    if day_of_month != "?":
        rule.update(_parse_day_of_month(day_of_month, expression))
    else:
        rule.update(_parse_day_of_week(day_of_week, expression))
    return _Cron(**rule)


def _parse_rate(body: str, expression: str) -> _Rate:
    match = _RATE_RE.match(body)
    if not match:
        raise ScheduleError(f"{expression}: expected 'rate(value unit)'")
    value_text, unit = match.groups()
    if not value_text.isdigit() or int(value_text) == 0:
        raise ScheduleError(f"{expression}: value '{value_text}' must be a positive integer")
    value = int(value_text)
    singular = unit[:-1] if unit.endswith("s") else unit
    if singular == "second":
        raise ScheduleError(f"{expression}: EventBridge Scheduler's shortest rate is rate(1 minute); seconds are not a unit")
    if singular not in _RATE_UNITS:
        raise ScheduleError(f"{expression}: unknown unit '{unit}'; use minute(s), hour(s) or day(s)")
    # EventBridge insists on agreement: rate(1 minute), rate(5 minutes).
    expected = singular if value == 1 else singular + "s"
    if unit != expected:
        raise ScheduleError(f"{expression}: use '{expected}' for a value of {value}, not '{unit}'")
    return _Rate(timedelta(seconds=value * _RATE_UNITS[singular]))


def _parse_at(body: str, expression: str, zone: ZoneInfo) -> _At:
    match = _AT_RE.match(body)
    if not match:
        raise ScheduleError(f"{expression}: expected 'at(yyyy-mm-ddThh:mm:ss)'")
    try:
        wall = datetime(*(int(part) for part in match.groups()))
    except ValueError as error:
        raise ScheduleError(f"{expression}: invalid date or time: {error}") from None
    instant = _local_instant(wall, zone)
    if instant is None:
        # Cron would silently skip such a time; a one-time schedule that can never fire is a mistake, so say so.
        raise ScheduleError(f"{expression}: {wall.isoformat()} does not exist in {zone.key} (daylight saving gap)")
    return _At(instant)


# ZoneInfo loads any file of the system's tz database, which holds more than the IANA names EventBridge Scheduler
# accepts: a timezone the local runtime took would then fail the deploy.
_SYSTEM_ONLY_ZONES = frozenset({"localtime", "posixrules"})


def _load_zone(name: str) -> ZoneInfo:
    if isinstance(name, str):
        if name.startswith("posix/"):
            raise ScheduleError(
                f"timezone {name!r} is the system's copy of {name.removeprefix('posix/')!r}, a name EventBridge "
                f"Scheduler does not accept; use {name.removeprefix('posix/')!r}"
            )
        if name.startswith("right/"):
            raise ScheduleError(
                f"timezone {name!r} counts leap seconds, which EventBridge Scheduler does not accept; use "
                f"{name.removeprefix('right/')!r}"
            )
        if name in _SYSTEM_ONLY_ZONES:
            raise ScheduleError(
                f"timezone {name!r} is a file of the system's tz database, not an IANA timezone name (e.g. 'Europe/Berlin')"
            )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f"unknown timezone {name!r}") from None


def _local_instant(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of naive local ``wall`` in ``zone``: the first one if it occurs twice, None if never."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None  # a spring-forward gap: the wall time round-trips to a different one
    return instant


@dataclass(frozen=True)
class Schedule:
    """An EventBridge Scheduler expression bound to the IANA timezone it is evaluated in.

    Constructing one parses and validates it (``parse_schedule`` is the same thing by name). Fire times are
    computed at minute precision; AWS invokes somewhere within that minute, the local runtime at its start.

    Rates are anchored at the Unix epoch in UTC (``rate(15 minutes)`` fires at :00, :15, :30, :45; ``rate(1
    day)`` at 00:00 UTC whatever the timezone), so local fire times are deterministic and period-aligned. AWS
    instead counts from the schedule's start date (its creation time by default), so the phase differs from
    production while the period matches. Like AWS, a day is a 24-hour duration, not a calendar day.
    """

    expression: str
    timezone: str = "UTC"
    _rule: _Cron | _Rate | _At = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zone = _load_zone(self.timezone)
        match = _EXPRESSION_RE.match(self.expression) if isinstance(self.expression, str) else None
        if not match:
            raise ScheduleError(f"{self.expression!r}: expected cron(...), rate(...) or at(...)")
        kind, body = match.groups()
        if kind == "cron":
            rule: _Cron | _Rate | _At = _parse_cron(body, self.expression)
        elif kind == "rate":
            rule = _parse_rate(body, self.expression)
        else:
            rule = _parse_at(body, self.expression, zone)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_rule", rule)

    @property
    def period(self) -> timedelta | None:
        """The fixed interval of a ``rate(...)`` schedule; None for ``cron`` and ``at``.

        The fire after a rate fire is always one period later, whatever the rate is anchored at: use this, not
        :meth:`next_after`, to step from a fire time AWS chose (its rates count from the schedule's start date, ours
        from the epoch; see the class docstring)."""
        return self._rule.period if isinstance(self._rule, _Rate) else None

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after aware ``after``, in UTC; None if the schedule never fires again."""
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError(f"next_after needs a timezone-aware datetime, got naive {after.isoformat()}")
        after = after.astimezone(UTC)
        rule = self._rule
        if isinstance(rule, _Rate):
            periods = (after - _EPOCH) // rule.period
            return _EPOCH + (periods + 1) * rule.period
        if isinstance(rule, _At):
            return rule.instant if rule.instant > after else None
        return self._next_cron(rule, after)

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every fire time in ``(start, end]``, ascending, in UTC."""
        if end.tzinfo is None or end.utcoffset() is None:
            raise ValueError(f"fire_times needs timezone-aware datetimes, got naive {end.isoformat()}")
        moment = self.next_after(start)
        while moment is not None and moment <= end:
            yield moment
            moment = self.next_after(moment)

    def _next_cron(self, rule: _Cron, after: datetime) -> datetime | None:
        """Walk candidate wall times in ascending order from ``after``'s wall minute; return the first that exists
        and lies after ``after``.

        Only the first occurrence of a repeated wall time fires, and that mapping from wall time to instant is
        increasing, so no fire after ``after`` has an earlier wall time than ``after``'s own: starting there is
        safe, and the first hit is the answer. Whole years, months and days that cannot match are skipped
        without looking at their minutes.
        """
        zone = self._zone
        floor = after.astimezone(zone).replace(tzinfo=None, fold=0, second=0, microsecond=0)
        for year in rule.years:
            if year < floor.year:
                continue
            for month in rule.months:
                if (year, month) < (floor.year, floor.month):
                    continue
                for day in rule.days_in(year, month):
                    on_floor_day = (year, month, day) == (floor.year, floor.month, floor.day)
                    if (year, month, day) < (floor.year, floor.month, floor.day):
                        continue
                    for hour in rule.hours:
                        if on_floor_day and hour < floor.hour:
                            continue
                        for minute in rule.minutes:
                            wall = datetime(year, month, day, hour, minute)
                            if wall < floor:
                                continue
                            instant = _local_instant(wall, zone)
                            if instant is not None and instant > after:
                                return instant
        return None


def parse_schedule(expression: str, timezone: str = "UTC") -> Schedule:
    """Parse and validate ``expression`` in IANA ``timezone``; raises ``ScheduleError`` saying what is wrong."""
    return Schedule(expression, timezone)
