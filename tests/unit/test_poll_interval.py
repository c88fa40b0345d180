"""The relay's adaptive poll: the schedule itself (the loops' use of it is in tests/integration/test_relay_polling.py)."""

import pytest

from shared.outbox.relay import PollInterval


def test_work_brings_the_next_poll_to_the_busy_interval():
    poll = PollInterval(busy=0.001, idle=0.05)
    assert poll.busy() == 0.001


def test_idle_cycles_double_the_wait_up_to_the_idle_interval():
    poll = PollInterval(busy=0.001, idle=0.05, linger=0)
    poll.busy()
    assert [poll.idle() for _ in range(8)] == [0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05, 0.05]


def test_soon_after_work_the_wait_stays_at_the_warm_interval_for_linger_cycles():
    poll = PollInterval(busy=0.001, idle=0.05, warm=0.004, linger=5)
    poll.busy()
    assert [poll.idle() for _ in range(9)] == [0.002, 0.004, 0.004, 0.004, 0.004, 0.008, 0.016, 0.032, 0.05]
    # Work again: the lingering starts over.
    poll.busy()
    assert [poll.idle() for _ in range(6)] == [0.002, 0.004, 0.004, 0.004, 0.004, 0.008]


def test_the_defaults_hold_4_ms_for_128_idle_cycles():
    poll = PollInterval()
    poll.busy()
    waits = [poll.idle() for _ in range(132)]
    assert waits == [0.002] + [0.004] * 127 + [0.008, 0.016, 0.032, 0.05]


def test_work_resets_the_backoff():
    poll = PollInterval(busy=0.001, idle=0.1, linger=0)
    poll.busy()
    for _ in range(10):
        poll.idle()
    assert poll.idle() == 0.1
    assert poll.busy() == 0.001
    assert poll.idle() == 0.002


def test_a_fresh_schedule_starts_idle():
    """A relay just started has no sign of work: it polls at the idle interval, as before."""
    assert PollInterval(busy=0.001, idle=0.05).idle() == 0.05


@pytest.mark.parametrize(("busy", "idle"), [(-0.001, 0.05), (0.001, -1)])
def test_negative_intervals_are_refused(busy, idle):
    with pytest.raises(ValueError, match="must not be negative"):
        PollInterval(busy=busy, idle=idle)


def test_an_idle_interval_below_the_busy_one_caps_both():
    """A relay configured to poll without pause (idle 0, as a fixed interval of 0 did) keeps doing so."""
    poll = PollInterval(busy=0.001, idle=0)
    assert [poll.busy(), poll.idle(), poll.idle()] == [0, 0, 0]
    poll = PollInterval(busy=0.01, idle=0.001)
    assert [poll.busy(), poll.idle()] == [0.001, 0.001]


def test_equal_busy_and_idle_intervals_poll_at_a_fixed_interval():
    poll = PollInterval(busy=0.05, idle=0.05)
    assert [poll.busy(), poll.idle(), poll.idle()] == [0.05, 0.05, 0.05]


def test_nonsense_linger_is_refused():
    with pytest.raises(ValueError, match="linger"):
        PollInterval(linger=-1)
