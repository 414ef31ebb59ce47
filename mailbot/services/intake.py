"""One inbound message, from raw bytes to a recorded outcome, in the caller's transaction.

The outcome is one of: ``case`` (a new case was opened), ``joined`` (added to an existing case),
``auto`` (auto-generated mail, recorded and never answered), ``duplicate`` (the same message
again), or ``seen`` (this mailbox entry was processed before; only its move is outstanding).
Anything that raises is the caller's to quarantine: this function writes nothing it cannot
finish, because the caller's transaction rolls back.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailbot.adapters.mailbox import RawMessage
from mailbot.adapters.orm import attachments, cases, messages
from mailbot.adapters.staff_directory import StaffDirectory
from mailbot.classifier.classification import Classification
from mailbot.classifier.text import message_text
from mailbot.config import Settings
from mailbot.intake.parse_ahead import Parsed
from mailbot.intake.parsing import ParsedMessage, UnparseableMessage, parse_message
from mailbot.intake.screening import screen
from mailbot.services import cases as case_service
from mailbot.services.compose import Composer
from mailbot.services.notices import (
    ACKNOWLEDGEMENTS,
    Notifier,
    acknowledgement_row,
    opening_notices,
    safeguarding_alert_row,
    staff_mail_row,
)
from mailbot.services.outbox import auto_replies_since, enqueue_rows
from mailbot.workflow import lifecycle
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, Source, Status

if TYPE_CHECKING:
    from mailbot.classifier.model import Classifier

log = logging.getLogger(__name__)

ACTOR = "mailbot"
REFERENCE = re.compile(r"\bCSQ-(\d{4})-(\d{5,})\b", re.IGNORECASE)
#: How far back a Date header may be believed as the time of receipt (worker downtime).
MAX_DATE_TRUST = timedelta(days=14)
#: What a duplicate's stored row says about it.
DUPLICATE_DETAIL = "same Message-ID and content as an earlier message"


@dataclass(frozen=True)
class Outcome:
    key: str
    outcome: str
    case_ref: str | None = None
    detail: str = ""

    @property
    def quarantined(self) -> bool:
        return self.outcome == "quarantined"


@dataclass
class IntakeContext:
    settings: Settings
    calendar: WorkingCalendar
    composer: Composer
    staff: StaffDirectory
    load_classifier: Callable[[], Classifier]

    @cached_property
    def classifier(self) -> Classifier:
        """Loaded on first use: in the worker the parse-ahead child classifies, and the model
        (with spaCy, tens of megabytes) is loaded here only if the child could not."""
        return self.load_classifier()

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier(self.settings, self.composer, self.staff)


def content_hash(msg: ParsedMessage) -> str:
    h = hashlib.sha256()
    for part in (msg.sender_email or "", msg.subject, msg.text):
        h.update(part.encode("utf-8", "replace"))
        h.update(b"\x00")
    return h.hexdigest()


def received_time(msg: ParsedMessage, now: datetime) -> datetime:
    """When the message reached us: its Date header if plausible, otherwise now.

    A worker that was down over a weekend must not move a Friday complaint's clock to Monday,
    but a forged or skewed Date must not backdate or postdate a case either.
    """
    if msg.date is not None and now - MAX_DATE_TRUST <= msg.date <= now:
        return msg.date
    return now


def already_seen(session: Session, key: str) -> Outcome | None:
    row = session.execute(
        select(messages.c.outcome, messages.c.case_id).where(messages.c.mailbox_key == key)
    ).first()
    if row is None:
        return None
    ref = _ref_of(session, row.case_id)
    return Outcome(key, "quarantined" if row.outcome == "quarantined" else "seen", ref)


def _ref_of(session: Session, case_id: int | None) -> str | None:
    if case_id is None:
        return None
    return session.scalar(select(cases.c.ref).where(cases.c.id == case_id))


def record_quarantine(session: Session, raw: RawMessage, error: str, now: datetime) -> None:
    """Keep the raw bytes and the error, so a person can see why and `quarantine retry` it."""
    existing = session.execute(
        select(messages.c.id).where(messages.c.mailbox_key == raw.key)
    ).first()
    values = dict(outcome="quarantined", detail=error[:2000], raw=raw.data)
    if existing:
        session.execute(messages.update().where(messages.c.id == existing.id).values(**values))
        return
    session.execute(messages.insert().values(
        direction="in", mailbox_key=raw.key, received_at=now, subject="", recipients="",
        body_text="", attempts=0, **values,
    ))


def seen_among(session: Session, keys: Sequence[str]) -> dict[str, Outcome]:
    """``already_seen`` for many mailbox entries in one query: those recorded, by key."""
    if not keys:
        return {}
    rows = session.execute(
        select(messages.c.mailbox_key, messages.c.outcome, cases.c.ref)
        .outerjoin(cases, cases.c.id == messages.c.case_id)
        .where(messages.c.mailbox_key.in_(keys))
    )
    return {
        row.mailbox_key: Outcome(
            row.mailbox_key, "quarantined" if row.outcome == "quarantined" else "seen", row.ref)
        for row in rows
    }


def process(
    session: Session, raw: RawMessage, ctx: IntakeContext, now: datetime, *,
    checked_unseen: bool = False, parsed: Parsed = None,
    classified: Classification | None = None,
) -> Outcome:
    """Process one mailbox entry.

    ``checked_unseen``: the caller has just found the key unrecorded (``seen_among``), so the
    check is not repeated; another worker recording it meanwhile still fails on the unique key.
    ``parsed``: ``parse_message(raw.data)`` (or the ``UnparseableMessage`` it raised), when the
    caller has it already (``ParseAhead``); None to parse here. ``classified``: the
    classifier's reading of that message's ``message_text``, likewise.
    """
    if not checked_unseen:
        seen = already_seen(session, raw.key)
        if seen is not None:
            return seen
    if isinstance(parsed, UnparseableMessage):
        raise parsed
    msg = parsed if parsed is not None else parse_message(raw.data)
    digest = content_hash(msg)
    if msg.message_id:
        original = session.execute(
            select(messages.c.case_id).where(
                messages.c.direction == "in",
                messages.c.message_id == msg.message_id,
                messages.c.content_sha256 == digest,
            ).order_by(messages.c.id)  # the first of them, as a run's read takes it
        ).first()
        if original is not None:
            _store(session, raw, msg, digest, "duplicate", original.case_id, now,
                   detail=DUPLICATE_DETAIL)
            return Outcome(raw.key, "duplicate", _ref_of(session, original.case_id))

    screened = screen(msg, ctx.settings.own_addresses)
    thread_case = _find_thread(session, msg)
    if screened is not None:
        case_id = thread_case.id if thread_case else None
        _store(session, raw, msg, digest, "auto", case_id, now,
               detail=f"{screened.kind}: {screened.reason}")
        log.info("auto-generated (%s) %s: not answered", screened.kind, raw.key)
        return Outcome(raw.key, "auto", thread_case.ref if thread_case else None, screened.kind)

    text = message_text(msg)
    result = classified if classified is not None else ctx.classifier.classify(text)
    received = received_time(msg, now)

    related_ref: str | None = None
    if thread_case is None:
        related_ref = reference_in_subject(msg)
        if related_ref is not None:
            linked = _case_by_ref(session, related_ref)
            if linked is not None and _sender_on_case(session, linked, msg.sender_email):
                thread_case = linked
                related_ref = None
            elif linked is None:
                related_ref = None
    if thread_case is not None:
        return _join(session, raw, msg, digest, thread_case, result, received, ctx, now)
    return _open(session, raw, msg, digest, result, received, related_ref, ctx, now, text)


def incoming_row(
    raw: RawMessage, msg: ParsedMessage, digest: str, outcome: str, case_id: int | None,
    now: datetime, detail: str = "", result: Classification | None = None,
) -> dict[str, object]:
    return {
        "case_id": case_id, "direction": "in", "mailbox_key": raw.key,
        "message_id": msg.message_id, "content_sha256": digest, "outcome": outcome,
        "detail": detail, "sender": msg.sender_email, "recipients": ",".join(msg.to),
        "subject": msg.subject, "sent_date": msg.date, "received_at": now,
        "body_text": msg.text, "attempts": 0,
        "classifier_label": result.label if result else None,
        "classifier_confidence": result.confidence if result else None,
    }


def _store(
    session: Session, raw: RawMessage, msg: ParsedMessage, digest: str, outcome: str,
    case_id: int | None, now: datetime, detail: str = "",
    result: Classification | None = None,
) -> None:
    row_id: int = session.execute(
        messages.insert().values(
            incoming_row(raw, msg, digest, outcome, case_id, now, detail, result)
        ).returning(messages.c.id)
    ).scalar_one()
    _store_attachments(session, row_id, msg)


def _store_attachments(session: Session, row_id: int, msg: ParsedMessage) -> None:
    if msg.attachments:
        session.execute(attachments.insert(), attachment_rows(row_id, msg))


def attachment_rows(row_id: int, msg: ParsedMessage) -> list[dict[str, object]]:
    return [
        {"message_row_id": row_id, "filename": a.filename, "content_type": a.content_type,
         "size": a.size, "payload": a.payload, "omitted_reason": a.omitted_reason}
        for a in msg.attachments
    ]


def _find_thread(session: Session, msg: ParsedMessage) -> Case | None:
    ids = [i for i in (msg.in_reply_to, *msg.references) if i]
    if not ids:
        return None
    case_id = session.scalar(
        select(messages.c.case_id)
        .where(messages.c.message_id.in_(ids), messages.c.case_id.is_not(None))
        .order_by(messages.c.id.desc())
        .limit(1)
    )
    if case_id is None:
        return None
    return session.get(Case, case_id)


def reference_in_subject(msg: ParsedMessage) -> str | None:
    m = REFERENCE.search(msg.subject)
    return f"CSQ-{m.group(1)}-{m.group(2)}" if m else None


def _case_by_ref(session: Session, ref: str) -> Case | None:
    try:
        return case_service.get_case(session, ref)
    except case_service.CaseNotFound:
        return None


def _sender_on_case(session: Session, case: Case, sender: str | None) -> bool:
    if not sender:
        return False
    if case.requester_email and case.requester_email.lower() == sender.lower():
        return True
    return session.execute(
        select(messages.c.id).where(
            messages.c.case_id == case.id, messages.c.direction == "in",
            messages.c.sender == sender.lower(),
            or_(messages.c.outcome == "case", messages.c.outcome == "joined"),
        ).limit(1)
    ).first() is not None


def _join(
    session: Session, raw: RawMessage, msg: ParsedMessage, digest: str, case: Case,
    result: Classification, received: datetime, ctx: IntakeContext, now: datetime,
) -> Outcome:
    assert case.id is not None
    _store(session, raw, msg, digest, "joined", case.id, now, result=result)
    detail, rows = join_case(case, msg, result, received, ctx, now,
                             _replies_counted_in(session, ctx, now))
    enqueue_rows(session, rows)
    session.flush()
    return Outcome(raw.key, "joined", case.ref, detail)


def join_case(
    case: Case, msg: ParsedMessage, result: Classification, received: datetime,
    ctx: IntakeContext, now: datetime, replies_to: Callable[[str], int],
) -> tuple[str, list[dict[str, object]]]:
    """What a reply does to the case it answers, recorded on the case; the outcome's detail
    and the mail it queues. ``replies_to``: as for ``opening_rows``.

    A reply on a closed case is flagged for a person; a complainant's unhappy reply to the
    stage-1 response is a stage-2 request.
    """
    case.record(now, ACTOR, "message", f"reply from {msg.sender_email or 'unknown sender'}")
    detail = "reply added"
    rows: list[dict[str, object]] = []
    if case.status == Status.CLOSED:
        case.flag_needs_triage = True
        case.record(now, ACTOR, "flagged", "reply received on a closed case: a person must look")
        detail = "reply on a closed case; flagged for triage"
    elif case.status == Status.RESPONDED and case.kind == Kind.COMPLAINT and (
        result.label == "complaint"
    ):
        # Not satisfied with the stage-1 response: a stage-2 request.
        lifecycle.request_stage2(case, received, ctx.calendar, now, ACTOR)
        if result.needs_triage:
            case.flag_needs_triage = True
            case.record(now, ACTOR, "flagged", "stage-2 request inferred with low confidence")
        rows += _reply(case, msg, "stage2_acknowledgement", ctx, now, replies_to)
        detail = "stage-2 request"
    if result.safeguarding:
        rows.append(safeguarding_alert_row(
            ctx.notifier, case, msg.new_text or msg.text, result.cues, now, ACTOR))
    return detail, rows


def _open(
    session: Session, raw: RawMessage, msg: ParsedMessage, digest: str,
    result: Classification, received: datetime, related_ref: str | None,
    ctx: IntakeContext, now: datetime, text: str,
) -> Outcome:
    new = new_case_for(msg, result, received, related_ref, ctx)
    case = case_service.new_case(session, new, ctx.calendar, now, ACTOR)
    rows = opening_rows(case, raw, msg, digest, result, ctx, now, text,
                        _replies_counted_in(session, ctx, now))
    [ids] = case_service.save_new_cases(session, [(case, rows)], ctx.calendar, now)
    _store_attachments(session, ids[0], msg)
    return Outcome(raw.key, "case", case.ref, str(case.kind))


def new_case_for(
    msg: ParsedMessage, result: Classification, received: datetime, related_ref: str | None,
    ctx: IntakeContext,
) -> lifecycle.NewCase:
    """The case a message opens. A compliment forwarded by staff is the original author's."""
    requester_name, requester_email = msg.sender_name, msg.sender_email
    if _forwarded_by_staff(msg, result, ctx):
        assert msg.forwarded is not None
        requester_name = msg.forwarded.author_name
        requester_email = msg.forwarded.author_email
    return lifecycle.NewCase(
        kind=Kind(result.label),
        source=Source.EMAIL,
        received_at=received,
        requester_name=requester_name or "",
        requester_email=requester_email,
        summary=msg.subject[:500],
        classifier_label=result.label,
        classifier_confidence=result.confidence,
        safeguarding=result.safeguarding,
        needs_triage=result.needs_triage,
        related_ref=related_ref,
    )


