"""What staff may do to a case, and what each action changes.

Each function checks every rule before it changes anything, so a refused action leaves the case
exactly as it was; the caller's transaction then has nothing half-written to roll back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.deadlines import is_out_of_time, stage2_request_by, stage_deadlines
from mailbot.workflow.model import Case, Extension, Kind, ServiceArea, Source, Status


class RuleViolation(Exception):
    """An action that the complaints procedure does not allow; ``rule`` is a stable short name."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (rule: {self.rule})"


@dataclass(frozen=True)
class NewCase:
    """What is known about a case when it is opened, from an email, a call or a letter."""

    kind: Kind
    source: Source
    received_at: datetime
    requester_name: str = ""
    requester_email: str | None = None
    requester_phone: str | None = None
    service_area: ServiceArea = ServiceArea.SOCIAL_CARE
    summary: str = ""
    incident_date: date | None = None
    classifier_label: str | None = None
    classifier_confidence: float | None = None
    safeguarding: bool = False
    needs_triage: bool = False
    related_ref: str | None = None


def open_case(
    ref: str, new: NewCase, calendar: WorkingCalendar, now: datetime, actor: str
) -> Case:
    deemed = calendar.deemed_receipt(new.received_at)
    case = Case(
        ref=ref,
        kind=new.kind,
        source=new.source,
        received_at=calendar.local(new.received_at),
        deemed_received=deemed,
        requester_name=new.requester_name,
        requester_email=new.requester_email,
        requester_phone=new.requester_phone,
        service_area=new.service_area,
        summary=new.summary,
        incident_date=new.incident_date,
        classifier_label=new.classifier_label,
        classifier_confidence=new.classifier_confidence,
        flag_safeguarding=new.safeguarding,
        flag_needs_triage=new.needs_triage,
        flag_needs_letter=not new.requester_email,
        related_ref=new.related_ref,
    )
    if new.incident_date is not None and is_out_of_time(calendar, new.incident_date, deemed):
        case.flag_out_of_time = True
    _start_clock(case, calendar)
    case.record(now, actor, "opened", f"{case.kind} via {case.source}, deemed received {deemed}")
    if case.flag_out_of_time:
        case.record(now, actor, "flagged", "out of time: incident more than the time limit ago")
    return case


def _start_clock(case: Case, calendar: WorkingCalendar) -> None:
    if case.kind != Kind.COMPLAINT:
        return
    dl = stage_deadlines(calendar, 1, case.received_at)
    case.acknowledgement_due = dl.acknowledgement_due
    case.response_due = dl.response_due


def _require_open(case: Case, action: str) -> None:
    if case.status == Status.CLOSED:
        raise RuleViolation("case-closed", f"{case.ref} is closed; reopen it before you {action}")


def _require_complaint(case: Case, action: str) -> None:
    if case.kind != Kind.COMPLAINT:
        raise RuleViolation(
            "not-a-complaint",
            f"{case.ref} is a {case.kind}, which has no complaint stages; cannot {action}",
        )


def _require_name(value: str | None, what: str) -> str:
    if value is None or not value.strip():
        raise RuleViolation("name-required", f"{what} must be given")
    return value.strip()


def acknowledge(case: Case, on: date, now: datetime, actor: str) -> None:
    """Record that the acknowledgement of the current stage went out on ``on``."""
    if case.stage == 2:
        if case.stage2_acknowledged_on is None:
            case.stage2_acknowledged_on = on
    elif case.acknowledged_on is None:
        case.acknowledged_on = on
    case.record(now, actor, "acknowledged", f"stage {case.stage} acknowledged on {on}")


def assign(
    case: Case,
    now: datetime,
    by: str,
    officer: str | None = None,
    reviewer: str | None = None,
) -> None:
    """Name the stage-1 investigating officer and/or the stage-2 reviewer."""
    by = _require_name(by, "who is acting (--by)")
    _require_open(case, "assign")
    if officer is None and reviewer is None:
        raise RuleViolation("name-required", "name an investigating officer or a reviewer")
    if officer is not None:
        officer = _require_name(officer, "the investigating officer")
        if case.reviewer and case.reviewer.casefold() == officer.casefold():
            raise RuleViolation(
                "independent-reviewer",
                f"{officer} is the stage-2 reviewer of {case.ref} and cannot also be its officer",
            )
    if reviewer is not None:
        reviewer = _require_name(reviewer, "the stage-2 reviewer")
        _require_complaint(case, "assign a stage-2 reviewer")
        _check_reviewer(case, reviewer)
    if officer is not None:
        previous = case.officer
        case.officer = officer
        detail = f"investigating officer {officer}" + (f" (was {previous})" if previous else "")
        case.record(now, by, "assigned", detail)
    if reviewer is not None:
        case.reviewer = reviewer
        case.record(now, by, "assigned", f"stage-2 reviewer {reviewer}")


