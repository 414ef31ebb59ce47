"""Opening, finding and acting on cases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mailbot.adapters.orm import case_events, cases, messages, reference_counters, reminders
from mailbot.services.case_queries import case_filters
from mailbot.services.notices import Notifier, extension_notice
from mailbot.services.reminders import plan_rows, replan
from mailbot.workflow import lifecycle
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, Status


class CaseNotFound(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no case with reference {ref!r}; `mailbot cases` lists them")
        self.ref = ref


def allocate_reference(session: Session, year: int) -> str:
    """The next ``CSQ-YYYY-NNNNN`` for ``year``: unique and in order of allocation."""
    return allocate_references(session, year, 1)[0]


def allocate_references(session: Session, year: int, count: int) -> list[str]:
    """The next ``count`` references for ``year``, in order, drawn in one statement.

    One statement advances the year's counter row by ``count`` (creating it on the first case
    of a year). On SQLite it runs in the caller's transaction: ``BEGIN IMMEDIATE`` already
    serialises writers, so this costs nothing, and a rolled-back opening returns its numbers
    (no gaps).

    On PostgreSQL it runs in a short transaction of its own, on a second connection, committed
    without waiting for the disk (``synchronous_commit = off``). In the caller's transaction the
    row lock would be held until that transaction's COMMIT, serialising every case opened
    anywhere (measured: about 110 cases/s at most; see benchmarks/README.md). The price is a
    gap in the numbers when the opening they were drawn for rolls back: a database failure, a
    message quarantined after its number was drawn, a batch of mail that falls back to one
    message at a time (``intake_runs``), or a second worker recording the same mailbox entry
    first (the webhook checks idempotency first, so a retry draws no number).
    Committing without the disk wait cannot hand a number out twice: before anything that
    shows the number leaves the database (the webhook's answer, an acknowledgement) a durable
    commit flushes the WAL past it (the webhook's own commit; ``make_durable`` in the worker),
    and a number that never got that far may be lost in a server crash, which is again a gap.
    """
    if count < 1:
        return []
    params = {"year": year, "count": count}
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        engine = bind if isinstance(bind, Engine) else bind.engine
        with engine.connect() as conn:
            # Autocommit: the statement is the whole transaction, one round trip in all.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            last = conn.execute(_PG_NEXT_NUMBERS, params).scalar_one()
    else:
        last = session.execute(_SQLITE_NEXT_NUMBERS, params).scalar_one()
    return [f"CSQ-{year}-{number:05d}" for number in range(last - count + 1, last + 1)]


# The counter's upsert for PostgreSQL, written out because it carries its own commit setting:
# set_config(..., true) in the SELECT it inserts from switches off the wait for the disk for
# this statement's transaction alone. (ON CONFLICT after a SELECT needs the WHERE to parse.)
_PG_NEXT_NUMBERS = text(
    "INSERT INTO reference_counters (year, last) "
    "SELECT :year, :count FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_wait "
    "WHERE true "
    "ON CONFLICT (year) DO UPDATE SET last = reference_counters.last + EXCLUDED.last "
    "RETURNING last"
)


_SQLITE_NEXT_NUMBERS = (
    sqlite_insert(reference_counters)
    .values(year=bindparam("year"), last=bindparam("count"))
    .on_conflict_do_update(
        index_elements=["year"],
        set_={"last": reference_counters.c.last + sqlite_insert(reference_counters).excluded.last})
    .returning(reference_counters.c.last)
)


def new_case(
    session: Session,
    new: lifecycle.NewCase,
    calendar: WorkingCalendar,
    now: datetime,
    actor: str,
) -> Case:
    """The case for ``new`` with its reference, built in memory, not yet written.

    Callers record what happens at opening (acknowledgements queued, notifications, flags) on
    the case, then write everything at once with ``save_new_case``.
    """
    year = calendar.local(new.received_at).year
    return lifecycle.open_case(allocate_reference(session, year), new, calendar, now, actor)


_CASE_COLUMNS = [c.key for c in cases.columns if c.key != "id"]
# Built once: values go in as execution parameters, so SQLAlchemy compiles each shape once.
_INSERT_CASES = insert(cases).returning(cases.c.id, sort_by_parameter_order=True)
_INSERT_MESSAGES = insert(messages).returning(messages.c.id, sort_by_parameter_order=True)


def save_new_case(
    session: Session,
    case: Case,
    calendar: WorkingCalendar,
    now: datetime,
    rows: Sequence[dict[str, Any]] = (),
) -> list[int]:
    """Write a case from ``new_case`` with ``rows``: see ``save_new_cases``."""
    return save_new_cases(session, [(case, rows)], calendar, now)[0]


def save_new_cases(
    session: Session,
    new: Sequence[tuple[Case, Sequence[dict[str, Any]]]],
    calendar: WorkingCalendar,
    now: datetime,
) -> list[list[int]]:
    """Write cases from ``new_case`` (``insert_cases``), each with its rows: its messages, the
    one that opened it first, then the queued mail. Returns the ids of each case's rows, in
    order.
    """
    if not new:
        return []
    insert_cases(session, [case for case, _ in new], calendar, now)
    returned = iter(insert_messages(
        session, [{**row, "case_id": case.id} for case, case_rows in new for row in case_rows]))
    return [[next(returned) for _ in case_rows] for _, case_rows in new]


def insert_cases(
    session: Session, new: Sequence[Case], calendar: WorkingCalendar, now: datetime
) -> None:
    """Write cases from ``new_case``, each with its audit trail and its reminder plan, and set
    their ``id``; their messages are the caller's (``insert_messages``).

    Core statements, one per table for all the cases at once, rather than the ORM's unit of
    work: statements were the largest cost of opening a case (benchmarks/README.md). The case
    objects stay outside the session.
    """
    if not new:
        return
    ids = session.scalars(
        _INSERT_CASES, [{k: getattr(case, k) for k in _CASE_COLUMNS} for case in new])
    for case, case_id in zip(new, ids, strict=True):
        case.id = case_id
    session.execute(case_events.insert(), [
        {"case_id": case.id, "at": e.at, "actor": e.actor, "action": e.action,
         "detail": e.detail}
        for case in new for e in case.events
    ])
    planned = [row for case in new for row in plan_rows(case, calendar, now)]
    if planned:
        session.execute(reminders.insert(), planned)


def insert_messages(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``messages`` rows of any kind (mail received, mail queued) in one statement, in
    order; their ids, in order. A column some rows leave out is NULL in those rows."""
    if not rows:
        return []
    keys = set().union(*rows)
    return list(session.scalars(_INSERT_MESSAGES, [{k: row.get(k) for k in keys} for row in rows]))


def open_case(
    session: Session,
    new: lifecycle.NewCase,
    calendar: WorkingCalendar,
    now: datetime,
    actor: str,
) -> Case:
    """Open and write a case with nothing else to record at opening (the CLI's `case open`)."""
    case = new_case(session, new, calendar, now, actor)
    save_new_case(session, case, calendar, now)
    return case


def get_case(session: Session, ref: str, *, for_update: bool = False) -> Case:
    stmt = select(Case).where(cases.c.ref == ref.strip().upper())
    if for_update:
        stmt = stmt.with_for_update()
    case = session.scalars(stmt).one_or_none()
    if case is None:
        raise CaseNotFound(ref)
    return case


def list_cases(
    session: Session,
    status: Status | None = None,
    kind: Kind | None = None,
    overdue_on: date | None = None,
    limit: int | None = None,
) -> list[Case]:
    stmt = select(Case).where(*case_filters(status, kind, overdue_on)).order_by(cases.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class ActionContext:
    calendar: WorkingCalendar
    now: datetime
    by: str
    #: Composes the requester's extension notice, queued in the same transaction.
    notifier: Notifier


Action = Callable[[Case, ActionContext], object]


def act(session: Session, ref: str, action: Action, ctx: ActionContext) -> Case:
    """Apply one staff action to a case under a row lock; a RuleViolation changes nothing.

    Afterwards the reminder plan is brought up to date, and a new extension is notified to
    the requester: both are consequences of the action, whichever entry point took it.
    """
    case = get_case(session, ref, for_update=True)
    extensions_before = len(case.extensions)
    action(case, ctx)
    session.flush()
    if len(case.extensions) > extensions_before:
        extension_notice(session, case, case.extensions[-1], ctx.notifier, ctx.now, ctx.by)
    replan(session, case, ctx.calendar, ctx.now)
    return case
