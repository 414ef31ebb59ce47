"""The operator's command line: ``mailbot COMMAND ...`` (also ``python -m mailbot``).

Exit codes: 0 done; 1 refused (a broken rule, an unknown case, bad input in a file);
2 unusable arguments or configuration; 3 the database or mailbox cannot be reached.

Importing this package imports nothing else of mailbot's: the command modules (and through them
SQLAlchemy and spaCy) load when ``main`` runs. A child process started with ``spawn`` imports
the program's main module, the ``mailbot`` script, which imports this package; the worker's
parse-ahead child (``mailbot.intake.parse_ahead``) must not load a classifier model for that.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from mailbot.cli import (
        case_commands,
        classifier_commands,
        db_commands,
        mail_commands,
        staff_commands,
        webhook_commands,
    )

    parser = argparse.ArgumentParser(
        prog="mailbot",
        description="Care and Support Quality inbox: cases, deadlines and acknowledgements.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (db_commands, case_commands, mail_commands, staff_commands,
                   classifier_commands, webhook_commands):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from sqlalchemy.exc import OperationalError

    from mailbot.cli.common import CommandError
    from mailbot.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code: int = args.handler(args)
        return code
    except ConfigError as exc:
        print(f"mailbot: configuration error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"mailbot: {exc}", file=sys.stderr)
        return exc.exit_code
    except OperationalError as exc:
        print(
            f"mailbot: cannot use the database: {exc.orig or exc} "
            "(check MAILBOT_DATABASE_URL and run `mailbot init-db`)",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        return 130