def _check_reviewer(case: Case, reviewer: str) -> None:
    if case.officer and case.officer.casefold() == reviewer.casefold():
        raise RuleViolation(
            "independent-reviewer",
            f"the stage-2 reviewer must not be the stage-1 investigating officer ({case.officer})",
        )


def respond(
    case: Case,
    on: date,
    calendar: WorkingCalendar,
    now: datetime,
    by: str,
    outcome: str | None = None,
) -> None:
    """Record the response of the current stage; a stage-1 response starts the 28-day window."""
    by = _require_name(by, "who is acting (--by)")
    _require_open(case, "record a response")
    _require_complaint(case, "record a stage response")
    calendar_note = ""
    if case.status == Status.OPEN and case.stage == 1:
        if not case.officer:
            raise RuleViolation(
                "officer-required",
                f"{case.ref} has no investigating officer; assign one before the response",
            )
        case.responded_on = on
        case.status = Status.RESPONDED
        set_stage2_window(case, calendar)
        if case.response_due and on > case.response_due:
            calendar_note = f", late (due {case.response_due})"
    elif case.status == Status.STAGE2:
        if not case.reviewer:
            raise RuleViolation(
                "reviewer-required",
                f"{case.ref} has no stage-2 reviewer; assign one before the stage-2 response",
            )
        case.stage2_responded_on = on
        if case.stage2_response_due and on > case.stage2_response_due:
            calendar_note = f", late (due {case.stage2_response_due})"
    else:
        raise RuleViolation(
            "already-responded", f"the stage-{case.stage} response of {case.ref} is recorded"
        )
    if outcome:
        case.outcome = outcome.strip()
    case.record(now, by, "responded", f"stage {case.stage} response on {on}{calendar_note}")


def set_stage2_window(case: Case, calendar: WorkingCalendar) -> None:
    if case.responded_on is not None:
        case.stage2_request_by = stage2_request_by(calendar, case.responded_on)


def extend(
    case: Case, new_due: date, reason: str, now: datetime, by: str
) -> Extension:
    """Agree a later response date for the current stage."""
    by = _require_name(by, "who is acting (--by)")
    _require_open(case, "extend")
    _require_complaint(case, "extend a response deadline")
    if not reason or not reason.strip():
        raise RuleViolation("extension-reason", "an extension needs a reason")
    if case.stage == 2:
        if case.status != Status.STAGE2 or case.stage2_responded_on is not None:
            raise RuleViolation("already-responded", f"stage 2 of {case.ref} has been answered")
        current = case.stage2_response_due
    else:
        if case.status != Status.OPEN:
            raise RuleViolation("already-responded", f"stage 1 of {case.ref} has been answered")
        current = case.response_due
    assert current is not None
    if new_due <= current:
        raise RuleViolation(
            "extension-later",
            f"the new date {new_due} must be later than the current response date {current}",
        )
    ext = Extension(
        stage=case.stage, reason=reason.strip(), previous_due=current, new_due=new_due,
        by=by, at=now,
    )
    case.extensions.append(ext)
    if case.stage == 2:
        case.stage2_response_due = new_due
    else:
        case.response_due = new_due
    detail = f"stage {case.stage} response {current} -> {new_due}: {ext.reason}"
    case.record(now, by, "extended", detail)
    return ext