def _forwarded_by_staff(msg: ParsedMessage, result: Classification, ctx: IntakeContext) -> bool:
    return (result.label == Kind.COMPLIMENT and msg.forwarded is not None
            and _is_staff(ctx, msg))


def opening_rows(
    case: Case, raw: RawMessage, msg: ParsedMessage, digest: str, result: Classification,
    ctx: IntakeContext, now: datetime, text: str, replies_to: Callable[[str], int],
) -> list[dict[str, object]]:
    """The rows a new case writes besides itself (the message that opened it first, then the
    mail it queues), recording on the case what happened at opening.

    ``replies_to(address)``: automatic replies sent to ``address`` within the policy's window
    (the cap in ``_reply``); the caller answers it from the database or from a batch's read.
    """
    rows = [incoming_row(raw, msg, digest, "case", None, now, result=result)]
    if case.related_ref:
        case.record(now, ACTOR, "linked",
                    f"subject quotes {case.related_ref}, but the sender is not on that case")
    if result.needs_triage:
        case.record(now, ACTOR, "flagged",
                    f"needs triage: classified {result.label} at {result.confidence:.2f}")

    if _forwarded_by_staff(msg, result, ctx):
        staff_forwarder = msg.sender_name or msg.sender_email
        case.record(now, ACTOR, "credited", f"compliment forwarded by staff: {staff_forwarder}")
        assert msg.sender_email
        rows.append(staff_mail_row(ctx.notifier, case, "staff_forward_thanks", msg.sender_email,
                                   now, staff_name=msg.sender_name))
    else:
        extra = ({"staff_name": _named_staff_name(ctx, text)}
                 if case.kind == Kind.COMPLIMENT else {})
        reply = _reply(case, msg, ACKNOWLEDGEMENTS[case.kind], ctx, now, replies_to, **extra)
        rows += reply
        if reply and case.kind == Kind.COMPLAINT:
            lifecycle.acknowledge(case, case.deemed_received, now, ACTOR)
    rows += opening_notices(
        ctx.notifier, case, now, ACTOR, text=msg.new_text or msg.text, mentions=text,
        safeguarding_cues=result.cues if result.safeguarding else None,
    )
    return rows


