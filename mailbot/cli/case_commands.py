"""``cases`` and ``case ...``: listing cases and the staff actions on one case."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from mailbot.bootstrap import notifier, utcnow
from mailbot.cli.common import (
    CommandError,
    add_json_flag,
    app_context,
    iso_date,
    iso_datetime,
    nonblank,
    print_json,
    print_table,
)
from mailbot.services import cases as case_service
from mailbot.services.presenters import case_detail, case_summary
from mailbot.services.reminders import stored_plan
from mailbot.workflow import lifecycle
from mailbot.workflow.lifecycle import RuleViolation
from mailbot.workflow.model import Case, Kind, ServiceArea, Source, Status


def register(sub: Any) -> None:
    p = sub.add_parser("cases", help="list cases", description="List cases, oldest first.")
    p.add_argument("--status", type=Status, choices=list(Status))
    p.add_argument("--kind", type=Kind, choices=list(Kind))
    p.add_argument("--overdue", action="store_true", help="only cases past their response date")
    add_json_flag(p)
    p.set_defaults(handler=cmd_cases)

    case = sub.add_parser("case", help="show one case or act on it", description="Staff actions.")
    actions = case.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("show", help="everything about one case")
    p.add_argument("ref")
    add_json_flag(p)
    p.set_defaults(handler=cmd_show)

    p = actions.add_parser("open", help="log a case received by letter, in person or by phone")
    p.add_argument("--kind", type=Kind, choices=list(Kind), required=True)
    p.add_argument("--name", type=nonblank, required=True, help="the requester's name")
    p.add_argument("--email")
    p.add_argument("--phone")
    p.add_argument("--summary", type=nonblank, required=True)
    p.add_argument("--received", type=iso_datetime, help="when it was received (default now)")
    p.add_argument("--source", type=Source, choices=list(Source), default=Source.LETTER)
    p.add_argument("--service-area", type=ServiceArea, choices=list(ServiceArea),
                   default=ServiceArea.SOCIAL_CARE)
    p.add_argument("--incident-date", type=iso_date)
    _by(p)
    p.set_defaults(handler=cmd_open)

    p = _action(actions, "assign", "name the investigating officer or the stage-2 reviewer")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--officer", type=nonblank)
    who.add_argument("--reviewer", type=nonblank)
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.assign(
        c, ctx.now, ctx.by, officer=a.officer, reviewer=a.reviewer)))

    p = _action(actions, "respond", "record the response of the current stage")
    p.add_argument("--on", type=iso_date, help="date the response went out (default today)")
    p.add_argument("--outcome", help="a short note of the outcome")
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.respond(
        c, a.on or _today(ctx), ctx.calendar, ctx.now, ctx.by, a.outcome)))

    p = _action(actions, "extend", "agree a later response date")
    p.add_argument("--until", type=iso_date, required=True, help="the new response date")
    p.add_argument("--reason", type=nonblank, required=True)
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.extend(
        c, a.until, a.reason, ctx.now, ctx.by)))

    p = _action(actions, "stage2", "record a request for a stage-2 review")
    p.add_argument("--requested", type=iso_datetime, help="when it was received (default now)")
    p.add_argument("--reviewer", type=nonblank)
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.request_stage2(
        c, a.requested or ctx.now, ctx.calendar, ctx.now, ctx.by, a.reviewer)))

    p = _action(actions, "close", "close the case")
    p.add_argument("--outcome")
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.close(
        c, ctx.now, ctx.by, ctx.calendar.policy.ombudsman_for(c.service_area), a.outcome)))

    p = _action(actions, "reclassify", "correct the kind of case (the correction is kept)")
    p.add_argument("--kind", type=Kind, choices=list(Kind), required=True)
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.reclassify(
        c, a.kind, ctx.calendar, ctx.now, ctx.by)))

    p = _action(actions, "reopen", "reopen a closed case")
    p.add_argument("--reason", type=nonblank, required=True)
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.reopen(c, ctx.now, ctx.by, a.reason)))

    p = _action(actions, "triage", "confirm the classification and leave the triage queue")
    p.set_defaults(handler=_run(lambda a, c, ctx: lifecycle.triage(c, ctx.now, ctx.by)))


def _by(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", type=nonblank, required=True, help="your name, for the audit trail")
    add_json_flag(p)


def _action(actions: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
    p.add_argument("ref", help="case reference, e.g. CSQ-2026-00001")
    _by(p)
    return p


def _today(ctx: case_service.ActionContext) -> date:
    return ctx.calendar.local(ctx.now).date()


Step = Callable[[argparse.Namespace, Case, case_service.ActionContext], object]


def _run(step: Step) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        with app_context() as app:
            ctx = case_service.ActionContext(
                calendar=app.calendar, now=utcnow(), by=args.by, notifier=notifier(app),
            )
            try:
                with app.sessions.begin() as session:
                    case = case_service.act(
                        session, args.ref, lambda c, cx: step(args, c, cx), ctx
                    )
                    detail = _detail(session, case)
            except RuleViolation as exc:
                raise CommandError(f"{args.ref}: refused: {exc}") from exc
            except case_service.CaseNotFound as exc:
                raise CommandError(str(exc)) from exc
        _show(detail, args.json)
        return 0

    return handler


def cmd_cases(args: argparse.Namespace) -> int:
    with app_context() as app, app.sessions() as session:
        today = app.calendar.local(utcnow()).date()
        found = case_service.list_cases(
            session, status=args.status, kind=args.kind,
            overdue_on=today if args.overdue else None,
        )
        rows = [case_summary(c) for c in found]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no cases")
        return 0
    print_table(
        ["ref", "kind", "status", "stage", "received", "response due", "officer", "flags"],
        [
            (r["ref"], r["kind"], r["status"], r["stage"], r["deemed_received"],
             r["response_due"] or "-", r["officer"] or "-", ",".join(r["flags"]))
            for r in rows
        ],
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with app_context() as app, app.sessions() as session:
        try:
            detail = _detail(session, case_service.get_case(session, args.ref))
        except case_service.CaseNotFound as exc:
            raise CommandError(str(exc)) from exc
    _show(detail, args.json)
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    with app_context() as app:
        now = utcnow()
        new = lifecycle.NewCase(
            kind=args.kind,
            source=args.source,
            received_at=app.calendar.local(args.received or now),
            requester_name=args.name,
            requester_email=args.email,
            requester_phone=args.phone,
            service_area=args.service_area,
            summary=args.summary,
            incident_date=args.incident_date,
        )
        with app.sessions.begin() as session:
            case = case_service.open_case(session, new, app.calendar, now, args.by)
            detail = _detail(session, case)
    _show(detail, args.json)
    return 0


def _detail(session: Session, case: Case) -> dict[str, Any]:
    detail = case_detail(case)
    assert case.id is not None
    detail["reminders"] = stored_plan(session, case.id)
    return detail


def _show(detail: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(detail)
        return
    print(f"{detail['ref']}  {detail['kind']}  {detail['status']} (stage {detail['stage']})")
    print(f"  requester: {detail['requester_name'] or '-'} "
          f"<{detail['requester_email'] or 'no email'}> {detail['requester_phone'] or ''}".rstrip())
    print(f"  service area: {detail['service_area']}   received: {detail['received_at']} "
          f"(deemed {detail['deemed_received']})")
    if detail["flags"]:
        print(f"  flags: {', '.join(detail['flags'])}")
    people = [("officer", detail["officer"]), ("reviewer", detail["reviewer"])]
    print("  " + "   ".join(f"{k}: {v or '-'}" for k, v in people))
    dates = [(k, v) for k, v in detail["deadlines"].items() if v]
    if dates:
        print("  deadlines:")
        for k, v in dates:
            print(f"    {k.replace('_', ' ')}: {v}")
    if detail["ombudsman"]:
        print(f"  signposted to: {detail['ombudsman']}")
    if detail["reminders"]:
        print("  reminders:")
        for r in detail["reminders"]:
            kind = "escalation" if r["escalation"] else "reminder"
            print(f"    {r['send_on']}  {r['state']:<10} {kind:<10} to {r['recipient']:<8} "
                  f"{r['deadline']} {r['deadline_date']}")
    print("  audit trail:")
    for e in detail["audit"]:
        print(f"    {e['at']}  {e['actor']}: {e['action']} {e['detail']}".rstrip())
