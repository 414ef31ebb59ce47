"""The statutory dates of a complaint, computed from the policy and a working calendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mailbot.workflow.calendar import WorkingCalendar


@dataclass(frozen=True)
class StageDeadlines:
    deemed_received: date
    acknowledgement_due: date
    response_due: date


def stage_deadlines(
    calendar: WorkingCalendar,
    stage: int,
    received: datetime,
    acknowledged: datetime | date | None = None,
) -> StageDeadlines:
    """Deadlines of stage 1 or 2 for a request received at ``received``.

    The response clock runs from the acknowledgement; when none has been sent yet we assume it
    goes out on the deemed receipt date, which is what mailbot's automatic acknowledgement does.
    """
    policy = calendar.policy
    if stage == 1:
        ack_days, response_days = (
            policy.stage1_acknowledgement_working_days,
            policy.stage1_response_working_days,
        )
    elif stage == 2:
        ack_days, response_days = (
            policy.stage2_acknowledgement_working_days,
            policy.stage2_response_working_days,
        )
    else:
        raise ValueError(f"stage must be 1 or 2, not {stage}")
    deemed = calendar.deemed_receipt(received)
    if acknowledged is None:
        ack_day = deemed
    elif isinstance(acknowledged, datetime):
        ack_day = calendar.local(acknowledged).date()
    else:
        ack_day = acknowledged
    return StageDeadlines(
        deemed_received=deemed,
        acknowledgement_due=calendar.add_working_days(deemed, ack_days),
        response_due=calendar.add_working_days(ack_day, response_days),
    )


def stage2_request_by(calendar: WorkingCalendar, responded: datetime | date) -> date:
    """Last calendar day on which a stage-2 review may be requested."""
    day = calendar.local(responded).date() if isinstance(responded, datetime) else responded
    return day + timedelta(days=calendar.policy.stage2_request_calendar_days)


def is_out_of_time(calendar: WorkingCalendar, incident: date, received: date) -> bool:
    """True when the incident is older than the complaint time limit (a manager must decide)."""
    months = calendar.policy.complaint_time_limit_months
    return incident < _months_before(received, months)


def _months_before(day: date, months: int) -> date:
    total = day.year * 12 + (day.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    # Clamp 29-31 to the last day of a shorter month (29 Feb - 12 months -> 28 Feb).
    for d in (day.day, 30, 29, 28):
        try:
            return date(year, month, min(day.day, d))
        except ValueError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover
