"""Mail that follows from an event on a case: staff notifications, and the requester's
extension notice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from mailbot.config import Settings
from mailbot.services.compose import Composer
from mailbot.services.outbox import enqueue, outbox_row
from mailbot.workflow.model import Case, Extension


def staff_mail_row(
    composer: Composer, settings: Settings, case: Case, template: str, to: str, now: datetime,
    urgent: bool = False, **extra: object,
) -> dict[str, object]:
    """The outbox row for mail to staff: from and to our own addresses, never third parties."""
    composed = composer.compose(
        template, to, now, urgent=urgent,
        context={"case": case, "policy": settings.policy, **extra},
    )
    return outbox_row(composed, case_id=case.id, to=to, envelope_from=settings.team_address,
                      template=template, now=now)


def extension_notice(
    session: Session, case: Case, ext: Extension, composer: Composer, settings: Settings,
    now: datetime, actor: str,
) -> None:
    """Tell the requester the new response date; without an email address, flag for a letter."""
    if not case.requester_email:
        case.flag_needs_letter = True
        case.record(now, actor, "letter_needed",
                    f"send the extension notice by post (new date {ext.new_due})")
        return
    composed = composer.compose(
        "extension_notice", case.requester_email, now, auto_reply=True,
        context={"case": case, "name": case.requester_name, "new_due": ext.new_due,
                 "previous_due": ext.previous_due, "reason": ext.reason,
                 "policy": settings.policy},
    )
    envelope = "" if settings.policy.null_envelope_sender else settings.team_address
    enqueue(session, composed, case_id=case.id, to=case.requester_email,
            envelope_from=envelope, template="extension_notice", now=now)
    case.record(now, actor, "queued", f"extension_notice to {case.requester_email}")
