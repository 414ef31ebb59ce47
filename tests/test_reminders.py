"""Reminders and escalations walked through time with `mailbot sweep --now`, checked at a real
SMTP server: the right person, on the right working day, once."""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbot.bootstrap import build_app, sweep_context
from mailbot.config import load_settings
from mailbot.services.reminders import sweep
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.model import Case, Kind, Source
from mailbot.workflow.policy import Policy
from mailbot.workflow.reminders import plan

LONDON = ZoneInfo("Europe/London")
TEAM = "care.quality@council.example"
MANAGER = "care.quality.manager@council.example"
PRIYA = "priya.shah@council.example"
TOM = "tom.reid@council.example"


@pytest.fixture
def env(mailbot_env, smtp_server, tmp_path: Path, monkeypatch):
    staff = tmp_path / "staff.csv"
    staff.write_text(f"name,email,service\nPriya Shah,{PRIYA},Complaints\n"
                     f"Tom Reid,{TOM},Quality\n")
    monkeypatch.setenv("MAILBOT_STAFF_DIRECTORY", str(staff))
    monkeypatch.setenv("MAILBOT_SMTP_URL", smtp_server.url)
    return smtp_server


def sweep_at(cli, smtp, when: str) -> list[tuple[str, str]]:
    """Run one sweep as of ``when`` and return (recipient, subject) of what arrived."""
    before = len(smtp.messages)
    r = cli("sweep", "--now", when, "--json")
    assert r.code == 0, r.err
    time.sleep(0.1)
    new = smtp.messages[before:]
    return sorted((m.rcpt_tos[0], m.message["Subject"]) for m in new)


def test_a_complaint_over_christmas_through_both_stages(cli, env) -> None:
    smtp = env
    r = cli("case", "open", "--kind", "complaint", "--name", "Ann Example", "--email",
            "ann@example.org", "--summary", "No call back", "--received", "2026-12-21T10:00",
            "--by", "Sam Duty", "--json")
    ref = json.loads(r.out)["ref"]
    planned = {(x["send_on"], x["recipient"]) for x in json.loads(r.out)["reminders"]}
    assert ("2026-12-29", "team") in planned and ("2026-12-31", "manager") in planned

    # Tue 29 Dec: one working day before the acknowledgement deadline (Wed 30), nobody assigned.
    assert sweep_at(cli, smtp, "2026-12-29T09:00") == [
        (TEAM, f"Reminder: Wednesday 30 December 2026 deadline for {ref}")]
    assert sweep_at(cli, smtp, "2026-12-29T16:00") == []  # sent once

    assert cli("case", "assign", ref, "--officer", "Priya Shah", "--by", "Sam Duty").code == 0
    assert sweep_at(cli, smtp, "2026-12-31T09:00") == []  # assigned: no escalation

    # Response due Thu 7 Jan 2027: the officer two working days before, then on the day.
    assert sweep_at(cli, smtp, "2027-01-05T09:00") == [
        (PRIYA, f"Reminder: Thursday 7 January 2027 deadline for {ref}")]
    assert sweep_at(cli, smtp, "2027-01-07T09:00") == [
        (MANAGER, f"Reminder: Thursday 7 January 2027 deadline for {ref}"),
        (PRIYA, f"Reminder: Thursday 7 January 2027 deadline for {ref}")]
    # Missed: escalation to the manager the next working day.
    escalated = sweep_at(cli, smtp, "2027-01-08T09:00")
    assert escalated == [(MANAGER, f"ESCALATION: Thursday 7 January 2027 deadline for {ref}")]
    body = smtp.messages[-1].message.get_content()
    assert "passed 1 working day ago" in body

    # An extension re-plans, and the requester is told the new date.
    r = cli("case", "extend", ref, "--until", "2027-01-21", "--reason",
            "Waiting for the provider's records", "--by", "Priya Shah", "--json")
    assert r.code == 0, r.err
    # The notice is queued with the extension and goes out with the next flush.
    assert sweep_at(cli, smtp, "2027-01-08T10:00") == [
        ("ann@example.org", f"A new date for our response [{ref}]")]
    states = {x["key"]: x["state"] for x in json.loads(r.out)["reminders"]}
    assert states["stage1_response:2027-01-07:overdue-1"] == "sent"
    assert not any(k.startswith("stage1_response:2027-01-07") and v == "planned"
                   for k, v in states.items())
    assert sweep_at(cli, smtp, "2027-01-15T09:00") == []  # the old chain is cancelled
    assert sweep_at(cli, smtp, "2027-01-19T09:00") == [
        (PRIYA, f"Reminder: Thursday 21 January 2027 deadline for {ref}")]

    assert cli("case", "respond", ref, "--on", "2027-01-20", "--by", "Priya Shah").code == 0
    assert sweep_at(cli, smtp, "2027-01-21T09:00") == []

    # Stage 2, reviewed by Tom: acknowledged by Mon 8 Feb, response due Mon 1 Mar 2027.
    r = cli("case", "stage2", ref, "--requested", "2027-02-01T11:00", "--reviewer", "Tom Reid",
            "--by", "Sam Duty", "--json")
    assert json.loads(r.out)["deadlines"]["stage2_response_due"] == "2027-03-01"
    assert sweep_at(cli, smtp, "2027-02-25T09:00") == [
        (TOM, f"Reminder: Monday 1 March 2027 deadline for {ref}")]
    assert cli("case", "respond", ref, "--on", "2027-02-26", "--by", "Tom Reid").code == 0
    assert cli("case", "close", ref, "--by", "Tom Reid").code == 0
    assert sweep_at(cli, smtp, "2027-03-02T09:00") == []


