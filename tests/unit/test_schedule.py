"""EventBridge Scheduler expressions: hand-written fire times, rejected inputs, and a brute-force cross-check.

The expected times in the example table were worked out by hand from the calendar and the timezone rules (the
comments say how), never by running the code under test. Handy facts for 2025: 1 Jan is a Wednesday; US DST
starts Sun 9 Mar (02:00 EST -> 03:00 EDT) and ends Sun 2 Nov (02:00 EDT -> 01:00 EST); EU DST starts Sun 30 Mar
(02:00 CET -> 03:00 CEST) and ends Sun 26 Oct (03:00 CEST -> 02:00 CET).
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest

from shared.schedule import Schedule, ScheduleError, parse_schedule


def utc(text: str) -> datetime:
    """'2025-01-01 09:00' -> an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def next_n(schedule: Schedule, start: datetime, n: int) -> list[datetime | None]:
    out: list[datetime | None] = []
    moment: datetime | None = start
    for _ in range(n):
        moment = schedule.next_after(moment) if moment is not None else None
        out.append(moment)
    return out


EXAMPLES = [
    # --- every 15 minutes ------------------------------------------------------------------------------------
    pytest.param(
        "cron(0/15 * * * ? *)", "UTC", "2025-01-01 00:07",
        ["2025-01-01 00:15", "2025-01-01 00:30", "2025-01-01 00:45", "2025-01-01 01:00"],
        id="cron every 15 minutes",
    ),
    pytest.param(
        # Rates are anchored at the epoch, so they land on :00/:15/:30/:45 like the cron above.
        "rate(15 minutes)", "UTC", "2025-01-01 00:07:30",
        ["2025-01-01 00:15", "2025-01-01 00:30", "2025-01-01 00:45", "2025-01-01 01:00"],
        id="rate 15 minutes",
    ),
    pytest.param(
        # Strictly after: starting exactly on a fire time gives the next one. The timezone does not move a rate.
        "rate(15 minutes)", "America/New_York", "2025-01-01 00:15",
        ["2025-01-01 00:30", "2025-01-01 00:45"],
        id="rate strictly after",
    ),
    pytest.param(
        "rate(2 hours)", "UTC", "2025-01-01 01:00",
        ["2025-01-01 02:00", "2025-01-01 04:00", "2025-01-01 06:00"],
        id="rate 2 hours",
    ),
    pytest.param(
        # A day is 24 hours from the epoch: midnight UTC, even for a schedule in Tokyo.
        "rate(1 day)", "Asia/Tokyo", "2025-01-01 12:00",
        ["2025-01-02 00:00", "2025-01-03 00:00"],
        id="rate 1 day",
    ),
    # --- bills.monthly: 09:00 on the 10th in Ulaanbaatar (UTC+8 all year) = 01:00 UTC -----------------------
    pytest.param(
        "cron(0 9 10 * ? *)", "Asia/Ulaanbaatar", "2025-01-15 00:00",
        ["2025-02-10 01:00", "2025-03-10 01:00", "2025-04-10 01:00"],
        id="bills.monthly Ulaanbaatar",
    ),
    pytest.param(
        "cron(0 9 10 * ? *)", "Asia/Ulaanbaatar", "2025-01-10 00:59",
        ["2025-01-10 01:00", "2025-02-10 01:00"],
        id="bills.monthly same day",
    ),
    # --- day-of-week: 1 is SUNDAY ------------------------------------------------------------------------
    pytest.param(
        # 1 Jan 2025 is a Wednesday; the Sundays after it are 5, 12, 19 Jan.
        "cron(0 12 ? * 1 *)", "UTC", "2025-01-01 00:00",
        ["2025-01-05 12:00", "2025-01-12 12:00", "2025-01-19 12:00"],
        id="dow 1 is Sunday",
    ),
    pytest.param(
        # From Friday 3 Jan after 08:30: Mon 6 .. Fri 10, then Mon 13.
        "cron(30 8 ? * MON-FRI *)", "UTC", "2025-01-03 09:00",
        ["2025-01-06 08:30", "2025-01-07 08:30", "2025-01-08 08:30", "2025-01-09 08:30",
         "2025-01-10 08:30", "2025-01-13 08:30"],
        id="MON-FRI",
    ),
    pytest.param(
        "cron(0 6 ? * 2-6 *)", "UTC", "2025-01-03 09:00",  # 2-6 is MON-FRI in EventBridge numbering
        ["2025-01-06 06:00", "2025-01-07 06:00"],
        id="dow 2-6",
    ),
    # --- L in day-of-month ----------------------------------------------------------------------------------
    pytest.param(
        "cron(0 0 L * ? *)", "UTC", "2028-01-15 00:00",  # 2028 is a leap year
        ["2028-01-31 00:00", "2028-02-29 00:00", "2028-03-31 00:00", "2028-04-30 00:00"],
        id="L leap year",
    ),
    pytest.param(
        "cron(0 0 L * ? *)", "UTC", "2027-01-15 00:00",
        ["2027-01-31 00:00", "2027-02-28 00:00", "2027-03-31 00:00"],
        id="L non-leap year",
    ),
    # --- last / nth weekday -----------------------------------------------------------------------------------
    pytest.param(
        # Last Fridays of 2025: 31 Jan, 28 Feb, 28 Mar (31 Mar is a Monday), 25 Apr (30 Apr is a Wednesday).
        "cron(0 10 ? * 6L *)", "UTC", "2025-01-01 00:00",
        ["2025-01-31 10:00", "2025-02-28 10:00", "2025-03-28 10:00", "2025-04-25 10:00"],
        id="6L last Friday",
    ),
    pytest.param(
        # Second Tuesdays: Jan (Tue 7, 14) -> 14; Feb and Mar start on Saturday (Tue 4, 11) -> 11.
        "cron(0 9 ? * 3#2 *)", "UTC", "2025-01-01 00:00",
        ["2025-01-14 09:00", "2025-02-11 09:00", "2025-03-11 09:00"],
        id="3#2 second Tuesday",
    ),
    pytest.param(
        # A fifth Friday exists only in some months: 2025 has them on 31 Jan, 30 May, 29 Aug, 31 Oct.
        "cron(0 9 ? * FRI#5 *)", "UTC", "2025-01-01 00:00",
        ["2025-01-31 09:00", "2025-05-30 09:00", "2025-08-29 09:00", "2025-10-31 09:00"],
        id="FRI#5 skips months without one",
    ),
    # --- W: nearest weekday, never leaving the month -----------------------------------------------------
    pytest.param(
        # 15 Jan Wed -> 15; 15 Feb Sat -> Fri 14; 15 Mar Sat -> Fri 14; 15 Apr Tue -> 15.
        "cron(0 9 15W * ? *)", "UTC", "2025-01-01 00:00",
        ["2025-01-15 09:00", "2025-02-14 09:00", "2025-03-14 09:00", "2025-04-15 09:00"],
        id="15W",
    ),
    pytest.param(
        # 1 Feb and 1 Mar 2025 are Saturdays: the nearest weekday inside the month is Monday the 3rd.
        "cron(0 9 1W * ? *)", "UTC", "2025-01-02 00:00",
        ["2025-02-03 09:00", "2025-03-03 09:00", "2025-04-01 09:00"],
        id="1W on a Saturday",
    ),
    pytest.param(
        # 31 Aug 2025 is a Sunday -> Friday 29; Sep has no 31st -> nothing; 31 Oct Fri; Nov none; 31 Dec Wed.
        "cron(0 9 31W * ? *)", "UTC", "2025-08-01 00:00",
        ["2025-08-29 09:00", "2025-10-31 09:00", "2025-12-31 09:00"],
        id="31W on a Sunday",
    ),
    pytest.param(
        # Last weekdays: 31 May Sat -> 30; 30 Jun Mon; 31 Jul Thu; 31 Aug Sun -> 29.
        "cron(0 18 LW * ? *)", "UTC", "2025-05-01 00:00",
        ["2025-05-30 18:00", "2025-06-30 18:00", "2025-07-31 18:00", "2025-08-29 18:00"],
        id="LW",
    ),
    # --- year field ---------------------------------------------------------------------------------------
    pytest.param(
        "cron(0 0 1 1 ? 2026-2027)", "UTC", "2025-06-01 00:00",
        ["2026-01-01 00:00", "2027-01-01 00:00", None, None],
        id="year range then None",
    ),
    pytest.param("cron(0 0 1 1 ? 2020)", "UTC", "2025-06-01 00:00", [None], id="year passed"),
    pytest.param(
        "cron(0 0 29 FEB ? *)", "UTC", "2025-01-01 00:00",  # only leap years have it
        ["2028-02-29 00:00", "2032-02-29 00:00"],
        id="29 Feb waits for leap years",
    ),
    # --- DST: gaps are skipped, repeats fire once (first occurrence) --------------------------------------
    pytest.param(
        # 02:30 New York: 8 Mar EST (07:30Z); 9 Mar does not exist -> skipped; 10 Mar EDT (06:30Z).
        "cron(30 2 * * ? *)", "America/New_York", "2025-03-07 12:00",
        ["2025-03-08 07:30", "2025-03-10 06:30", "2025-03-11 06:30"],
        id="New York spring gap skipped",
    ),
    pytest.param(
        # 01:30 New York on 2 Nov happens twice (05:30Z EDT, 06:30Z EST); it fires once, at the first.
        "cron(30 1 * * ? *)", "America/New_York", "2025-11-01 12:00",
        ["2025-11-02 05:30", "2025-11-03 06:30", "2025-11-04 06:30"],
        id="New York fall repeat once",
    ),
    pytest.param(
        # Every 30 minutes across the fall-back: 01:00 and 01:30 EDT fire; their EST repeats do not; then 02:00 EST.
        "cron(0/30 * * * ? *)", "America/New_York", "2025-11-02 04:50",
        ["2025-11-02 05:00", "2025-11-02 05:30", "2025-11-02 07:00", "2025-11-02 07:30"],
        id="New York fall repeated hour once",
    ),
    pytest.param(
        # Every 30 minutes across the spring gap: 01:30 EST (06:30Z), then 03:00 EDT (07:00Z).
        "cron(0/30 * * * ? *)", "America/New_York", "2025-03-09 06:10",
        ["2025-03-09 06:30", "2025-03-09 07:00", "2025-03-09 07:30"],
        id="New York spring gap minutes",
    ),
    pytest.param(
        # 02:30 Berlin: 29 Mar CET (01:30Z); 30 Mar does not exist; 31 Mar CEST (00:30Z).
        "cron(30 2 * * ? *)", "Europe/Berlin", "2025-03-29 00:00",
        ["2025-03-29 01:30", "2025-03-31 00:30"],
        id="Berlin spring gap skipped",
    ),
    pytest.param(
        # 02:30 Berlin on 26 Oct happens at 00:30Z (CEST) and 01:30Z (CET): fires at 00:30Z only.
        "cron(30 2 * * ? *)", "Europe/Berlin", "2025-10-25 12:00",
        ["2025-10-26 00:30", "2025-10-27 01:30"],
        id="Berlin fall repeat once",
    ),
    pytest.param(
        # Starting inside the repeat (the second 02:10 Berlin, 01:10Z): the 02:30 of the second pass is not a fire.
        "cron(30 2 * * ? *)", "Europe/Berlin", "2025-10-26 01:10",
        ["2025-10-27 01:30"],
        id="Berlin start inside repeat",
    ),
    # --- at(): once, in local time --------------------------------------------------------------------------
    pytest.param(
        "at(2025-06-01T09:00:00)", "America/New_York", "2025-01-01 00:00",  # EDT, UTC-4
        ["2025-06-01 13:00", None],
        id="at once",
    ),
    pytest.param(
        "at(2025-11-02T01:30:00)", "America/New_York", "2025-01-01 00:00",  # repeated time: first (EDT)
        ["2025-11-02 05:30", None],
        id="at in repeated hour",
    ),
    pytest.param("at(2025-06-01T09:00:00)", "UTC", "2025-06-01 09:00", [None], id="at already passed"),
]


