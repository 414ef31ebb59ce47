"""``poll``, ``run``, ``demo`` and ``quarantine``: the mail side of the operator's tool."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailbot.adapters.mailbox import MailboxUnavailable, RawMessage, open_mailbox
from mailbot.adapters.orm import cases, messages
from mailbot.adapters.smtp import open_transport
from mailbot.bootstrap import App, intake_context, sweep_context, utcnow
from mailbot.classifier.classification import ModelMissing
from mailbot.cli.common import (
    CommandError,
    add_json_flag,
    app_context,
    iso_datetime,
    print_json,
    print_table,
)
from mailbot.worker import DatabaseUnavailable, PassResult, Worker, poll_once

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "poll", help="process the mail waiting in the inbox",
        description="Fetch everything waiting, process it, move it, and flush the outbox. "
        "Exit 0, or 3 if the mailbox or the database cannot be reached.",
    )
    p.add_argument("--once", action="store_true", required=True,
                   help="one pass, then exit (the long-running worker is `mailbot run`)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_poll)

    p = sub.add_parser("run", help="the long-running worker (IDLE or polling, outbox, reminders)",
                       description="Run until SIGTERM or Ctrl-C.")
    p.add_argument("--idle-timeout", type=float, default=60.0,
                   help="seconds between re-polls while idling (default 60)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("demo", help="deliver a dozen sample emails locally and process them",
                       description="Copies sample emails into the embedded Maildir inbox, runs "
                       "one pass and shows the cases opened and where the replies went.")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("sweep", help="send the reminders and escalations that are due",
                       description="One reminder sweep as of --now (default: now), then flush "
                       "the outbox. `mailbot run` does this on a schedule.")
    p.add_argument("--now", type=iso_datetime, help="ISO 8601 time to sweep as of")
    add_json_flag(p)
    p.set_defaults(handler=cmd_sweep)

    q = sub.add_parser("quarantine", help="messages that could not be processed")
    qs = q.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = qs.add_parser("list", help="list quarantined messages with their errors")
    add_json_flag(p)
    p.set_defaults(handler=cmd_quarantine_list)
    p = qs.add_parser("retry", help="process quarantined messages again (from their stored copy)")
    p.add_argument("ids", nargs="*", type=int, help="message ids (default: all)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_quarantine_retry)


def _context(app: App) -> Any:
    try:
        return intake_context(app)
    except ModelMissing as exc:
        raise CommandError(str(exc)) from exc


def _one_pass(app: App) -> PassResult:
    ctx = _context(app)
    try:
        mailbox = open_mailbox(app.settings.mailbox)
    except MailboxUnavailable as exc:
        raise CommandError(f"cannot reach the mailbox: {exc}", exit_code=3) from exc
    try:
        return poll_once(app, ctx, mailbox, open_transport(app.settings.smtp))
    except MailboxUnavailable as exc:
        raise CommandError(f"cannot reach the mailbox: {exc}", exit_code=3) from exc
    except DatabaseUnavailable as exc:
        raise CommandError(f"cannot reach the database: {exc}", exit_code=3) from exc
    finally:
        mailbox.close()


def _summary(result: PassResult) -> dict[str, Any]:
    return {
        "processed": len(result.outcomes),
        "cases_opened": result.count("case"),
        "joined": result.count("joined"),
        "auto_generated": result.count("auto"),
        "duplicates": result.count("duplicate"),
        "quarantined": result.count("quarantined"),
        "sent": result.sent,
        "deferred": result.deferred,
        "messages": [
            {"key": o.key, "outcome": o.outcome, "case": o.case_ref, "detail": o.detail}
            for o in result.outcomes
        ],
    }


def cmd_poll(args: argparse.Namespace) -> int:
    with app_context(relaxed_commits=True) as app:
        summary = _summary(_one_pass(app))
    if args.json:
        print_json(summary)
    else:
        print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()
                        if k != "messages"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    with app_context(relaxed_commits=True) as app:
        ctx = _context(app)
        try:
            mailbox = open_mailbox(app.settings.mailbox)
        except MailboxUnavailable as exc:
            raise CommandError(f"cannot reach the mailbox: {exc}", exit_code=3) from exc
        worker = Worker(app, ctx, mailbox, open_transport(app.settings.smtp),
                        idle_timeout=args.idle_timeout)
        worker.add_sweep(sweep_context(app))
        print(f"mailbot worker running on {app.settings.mailbox.scheme} inbox; "
              "Ctrl-C or SIGTERM stops it", file=sys.stderr)
        return worker.run()


def cmd_sweep(args: argparse.Namespace) -> int:
    from mailbot.services.outbox import flush
    from mailbot.services.reminders import sweep

    with app_context() as app:
        now = app.calendar.local(args.now) if args.now else utcnow()
        result = sweep(app.sessions, sweep_context(app), now)
        flushed = flush(app.sessions, open_transport(app.settings.smtp), lambda: now)
    out = {"sent": result.sent, "superseded": result.superseded, "closed": result.closed,
           "delivered": flushed.sent, "deferred": flushed.deferred}
    if args.json:
        print_json(out)
    else:
        print(", ".join(f"{k}: {v}" for k, v in out.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    with app_context() as app:
        s = app.settings
        if s.mailbox.scheme != "maildir" or s.smtp.scheme != "maildir" or not s.mailbox.path:
            raise CommandError("the demo uses the embedded Maildirs; unset MAILBOT_MAILBOX_URL "
                               "and MAILBOT_SMTP_URL", exit_code=2)
        inbox = s.mailbox.path
        for sub in ("tmp", "new", "cur"):
            (inbox / sub).mkdir(parents=True, exist_ok=True)
        samples = sorted(SAMPLES.glob("*.eml"))
        stamp = int(utcnow().timestamp())
        for n, sample in enumerate(samples):
            target = inbox / "new" / f"{stamp}.demo{n:02d}.{sample.stem}"
            shutil.copyfile(sample, target)
        print(f"delivered {len(samples)} sample emails to {inbox}\n")
        result = _one_pass(app)
        rows = []
        with app.sessions() as session:
            for o in result.outcomes:
                kind = session.scalar(select(cases.c.kind).where(cases.c.ref == o.case_ref))
                rows.append((o.key.rsplit(".", 1)[-1], o.outcome, o.case_ref or "-",
                             kind or "-", o.detail[:60]))
            sent = session.execute(
                select(messages.c.recipients, messages.c.template, messages.c.subject)
                .where(messages.c.direction == "out").order_by(messages.c.id)
            ).all()
    print_table(["sample", "outcome", "case", "kind", "detail"], rows)
    print(f"\n{len(sent)} emails written to {s.smtp.path} (the embedded 'sent' Maildir):")
    print_table(["to", "template", "subject"], [(r[0], r[1], r[2]) for r in sent])
    print("\nTry: mailbot cases   |   mailbot case show REF   |   mailbot quarantine list")
    return 0


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    with app_context() as app, app.sessions() as session:
        rows = session.execute(
            select(messages.c.id, messages.c.mailbox_key, messages.c.received_at,
                   messages.c.detail)
            .where(messages.c.outcome == "quarantined").order_by(messages.c.id)
        ).all()
    data = [{"id": r.id, "key": r.mailbox_key, "at": r.received_at.isoformat(),
             "error": r.detail} for r in rows]
    if args.json:
        print_json(data)
    elif not data:
        print("quarantine is empty")
    else:
        print_table(["id", "received", "error", "mailbox key"],
                    [(d["id"], d["at"][:19], d["error"][:70], d["key"]) for d in data])
    return 0


def cmd_quarantine_retry(args: argparse.Namespace) -> int:
    from mailbot.services import intake

    with app_context() as app:
        ctx = _context(app)
        with app.sessions() as session:
            stmt = select(messages.c.id, messages.c.mailbox_key, messages.c.raw).where(
                messages.c.outcome == "quarantined")
            if args.ids:
                stmt = stmt.where(messages.c.id.in_(args.ids))
            rows = session.execute(stmt.order_by(messages.c.id)).all()
        results = []
        for row in rows:
            raw = RawMessage(key=row.mailbox_key, data=row.raw or b"")
            try:
                with app.sessions.begin() as session:
                    session.execute(messages.delete().where(messages.c.id == row.id))
                    outcome = intake.process(session, raw, ctx, utcnow())
                results.append({"id": row.id, "outcome": outcome.outcome,
                                "case": outcome.case_ref})
            except Exception as exc:
                results.append({"id": row.id, "outcome": "quarantined",
                                "error": f"{type(exc).__name__}: {exc}"})
                with app.sessions.begin() as session:
                    intake.record_quarantine(session, raw, f"{type(exc).__name__}: {exc}",
                                             utcnow())
        from mailbot.services.outbox import flush
        flush(app.sessions, open_transport(app.settings.smtp), utcnow)
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['id']}: {r['outcome']} {r.get('case') or r.get('error', '')}")
    return 1 if any(r["outcome"] == "quarantined" for r in results) else 0