def test_extension_notice_reaches_the_requester(cli, env) -> None:
    smtp = env
    r = cli("case", "open", "--kind", "complaint", "--name", "Ann Example", "--email",
            "ann@example.org", "--summary", "x", "--received", "2026-12-21T10:00", "--by", "Sam",
            "--json")
    ref = json.loads(r.out)["ref"]
    cli("case", "assign", ref, "--officer", "Priya Shah", "--by", "Sam")
    cli("case", "extend", ref, "--until", "2027-01-21", "--reason", "Awaiting records",
        "--by", "Priya Shah")
    cli("sweep", "--now", "2026-12-22T09:00")  # flushes the outbox
    notice = [m for m in smtp.wait_for(1) if m.rcpt_tos == ["ann@example.org"]]
    assert len(notice) == 1
    text = notice[0].message.get_content()
    assert "Thursday 21 January 2027" in text and "Thursday 7 January 2027" in text
    assert "Awaiting records" in text
    assert notice[0].mail_from == ""


def test_worker_down_over_the_deadline_sends_each_due_reminder_once(cli, env) -> None:
    smtp = env
    r = cli("case", "open", "--kind", "complaint", "--name", "Ann", "--email", "a@example.org",
            "--summary", "x", "--received", "2026-12-21T10:00", "--by", "Sam", "--json")
    ref = json.loads(r.out)["ref"]
    cli("case", "assign", ref, "--officer", "Priya Shah", "--by", "Sam")
    # Nothing swept from before Christmas until Wednesday 20 January.
    sent = sweep_at(cli, smtp, "2027-01-20T09:00")
    # Only the latest of each chain: the officer's due-day reminder, and the manager's second
    # overdue escalation (Fri 15 Jan), not one per missed day.
    assert sent == [
        (MANAGER, f"ESCALATION: Thursday 7 January 2027 deadline for {ref}"),
        (PRIYA, f"Reminder: Thursday 7 January 2027 deadline for {ref}"),
    ]
    to_manager = next(m for m in smtp.messages if m.rcpt_tos == [MANAGER])
    assert "passed 9 working days ago" in to_manager.message.get_content()
    assert sweep_at(cli, smtp, "2027-01-20T09:30") == []
    # The chain goes on: next escalation five working days after the last (Fri 22 Jan).
    assert sweep_at(cli, smtp, "2027-01-22T09:00") == [
        (MANAGER, f"ESCALATION: Thursday 7 January 2027 deadline for {ref}")]


def test_stage2_window_passing_closes_the_case(cli, env) -> None:
    r = cli("case", "open", "--kind", "complaint", "--name", "Ann", "--email", "a@example.org",
            "--summary", "x", "--received", "2026-12-21T10:00", "--by", "Sam", "--json")
    ref = json.loads(r.out)["ref"]
    cli("case", "assign", ref, "--officer", "Priya Shah", "--by", "Sam")
    cli("case", "respond", ref, "--on", "2027-01-06", "--by", "Priya Shah")
    assert json.loads(cli("sweep", "--now", "2027-02-03T12:00", "--json").out)["closed"] == 0
    assert json.loads(cli("sweep", "--now", "2027-02-04T09:00", "--json").out)["closed"] == 1
    case = json.loads(cli("case", "show", ref, "--json").out)
    assert case["status"] == "closed"
    assert "no stage-2 request by 2027-02-03" in case["audit"][-1]["detail"]


def test_two_workers_sweeping_at_once_send_each_reminder_once(cli, env, database_url) -> None:
    smtp = env
    refs = []
    for n in range(20):
        r = cli("case", "open", "--kind", "complaint", "--name", f"P{n}", "--email",
                f"p{n}@example.org", "--summary", "x", "--received", "2026-12-21T10:00",
                "--by", "Sam", "--json")
        refs.append(json.loads(r.out)["ref"])
    apps = [build_app(load_settings()) for _ in range(2)]
    from datetime import datetime

    when = datetime(2026, 12, 29, 9, 0, tzinfo=LONDON)
    results = []
    barrier = threading.Barrier(2)

    def run(app) -> None:
        barrier.wait()
        results.append(sweep(app.sessions, sweep_context(app), when, batch=3))

    threads = [threading.Thread(target=run, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()
    assert sum(r.sent for r in results) == 20  # one team reminder per case
    cli("sweep", "--now", "2026-12-29T09:05")  # flush; sends nothing new
    arrived = smtp.wait_for(20)
    time.sleep(0.3)
    assert len(smtp.messages) == 20
    assert sorted(m.message["Subject"].rsplit(" ", 1)[-1] for m in arrived) == sorted(refs)


def test_plan_for_triage_and_no_clock_for_compliments() -> None:
    cal = WorkingCalendar(Policy(), LONDON)
    from datetime import datetime

    case = Case(ref="CSQ-2026-00009", kind=Kind.COMPLIMENT, source=Source.EMAIL,
                received_at=datetime(2026, 12, 24, 10, tzinfo=LONDON),
                deemed_received=date(2026, 12, 24))
    assert plan(case, cal, date(2026, 12, 24)) == []
    case.flag_needs_triage = True
    [r] = plan(case, cal, date(2026, 12, 24))
    # Not triaged by the end of the next working day (Tue 29 Dec): escalate on Wed 30 Dec.
    assert (r.send_on, r.recipient, r.deadline_date) == (date(2026, 12, 30), "team",
                                                         date(2026, 12, 29))