@pytest.mark.parametrize("expression, tz, start, expected", EXAMPLES)
def test_fire_times_by_hand(expression: str, tz: str, start: str, expected: list[str | None]) -> None:
    schedule = parse_schedule(expression, tz)
    got = next_n(schedule, utc(start), len(expected))
    assert got == [utc(e) if e else None for e in expected]
    for moment in got:
        assert moment is None or moment.utcoffset() == timedelta(0)


def test_day_of_week_1_is_sunday() -> None:
    schedule = parse_schedule("cron(0 12 ? * 1 *)")
    for moment in next_n(schedule, utc("2025-01-01 00:00"), 10):
        assert moment is not None and moment.weekday() == calendar.SUNDAY


def test_mon_fri_fires_only_on_weekdays() -> None:
    schedule = parse_schedule("cron(0 9 ? * MON-FRI *)", "Europe/Berlin")
    zone = ZoneInfo("Europe/Berlin")
    days = [m.astimezone(zone) for m in schedule.fire_times(utc("2025-01-01 00:00"), utc("2025-02-01 00:00"))]
    assert len(days) == 23  # January 2025 has 23 weekdays
    assert all(d.weekday() < 5 and (d.hour, d.minute) == (9, 0) for d in days)


def test_fire_times_is_half_open() -> None:
    schedule = parse_schedule("cron(0 * * * ? *)")
    got = list(schedule.fire_times(utc("2025-01-01 00:00"), utc("2025-01-01 03:00")))
    assert got == [utc("2025-01-01 01:00"), utc("2025-01-01 02:00"), utc("2025-01-01 03:00")]


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("rate(5 minutes)").next_after(datetime(2025, 1, 1))


