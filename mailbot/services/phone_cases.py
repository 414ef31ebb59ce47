"""A call logged by phone staff, opened as a case the way intake opens one for an email.

The case is built by ``cases.new_case`` (the same reference counter, deadlines and audit trail
as mail), told to the same people (``notices.opening_notices``), and written by
``cases.save_new_case`` together with the call itself (the case's first message) and the
queued mail, in the caller's transaction. A caller without an email address gets no email: the
case is flagged so that staff send a letter.

A call whose kind staff chose is still searched for safeguarding cue phrases: the kind is
theirs, but a risk named in what the caller said must reach Safeguarding at once either way.
Without a kind from staff the classifier decides everything, as for an email.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property

from sqlalchemy.orm import Session

from mailbot.adapters.staff_directory import StaffDirectory
from mailbot.classifier.classification import Classification
from mailbot.config import Settings
from mailbot.services import cases as case_service
from mailbot.services.compose import Composer
from mailbot.services.notices import (
    ACKNOWLEDGEMENTS,
    Notifier,
    acknowledgement_row,
    opening_notices,
)
from mailbot.workflow import lifecycle
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, ServiceArea, Source

ACTOR = "mailbot"


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

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier(self.settings, self.composer, self.staff)


def log_call(
    session: Session,
    call: PhoneCall,
    result: Classification | None,
    ctx: PhoneContext,
    now: datetime,
    cues: Sequence[str] = (),
) -> Case:
    """Open the case for ``call``; ``result`` is the classifier's reading of it, and ``cues``
    the safeguarding cue phrases found in it when staff chose the kind (``result`` then None).

    The caller's ``kind`` wins over the classifier's label; without either there is no case.
    """
    if call.kind is None and result is None:
        raise ValueError("a call without a kind needs the classifier's result")
    kind = call.kind or Kind(result.label if result else "")
    triage = call.kind is None and result is not None and result.needs_triage
    # Staff who chose the kind have read the call; the model's own flag is tuned for recall
    # (about one alert in three is real), so then only cue phrases raise the alert.
    found = tuple(result.cues) if result is not None else tuple(cues)
    risk = bool(found) if call.kind is not None else bool(result and result.safeguarding)
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
        safeguarding=risk,
        needs_triage=triage,
    )
    case = case_service.new_case(session, new, ctx.calendar, now, call.logged_by)
    n = ctx.notifier
    rows: list[dict[str, object]] = [{
        "direction": "in", "outcome": "case", "sender": call.email, "recipients": "",
        "detail": f"phone call logged by {call.logged_by}", "subject": call.summary,
        "body_text": call.details, "received_at": call.called_at, "attempts": 0,
        "classifier_label": new.classifier_label,
        "classifier_confidence": new.classifier_confidence,
    }]
    if triage and result is not None:
        case.record(now, ACTOR, "flagged",
                    f"needs triage: classified {result.label} at {result.confidence:.2f}")
    mentions = f"{call.summary}\n{call.details}"
    if call.email:
        # Unlike intake, no per-recipient cap: a caller who gave their address is a person, so
        # there is no mail loop to break, and each call deserves its own reference.
        member = n.staff.mentioned_in(mentions) if kind == Kind.COMPLIMENT else None
        rows.append(acknowledgement_row(n, case, ACKNOWLEDGEMENTS[kind], call.email, now, ACTOR,
                                        staff_name=member.name if member else None))
        if kind == Kind.COMPLAINT:
            lifecycle.acknowledge(case, case.deemed_received, now, ACTOR)
    else:
        case.record(now, ACTOR, "not_acknowledged",
                    "the caller gave no email address: send a letter")
    rows += opening_notices(
        n, case, now, ACTOR, text=call.details, mentions=mentions,
        safeguarding_cues=found if risk else None,
    )
    case_service.save_new_case(session, case, ctx.calendar, now, rows)
    return case
