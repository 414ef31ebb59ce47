"""The staff API: list and read cases, and act on them, with a bearer token per staff member.

Actions run through the same ``cases.act`` and ``lifecycle`` functions as ``mailbot case ...``,
so the rules and their wording are the CLI's: a refused action is a 409 naming the rule, and
changes nothing. Who acted is the token's name, never a field of the request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.adapters.orm import messages
from mailbot.services import case_queries
from mailbot.services import cases as case_service
from mailbot.services.cases import ActionContext
from mailbot.services.presenters import case_detail, case_summary
from mailbot.workflow import lifecycle
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.lifecycle import RuleViolation
from mailbot.workflow.model import Case
from webhooks import schemas
from webhooks.auth import Unauthorized, staff_name
from webhooks.errors import ApiError, error_response
from webhooks.state import state
from webhooks.validation import field_error, read_json, read_query

bp = Blueprint("staff_api", __name__, url_prefix="/api/v1/cases")

Apply = Callable[[Any, Case, ActionContext], object]


def _today(ctx: ActionContext) -> date:
    return ctx.calendar.local(ctx.now).date()


#: POST /api/v1/cases/<ref>/<name>: the body's model, and what it does (as in case_commands).
ACTIONS: dict[str, tuple[type[BaseModel], Apply, str]] = {
    "assign": (schemas.AssignIn, lambda p, c, ctx: lifecycle.assign(
        c, ctx.now, ctx.by, officer=p.officer, reviewer=p.reviewer),
        "name the investigating officer and/or the stage-2 reviewer"),
    "respond": (schemas.RespondIn, lambda p, c, ctx: lifecycle.respond(
        c, p.on or _today(ctx), ctx.calendar, ctx.now, ctx.by, p.outcome),
        "record the response of the current stage"),
    "extend": (schemas.ExtendIn, lambda p, c, ctx: lifecycle.extend(
        c, p.until, p.reason, ctx.now, ctx.by),
        "agree a later response date"),
    "stage2": (schemas.Stage2In, lambda p, c, ctx: lifecycle.request_stage2(
        c, p.requested or ctx.now, ctx.calendar, ctx.now, ctx.by, p.reviewer),
        "record a request for a stage-2 review"),
    "close": (schemas.CloseIn, lambda p, c, ctx: lifecycle.close(
        c, ctx.now, ctx.by, ctx.calendar.policy.ombudsman_for(c.service_area), p.outcome),
        "close the case"),
    "reclassify": (schemas.ReclassifyIn, lambda p, c, ctx: lifecycle.reclassify(
        c, p.kind, ctx.calendar, ctx.now, ctx.by),
        "correct the kind of case (the correction is kept)"),
}


@bp.before_request
def authenticate() -> None:
    with state().core.sessions() as session:
        try:
            g.staff = staff_name(session, request.headers.get("Authorization"))
        except Unauthorized as exc:
            raise ApiError(401, str(exc), {"WWW-Authenticate": 'Bearer realm="mailbot"'}) from None


@bp.get("")
def index() -> Response:
    """One page of cases, oldest first; ``links.next`` is the next page (null on the last).

    Paging is by cursor (``after``: the last reference of the page before), not by offset, so
    cases opened while a client pages through only ever join the end (see ``case_queries``).
    """
    query = read_query(schemas.CaseFilters)
    st = state()
    with st.core.sessions() as session:
        after_id = None
        if query.after is not None:
            after_id = case_queries.case_id(session, query.after)
            if after_id is None:
                raise field_error("after", f"no case with reference {query.after!r}; start "
                                           "without after, then follow links.next")
        page = case_queries.page_of_cases(
            session, limit=query.limit, after_id=after_id, status=query.status, kind=query.kind,
            overdue_on=st.core.calendar.local(st.clock()).date() if query.overdue else None,
        )
        found = [case_summary(c) for c in page.cases]
    return jsonify({"cases": found, "links": {
        "self": _list_url(query, query.after),
        "next": _list_url(query, found[-1]["ref"]) if page.more else None,
    }})


def _list_url(query: schemas.CaseFilters, after: str | None) -> str:
    """The URL of a page: the same filters and page size, after the case ``after``."""
    params: dict[str, Any] = {
        "status": query.status, "kind": query.kind, "overdue": "true" if query.overdue else None,
        "limit": query.limit, "after": after.upper() if after else None,
    }
    values: dict[str, Any] = {k: str(v) for k, v in params.items() if v is not None}
    return url_for("staff_api.index", **values)


@bp.get("/<ref>")
def show(ref: str) -> Response:
    st = state()
    with st.core.sessions() as session:
        case = case_service.get_case(session, ref)
        calendar = st.core.calendar
        return jsonify(_detail(session, case, calendar, calendar.local(st.clock()).date()))


def _act(name: str) -> Callable[[str], Response]:
    model, apply, _ = ACTIONS[name]

    def view(ref: str) -> Response:
        st = state()
        params = read_json(model, request.get_data(), allow_empty=True)
        ctx = ActionContext(calendar=st.core.calendar, now=st.clock(), by=g.staff,
                            notifier=st.phone.notifier)
        with st.core.sessions.begin() as session:
            case = case_service.act(session, ref, lambda c, cx: apply(params, c, cx), ctx)
            return jsonify(_detail(session, case, ctx.calendar, _today(ctx)))

    view.__name__ = f"{name}_view"
    return view


for _name in ACTIONS:
    bp.add_url_rule(f"/<ref>/{_name}", endpoint=_name, view_func=_act(_name), methods=["POST"])


@bp.errorhandler(case_service.CaseNotFound)
def not_found(exc: case_service.CaseNotFound) -> Response:
    return error_response(404, f"no case with reference {exc.ref!r}; GET /api/v1/cases lists them")


@bp.errorhandler(RuleViolation)
def refused(exc: RuleViolation) -> Response:
    # The transaction has rolled back; the rule checks ran before anything changed anyway.
    return error_response(409, f"refused: {exc.message}", rule=exc.rule)


def _detail(session: Session, case: Case, calendar: WorkingCalendar, today: date
            ) -> dict[str, Any]:
    out = case_detail(case)
    rows = session.execute(
        select(messages.c.id, messages.c.direction, messages.c.outcome, messages.c.received_at,
               messages.c.sender, messages.c.recipients, messages.c.subject,
               messages.c.template, messages.c.sent_at, messages.c.body_text)
        .where(messages.c.case_id == case.id)
        .order_by(messages.c.id)
    )
    out["messages"] = [
        {"id": r.id, "direction": r.direction, "status": r.outcome,
         "at": r.received_at.isoformat(), "sender": r.sender, "recipients": r.recipients,
         "subject": r.subject, "template": r.template,
         "sent_at": r.sent_at.isoformat() if r.sent_at else None, "text": r.body_text}
        for r in rows
    ]
    out["reminders"] = _reminders(case, calendar, today)
    return out


def _reminders(case: Case, calendar: WorkingCalendar, today: date) -> list[dict[str, Any]]:
    """The computed reminder plan (the stored reminders will replace it when they land)."""
    try:
        from mailbot.workflow.reminders import plan
    except ImportError:
        return []
    return [
        {"key": r.key, "send_on": r.send_on.isoformat(), "recipient": r.recipient,
         "deadline": r.deadline, "deadline_date": r.deadline_date.isoformat(),
         "escalation": r.escalation}
        for r in plan(case, calendar, today)
    ]
