"""``staff ...``: bearer tokens for the staff API, one or more per named member of staff.

A token is printed once, when it is made, and only its SHA-256 digest is stored, so a copy of the
database gives no one access; a lost token is revoked and a new one issued.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy import func, select, update

from mailbot.adapters.orm import staff_tokens
from mailbot.bootstrap import utcnow
from mailbot.cli.common import (
    CommandError,
    add_json_flag,
    app_context,
    nonblank,
    print_json,
    print_table,
)


def register(sub: Any) -> None:
    staff = sub.add_parser("staff", help="staff API tokens", description="Staff API tokens.")
    actions = staff.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("add-token", help="issue a token for a member of staff (shown once)",
                           description="Issue a bearer token; actions taken with it are "
                                       "recorded under NAME in the audit trail.")
    p.add_argument("name", type=nonblank, help='the name the audit trail shows, e.g. "Sam Duty"')
    p.set_defaults(handler=cmd_add_token)

    p = actions.add_parser("list", help="who has tokens (never the tokens themselves)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_list)

    p = actions.add_parser("revoke", help="revoke every token of a member of staff")
    p.add_argument("name", type=nonblank)
    p.set_defaults(handler=cmd_revoke)


def cmd_add_token(args: argparse.Namespace) -> int:
    from webhooks.auth import add_token

    if len(args.name) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in args.name):
        raise CommandError("the name must be one line of at most 200 characters", exit_code=2)
    with app_context() as app, app.sessions.begin() as session:
        token = add_token(session, args.name, utcnow())
    print(token)
    print(f"token for {args.name}: shown only now; send it as 'Authorization: Bearer <token>'",
          file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with app_context() as app, app.sessions() as session:
        rows = session.execute(
            select(staff_tokens.c.name, func.count().label("tokens"),
                   func.max(staff_tokens.c.created_at).label("latest"))
            .where(staff_tokens.c.revoked_at.is_(None))
            .group_by(staff_tokens.c.name)
            .order_by(staff_tokens.c.name)
        ).all()
    found = [{"name": r.name, "tokens": r.tokens, "latest": _iso(r.latest)} for r in rows]
    if args.json:
        print_json(found)
    elif not found:
        print("no staff tokens; `mailbot staff add-token NAME` issues one")
    else:
        print_table(["name", "tokens", "latest issued"],
                    [(f["name"], f["tokens"], f["latest"]) for f in found])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with app_context() as app, app.sessions.begin() as session:
        revoked = len(session.execute(
            update(staff_tokens)
            .where(staff_tokens.c.name == args.name, staff_tokens.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .returning(staff_tokens.c.id)
        ).all())
    if not revoked:
        raise CommandError(f"{args.name!r} has no token to revoke; `mailbot staff list` shows "
                           "who has one")
    print(f"revoked {revoked} token(s) of {args.name}")
    return 0


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat(timespec="seconds"))
