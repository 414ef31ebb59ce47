"""Mail intake a run of messages at a time: one transaction, and one statement per table, for
the messages whose decision one read per window of messages can settle.

Why: opened one at a time, a message cost about nine statements and a commit, and the
database conversation was most of the worker's time (benchmarks/README.md). A run costs the
same few statements however long it is: three reads per window, one reference draw, one
insert per table, and, when it holds replies, the ORM's read of the cases they answer (with
their audit trails) and its writes of what the replies changed.

Every message is still decided exactly as ``intake.process`` decides it, and its rows are
written in the same order (each message's own row, then the mail it queues, in mailbox
order): the newest row of a thread decides which case a later reply joins, and the outbox
sends in that order. The decision reads the database about three keys of the message: its
Message-ID (a duplicate?), the ids it answers (a thread?) and its sender (how many automatic
replies lately?). A window of messages has all three read at once, and a message joins the
current run only when

* nothing else is needed to decide it: unless it repeats an earlier message or answers a
  case, its subject quotes no case reference; and
* no earlier message of the window shares one of those keys, since the window's read could
  not see what that message wrote. The window ends before such a message instead, and the
  message starts the next window, read after this one's run is written.

A run opens cases, records duplicates and auto-generated mail, and adds replies to the cases
they answer (those cases are read once for the run, and changed as ``intake`` changes them).

A message the read cannot decide (its subject quotes a reference, it does not parse, or
deciding it raised) closes the run (the run is committed first) and goes through the caller's
one-at-a-time path, in its own transaction, seeing everything before it. If writing a run
fails, the run is rolled back and its messages go one at a time too, so a bad message is still
quarantined alone and a message another worker recorded first is found as such.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.adapters.mailbox import RawMessage
from mailbot.adapters.orm import attachments, cases, messages
from mailbot.classifier.classification import Classification
from mailbot.classifier.text import message_text
from mailbot.intake.parse_ahead import Ahead
from mailbot.intake.parsing import ParsedMessage, UnparseableMessage, parse_message
from mailbot.intake.screening import Screening, screen
from mailbot.services import cases as case_service
from mailbot.services.intake import (
    ACTOR,
    DUPLICATE_DETAIL,
    IntakeContext,
    Outcome,
    attachment_rows,
    auto_reply_window_start,
    content_hash,
    incoming_row,
    join_case,
    new_case_for,
    opening_rows,
    received_time,
    reference_in_subject,
)
from mailbot.services.outbox import auto_replies_to
from mailbot.workflow import lifecycle
from mailbot.workflow.model import Case

log = logging.getLogger(__name__)

#: Messages read about at once. A run is at most this long; a failed run is redone one at a
#: time, and SQLite's writers wait for a run's commit, so it is kept short.
WINDOW = 32

#: Processes one message alone in its own transaction, quarantining it if it fails.
OneAtATime = Callable[[RawMessage, Ahead], Outcome]

def process_many(
    session: Session,
    entries: Iterable[tuple[RawMessage, Ahead]],
    ctx: IntakeContext,
    now: Callable[[], datetime],
    one: OneAtATime,
) -> list[Outcome]:
    """Process unrecorded mailbox entries (``intake.seen_among`` found none of them), with
    what ``ParseAhead`` made of each (parsed, and perhaps classified); the outcomes in order.

    ``session`` has no transaction open; ``one`` handles every message that cannot go in a run.
    """
    outcomes: list[Outcome] = []
    pending = iter(entries)
    carried: list[tuple[RawMessage, Ahead]] = []
    while window := carried + list(islice(pending, WINDOW - len(carried))):
        done, carried = _Window(session, window, ctx, now(), one).process()
        outcomes += done
    return outcomes


@dataclass(frozen=True)
class _Original:
    """The first stored message a duplicate repeats: the case it is on, if any."""

    case_id: int | None
    ref: str | None


@dataclass(frozen=True)
class _Thread:
    row_id: int  # the newest message of the thread among those answered wins, as in intake
    case_id: int
    ref: str


@dataclass
class _Entry:
    """A message taken into a run, decided; what is written for it waits for the run."""

    raw: RawMessage
    msg: ParsedMessage
    ahead: Ahead  # as ParseAhead gave it, for the one-at-a-time path if the run fails
    digest: str
    original: _Original | None = None  # a duplicate: recorded, never answered
    screened: Screening | None = None  # auto-generated: recorded, never answered
    thread: _Thread | None = None  # the case it answers (an auto-generated one only records it)
    result: Classification | None = None  # a reply or a new case: how it was classified;
    new: lifecycle.NewCase | None = None  # a new case: the case,
    text: str = ""  # and the text the classifier read

    @property
    def outcome(self) -> str:
        if self.original is not None:
            return "duplicate"
        if self.screened is not None:
            return "auto"
        return "case" if self.new is not None else "joined"


class _WindowRead:
    """What the database said about a window's messages before any of them was written."""

    def __init__(self, session: Session, msgs: Sequence[ParsedMessage], since: datetime) -> None:
        ids = {m.message_id for m in msgs if m.message_id}
        self.originals: dict[tuple[str, str], _Original] = {}
        if ids:
            for row in session.execute(
                select(messages.c.message_id, messages.c.content_sha256, messages.c.case_id,
                       cases.c.ref)
                .outerjoin(cases, cases.c.id == messages.c.case_id)
                .where(messages.c.direction == "in", messages.c.message_id.in_(ids))
                .order_by(messages.c.id)
            ):
                self.originals.setdefault((row.message_id, row.content_sha256),
                                          _Original(row.case_id, row.ref))
        answered = {i for m in msgs for i in _answered(m)}
        self.threads: dict[str, _Thread] = {}
        if answered:
            for row in session.execute(
                select(messages.c.message_id, messages.c.id, messages.c.case_id, cases.c.ref)
                .join(cases, cases.c.id == messages.c.case_id)
                .where(messages.c.message_id.in_(answered))
            ):
                seen = self.threads.get(row.message_id)
                if seen is None or row.id > seen.row_id:
                    self.threads[row.message_id] = _Thread(row.id, row.case_id, row.ref)
        self.replies = Counter(auto_replies_to(
            session, [m.sender_email for m in msgs if m.sender_email], since))

    def original_of(self, msg: ParsedMessage, digest: str) -> _Original | None:
        return self.originals.get((msg.message_id, digest)) if msg.message_id else None

    def thread_of(self, msg: ParsedMessage) -> _Thread | None:
        found = [self.threads[i] for i in _answered(msg) if i in self.threads]
        return max(found, key=lambda t: t.row_id, default=None)


