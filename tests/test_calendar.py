"""Working days, deemed receipt and statutory deadlines, with every date worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.deadlines import is_out_of_time, stage2_request_by, stage_deadlines
from mailbot.workflow.policy import Policy, PolicyError, policy_from_mapping

LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def cal() -> WorkingCalendar:
    return WorkingCalendar(Policy(), LONDON)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def test_weekends_and_christmas_bank_holidays_are_not_working_days(cal: WorkingCalendar) -> None:
    assert cal.is_working_day(date(2026, 12, 24))  # Thursday
    assert not cal.is_working_day(date(2026, 12, 25))  # Christmas Day, Friday
    assert not cal.is_working_day(date(2026, 12, 26))  # Saturday
    assert not cal.is_working_day(date(2026, 12, 28))  # Boxing Day (substitute), Monday
    assert cal.is_working_day(date(2026, 12, 29))
    assert not cal.is_working_day(date(2027, 1, 1))  # New Year's Day


def test_easter_bank_holidays(cal: WorkingCalendar) -> None:
    assert not cal.is_working_day(date(2026, 4, 3))  # Good Friday
    assert not cal.is_working_day(date(2026, 4, 6))  # Easter Monday
    assert not cal.is_working_day(date(2027, 3, 26))
    assert not cal.is_working_day(date(2027, 3, 29))


@pytest.mark.parametrize(
    ("received", "deemed"),
    [
        (local(2026, 12, 18, 16, 59), date(2026, 12, 18)),  # Friday, before 17:00
        (local(2026, 12, 18, 17, 0), date(2026, 12, 18)),  # exactly 17:00 is not after it
        (local(2026, 12, 18, 17, 30), date(2026, 12, 21)),  # Friday evening -> Monday
        (local(2026, 12, 19, 9, 0), date(2026, 12, 21)),  # Saturday -> Monday
        (local(2026, 12, 24, 18, 0), date(2026, 12, 29)),  # Christmas Eve evening -> Tue 29th
        (local(2026, 12, 25, 11, 0), date(2026, 12, 29)),  # Christmas Day
        (local(2026, 4, 2, 17, 1), date(2026, 4, 7)),  # Maundy Thursday evening -> after Easter
    ],
)
def test_deemed_receipt(cal: WorkingCalendar, received: datetime, deemed: date) -> None:
    assert cal.deemed_receipt(received) == deemed


@pytest.mark.parametrize(
    ("received_utc", "deemed"),
    [
        # Before the clocks go forward (GMT): 16:30Z is 16:30 local, same day.
        (datetime(2026, 3, 27, 16, 30, tzinfo=UTC), date(2026, 3, 27)),
        # After (BST): 16:30Z is 17:30 local, so the next working day.
        (datetime(2026, 3, 30, 16, 30, tzinfo=UTC), date(2026, 3, 31)),
        # Last Friday of BST: 16:30Z is 17:30 local -> Monday 26 October.
        (datetime(2026, 10, 23, 16, 30, tzinfo=UTC), date(2026, 10, 26)),
        # First Monday of GMT again: 16:30Z is 16:30 local, same day.
        (datetime(2026, 10, 26, 16, 30, tzinfo=UTC), date(2026, 10, 26)),
    ],
)
def test_deemed_receipt_across_daylight_saving_changes(
    cal: WorkingCalendar, received_utc: datetime, deemed: date
) -> None:
    assert cal.deemed_receipt(received_utc) == deemed


def test_stage1_deadlines_over_christmas(cal: WorkingCalendar) -> None:
    # Monday 21 December 2026, 10:00. Day 0 is the 21st; 25th and 28th are bank holidays.
    dl = stage_deadlines(cal, 1, local(2026, 12, 21, 10, 0))
    assert dl.deemed_received == date(2026, 12, 21)
    # 22, 23, 24, 29, 30
    assert dl.acknowledgement_due == date(2026, 12, 30)
    # 22, 23, 24, 29, 30, 31, (1 Jan holiday), 4, 5, 6, 7
    assert dl.response_due == date(2027, 1, 7)


def test_response_runs_from_the_acknowledgement(cal: WorkingCalendar) -> None:
    dl = stage_deadlines(cal, 1, local(2026, 12, 21, 10, 0), acknowledged=local(2026, 12, 23, 9))
    # From Wed 23: 24, 29, 30, 31, 4, 5, 6, 7, 8, 11
    assert dl.response_due == date(2027, 1, 11)


def test_stage2_deadlines_over_easter(cal: WorkingCalendar) -> None:
    # Thursday 25 March 2027; Good Friday 26th and Easter Monday 29th.
    dl = stage_deadlines(cal, 2, local(2027, 3, 25, 10, 0))
    assert dl.acknowledgement_due == date(2027, 4, 5)  # 30, 31, 1, 2, 5
    # 20 working days: 30,31,1,2 (4) 5-9 (9) 12-16 (14) 19-23 (19) 26 (20)
    assert dl.response_due == date(2027, 4, 26)


def test_stage2_request_window_is_28_calendar_days(cal: WorkingCalendar) -> None:
    assert stage2_request_by(cal, date(2027, 1, 6)) == date(2027, 2, 3)


def test_closure_days_are_skipped() -> None:
    policy = policy_from_mapping(
        {"closure_dates": ["2026-12-29", "2026-12-30", "2026-12-31"]}
    )
    cal = WorkingCalendar(policy, LONDON)
    dl = stage_deadlines(cal, 1, local(2026, 12, 24, 10, 0))
    assert dl.acknowledgement_due == date(2027, 1, 8)  # 4, 5, 6, 7, 8 January


def test_working_day_arithmetic_goes_both_ways(cal: WorkingCalendar) -> None:
    assert cal.add_working_days(date(2026, 12, 30), -2) == date(2026, 12, 24)
    assert cal.working_days_between(date(2026, 12, 24), date(2026, 12, 30)) == 2
    assert cal.working_days_between(date(2026, 12, 30), date(2026, 12, 24)) == -2


def test_out_of_time_is_more_than_twelve_months(cal: WorkingCalendar) -> None:
    assert not is_out_of_time(cal, date(2025, 12, 21), date(2026, 12, 21))
    assert is_out_of_time(cal, date(2025, 12, 20), date(2026, 12, 21))


def test_policy_overrides_and_refuses_unknown_keys() -> None:
    p = policy_from_mapping({"stage1_acknowledgement_working_days": 3, "end_of_day": "16:00"})
    assert p.stage1_acknowledgement_working_days == 3
    assert p.end_of_day == time(16, 0)
    with pytest.raises(PolicyError, match="stage1_ack_days"):
        policy_from_mapping({"stage1_ack_days": 3})
    with pytest.raises(PolicyError, match="whole number"):
        policy_from_mapping({"stage1_response_working_days": "ten"})


def test_statutory_three_day_policy(cal: WorkingCalendar) -> None:
    cal3 = WorkingCalendar(policy_from_mapping({"stage1_acknowledgement_working_days": 3}), LONDON)
    assert stage_deadlines(cal3, 1, local(2026, 12, 21, 10)).acknowledgement_due == date(
        2026, 12, 24
    )
