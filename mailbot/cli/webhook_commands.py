"""``webhook ...``: upkeep of the phone-case webhook's data.

``purge-keys`` deletes idempotency keys past their retention (``mailbot.services.idempotency``);
without it the table grows by a row for every call ever logged. It is safe to run at any time
and as often as wanted: it only forgets keys that no genuine retry can still use.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from mailbot.bootstrap import utcnow
from mailbot.cli.common import add_json_flag, app_context, print_json
from mailbot.services.idempotency import RETENTION, purge_expired

#: The longest --days accepted: beyond ten years is a typo, not a retention.
MAX_DAYS = 3650


def register(sub: Any) -> None:
    webhook = sub.add_parser("webhook", help="upkeep of the phone-case webhook",
                             description="Upkeep of the phone-case webhook's data.")
    actions = webhook.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser(
        "purge-keys",
        help=f"delete idempotency keys older than --days (default {RETENTION.days})",
        description="Delete the webhook's idempotency keys stored more than DAYS days ago. "
                    "A retry of a call with a deleted key is taken as a new call, so keep them "
                    "longer than any client may retry.",
    )
    p.add_argument("--days", type=_days, default=RETENTION.days, metavar="DAYS",
                   help=f"keep keys this many days (default {RETENTION.days})")
    add_json_flag(p)
    p.set_defaults(handler=cmd_purge_keys)


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a whole number of days from 1 to {MAX_DAYS}")
    return days


def cmd_purge_keys(args: argparse.Namespace) -> int:
    now = utcnow()
    keep = timedelta(days=args.days)
    with app_context() as app, app.sessions.begin() as session:
        deleted = purge_expired(session, now, keep)
    before = (now - keep).isoformat(timespec="seconds")
    if args.json:
        print_json({"deleted": deleted, "days": args.days, "before": before})
    else:
        print(f"deleted {deleted} idempotency key{'' if deleted == 1 else 's'} stored before "
              f"{before} (kept: the last {args.days} day{'' if args.days == 1 else 's'})")
    return 0