def test_aware_input_in_any_zone() -> None:
    schedule = parse_schedule("cron(0 9 10 * ? *)", "Asia/Ulaanbaatar")
    tokyo = datetime(2025, 1, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert schedule.next_after(tokyo) == utc("2025-01-10 01:00")


def test_never_matching_cron_returns_none_quickly() -> None:
    schedule = parse_schedule("cron(0 0 30 2 ? *)")  # 30 February: valid syntax, never fires
    began = time.perf_counter()
    assert schedule.next_after(utc("2025-01-01 00:00")) is None
    assert time.perf_counter() - began < 2


def test_schedule_is_a_value() -> None:
    assert Schedule("rate(5 minutes)") == parse_schedule("rate(5 minutes)", "UTC")
    assert {parse_schedule("cron(0 9 10 * ? *)", "Asia/Ulaanbaatar")}  # hashable
    assert repr(parse_schedule("rate(1 hour)")) == "Schedule(expression='rate(1 hour)', timezone='UTC')"


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 9 * * ? *)",  # every day: '*' day-of-month with '?' day-of-week is how AWS spells it
        "cron(0 9 ? * * *)",
        "cron(*/5 9-17 ? * MON-FRI *)",
        "cron(5-30/5 0,12 1,15 JAN-MAR ? 2025/2)",
        "cron(0 8 ? * L *)",  # bare L in day-of-week = Saturday
        "cron(0 8 ? * FRIL *)",
        "cron(0 8 ? * sun#1 *)",
        "rate(1 minute)",
        "rate(5 minutes)",
        "rate(1 hour)",
        "rate(12 hours)",
        "rate(1 day)",
        "rate(7 days)",
        "at(2030-01-01T00:00:00)",
    ],
)
def test_valid_expressions(expression: str) -> None:
    assert parse_schedule(expression).expression == expression


