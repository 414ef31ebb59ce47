"""The worker: fetch, process and move mail in batches; flush the outbox; run the scheduler.

Most messages are written in runs (``intake_runs``: several in one transaction); a run that
fails is redone one message at a time, and a message that fails alone is quarantined alone,
so the rest carry on. Messages are moved out of the inbox only after their transaction
committed; a crash in between leaves them in the inbox, and the next pass finds their identity
already recorded and only moves them.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from mailbot.adapters.database import make_durable
from mailbot.adapters.heap import release_free_memory
from mailbot.adapters.mailbox import Mailbox, MailboxUnavailable, RawMessage
from mailbot.adapters.smtp import Transport
from mailbot.bootstrap import App, utcnow
from mailbot.intake.parse_ahead import Ahead, ParseAhead
from mailbot.services import idempotency, intake, intake_runs, outbox
from mailbot.services.intake import IntakeContext, Outcome
from mailbot.services.reminders import SweepContext, sweep

log = logging.getLogger(__name__)

#: How often an idling worker checks whether it has been asked to stop.
STOP_CHECK_SECONDS = 5.0
#: How often the worker forgets the webhook's expired idempotency keys.
PURGE_INTERVAL_SECONDS = 6 * 3600.0


class DatabaseUnavailable(Exception):
    pass


@dataclass
class PassResult:
    outcomes: list[Outcome] = field(default_factory=list)
    sent: int = 0
    deferred: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)


def process_batch(
    app: App, ctx: IntakeContext, batch: list[RawMessage], now: Callable[[], datetime] = utcnow,
    ahead: ParseAhead | None = None, readings: Iterator[Ahead] | None = None,
) -> list[Outcome]:
    """Process a batch; the outcomes in batch order.

    Entries already recorded (a crash came between commit and move) are found with one query.
    The rest are parsed (and classified) in a second process while earlier ones are written:
    ``readings`` are the results ``ahead.parse_all`` gives for the whole batch, when the caller
    queued it already; with only ``ahead``, the batch is queued here. Most messages are written
    in runs (``intake_runs``), the others each in its own transaction, and anything that fails
    alone is quarantined alone.
    """
    if readings is None:
        readings = _queue(ahead, batch)
    pending: Iterator[Ahead] = readings if readings is not None else repeat(Ahead())
    with app.sessions() as session:  # one connection for the batch
        try:
            with session.begin():
                seen = intake.seen_among(session, [raw.key for raw in batch])
        except (OperationalError, DBAPIError) as exc:
            raise DatabaseUnavailable(str(exc.orig or exc)) from exc
        fresh = ((raw, reading) for raw, reading in zip(batch, pending, strict=False)
                 if raw.key not in seen)

        def one(raw: RawMessage, reading: Ahead) -> Outcome:
            return _process_one(app, session, ctx, raw, now, reading)

        try:
            done = intake_runs.process_many(session, fresh, ctx, now, one)
        except (OperationalError, DBAPIError) as exc:  # the window's read
            raise DatabaseUnavailable(str(exc.orig or exc)) from exc
        finally:
            if isinstance(pending, Generator):
                pending.close()  # cancels what the child has not started
        by_key = {o.key: o for o in done}
        return [seen.get(raw.key) or by_key[raw.key] for raw in batch]


def _queue(ahead: ParseAhead | None, batch: list[RawMessage]) -> Iterator[Ahead] | None:
    """Hand ``batch`` to the parse-ahead child now; its readings, in order (None: no child)."""
    return ahead.parse_all([raw.data for raw in batch]) if ahead and batch else None


def _process_one(
    app: App, session: Session, ctx: IntakeContext, raw: RawMessage,
    now: Callable[[], datetime], ahead: Ahead,
) -> Outcome:
    """One message in its own transaction; anything it raises quarantines it, and it alone."""
    try:
        with session.begin():
            outcome = intake.process(session, raw, ctx, now(), checked_unseen=True,
                                     parsed=ahead.parsed, classified=ahead.classified)
    except IntegrityError as exc:
        # Another worker recorded this mailbox entry first (its identity is unique): the
        # message is theirs, not bad. Anything else unique-violating is a real failure.
        return _seen_elsewhere(app, raw) or _quarantine(app, raw, exc, now)
    except (OperationalError, DBAPIError) as exc:
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            # The database is gone, not the message: stop without quarantining anything.
            raise DatabaseUnavailable(str(exc.orig or exc)) from exc
        return _quarantine(app, raw, exc, now)
    except Exception as exc:
        return _quarantine(app, raw, exc, now)
    finally:
        session.expunge_all()  # the next message reads its cases afresh
    log.info("%s -> %s %s %s", raw.key, outcome.outcome, outcome.case_ref or "", outcome.detail)
    return outcome


def _seen_elsewhere(app: App, raw: RawMessage) -> Outcome | None:
    try:
        with app.sessions() as session:
            return intake.already_seen(session, raw.key)
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseUnavailable(str(exc.orig or exc)) from exc


def _quarantine(
    app: App, raw: RawMessage, exc: Exception, now: Callable[[], datetime]
) -> Outcome:
    error = f"{type(exc).__name__}: {exc}"
    log.warning("quarantined %s: %s", raw.key, error)
    try:
        with app.sessions.begin() as session:
            intake.record_quarantine(session, raw, error, now())
    except IntegrityError as db_exc:
        # Another worker recorded this mailbox entry (its quarantine, as a rule) first.
        seen = _seen_elsewhere(app, raw)
        if seen is None:
            raise DatabaseUnavailable(str(db_exc)) from db_exc
        return seen
    except (OperationalError, DBAPIError) as db_exc:
        raise DatabaseUnavailable(str(db_exc)) from db_exc
    return Outcome(raw.key, "quarantined", None, error)


def _flush(app: App, transport: Transport, now: Callable[[], datetime]) -> outbox.FlushResult:
    """Flush the outbox; losing the database mid-flush is DatabaseUnavailable, as in intake."""
    try:
        return outbox.flush(app.sessions, transport, now)
    except (OperationalError, DBAPIError) as exc:
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            raise DatabaseUnavailable(str(exc.orig or exc)) from exc
        raise


#: PostgreSQL advisory lock held while moving mail out of the inbox ("mailbot" in ASCII).
MOVE_LOCK = 0x6D61696C626F74


def _move_out(app: App, mailbox: Mailbox, done: list[str], bad: list[str]) -> None:
    """Move messages out of the inbox, one worker at a time.

    Workers sharing a mailbox fetch the same messages, and if two MOVE the same message at
    once, Dovecot copies it into Processed twice before either expunges it. Holding a database
    lock while moving (an advisory lock on PostgreSQL; SQLite's write lock, which BEGIN
    IMMEDIATE takes) lets the second worker's fresh SELECT find the messages gone, so its MOVE
    does nothing.
    """
    try:
        # The worker commits without waiting for the disk (``relaxed_commits``): once the mail
        # leaves the inbox, the cases opened for it must survive a crash of the database.
        with app.sessions() as session:
            make_durable(session)
            with session.begin():
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                    {"key": MOVE_LOCK})
                else:
                    session.connection()  # begins the transaction, taking the write lock
                if done:
                    mailbox.mark_processed(done)
                if bad:
                    mailbox.quarantine(bad)
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseUnavailable(str(exc.orig or exc)) from exc


def poll_once(
    app: App,
    ctx: IntakeContext,
    mailbox: Mailbox,
    transport: Transport,
    batch_size: int = 100,
    now: Callable[[], datetime] = utcnow,
    ahead: ParseAhead | None = None,
) -> PassResult:
    """Process everything waiting, move it, and send what that queued.

    Each batch's mail is sent by a second thread while the next batch is processed: sending is
    mostly waiting for the relay, and it overlaps the intake's work instead of following it.
    A flush takes only committed rows whose cases it has made durable first, and holds no
    database lock while the relay answers (``send_claims``); a later round of it may send mail
    of the next batch before that batch is moved out of the inbox, which is harmless (the
    message's mailbox entry is recorded, so a restart only moves it). The pass returns when
    the last flush has finished. ``ahead``: see ``process_batch``.
    """
    result = PassResult()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox") as sender:

        def send_queued() -> Future[outbox.FlushResult]:
            return sender.submit(_flush, app, transport, now)

        flushes: list[Future[outbox.FlushResult]] = []
        batch = mailbox.fetch_waiting(limit=batch_size)
        readings = _queue(ahead, batch)
        while batch:
            # The next batch is fetched and queued for the parse-ahead child before this one
            # is written, so that the child never waits for the worker.
            following: list[RawMessage] = []
            if len(batch) == batch_size:
                following = mailbox.fetch_waiting(limit=batch_size,
                                                  skip={raw.key for raw in batch})
            queued = _queue(ahead, following)
            outcomes = process_batch(app, ctx, batch, now, ahead, readings)
            result.outcomes.extend(outcomes)
            done = [o.key for o in outcomes if not o.quarantined]
            bad = [o.key for o in outcomes if o.quarantined]
            if done or bad:
                _move_out(app, mailbox, done, bad)
            flushes.append(send_queued())
            batch, readings = following, queued
        if not flushes:  # nothing new, but retries may be due
            flushes.append(send_queued())
        for flush in flushes:
            flushed = flush.result()  # a DatabaseUnavailable there is raised here
            result.sent += flushed.sent
            result.deferred += flushed.deferred
    return result


def settle() -> None:
    """Leave what start-up built (modules, the app, the templates) out of garbage collection.

    The collector's full passes walk every object the process tracks, and start-up makes
    most of them: about 180,000, a fifth of a second of a 1,000-message backlog spent walking
    objects that live as long as the process (benchmarks/README.md). ``gc.freeze`` moves them
    to a generation no pass visits; what intake allocates afterwards is collected as before.
    """
    gc.collect()
    gc.freeze()


class Worker:
    """The long-running worker: IDLE (or polling) on the inbox, with scheduled jobs beside it."""

    def __init__(
        self,
        app: App,
        ctx: IntakeContext,
        mailbox: Mailbox,
        transport: Transport,
        idle_timeout: float = 60.0,
        outbox_interval: float = 30.0,
        parse_ahead: bool = True,
    ) -> None:
        self.app, self.ctx, self.mailbox, self.transport = app, ctx, mailbox, transport
        # The child classifies too, with the policy's threshold as intake would.
        threshold = ctx.settings.policy.triage_confidence_threshold
        self.ahead = ParseAhead(threshold) if parse_ahead else None
        self.idle_timeout = idle_timeout
        self.outbox_interval = outbox_interval
        self.stopping = threading.Event()
        #: Set once the scheduler and the parse-ahead child are up (the child loads the
        #: classifier, about a second) and the worker starts taking mail.
        self.ready = threading.Event()
        self.scheduler = BackgroundScheduler(timezone=app.settings.timezone)

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        log.info("stopping after the current message")
        self.stopping.set()

    def _flush_outbox(self) -> None:
        try:
            outbox.flush(self.app.sessions, self.transport, utcnow)
        except Exception:  # a failed flush is retried at the next tick
            log.exception("outbox flush failed")

    def _purge_idempotency_keys(self) -> None:
        # The webhook's retry protection outlives any genuine retry by days (see idempotency);
        # forgetting older keys here keeps the table to about a week of calls.
        try:
            with self.app.sessions.begin() as session:
                deleted = idempotency.purge_expired(session, utcnow())
            if deleted:
                log.info("forgot %d webhook idempotency keys past their retention", deleted)
        except Exception:  # retried at the next tick; nothing depends on it meanwhile
            log.exception("idempotency key purge failed")

    def add_sweep(self, ctx: SweepContext, seconds: float = 300.0) -> None:
        """Schedule the reminder sweep; it also runs once at start-up to catch up."""

        def run_sweep() -> None:
            try:
                result = sweep(self.app.sessions, ctx, utcnow())
                if result.sent or result.closed:
                    log.info("sweep: %d reminders sent, %d superseded, %d cases closed",
                             result.sent, result.superseded, result.closed)
                    self._flush_outbox()
            except Exception:  # retried at the next tick; the rows say what is still due
                log.exception("reminder sweep failed")

        self.add_job(run_sweep, seconds, "sweep")
        self.scheduler.add_job(run_sweep, id="sweep-at-start", name="sweep-at-start")

    def add_job(self, func: Callable[[], object], seconds: float, name: str) -> None:
        self.scheduler.add_job(func, "interval", seconds=seconds, id=name, name=name,
                               max_instances=1, coalesce=True, replace_existing=True)

    def run(self) -> int:
        """Run until SIGTERM or SIGINT (main thread only: it installs the signal handlers)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        return self.run_loop()

    def _idle(self) -> None:
        # Wait in short slices so that a stop request is honoured within seconds.
        deadline = time.monotonic() + self.idle_timeout
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.mailbox.wait_for_mail(min(STOP_CHECK_SECONDS, remaining)):
                return

    def run_loop(self) -> int:
        self.add_job(self._flush_outbox, self.outbox_interval, "outbox")
        self.add_job(self._purge_idempotency_keys, PURGE_INTERVAL_SECONDS, "purge-keys")
        self.scheduler.start()
        if self.ahead is not None:
            self.ahead.start()
        settle()
        self.ready.set()
        failures = 0
        try:
            while not self.stopping.is_set():
                try:
                    poll_once(self.app, self.ctx, self.mailbox, self.transport,
                              ahead=self.ahead)
                    failures = 0
                    if self.stopping.is_set():
                        break
                    # The inbox is empty: what the pass freed goes back to the system.
                    release_free_memory()
                    if self.ahead is not None:
                        self.ahead.release_free_memory()
                    self._idle()
                except (MailboxUnavailable, DatabaseUnavailable) as exc:
                    failures += 1
                    delay = min(2 ** failures, 60)
                    log.error("%s; retrying in %d s", exc, delay)
                    self.stopping.wait(delay)
        finally:
            self.scheduler.shutdown(wait=False)
            self.mailbox.close()
            if self.ahead is not None:
                self.ahead.close()
        return 0
