"""The transactional outbox: mail is queued in the same transaction as the case it belongs to,
and delivered later over one SMTP connection per flush, each row marked sent exactly once.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from mailbot.adapters.database import make_durable
from mailbot.adapters.orm import messages
from mailbot.adapters.send_claims import claims_for
from mailbot.adapters.smtp import Connection, PermanentFailure, TemporaryFailure, Transport
from mailbot.services.compose import Composed

log = logging.getLogger(__name__)

#: Templates that answer the sender automatically; the per-recipient cap counts these.
AUTO_REPLY_TEMPLATES = (
    "complaint_acknowledgement", "compliment_thanks", "quality_concern_receipt",
    "general_receipt", "stage2_acknowledgement",
)
MAX_BACKOFF = timedelta(hours=1)


def outbox_row(
    composed: Composed,
    *,
    case_id: int | None,
    to: str,
    envelope_from: str,
    template: str,
    now: datetime,
) -> dict[str, object]:
    """The ``messages`` row that queues ``composed``; insert many at once where it pays."""
    return {
        "case_id": case_id, "direction": "out", "message_id": composed.message_id,
        # Stored lower-cased so the auto-reply cap can use the index on recipients.
        "outcome": "queued", "detail": "", "sender": envelope_from, "recipients": to.lower(),
        "subject": composed.subject, "received_at": now, "body_text": composed.body,
        "template": template, "envelope_from": envelope_from, "raw": composed.raw,
        "attempts": 0, "next_attempt_at": now,
    }


def enqueue_rows(session: Session, rows: Sequence[dict[str, object]]) -> None:
    """Queue outbox rows (``outbox_row``) in one statement."""
    if rows:
        session.execute(messages.insert(), list(rows))


def auto_replies_since(session: Session, to: str, since: datetime) -> int:
    """Automatic replies (``AUTO_REPLY_TEMPLATES``) queued for ``to`` since ``since``."""
    return auto_replies_to(session, [to], since).get(to.lower(), 0)


def auto_replies_to(
    session: Session, addresses: Sequence[str], since: datetime
) -> dict[str, int]:
    """``auto_replies_since`` for many addresses in one query, by lower-cased address (the
    outbox stores recipients lower-cased, so the index on them serves the lookup)."""
    wanted = sorted({a.lower() for a in addresses})
    if not wanted:
        return {}
    rows = session.execute(
        select(messages.c.recipients, func.count())
        .where(
            messages.c.direction == "out",
            messages.c.recipients.in_(wanted),
            messages.c.template.in_(AUTO_REPLY_TEMPLATES),
            messages.c.received_at >= since,
        )
        .group_by(messages.c.recipients)
    )
    return {recipients: count for recipients, count in rows}


def _mark_sent_again(
    sessions: sessionmaker[Session], row_id: int, attempts: int, now: Callable[[], datetime]
) -> bool:
    """Mark a row sent in a fresh transaction; False if the database is still unreachable."""
    try:
        with sessions.begin() as session:
            session.execute(_MARK_SENT, {"row": row_id, "tries": attempts, "at": now()})
    except DBAPIError as exc:
        log.error("outbox %s was sent but cannot be marked sent (unless the lost connection's "
                  "last mark reached the database, it will be sent again): %s", row_id, exc)
        return False
    log.warning("outbox %s: marked sent on a new database connection after the first failed",
                row_id)
    return True


@dataclass
class FlushResult:
    sent: int = 0
    deferred: int = 0
    failed: int = 0


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


# An earlier row of the same case to the same recipients not sent yet (waiting, backing off
# or being sent by another worker): a row waits behind it, so that mail to one person arrives
# in the order it was queued. (A row that failed for good no longer holds anything up.)
_earlier = messages.alias("earlier")
_PENDING_EARLIER = (
    select(_earlier.c.id)
    .where(
        _earlier.c.direction == "out",
        _earlier.c.sent_at.is_(None),
        _earlier.c.next_attempt_at.is_not(None),
        _earlier.c.case_id == messages.c.case_id,
        _earlier.c.recipients == messages.c.recipients,
        _earlier.c.id < messages.c.id,
    )
    .exists()
)
_DUE = (
    messages.c.direction == "out",
    messages.c.sent_at.is_(None),
    messages.c.next_attempt_at.is_not(None),
    messages.c.next_attempt_at <= bindparam("started"),
    ~_PENDING_EARLIER,
)
#: The next rows due, oldest first (read without locks; ``send_claims`` claims them).
_DUE_IDS = select(messages.c.id).where(*_DUE).order_by(messages.c.id).limit(bindparam("n"))
#: The claimed rows that are still due, read after the claim (another worker may have sent or
#: deferred one between the first read and the claim).
_CLAIMED = (
    select(messages.c.id, messages.c.envelope_from, messages.c.recipients, messages.c.raw,
           messages.c.attempts)
    .where(messages.c.id.in_(bindparam("ids", expanding=True)), *_DUE)
    .order_by(messages.c.id)
)
#: Rows claimed at once: the flush picks up mail queued while it runs, a round at a time.
ROUND = 100


def _send_one(
    sessions: sessionmaker[Session],
    session: Session,
    conn: Connection,
    row: Row[Any],
    now: Callable[[], datetime],
    result: FlushResult,
) -> bool:
    """Send and mark one claimed row; False when the flush must stop (a temporary failure,
    or the connection holding the claims was lost)."""
    attempts = row.attempts + 1
    try:
        conn.send(row.envelope_from or "", row.recipients.split(","), row.raw)
    except PermanentFailure as exc:
        log.error("outbox %s to %s failed permanently: %s", row.id, row.recipients, exc)
        with session.begin():
            session.execute(update(messages).where(messages.c.id == row.id).values(
                attempts=attempts, last_error=str(exc)[:1000], next_attempt_at=None,
                outcome="failed"))
        result.failed += 1
        return True
    except TemporaryFailure as exc:
        log.warning("outbox %s deferred (attempt %d): %s", row.id, attempts, exc)
        with session.begin():
            session.execute(update(messages).where(messages.c.id == row.id).values(
                attempts=attempts, last_error=str(exc)[:1000],
                next_attempt_at=now() + backoff(attempts)))
        result.deferred += 1
        return False
    try:
        with session.begin():
            session.execute(_MARK_SENT, {"row": row.id, "tries": attempts, "at": now()})
    except DBAPIError:
        # The relay has the message but the database connection failed before the commit:
        # record it on a new connection, or the next flush sends it again. The claims went
        # with the connection, so this flush stops here.
        if not _mark_sent_again(sessions, row.id, attempts, now):
            raise
        result.sent += 1
        return False
    result.sent += 1
    return True


_MARK_SENT = (
    update(messages)
    .where(messages.c.id == bindparam("row"), messages.c.sent_at.is_(None))
    .values(attempts=bindparam("tries"), sent_at=bindparam("at"), outcome="sent",
            last_error=None)
)


def flush(
    sessions: sessionmaker[Session],
    transport: Transport,
    now: Callable[[], datetime],
    limit: int = 1000,
) -> FlushResult:
    """Send what is due, oldest first, over one connection.

    Rows are claimed a round at a time (``send_claims``: advisory locks on PostgreSQL, one
    flusher at a time on SQLite), so several workers never send the same row, and each is
    marked sent, and committed, right after the relay accepts it. A temporary failure stops
    the flush. Until a row has gone out (or failed for good), later mail of the same case to
    the same recipients waits behind it, even when another worker is sending it (an extension
    notice must not arrive before the acknowledgement it follows); mail of that case to anyone
    else, such as a safeguarding alert, is not held up.

    Durability (PostgreSQL): the rows of a round are made durable (``make_durable``: one disk
    wait) before any of them is sent, so no email leaves for a case the database could still
    lose. In the worker, whose commits do not wait for the disk
    (``make_engine(relaxed_commits=True)``), a crash of the database server in the half second
    after a "sent" mark would send that email again; it never loses one, and a worker crash, a
    restart of the database or a lost connection do not do even that. (SQLite keeps its commits
    through a crash of mailbot, not of the machine: see ``make_durable``.)

    One flush at a time per process (see ``_ONE_FLUSH_AT_A_TIME``).
    """
    with _ONE_FLUSH_AT_A_TIME:
        return _flush(sessions, transport, now, limit)


#: A worker flushes from its scheduled job and from each pass; two flushes in one process would
#: race for the rows of one case, and an email could overtake the one queued before it.
_ONE_FLUSH_AT_A_TIME = threading.Lock()


#: A round this long is spread over up to LANES SMTP connections at once. Relays answer each
#: command in turn (aiosmtpd offers no PIPELINING), so while one connection waits for an
#: answer the others send; a short round, the usual case, keeps to one.
#: Four: against two, 190-260 against 145-195 msg/s in the ingest benchmark, where the relay
#: shares the two cores; eight did no better. A relay that refuses some gets fewer.
LANES = 4
MORE_LANES_FROM = 20


@contextmanager
def _pinned(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session on one connection throughout (claims belong to it), a commit per row. On
    PostgreSQL it autocommits: a mark is then one round trip, not three (BEGIN, UPDATE,
    COMMIT), which counts when the two cores are busy."""
    engine = sessions.kw["bind"]
    with engine.connect() as conn, sessions(bind=conn) as session:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield session


