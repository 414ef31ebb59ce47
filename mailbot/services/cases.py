"""Opening, finding and acting on cases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mailbot.adapters.orm import cases, reference_counters
from mailbot.config import Settings
from mailbot.services.compose import Composer
from mailbot.services.notices import extension_notice
from mailbot.services.reminders import replan
from mailbot.workflow import lifecycle
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, Status


class CaseNotFound(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no case with reference {ref!r}; `mailbot cases` lists them")
        self.ref = ref


def allocate_reference(session: Session, year: int) -> str:
    """The next ``CSQ-YYYY-NNNNN`` for ``year``, gap-free and safe under concurrent callers.

    The counter row is updated in the caller's transaction, so its row lock (PostgreSQL) or the
    write lock (SQLite) serialises concurrent openings, and a rolled-back opening returns its
    number.
    """
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(reference_counters)
        .values(year=year, last=0)
        .on_conflict_do_nothing(index_elements=["year"])
    )
    number = session.execute(
        update(reference_counters)
        .where(reference_counters.c.year == year)
        .values(last=reference_counters.c.last + 1)
        .returning(reference_counters.c.last)
    ).scalar_one()
    return f"CSQ-{year}-{number:05d}"


def open_case(
    session: Session,
    new: lifecycle.NewCase,
    calendar: WorkingCalendar,
    now: datetime,
    actor: str,
) -> Case:
    year = calendar.local(new.received_at).year
    ref = allocate_reference(session, year)
    case = lifecycle.open_case(ref, new, calendar, now, actor)
    session.add(case)
    session.flush()
    replan(session, case, calendar, now)
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
    stmt = select(Case).order_by(cases.c.id)
    if status is not None:
        stmt = stmt.where(cases.c.status == status)
    if kind is not None:
        stmt = stmt.where(cases.c.kind == kind)
    if overdue_on is not None:
        stmt = stmt.where(
            ((cases.c.status == Status.OPEN) & (cases.c.response_due < overdue_on))
            | ((cases.c.status == Status.STAGE2) & (cases.c.stage2_response_due < overdue_on))
        )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class ActionContext:
    calendar: WorkingCalendar
    now: datetime
    by: str
    #: With both set, an extension is notified to the requester in the same transaction.
    composer: Composer | None = None
    settings: Settings | None = None


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
    if len(case.extensions) > extensions_before and ctx.composer and ctx.settings:
        extension_notice(session, case, case.extensions[-1], ctx.composer, ctx.settings,
                         ctx.now, ctx.by)
    replan(session, case, ctx.calendar, ctx.now)
    return case
