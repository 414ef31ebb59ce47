"""A call logged by phone staff, opened as a case the way intake opens one for an email.

The case goes through ``cases.open_case`` (the same reference counter, deadlines and audit trail
as mail), the call's details are kept as the case's first message, and the caller's
acknowledgement and any notifications are queued in the outbox (rows built by
``outbox.outbox_row``, as for mail), all in the caller's transaction.
A caller without an email address gets no email: the case is flagged so that staff send a letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from mailbot.adapters.orm import messages
from mailbot.adapters.staff_directory import StaffDirectory
from mailbot.classifier.model import Classification
from mailbot.config import Settings
from mailbot.services import cases as case_service
from mailbot.services.compose import Composer
from mailbot.services.notices import staff_mail_row
from mailbot.services.outbox import outbox_row
from mailbot.workflow import lifecycle
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, ServiceArea, Source

ACTOR = "mailbot"

#: The automatic answer to the caller, by kind: the same templates as for an email.
ACKNOWLEDGEMENTS = {
    Kind.COMPLAINT: "complaint_acknowledgement",
    Kind.COMPLIMENT: "compliment_thanks",
    Kind.QUALITY_CONCERN: "quality_concern_receipt",
    Kind.OTHER: "general_receipt",
}


@dataclass(frozen=True)
class PhoneCall:
    caller_name: str
    summary: str
    details: str
    logged_by: str
    called_at: datetime  # aware; the case's time of receipt
    phone: str | None = None
    email: str | None = None
    kind: Kind | None = None  # None: the classifier decides
    incident_date: date | None = None
    service_area: ServiceArea = ServiceArea.SOCIAL_CARE


@dataclass(frozen=True)
class PhoneContext:
    settings: Settings
    calendar: WorkingCalendar
    composer: Composer
    staff: StaffDirectory


def log_call(
    session: Session,
    call: PhoneCall,
    result: Classification | None,
    ctx: PhoneContext,
    now: datetime,
) -> Case:
    """Open the case for ``call``; ``result`` is the classification when no kind was given."""
    if call.kind is not None:
        kind = call.kind
    elif result is not None:
        kind = Kind(result.label)
    else:
        raise ValueError("a call without a kind needs the classifier's result")
    new = lifecycle.NewCase(
        kind=kind,
        source=Source.PHONE,
        received_at=call.called_at,
        requester_name=call.caller_name,
        requester_email=call.email,
        requester_phone=call.phone,
        service_area=call.service_area,
        summary=call.summary,
        incident_date=call.incident_date,
        classifier_label=result.label if result else None,
        classifier_confidence=result.confidence if result else None,
        safeguarding=bool(result and result.safeguarding),
        needs_triage=bool(result and result.needs_triage),
    )
    case = case_service.open_case(session, new, ctx.calendar, now, call.logged_by)
    # The call itself, then every queued email: written together, in one statement.
    rows: list[dict[str, object]] = [{
        "case_id": case.id, "direction": "in", "outcome": "case", "sender": call.email,
        "recipients": "", "detail": f"phone call logged by {call.logged_by}",
        "subject": call.summary, "body_text": call.details, "received_at": call.called_at,
        "attempts": 0, "classifier_label": new.classifier_label,
        "classifier_confidence": new.classifier_confidence,
    }]
    if result is not None and result.needs_triage:
        case.record(now, ACTOR, "flagged",
                    f"needs triage: classified {result.label} at {result.confidence:.2f}")

    member = None
    if kind == Kind.COMPLIMENT:
        member = ctx.staff.mentioned_in(f"{call.summary}\n{call.details}")
    if call.email:
        rows.append(_acknowledge(case, call.email, ctx, now,
                                 staff_name=member.name if member else None))
    else:
        case.record(now, ACTOR, "not_acknowledged",
                    "the caller gave no email address: send a letter")
    if kind == Kind.COMPLIMENT:
        to = member.email if member else ctx.settings.team_address
        rows.append(_notify(case, "staff_compliment", to, ctx, now,
                            staff_name=member.name if member else None))
        case.record(now, ACTOR, "passed_on", f"compliment passed on to {to}")
    elif kind == Kind.QUALITY_CONCERN:
        to = ctx.settings.commissioning_address
        rows.append(_notify(case, "commissioning_concern", to, ctx, now, text=call.details))
        case.record(now, ACTOR, "passed_on", f"sent to Commissioning ({to})")
    if result is not None and result.safeguarding:
        to = ctx.settings.safeguarding_address
        rows.append(_notify(case, "safeguarding_alert", to, ctx, now, urgent=True,
                            text=call.details, cues=list(result.cues)))
        case.record(now, ACTOR, "safeguarding_alert", f"urgent alert sent to {to}")
    keys = set().union(*rows)
    session.execute(messages.insert(), [{k: row.get(k) for k in keys} for row in rows])
    session.flush()
    return case


def _acknowledge(
    case: Case, to: str, ctx: PhoneContext, now: datetime, **extra: object
) -> dict[str, object]:
    # Unlike intake, no per-recipient cap: a caller who gave their address is a person, so there
    # is no mail loop to break, and each call deserves its own reference.
    template = ACKNOWLEDGEMENTS[case.kind]
    policy = ctx.settings.policy
    composed = ctx.composer.compose(
        template, to, now, auto_reply=True,
        context={"case": case, "name": case.requester_name, "policy": policy,
                 "ombudsman": policy.ombudsman_for(case.service_area), **extra},
    )
    envelope = "" if policy.null_envelope_sender else ctx.settings.team_address
    case.record(now, ACTOR, "queued", f"{template} to {to}")
    if case.kind == Kind.COMPLAINT:
        lifecycle.acknowledge(case, case.deemed_received, now, ACTOR)
    return outbox_row(composed, case_id=case.id, to=to, envelope_from=envelope,
                      template=template, now=now)


def _notify(
    case: Case, template: str, to: str, ctx: PhoneContext, now: datetime,
    urgent: bool = False, **extra: object,
) -> dict[str, object]:
    """Mail to staff, from and to our own addresses."""
    return staff_mail_row(ctx.composer, ctx.settings, case, template, to, now, urgent, **extra)