_Lane = tuple[Session, Connection, ThreadPoolExecutor]


class _MoreLanes:
    """The other SMTP connections, each with its own database session and thread, opened
    when first needed; as many as the relay takes, up to ``LANES - 1``."""

    def __init__(self, sessions: sessionmaker[Session], transport: Transport) -> None:
        self.sessions, self.transport = sessions, transport
        self.stack = ExitStack()
        self.lanes: list[_Lane] = []
        self.refused = False

    def open(self) -> list[_Lane]:
        while len(self.lanes) < LANES - 1 and not self.refused:
            try:
                conn = self.stack.enter_context(self.transport.connect())
            except TemporaryFailure as exc:
                log.info("outbox: sending over %d connection(s) (another was refused: %s)",
                         len(self.lanes) + 1, exc)
                self.refused = True
                break
            session = self.stack.enter_context(_pinned(self.sessions))
            pool = self.stack.enter_context(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-lane"))
            self.lanes.append((session, conn, pool))
        return self.lanes

    def close(self) -> None:
        self.stack.close()


def _send_lane(
    sessions: sessionmaker[Session], session: Session, conn: Connection, rows: Sequence[Row[Any]],
    now: Callable[[], datetime], result: FlushResult, stop: threading.Event | None = None,
) -> bool:
    """Send rows in order until one must stop the flush, or the other lane did (``stop``: its
    claims may have gone with its connection)."""
    for row in rows:
        if stop is not None and stop.is_set():
            return False
        if not _send_one(sessions, session, conn, row, now, result):
            if stop is not None:
                stop.set()
            return False
    return True


def _send_round(
    sessions: sessionmaker[Session], session: Session, conn: Connection, more: _MoreLanes,
    rows: Sequence[Row[Any]], now: Callable[[], datetime], result: FlushResult,
) -> bool:
    """Send a round's rows; False when a temporary failure must stop the flush.

    Over several connections, each recipient's mail stays on one of them, in order. (A round
    holds at most one row per case and recipients anyway: ``_PENDING_EARLIER``.)
    """
    lanes = more.open() if len(rows) >= MORE_LANES_FROM else []
    if not lanes:
        return _send_lane(sessions, session, conn, rows, now, result)
    shares: list[list[Row[Any]]] = [[] for _ in range(len(lanes) + 1)]
    for row in rows:
        shares[zlib.crc32(row.recipients.encode()) % len(shares)].append(row)
    stop = threading.Event()
    others: list[tuple[FlushResult, Future[bool]]] = []
    for (lane_session, lane_conn, pool), share in zip(lanes, shares[1:], strict=True):
        lane_result = FlushResult()
        others.append((lane_result, pool.submit(
            _send_lane, sessions, lane_session, lane_conn, share, now, lane_result, stop)))
    ok = False
    try:
        ok = _send_lane(sessions, session, conn, shares[0], now, result, stop)
    except BaseException:
        stop.set()
        raise
    finally:
        # Wait for every other lane, and raise what one raised: its claims may have gone with
        # its connection, so the others stop at their next row (``stop``).
        raised: list[BaseException] = []
        for lane_result, future in others:
            try:
                ok = future.result() and ok
            except BaseException as exc:
                stop.set()
                raised.append(exc)
            result.sent += lane_result.sent
            result.deferred += lane_result.deferred
            result.failed += lane_result.failed
        if raised:
            raise raised[0]
    return ok


def _flush(
    sessions: sessionmaker[Session],
    transport: Transport,
    now: Callable[[], datetime],
    limit: int,
) -> FlushResult:
    result = FlushResult()
    params: dict[str, Any] = {"started": now(), "n": ROUND}
    with sessions() as probe:
        with probe.begin():
            due = list(probe.scalars(_DUE_IDS, params))
        if not due:
            return result
        more = _MoreLanes(sessions, transport)
        with _pinned(sessions) as session, claims_for(session) as claims:
            try:
                with transport.connect() as conn:
                    remaining = limit
                    while due and remaining > 0:
                        # Everything read as due is committed; made durable before it is
                        # claimed and sent (on another connection: the barrier needs a
                        # transaction).
                        make_durable(probe)
                        ids = claims.claim(session, due[:remaining])
                        if not ids:
                            break  # another worker is sending them; the next flush goes on
                        with session.begin():
                            rows = session.execute(_CLAIMED, {**params, "ids": ids}).all()
                        remaining -= len(rows)
                        if not _send_round(sessions, session, conn, more, rows, now, result):
                            return result
                        claims.release(session)
                        params["started"] = now()  # and take what was queued meanwhile
                        with session.begin():
                            due = list(session.scalars(_DUE_IDS, params))
            except TemporaryFailure as exc:
                log.warning("outbox: relay unavailable, will retry: %s", exc)
                with session.begin():
                    session.execute(
                        update(messages)
                        .where(messages.c.direction == "out", messages.c.sent_at.is_(None),
                               messages.c.next_attempt_at <= now())
                        .values(attempts=messages.c.attempts + 1, last_error=str(exc)[:1000])
                    )
                result.deferred += 1
            finally:
                more.close()
    return result
