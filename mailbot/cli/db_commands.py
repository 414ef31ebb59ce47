"""``init-db`` and ``deadlines``: set-up and the working-day calculator."""

from __future__ import annotations

import argparse
from typing import Any

from mailbot.adapters.database import upgrade
from mailbot.cli.common import (
    CommandError,
    add_json_flag,
    iso_datetime,
    print_json,
    print_table,
    settings,
)
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.deadlines import stage2_request_by, stage_deadlines


def register(sub: Any) -> None:
    p = sub.add_parser(
        "init-db",
        help="create or upgrade the database schema (safe to run again)",
        description="Bring MAILBOT_DATABASE_URL to the latest schema with Alembic migrations.",
    )
    p.set_defaults(handler=cmd_init_db)

    p = sub.add_parser(
        "deadlines",
        help="working-day deadlines for a complaint received at a given time",
        description=(
            "Compute the deemed receipt date and the acknowledgement and response due dates. "
            "Times without an offset are local (MAILBOT_TIMEZONE)."
        ),
    )
    p.add_argument("--received", type=iso_datetime, required=True, help="ISO 8601 receipt time")
    p.add_argument("--acknowledged", type=iso_datetime, help="when the acknowledgement went out")
    p.add_argument("--responded", type=iso_datetime, help="when the stage-1 response went out")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1)
    add_json_flag(p)
    p.set_defaults(handler=cmd_deadlines)


def cmd_init_db(args: argparse.Namespace) -> int:
    cfg = settings()
    revision = upgrade(cfg.database_url)
    print(f"database ready at revision {revision}")
    return 0


def cmd_deadlines(args: argparse.Namespace) -> int:
    cfg = settings()
    calendar = WorkingCalendar(cfg.policy, cfg.timezone)
    if args.acknowledged and calendar.local(args.acknowledged) < calendar.local(args.received):
        raise CommandError("--acknowledged is earlier than --received", exit_code=2)
    dl = stage_deadlines(calendar, args.stage, args.received, args.acknowledged)
    out: dict[str, Any] = {
        "stage": args.stage,
        "deemed_received": dl.deemed_received.isoformat(),
        "acknowledgement_due": dl.acknowledgement_due.isoformat(),
        "response_due": dl.response_due.isoformat(),
    }
    if args.responded:
        out["stage2_request_by"] = stage2_request_by(calendar, args.responded).isoformat()
    if args.json:
        print_json(out)
    else:
        print_table(["deadline", "date"], [(k, v) for k, v in out.items() if k != "stage"])
    return 0