def _answered(msg: ParsedMessage) -> list[str]:
    return [i for i in (msg.in_reply_to, *msg.references) if i]


def _keys(msg: ParsedMessage) -> set[str]:
    keys = {"id:" + i for i in (msg.message_id, *_answered(msg)) if i}
    if msg.sender_email:
        keys.add("from:" + msg.sender_email.lower())
    return keys


class _Window:
    def __init__(
        self, session: Session, window: list[tuple[RawMessage, Ahead]], ctx: IntakeContext,
        now: datetime, one: OneAtATime,
    ) -> None:
        self.session, self.ctx, self.now, self.one = session, ctx, now, one
        self.entries = [(raw, _parse_here(raw, ahead)) for raw, ahead in window]
        self.outcomes: dict[int, Outcome] = {}
        self.run: list[tuple[int, _Entry]] = []

    def process(self) -> tuple[list[Outcome], list[tuple[RawMessage, Ahead]]]:
        """The outcomes of the window's first messages, in order, and the rest: the window ends
        before the first message that shares a key with an earlier one, and that message
        starts the next window, whose read sees what this one wrote."""
        msgs = [a.parsed for _, a in self.entries if isinstance(a.parsed, ParsedMessage)]
        with self.session.begin():
            read = _WindowRead(self.session, msgs, auto_reply_window_start(self.ctx, self.now))
        touched: set[str] = set()
        end = len(self.entries)
        for i, (raw, ahead) in enumerate(self.entries):
            entry = None
            if isinstance(ahead.parsed, ParsedMessage):
                keys = _keys(ahead.parsed)
                if keys & touched:
                    end = i
                    break
                entry = self._decide(raw, ahead, ahead.parsed, read)
                touched |= keys
            if entry is None:
                self._write_run(read)
                self.outcomes[i] = self.one(raw, ahead)
            else:
                self.run.append((i, entry))
        self._write_run(read)
        return [self.outcomes[i] for i in range(end)], self.entries[end:]

    def _decide(
        self, raw: RawMessage, ahead: Ahead, msg: ParsedMessage, read: _WindowRead
    ) -> _Entry | None:
        """``intake.process``'s decision from the window's read; None if it needs more."""
        try:
            digest = content_hash(msg)
            entry = _Entry(raw, msg, ahead, digest, original=read.original_of(msg, digest))
            if entry.original is not None:
                return entry
            entry.screened = screen(msg, self.ctx.settings.own_addresses)
            entry.thread = read.thread_of(msg)
            if entry.screened is not None:
                return entry
            if entry.thread is None and reference_in_subject(msg) is not None:
                return None  # may join the case it quotes: decided one at a time
            entry.text = message_text(msg)
            entry.result = ahead.classified or self.ctx.classifier.classify(entry.text)
            if entry.thread is None:
                entry.new = new_case_for(msg, entry.result, received_time(msg, self.now),
                                         None, self.ctx)
            return entry
        except Exception:  # decided again one at a time, which quarantines it if it fails
            log.debug("%s: cannot be decided in a run", raw.key, exc_info=True)
            return None

    def _write_run(self, read: _WindowRead) -> None:
        run, self.run = self.run, []
        if not run:
            return
        try:
            with self.session.begin():
                written = self._write(run, read)
        except Exception as exc:
            self.session.expunge_all()  # the cases the run changed are read afresh
            # Most often another worker recorded one of the messages first (IntegrityError),
            # which is no fault; anything else is quarantined, with its error, by ``one``.
            log.log(logging.INFO if isinstance(exc, IntegrityError) else logging.WARNING,
                    "a run of %d messages could not be written (%s); taking them one at a time",
                    len(run), type(exc).__name__)
            log.debug("run failure", exc_info=True)
            for i, entry in run:
                self.outcomes[i] = self.one(entry.raw, entry.ahead)
            return
        self.session.expunge_all()  # what comes next reads its cases afresh, as in ``one``
        for i, outcome in sorted(written, key=lambda w: w[0]):  # logged in mailbox order
            log.info("%s -> %s %s %s", outcome.key, outcome.outcome, outcome.case_ref or "",
                     outcome.detail)
            self.outcomes[i] = outcome

    def _write(self, run: list[tuple[int, _Entry]], read: _WindowRead) -> list[tuple[int, Outcome]]:
        ctx, now, session = self.ctx, self.now, self.session

        def replies_to(address: str) -> int:
            # Only the read: no two messages of a run share a sender (``_keys``), so the run
            # itself adds no automatic reply to an address another of its messages asks about.
            return read.replies[address.lower()]

        opening = [(i, e) for i, e in run if e.outcome == "case"]
        refs = _references(session, ctx, [e.new for _, e in opening if e.new is not None])
        opened: dict[int, tuple[Case, list[dict[str, object]]]] = {}
        for (i, e), ref in zip(opening, refs, strict=True):
            assert e.new is not None and e.result is not None
            case = lifecycle.open_case(ref, e.new, ctx.calendar, now, ACTOR)
            opened[i] = (case, opening_rows(case, e.raw, e.msg, e.digest, e.result, ctx, now,
                                            e.text, replies_to))
        case_service.insert_cases(session, [case for case, _ in opened.values()],
                                  ctx.calendar, now)
        answered = {e.thread.case_id for _, e in run
                    if e.outcome == "joined" and e.thread is not None}
        loaded = {case.id: case for case in session.scalars(
            select(Case).where(cases.c.id.in_(answered)))} if answered else {}

        # Each message's row, then the mail it queues, in mailbox order, as one message at a
        # time writes them: the ids keep that order, and it matters (the newest message of a
        # thread decides its case; the outbox sends in id order).
        rows: list[dict[str, object]] = []
        own_rows: list[tuple[int, ParsedMessage]] = []  # where each message's own row is
        outcomes: list[tuple[int, Outcome]] = []
        for i, e in run:
            own_rows.append((len(rows), e.msg))
            if i in opened:
                case, case_rows = opened[i]
                rows += [{**row, "case_id": case.id} for row in case_rows]
                outcomes.append((i, Outcome(e.raw.key, "case", case.ref, str(case.kind))))
            elif e.original is not None:
                rows.append(incoming_row(e.raw, e.msg, e.digest, "duplicate",
                                         e.original.case_id, now, detail=DUPLICATE_DETAIL))
                outcomes.append((i, Outcome(e.raw.key, "duplicate", e.original.ref)))
            elif e.screened is not None:
                rows.append(incoming_row(e.raw, e.msg, e.digest, "auto",
                                         e.thread.case_id if e.thread else None, now,
                                         detail=f"{e.screened.kind}: {e.screened.reason}"))
                log.info("auto-generated (%s) %s: not answered", e.screened.kind, e.raw.key)
                outcomes.append((i, Outcome(e.raw.key, "auto",
                                            e.thread.ref if e.thread else None,
                                            e.screened.kind)))
            else:  # a reply: the case it answers changes as intake._join changes it
                assert e.thread is not None and e.result is not None
                case = loaded[e.thread.case_id]
                rows.append(incoming_row(e.raw, e.msg, e.digest, "joined", case.id, now,
                                         result=e.result))
                detail, mail = join_case(case, e.msg, e.result, received_time(e.msg, now),
                                         ctx, now, replies_to)
                rows += mail
                outcomes.append((i, Outcome(e.raw.key, "joined", case.ref, detail)))
        ids = case_service.insert_messages(session, rows)
        files = [a for at, msg in own_rows for a in attachment_rows(ids[at], msg)]
        if files:
            session.execute(attachments.insert(), files)
        return outcomes


def _references(session: Session, ctx: IntakeContext, new: list[lifecycle.NewCase]) -> list[str]:
    """A reference for each new case, in order, drawn one statement per year."""
    years = [ctx.calendar.local(n.received_at).year for n in new]
    drawn = {year: iter(case_service.allocate_references(session, year, years.count(year)))
             for year in dict.fromkeys(years)}
    return [next(drawn[year]) for year in years]


def _parse_here(raw: RawMessage, ahead: Ahead) -> Ahead:
    """The parse-ahead child could not answer (None): parse here, as ``intake.process`` would,
    so that the message's keys are known before anything after it is decided."""
    if ahead.parsed is not None:
        return ahead
    try:
        return Ahead(parse_message(raw.data))
    except UnparseableMessage as exc:
        return Ahead(exc)
    except Exception:  # intake.process parses it again and the quarantine records why
        return ahead
