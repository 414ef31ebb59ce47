"""The reminder plan: who must hear about which deadline, and on which working day.

A plan is computed from the case and the policy alone, so it can be recomputed at any time (after
an assignment, an extension, a response) and compared with what is stored: reminders still
planned for a date that no longer applies are cancelled, new ones added. Each reminder has a
stable key that includes the deadline it is about, so the same reminder is never sent twice and
an extension produces new keys rather than rewriting history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, Status

TEAM, MANAGER, OFFICER, REVIEWER = "team", "manager", "officer", "reviewer"


@dataclass(frozen=True)
class PlannedReminder:
    key: str
    send_on: date  # the working day it goes out (at the start of that day)
    recipient: str  # a role: team, manager, officer or reviewer
    deadline: str  # which clock: stage1_acknowledgement, stage1_response, ...
    deadline_date: date
    escalation: bool  # True when it goes up to a manager because a deadline was missed


def plan(case: Case, calendar: WorkingCalendar, today: date) -> list[PlannedReminder]:
    """Every reminder the case should have, up to the next one after ``today``.

    Overdue escalations repeat every N working days until a response is recorded; the plan lists
    those already due by ``today`` and the next one, so a sweep that runs after downtime sends
    only what is due now, once.
    """
    if case.status == Status.CLOSED:
        return []
    if case.kind != Kind.COMPLAINT:
        return _triage_plan(case, calendar)
    out: list[PlannedReminder] = []
    if case.stage == 1 and case.status == Status.OPEN:
        out += _stage_plan(case, calendar, today, 1, case.acknowledgement_due, case.response_due,
                           case.officer, OFFICER)
    elif case.stage == 2 and case.status == Status.STAGE2 and case.stage2_responded_on is None:
        out += _stage_plan(case, calendar, today, 2, case.stage2_acknowledgement_due,
                           case.stage2_response_due, case.reviewer, REVIEWER)
    if case.flag_needs_triage:
        out += _triage_plan(case, calendar)
    return out


def _stage_plan(
    case: Case,
    calendar: WorkingCalendar,
    today: date,
    stage: int,
    ack_due: date | None,
    response_due: date | None,
    owner: str | None,
    owner_role: str,
) -> list[PlannedReminder]:
    p = calendar.policy
    out: list[PlannedReminder] = []
    ack_clock = f"stage{stage}_acknowledgement"
    response_clock = f"stage{stage}_response"
    if ack_due is not None and not owner:
        out.append(PlannedReminder(
            f"{ack_clock}:{ack_due}:unassigned-reminder",
            calendar.add_working_days(ack_due, -p.unassigned_reminder_days_before),
            TEAM, ack_clock, ack_due, False))
        out.append(PlannedReminder(
            f"{ack_clock}:{ack_due}:unassigned-escalation",
            calendar.next_working_day(ack_due), MANAGER, ack_clock, ack_due, True))
    if response_due is None:
        return out
    owner_or_team = owner_role if owner else TEAM
    # The recipient is part of the key: assigning an officer replaces the team's reminders.
    out.append(PlannedReminder(
        f"{response_clock}:{response_due}:reminder:{owner_or_team}",
        calendar.add_working_days(response_due, -p.officer_reminder_days_before),
        owner_or_team, response_clock, response_due, False))
    out.append(PlannedReminder(
        f"{response_clock}:{response_due}:due-today:{owner_or_team}",
        _on_or_after(calendar, response_due),
        owner_or_team, response_clock, response_due, False))
    out.append(PlannedReminder(
        f"{response_clock}:{response_due}:due-today-manager", _on_or_after(calendar, response_due),
        MANAGER, response_clock, response_due, False))
    send_on = calendar.next_working_day(response_due)
    n = 1
    while True:
        out.append(PlannedReminder(
            f"{response_clock}:{response_due}:overdue-{n}", send_on, MANAGER, response_clock,
            response_due, True))
        if send_on > today:
            break
        send_on = calendar.add_working_days(send_on, p.overdue_escalation_every_days)
        n += 1
    return out


def _triage_plan(case: Case, calendar: WorkingCalendar) -> list[PlannedReminder]:
    if not case.flag_needs_triage:
        return []
    days = calendar.policy.triage_escalation_after_days
    # "Not triaged by the end of the next working day": escalate the working day after that.
    deadline = calendar.add_working_days(case.deemed_received, days)
    return [PlannedReminder(
        f"triage:{case.deemed_received}:escalation", calendar.next_working_day(deadline), TEAM,
        "triage", deadline, True)]


def _on_or_after(calendar: WorkingCalendar, day: date) -> date:
    return day if calendar.is_working_day(day) else calendar.next_working_day(day)