def request_stage2(
    case: Case,
    requested_at: datetime,
    calendar: WorkingCalendar,
    now: datetime,
    by: str,
    reviewer: str | None = None,
) -> None:
    """Open a stage-2 review. A late request is accepted but flagged for a manager."""
    by = _require_name(by, "who is acting (--by)")
    _require_complaint(case, "request a stage-2 review")
    if case.status != Status.RESPONDED or case.responded_on is None:
        raise RuleViolation(
            "stage1-response-required",
            f"{case.ref} has no stage-1 response yet; stage 2 follows the stage-1 response",
        )
    if reviewer is not None:
        reviewer = _require_name(reviewer, "the stage-2 reviewer")
        _check_reviewer(case, reviewer)
    requested_at = calendar.local(requested_at)
    dl = stage_deadlines(calendar, 2, requested_at)
    if case.stage2_request_by is None:
        set_stage2_window(case, calendar)
    case.stage = 2
    case.status = Status.STAGE2
    case.stage2_requested_at = requested_at
    case.stage2_acknowledgement_due = dl.acknowledgement_due
    case.stage2_response_due = dl.response_due
    window = case.stage2_request_by
    if window is not None and calendar.local(requested_at).date() > window:
        case.flag_late_stage2 = True
    if reviewer is not None:
        case.reviewer = reviewer
    detail = f"stage 2 requested, deemed received {dl.deemed_received}"
    if case.flag_late_stage2:
        detail += f"; after the window that closed {window}: a manager must decide"
    case.record(now, by, "stage2_requested", detail)
    if reviewer is not None:
        case.record(now, by, "assigned", f"stage-2 reviewer {reviewer}")


def close(case: Case, now: datetime, by: str, policy_ombudsman: str | None,
          outcome: str | None = None) -> None:
    """Close the case; after stage 2 the outcome signposts the right ombudsman."""
    by = _require_name(by, "who is acting (--by)")
    _require_open(case, "close it")
    if case.kind == Kind.COMPLAINT and case.stage == 2 and case.stage2_responded_on is None:
        raise RuleViolation(
            "stage2-response-required",
            f"{case.ref} is in stage 2; record the stage-2 response before closing",
        )
    if outcome:
        case.outcome = outcome.strip()
    detail = ""
    if case.kind == Kind.COMPLAINT and case.stage == 2:
        case.ombudsman = policy_ombudsman
        detail = f"signposted to {policy_ombudsman}"
    case.status = Status.CLOSED
    case.closed_at = now
    case.record(now, by, "closed", detail)


def close_after_stage1(case: Case, now: datetime, actor: str) -> None:
    """The stage-2 window passed with no request: the case closes on its stage-1 response."""
    case.status = Status.CLOSED
    case.closed_at = now
    case.record(now, actor, "closed",
                f"no stage-2 request by {case.stage2_request_by}; closed after stage 1")


def reclassify(
    case: Case, kind: Kind, calendar: WorkingCalendar, now: datetime, by: str
) -> None:
    """A person's correction of the kind; it is kept and audited, and starts or stops the clock."""
    by = _require_name(by, "who is acting (--by)")
    _require_open(case, "reclassify")
    if kind == case.kind:
        raise RuleViolation("same-kind", f"{case.ref} is already a {kind}")
    if case.kind == Kind.COMPLAINT and case.stage == 2:
        raise RuleViolation(
            "stage2-in-progress", f"{case.ref} is in a stage-2 review and stays a complaint"
        )
    previous = case.kind
    case.kind = kind
    case.flag_needs_triage = False
    if kind == Kind.COMPLAINT:
        _start_clock(case, calendar)
    else:
        case.acknowledgement_due = None
        case.response_due = None
    case.record(now, by, "reclassified", f"{previous} -> {kind}")


def reopen(case: Case, now: datetime, by: str, reason: str) -> None:
    by = _require_name(by, "who is acting (--by)")
    if case.status != Status.CLOSED:
        raise RuleViolation("not-closed", f"{case.ref} is not closed")
    if not reason or not reason.strip():
        raise RuleViolation("reopen-reason", "reopening needs a reason")
    if case.kind == Kind.COMPLAINT and case.stage == 2:
        case.status = Status.STAGE2
        case.stage2_responded_on = None
    elif case.kind == Kind.COMPLAINT and case.responded_on is not None:
        case.status = Status.RESPONDED
    else:
        case.status = Status.OPEN
    case.closed_at = None
    case.ombudsman = None
    case.record(now, by, "reopened", reason.strip())


def triage(case: Case, now: datetime, by: str) -> None:
    """A person confirmed the classification; the case leaves the triage queue."""
    by = _require_name(by, "who is acting (--by)")
    case.flag_needs_triage = False
    case.record(now, by, "triaged", f"confirmed as {case.kind}")
