"""Reminder sweep over 100,000 open cases of which 1,000 have a reminder due, on PostgreSQL.

Run: .venv/bin/python benchmarks/sweep_bench.py [--url postgresql+psycopg://postgres@127.0.0.1/test]
It works in a schema of its own (dropped afterwards), prints the query plan of the claim query
and the time of one full sweep (claim, re-plan, render and queue 1,000 reminders, commit).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from mailbot.adapters.database import make_engine, session_factory, upgrade
from mailbot.adapters.orm import cases, reminders
from mailbot.adapters.staff_directory import StaffDirectory
from mailbot.config import load_settings
from mailbot.services.compose import Composer
from mailbot.services.reminders import SweepContext, sweep
from mailbot.workflow.calendar import WorkingCalendar

LONDON = ZoneInfo("Europe/London")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--due", type=int, default=1_000)
    args = ap.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(args.url).set(query={"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        upgrade(rendered)
        engine = make_engine(rendered)
        settings = load_settings()
        calendar = WorkingCalendar(settings.policy, LONDON)
        now = datetime(2027, 1, 7, 9, 0, tzinfo=LONDON)
        received = datetime(2026, 12, 21, 10, tzinfo=LONDON)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            rows = [{
                "ref": f"CSQ-2026-{n:06d}", "kind": "complaint", "source": "email",
                "status": "open", "stage": 1, "received_at": received,
                "deemed_received": date(2026, 12, 21), "requester_name": f"P{n}",
                "requester_email": f"p{n}@example.org", "service_area": "social_care",
                "summary": "x", "acknowledgement_due": date(2026, 12, 30),
                "response_due": date(2027, 1, 7) if n < args.due else date(2027, 3, 1),
                "officer": "Priya Shah", "flag_out_of_time": False, "flag_safeguarding": False,
                "flag_needs_triage": False, "flag_late_stage2": False,
                "flag_needs_letter": False,
            } for n in range(args.cases)]
            conn.execute(insert(cases), rows)
            ids = list(conn.scalars(select(cases.c.id).order_by(cases.c.id)))
            rem = []
            for n, cid in enumerate(ids):
                due = date(2027, 1, 7) if n < args.due else date(2027, 3, 1)
                for key, send_on in ((f"stage1_response:{due}:due-today:officer", due),
                                     (f"stage1_response:{due}:overdue-1", due + timedelta(1))):
                    rem.append({
                        "case_id": cid, "key": key, "send_on": send_on,
                        "due_at": datetime.combine(send_on, settings.policy.reminder_time,
                                                   LONDON),
                        "recipient_role": "officer", "deadline": "stage1_response",
                        "deadline_date": due, "escalation": False, "state": "planned",
                        "changed_at": datetime.now(UTC)})
            conn.execute(insert(reminders), rem)
            conn.execute(text("ANALYZE"))
        load_s = time.perf_counter() - t0
        with engine.connect() as conn:
            plan = conn.execute(text(
                "EXPLAIN ANALYZE SELECT cases.id FROM cases WHERE cases.id IN "
                "(SELECT reminders.case_id FROM reminders WHERE reminders.state = 'planned' "
                "AND reminders.due_at <= :now) ORDER BY cases.id LIMIT 200 "
                "FOR UPDATE OF cases SKIP LOCKED"),
                {"now": now}).scalars().all()
        ctx = SweepContext(settings=settings, calendar=calendar,
                           composer=Composer(settings.team_address, LONDON),
                           staff=StaffDirectory([]))
        sessions = session_factory(engine)
        t0 = time.perf_counter()
        result = sweep(sessions, ctx, now)
        sweep_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = sweep(sessions, ctx, now)
        idle_s = time.perf_counter() - t0
        print(json.dumps({"cases": args.cases, "due": args.due, "load_seconds": round(load_s, 1),
                          "sweep_seconds": round(sweep_s, 3), "sent": result.sent,
                          "idle_sweep_seconds": round(idle_s, 4), "idle_sent": again.sent},
                         indent=2))
        print("\n".join(plan))
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