def _is_staff(ctx: IntakeContext, msg: ParsedMessage) -> bool:
    sender = (msg.sender_email or "").lower()
    team_domain = ctx.settings.team_address.rsplit("@", 1)[-1].lower()
    return bool(sender) and (
        sender.endswith("@" + team_domain) or ctx.staff.by_email(sender) is not None
    )


def _named_staff_name(ctx: IntakeContext, text: str) -> str | None:
    member = ctx.staff.mentioned_in(text)
    return member.name if member else None


def auto_reply_window_start(ctx: IntakeContext, now: datetime) -> datetime:
    """Automatic replies sent since then count towards the policy's cap (see ``_reply``)."""
    return now - timedelta(hours=ctx.settings.policy.auto_reply_cap_hours)


def _replies_counted_in(
    session: Session, ctx: IntakeContext, now: datetime
) -> Callable[[str], int]:
    since = auto_reply_window_start(ctx, now)
    return lambda to: auto_replies_since(session, to, since)


def _reply(
    case: Case, msg: ParsedMessage, template: str, ctx: IntakeContext, now: datetime,
    replies_to: Callable[[str], int], **extra: object,
) -> list[dict[str, object]]:
    """The automatic answer to the sender (as a list: empty when withheld).

    Withheld when there is no sender address, or when the sender has had the policy's cap of
    automatic replies recently (``replies_to``): two automatic mailers answering each other
    must not loop.
    """
    to = msg.sender_email
    if not to:
        case.record(now, ACTOR, "not_acknowledged", "no sender address to reply to")
        return []
    policy = ctx.settings.policy
    if replies_to(to) >= policy.auto_reply_cap:
        case.record(now, ACTOR, "not_acknowledged",
                    f"automatic reply withheld: {to} already had {policy.auto_reply_cap} "
                    f"in {policy.auto_reply_cap_hours} hours")
        return []
    return [acknowledgement_row(ctx.notifier, case, template, to, now, ACTOR,
                                in_reply_to=msg.message_id, references=msg.references, **extra)]