BAD = [
    ("cron(0 9 * * ?)", "UTC", "expected 6 space-separated fields"),
    ("cron(0 9 10 * MON *)", "UTC", "day-of-month and day-of-week cannot both be specified; use '?' in one"),
    ("cron(0 9 * * * *)", "UTC", "day-of-month and day-of-week cannot both be specified"),
    ("cron(0 9 ? * ? *)", "UTC", "cannot both be '?'"),
    ("cron(? 9 * * ? *)", "UTC", "minutes: '?' is only allowed"),
    ("cron(0 9 1 13 ? *)", "UTC", "month value 13 out of range 1-12"),
    ("cron(0 9 1 FOO ? *)", "UTC", "month: invalid value 'FOO'"),
    ("cron(60 9 * * ? *)", "UTC", "minutes value 60 out of range 0-59"),
    ("cron(0 24 * * ? *)", "UTC", "hours value 24 out of range 0-23"),
    ("cron(0 9 32 * ? *)", "UTC", "day-of-month value 32 out of range 1-31"),
    ("cron(0 9 ? * 0 *)", "UTC", "day-of-week value 0 out of range 1-7"),
    ("cron(0 9 * * ? 1969)", "UTC", "year value 1969 out of range 1970-2199"),
    ("cron(0 17-9 * * ? *)", "UTC", "hours range 17-9 is reversed"),
    ("cron(0 9 ? * FRI-MON *)", "UTC", "day-of-week range FRI-MON is reversed"),
    ("cron(0/0 9 * * ? *)", "UTC", "step '0' must be a positive integer"),
    ("cron(0,,5 9 * * ? *)", "UTC", "minutes: empty item"),
    ("cron(abc 9 * * ? *)", "UTC", "minutes: invalid value 'abc'"),
    ("cron(0 9 ? * 8#1 *)", "UTC", "day-of-week value 8 out of range 1-7"),
    ("cron(0 9 ? * 3#6 *)", "UTC", "occurrence 6 out of range 1-5"),
    ("cron(0 9 ? * 6L,2 *)", "UTC", "must be used alone"),
    ("cron(0 9 L-3 * ? *)", "UTC", "day-of-month: invalid value 'L-3'"),
    ("cron(0 9 0W * ? *)", "UTC", "day-of-month value 0 out of range 1-31"),
    ("cron()", "UTC", "got 0"),
    ("rate(1 minutes)", "UTC", "use 'minute' for a value of 1"),
    ("rate(5 minute)", "UTC", "use 'minutes' for a value of 5"),
    ("rate(0 minutes)", "UTC", "value '0' must be a positive integer"),
    ("rate(-5 minutes)", "UTC", "must be a positive integer"),
    ("rate(5 weeks)", "UTC", "unknown unit 'weeks'"),
    # EventBridge Scheduler fires at most once a minute.
    ("rate(30 seconds)", "UTC", "shortest rate is rate(1 minute); seconds are not a unit"),
    ("rate(1 second)", "UTC", "shortest rate is rate(1 minute)"),
    ("rate(5)", "UTC", "expected 'rate(value unit)'"),
    ("at(2025-13-01T00:00:00)", "UTC", "invalid date or time"),
    ("at(2025-06-01 09:00)", "UTC", "expected 'at(yyyy-mm-ddThh:mm:ss)'"),
    ("at(2025-03-09T02:30:00)", "America/New_York", "does not exist in America/New_York"),
    ("every(5 minutes)", "UTC", "expected cron(...), rate(...) or at(...)"),
    ("cron(0 9 * * ? *)", "Mars/Base", "unknown timezone 'Mars/Base'"),
    ("rate(5 minutes)", "", "unknown timezone ''"),
    # The system's tz database holds more than IANA names; EventBridge Scheduler accepts only those.
    ("rate(1 day)", "posix/Europe/Berlin", "timezone 'posix/Europe/Berlin' is the system's copy of 'Europe/Berlin'"),
    ("rate(1 day)", "right/UTC", "timezone 'right/UTC' counts leap seconds"),
    ("rate(1 day)", "localtime", "timezone 'localtime' is a file of the system's tz database, not an IANA timezone"),
]


