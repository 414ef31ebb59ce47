"""Mail that follows from an event on a case: the requester's acknowledgement, what staff are
told when a case opens, and the requester's extension notice.

Mail intake and phone-logged cases open cases the same way; what each new case sets in motion
(who is thanked, who is told, when Safeguarding is alerted) is decided once, here. The functions
return outbox rows (``outbox.outbox_row``) for the caller to write with the case, and record on
the case what they queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailbot.adapters.staff_directory import StaffDirectory
from mailbot.config import Settings
from mailbot.services.compose import Composer
from mailbot.services.outbox import enqueue_rows, outbox_row
from mailbot.workflow.model import Case, Extension, Kind

#: The automatic answer to the requester of a new case, by kind.
ACKNOWLEDGEMENTS = {
    Kind.COMPLAINT: "complaint_acknowledgement",
    Kind.COMPLIMENT: "compliment_thanks",
    Kind.QUALITY_CONCERN: "quality_concern_receipt",
    Kind.OTHER: "general_receipt",
}


@dataclass(frozen=True)
class Notifier:
    """What composing and addressing notices needs, made once per process."""

    settings: Settings
    composer: Composer
    staff: StaffDirectory


def acknowledgement_row(
    n: Notifier, case: Case, template: str, to: str, now: datetime, actor: str,
    in_reply_to: str | None = None, references: Sequence[str] = (), **extra: object,
) -> dict[str, object]:
    """The automatic reply to the requester: null envelope sender, ``Auto-Submitted``."""
    policy = n.settings.policy
    composed = n.composer.compose(
        template, to, now, auto_reply=True, in_reply_to=in_reply_to, references=references,
        context={"case": case, "name": case.requester_name, "policy": policy,
                 "ombudsman": policy.ombudsman_for(case.service_area), **extra},
    )
    envelope = "" if policy.null_envelope_sender else n.settings.team_address
    case.record(now, actor, "queued", f"{template} to {to}")
    return outbox_row(composed, case_id=case.id, to=to, envelope_from=envelope,
                      template=template, now=now)


def staff_mail_row(
    n: Notifier, case: Case, template: str, to: str, now: datetime,
    urgent: bool = False, **extra: object,
) -> dict[str, object]:
    """The outbox row for mail to staff: from and to our own addresses, never third parties."""
    composed = n.composer.compose(
        template, to, now, urgent=urgent,
        context={"case": case, "policy": n.settings.policy, **extra},
    )
    return outbox_row(composed, case_id=case.id, to=to, envelope_from=n.settings.team_address,
                      template=template, now=now)


def safeguarding_alert_row(
    n: Notifier, case: Case, text: str, cues: Sequence[str], now: datetime, actor: str,
) -> dict[str, object]:
    """The urgent alert to Safeguarding; flags the case."""
    to = n.settings.safeguarding_address
    case.flag_safeguarding = True
    case.record(now, actor, "safeguarding_alert", f"urgent alert sent to {to}")
    return staff_mail_row(n, case, "safeguarding_alert", to, now, urgent=True, text=text,
                          cues=list(cues))


def opening_notices(
    n: Notifier, case: Case, now: datetime, actor: str, *, text: str, mentions: str,
    safeguarding_cues: Sequence[str] | None,
) -> list[dict[str, object]]:
    """Who is told about a new case: a compliment goes to the member of staff it names (else
    the team), a quality concern to Commissioning, and a possible safeguarding risk to
    Safeguarding at once, whatever the kind.

    ``text`` is what the requester said (quoted in the notices), ``mentions`` where to look for
    staff names, ``safeguarding_cues`` the classifier's cues when it flagged a risk, else None.
    """
    rows = []
    if case.kind == Kind.COMPLIMENT:
        member = n.staff.mentioned_in(mentions)
        to = member.email if member else n.settings.team_address
        rows.append(staff_mail_row(n, case, "staff_compliment", to, now,
                                   staff_name=member.name if member else None))
        case.record(now, actor, "passed_on", f"compliment passed on to {to}")
    elif case.kind == Kind.QUALITY_CONCERN:
        to = n.settings.commissioning_address
        rows.append(staff_mail_row(n, case, "commissioning_concern", to, now, text=text))
        case.record(now, actor, "passed_on", f"sent to Commissioning ({to})")
    if safeguarding_cues is not None:
        rows.append(safeguarding_alert_row(n, case, text, safeguarding_cues, now, actor))
    return rows


def extension_notice(
    session: Session, case: Case, ext: Extension, n: Notifier, now: datetime, actor: str,
) -> None:
    """Tell the requester the new response date; without an email address, flag for a letter."""
    if not case.requester_email:
        case.flag_needs_letter = True
        case.record(now, actor, "letter_needed",
                    f"send the extension notice by post (new date {ext.new_due})")
        return
    row = acknowledgement_row(
        n, case, "extension_notice", case.requester_email, now, actor,
        new_due=ext.new_due, previous_due=ext.previous_due, reason=ext.reason,
    )
    enqueue_rows(session, [row])
