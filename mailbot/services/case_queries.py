"""One page of cases at a time, for the staff API: keyset paging, selected by the database.

``cases.list_cases`` returns every match, which suits the CLI; a web client wants a page at a
time, and pages that stay right while cases are being opened. Offsets would not: a case opened
between two requests shifts every later row by one, so the next page repeats a case (or, with
a filter that a case leaves, skips one). Instead the client names the last case it has seen and
gets the cases after it in id order, which is the order they were opened: a new case only ever
joins the end, so walking the pages never repeats one and never reorders them. That holds on
PostgreSQL too, where openings run side by side and a case can commit after one with a higher id:
the page is read under a SHARE lock on ``cases`` (see :func:`page_of_cases`).
The cursor works through the case's id, not its place in the filtered list, so it still works
when that case has since left the filter (closed, reclassified, no longer overdue).

The query reads ``limit + 1`` rows along the primary key, the extra one only to tell whether
another page follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.orm import Session

from mailbot.adapters.orm import cases
from mailbot.workflow.model import Case, Kind, Status


@dataclass(frozen=True)
class CasePage:
    cases: list[Case]
    #: Whether cases matching the same filters follow the last one.
    more: bool


def case_id(session: Session, ref: str) -> int | None:
    """The id behind a reference (written in any letter case), or None if there is no such case."""
    return session.scalar(select(cases.c.id).where(cases.c.ref == ref.strip().upper()))


def case_filters(
    status: Status | None = None,
    kind: Kind | None = None,
    overdue_on: date | None = None,
) -> list[ColumnElement[bool]]:
    """The conditions behind both ``cases.list_cases`` (CLI) and :func:`page_of_cases` (API)."""
    where: list[ColumnElement[bool]] = []
    if status is not None:
        where.append(cases.c.status == status)
    if kind is not None:
        where.append(cases.c.kind == kind)
    if overdue_on is not None:
        where.append(
            ((cases.c.status == Status.OPEN) & (cases.c.response_due < overdue_on))
            | ((cases.c.status == Status.STAGE2) & (cases.c.stage2_response_due < overdue_on))
        )
    return where


def page_of_cases(
    session: Session,
    *,
    limit: int,
    after_id: int | None = None,
    status: Status | None = None,
    kind: Kind | None = None,
    overdue_on: date | None = None,
) -> CasePage:
    """At most ``limit`` cases matching the filters, with ids above ``after_id``, oldest first."""
    if limit < 1:
        raise ValueError(f"limit must be 1 or more, not {limit}")
    if session.get_bind().dialect.name == "postgresql":
        # Waits for every opening that has drawn an id (an INSERT holds ROW EXCLUSIVE on the
        # table from before it draws the id until it commits) and holds new ones back until the
        # read ends: the page then sees every id below its last one that will ever exist, and a
        # cursor cannot pass a case still being written. Openings never wait for each other.
        # The lock holds back every write to cases (staff actions, replies, the sweep) for the
        # few milliseconds of the read; it is taken only if that wait is short, else the page
        # fails (503) rather than queue every writer behind it.
        session.execute(text("SET LOCAL lock_timeout = '5s'"))
        session.execute(text("LOCK TABLE cases IN SHARE MODE"))
    stmt = select(Case).where(*case_filters(status, kind, overdue_on))
    if after_id is not None:
        stmt = stmt.where(cases.c.id > after_id)
    found = list(session.scalars(stmt.order_by(cases.c.id).limit(limit + 1)))
    return CasePage(cases=found[:limit], more=len(found) > limit)
