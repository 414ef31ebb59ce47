"""Stored reminders: keeping them in step with the plan, and the sweep that sends what is due.

The plan (``mailbot.workflow.reminders``) is recomputed whenever a case changes; rows still
planned for a deadline that moved are cancelled and new ones added, while sent rows are history
and never touched. The sweep claims the cases with reminders due (``FOR UPDATE SKIP LOCKED`` on
their rows) so that several workers on PostgreSQL never send the same reminder twice; after
downtime it sends only the latest due reminder of each chain (per deadline and recipient), not
one per missed day.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailbot.adapters.orm import cases, messages, reminders
from mailbot.adapters.staff_directory import StaffDirectory
from mailbot.config import Settings
from mailbot.services.compose import Composer
from mailbot.services.outbox import outbox_row
from mailbot.workflow import lifecycle
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, Status
from mailbot.workflow.reminders import MANAGER, OFFICER, REVIEWER, PlannedReminder, plan

log = logging.getLogger(__name__)
ACTOR = "mailbot"
DEADLINE_NAMES = {
    "stage1_acknowledgement": "confirm the investigating officer (stage 1 acknowledgement)",
    "stage1_response": "send the stage 1 response",
    "stage2_acknowledgement": "confirm the stage 2 reviewer (stage 2 acknowledgement)",
    "stage2_response": "send the stage 2 response",
    "triage": "triage the message (confirm or correct its classification)",
}


def _due_at(calendar: WorkingCalendar, day: date) -> datetime:
    return datetime.combine(day, calendar.policy.reminder_time, calendar.tz)


def replan(session: Session, case: Case, calendar: WorkingCalendar, now: datetime) -> None:
    """Bring the stored reminders of ``case`` in line with its current plan."""
    replan_many(session, [case], calendar, now)


def replan_many(
    session: Session, batch: Sequence[Case], calendar: WorkingCalendar, now: datetime
) -> None:
    """The same for many cases, in three statements whatever their number."""
    today = calendar.local(now).date()
    ids = [c.id for c in batch if c.id is not None]
    rows = session.execute(
        select(reminders.c.id, reminders.c.case_id, reminders.c.key, reminders.c.state)
        .where(reminders.c.case_id.in_(ids))
    ).all()
    existing: dict[int, dict[str, tuple[int, str]]] = {i: {} for i in ids}
    for row in rows:
        existing[row.case_id][row.key] = (row.id, row.state)
    stale: list[int] = []
    new: list[dict[str, object]] = []
    for case in batch:
        assert case.id is not None
        wanted = {r.key: r for r in plan(case, calendar, today)}
        have = existing[case.id]
        stale += [rid for key, (rid, state) in have.items()
                  if state == "planned" and key not in wanted]
        new += [_row(case.id, r, calendar, now) for key, r in wanted.items() if key not in have]
    if stale:
        session.execute(update(reminders).where(reminders.c.id.in_(stale))
                        .values(state="cancelled", changed_at=now))
    if new:
        session.execute(reminders.insert(), new)


def plan_rows(case: Case, calendar: WorkingCalendar, now: datetime) -> list[dict[str, object]]:
    """The reminder rows of a case that has none stored yet (a new one): no need to look."""
    assert case.id is not None
    today = calendar.local(now).date()
    return [_row(case.id, r, calendar, now) for r in plan(case, calendar, today)]


def _row(case_id: int, r: PlannedReminder, calendar: WorkingCalendar,
         now: datetime) -> dict[str, object]:
    return {
        "case_id": case_id, "key": r.key, "send_on": r.send_on,
        "due_at": _due_at(calendar, r.send_on), "recipient_role": r.recipient,
        "deadline": r.deadline, "deadline_date": r.deadline_date, "escalation": r.escalation,
        "state": "planned", "changed_at": now,
    }


def stored_plan(session: Session, case_id: int) -> list[dict[str, object]]:
    rows = session.execute(
        select(reminders).where(reminders.c.case_id == case_id)
        .order_by(reminders.c.send_on, reminders.c.id)
    ).mappings().all()
    return [
        {"key": r["key"], "send_on": r["send_on"].isoformat(), "recipient": r["recipient_role"],
         "address": r["recipient_address"], "deadline": r["deadline"],
         "deadline_date": r["deadline_date"].isoformat(), "escalation": r["escalation"],
         "state": r["state"]}
        for r in rows
    ]


@dataclass
class SweepResult:
    sent: int = 0
    superseded: int = 0
    closed: int = 0


@dataclass
class SweepContext:
    settings: Settings
    calendar: WorkingCalendar
    composer: Composer
    staff: StaffDirectory


def _address(ctx: SweepContext, case: Case, role: str) -> str:
    s = ctx.settings
    if role == MANAGER:
        return s.manager_address
    person = case.officer if role == OFFICER else case.reviewer if role == REVIEWER else None
    if person:
        member = ctx.staff.mentioned_in(person)
        if member is not None:
            return member.email
        if "@" in person:
            return person
    return s.team_address


def sweep(
    sessions: sessionmaker[Session], ctx: SweepContext, now: datetime, batch: int = 200
) -> SweepResult:
    result = SweepResult()
    result.closed = _close_expired_windows(sessions, ctx, now)
    while True:
        with sessions.begin() as session:
            # Claim whole cases that have something due (their ``cases`` rows): other workers
            # skip them. Claiming reminder rows instead let a batch boundary split one case's
            # due rows between two workers, which then deadlocked on each other's rows.
            claimed = session.execute(
                select(cases.c.id)
                .where(cases.c.id.in_(
                    select(reminders.c.case_id)
                    .where(reminders.c.state == "planned", reminders.c.due_at <= now)
                ))
                .order_by(cases.c.id)
                .limit(batch)
                .with_for_update(of=cases, skip_locked=True)
            ).scalars().all()
            case_ids = sorted(set(claimed))
            if not case_ids:
                break
            loaded = {c.id: c for c in session.scalars(
                select(Case).where(cases.c.id.in_(case_ids)))}
            # Re-plan as of now first: after downtime, later links of a chain (the second
            # and third overdue escalation) are due too, and only the latest of each chain
            # is sent. The plan also holds the next link, so nothing is needed after sending.
            replan_many(session, list(loaded.values()), ctx.calendar, now)
            due = session.execute(
                select(reminders)
                .where(reminders.c.case_id.in_(case_ids), reminders.c.state == "planned",
                       reminders.c.due_at <= now)
                .order_by(reminders.c.case_id, reminders.c.send_on, reminders.c.id)
            ).mappings().all()
            latest: dict[tuple[int, str, str], Any] = {}
            for row in due:
                latest[(row["case_id"], row["deadline"], row["recipient_role"])] = row
            keep = sorted(latest.values(), key=lambda r: r["id"])
            kept_ids = {r["id"] for r in keep}
            superseded = [row["id"] for row in due if row["id"] not in kept_ids]
            if superseded:
                session.execute(update(reminders).where(reminders.c.id.in_(superseded))
                                .values(state="superseded", changed_at=now))
                result.superseded += len(superseded)
            outbox_rows, sent_rows = [], []
            for row in keep:
                out, sent = _compose(ctx, loaded[row["case_id"]], row, now)
                outbox_rows.append(out)
                sent_rows.append(sent)
            if outbox_rows:
                session.execute(messages.insert(), outbox_rows)
                session.execute(
                    update(reminders).where(reminders.c.id == bindparam("rid")).values(
                        state="sent", recipient_address=bindparam("addr"),
                        outbox_message_id=bindparam("mid"), changed_at=now),
                    sent_rows,
                )
            result.sent += len(keep)
    return result


def _compose(
    ctx: SweepContext, case: Case, r: Any, now: datetime
) -> tuple[dict[str, object], dict[str, object]]:
    """The outbox row for one reminder, and the values that mark the reminder sent."""
    to = _address(ctx, case, r["recipient_role"])
    today = ctx.calendar.local(now).date()
    days = ctx.calendar.working_days_between(today, r["deadline_date"])
    composed = ctx.composer.compose(
        "reminder", to, now, urgent=r["escalation"],
        context={"case": case, "deadline": DEADLINE_NAMES.get(r["deadline"], r["deadline"]),
                 "deadline_date": r["deadline_date"], "days": days,
                 "escalation": r["escalation"], "role": r["recipient_role"],
                 "policy": ctx.settings.policy},
    )
    what = "escalation" if r["escalation"] else "reminder"
    case.record(now, ACTOR, what, f"{r['deadline']} {r['deadline_date']} to {to}")
    out = outbox_row(composed, case_id=case.id, to=to,
                     envelope_from=ctx.settings.team_address, template="reminder", now=now)
    return out, {"rid": r["id"], "addr": to, "mid": composed.message_id}


def _close_expired_windows(
    sessions: sessionmaker[Session], ctx: SweepContext, now: datetime
) -> int:
    """Close stage-1 cases whose 28-day window for a stage-2 request has passed."""
    today = ctx.calendar.local(now).date()
    closed = 0
    with sessions.begin() as session:
        expired = session.scalars(
            select(Case).where(cases.c.status == Status.RESPONDED, cases.c.kind == Kind.COMPLAINT,
                               cases.c.stage2_request_by < today)
            .with_for_update(skip_locked=True)
        ).all()
        for case in expired:
            lifecycle.close_after_stage1(case, now, ACTOR)
            replan(session, case, ctx.calendar, now)
            closed += 1
    return closed