@pytest.mark.parametrize("expression, tz, message", BAD)
def test_rejected(expression: str, tz: str, message: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(expression, tz)
    assert message in str(raised.value)
    if "timezone" not in message:
        assert expression in str(raised.value)  # the message names the expression


def test_schedule_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Schedule("cron(0 9 * * * *)")


# --- cross-check against a brute-force oracle --------------------------------------------------------------
#
# The oracle steps minute by minute through UTC, converts each instant to local wall time, and tests the cron
# fields against that wall time directly. DST falls out of that naturally: a gap's wall times are never produced,
# and of a repeated wall time only the first occurrence (fold=0) is allowed to fire.

_DOW = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def _values(text: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            a, b = low, high
        elif "-" in base:
            a, b = (int(_DOW.get(x, x)) for x in base.split("-"))
        else:
            a = int(_DOW.get(base, base))
            b = high if step else a
        out.update(range(a, b + 1, int(step or 1)))
    return out


def _oracle_matches(fields: list[str], wall: datetime) -> bool:
    minute, hour, dom, month, dow, year = fields
    if not (
        wall.minute in _values(minute, 0, 59)
        and wall.hour in _values(hour, 0, 23)
        and wall.month in _values(month, 1, 12)
        and wall.year in _values(year, 1970, 2199)
    ):
        return False
    last = calendar.monthrange(wall.year, wall.month)[1]
    aws_dow = {6: 1, 0: 2, 1: 3, 2: 4, 3: 5, 4: 6, 5: 7}[wall.weekday()]
    if dom != "?":
        if dom == "L":
            return wall.day == last
        if dom.endswith("W"):
            target = last if dom == "LW" else int(dom[:-1])
            if target > last:
                return False
            # Scan the weekdays of the month for the one closest to the target (ties cannot happen).
            weekdays = [d for d in range(1, last + 1) if date(wall.year, wall.month, d).weekday() < 5]
            return wall.day == min(weekdays, key=lambda d: abs(d - target))
        return wall.day in _values(dom, 1, 31)
    if "#" in dow:
        d, n = dow.split("#")
        return aws_dow == int(_DOW.get(d, d)) and (wall.day - 1) // 7 + 1 == int(n)
    if dow.endswith("L"):
        return aws_dow == int(dow[:-1]) and wall.day + 7 > last
    return aws_dow in _values(dow, 1, 7)


@cache
def _walls(tz: str, start: datetime, days: int) -> list[tuple[datetime, datetime]]:
    zone = ZoneInfo(tz)
    out = []
    for i in range(1, days * 1440 + 1):
        instant = start + timedelta(minutes=i)
        out.append((instant, instant.astimezone(zone)))
    return out


def _oracle(expression: str, tz: str, start: datetime, days: int) -> list[datetime]:
    fields = expression[len("cron(") : -1].split()
    return [
        instant
        for instant, local in _walls(tz, start, days)
        if local.fold == 0 and _oracle_matches(fields, local.replace(tzinfo=None))
    ]


WINDOWS = [
    ("America/New_York", utc("2025-02-20 00:00")),  # spans 9 Mar spring-forward and two month ends
    ("America/New_York", utc("2025-10-15 00:00")),  # spans 2 Nov fall-back
    ("Europe/Berlin", utc("2025-10-01 00:00")),  # spans 26 Oct fall-back
    ("Europe/Berlin", utc("2025-03-10 00:00")),  # spans 30 Mar spring-forward
]
ORACLE_EXPRESSIONS = [
    "cron(0/15 * * * ? *)",
    "cron(30 2 * * ? *)",
    "cron(10,40 1-3 ? * MON-FRI *)",
    "cron(0 2 ? * 1#2 *)",  # second Sunday 02:00: inside New York's gap on 9 Mar
    "cron(30 2 ? * 1L *)",  # last Sunday 02:30: Berlin's gap in March, its repeat in October
    "cron(45 1 L * ? *)",
    "cron(0 */2 15W * ? *)",
    "cron(5 9 LW * ? *)",
    "cron(0 0 1W * ? *)",
    "cron(7 * ? * SAT,SUN *)",
]


@pytest.mark.parametrize("tz, start", WINDOWS)
@pytest.mark.parametrize("expression", ORACLE_EXPRESSIONS)
def test_matches_brute_force_oracle(expression: str, tz: str, start: datetime) -> None:
    days = 40
    end = start + timedelta(days=days)
    expected = _oracle(expression, tz, start, days)
    assert list(parse_schedule(expression, tz).fire_times(start, end)) == expected
