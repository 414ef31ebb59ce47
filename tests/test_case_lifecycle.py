"""A complaint walked through every staff action from the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select

from mailbot.adapters.database import make_engine, session_factory, upgrade
from mailbot.adapters.orm import case_events, cases
from mailbot.bootstrap import utcnow
from mailbot.services.cases import open_case
from mailbot.workflow.calendar import WorkingCalendar
from mailbot.workflow.lifecycle import NewCase
from mailbot.workflow.model import Kind, Source
from mailbot.workflow.policy import Policy

pytestmark = pytest.mark.usefixtures("mailbot_env")


def show(cli, ref: str) -> dict:
    r = cli("case", "show", ref, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def open_complaint(cli, area: str = "social_care") -> str:
    r = cli(
        "case", "open", "--kind", "complaint", "--name", "Ann Example",
        "--email", "ann@example.com", "--summary", "Nobody rang back about Mum's care",
        "--received", "2026-12-21T10:00", "--service-area", area, "--by", "Sam Duty",
        "--json",
    )
    assert r.code == 0, r.err
    return json.loads(r.out)["ref"]


def test_complaint_through_both_stages_to_the_ombudsman(cli) -> None:
    ref = open_complaint(cli)
    assert ref == "CSQ-2026-00001"
    case = show(cli, ref)
    assert case["deadlines"]["stage1_acknowledgement_due"] == "2026-12-30"
    assert case["deadlines"]["stage1_response_due"] == "2027-01-07"
    assert case["status"] == "open" and case["stage"] == 1

    # A response needs an officer; the refusal names the rule and writes nothing.
    r = cli("case", "respond", ref, "--on", "2027-01-05", "--by", "Sam Duty")
    assert r.code == 1
    assert "rule: officer-required" in r.err and len(r.err.strip().splitlines()) == 1
    assert len(show(cli, ref)["audit"]) == 1

    assert cli("case", "assign", ref, "--officer", "Priya Shah", "--by", "Sam Duty").code == 0

    # An extension must move the date later and give a reason.
    r = cli("case", "extend", ref, "--until", "2027-01-06", "--reason", "x", "--by", "Priya Shah")
    assert r.code == 1 and "rule: extension-later" in r.err
    r = cli("case", "extend", ref, "--until", "2027-01-21", "--reason", "   ", "--by", "Priya")
    assert r.code == 2  # blank reason is an argument error
    r = cli(
        "case", "extend", ref, "--until", "2027-01-21", "--reason",
        "Waiting for the provider's records", "--by", "Priya Shah", "--json",
    )
    assert r.code == 0, r.err
    extended = json.loads(r.out)
    assert extended["response_due"] == "2027-01-21"
    assert extended["extensions"][0]["previous_due"] == "2027-01-07"
    assert extended["extensions"][0]["by"] == "Priya Shah"

    r = cli("case", "respond", ref, "--on", "2027-01-20", "--outcome", "Partly upheld",
            "--by", "Priya Shah", "--json")
    assert r.code == 0, r.err
    responded = json.loads(r.out)
    assert responded["status"] == "responded"
    assert responded["deadlines"]["stage2_request_by"] == "2027-02-17"  # 20 Jan + 28 days

    # Stage 2 cannot be reviewed by the stage-1 officer.
    r = cli("case", "stage2", ref, "--requested", "2027-02-01T11:00", "--reviewer", "priya shah",
            "--by", "Sam Duty")
    assert r.code == 1 and "rule: independent-reviewer" in r.err
    assert show(cli, ref)["status"] == "responded"

    r = cli("case", "stage2", ref, "--requested", "2027-02-01T11:00", "--reviewer", "Tom Reid",
            "--by", "Sam Duty", "--json")
    assert r.code == 0, r.err
    s2 = json.loads(r.out)
    assert s2["stage"] == 2 and s2["status"] == "stage2"
    assert s2["deadlines"]["stage2_acknowledgement_due"] == "2027-02-08"
    # 20 working days from Mon 1 Feb 2027: 2-5 (4), 8-12 (9), 15-19 (14), 22-26 (19), 1 Mar
    assert s2["deadlines"]["stage2_response_due"] == "2027-03-01"
    assert "late_stage2_request" not in s2["flags"]

    r = cli("case", "close", ref, "--by", "Tom Reid")
    assert r.code == 1 and "rule: stage2-response-required" in r.err

    assert cli("case", "respond", ref, "--on", "2027-02-26", "--by", "Tom Reid").code == 0
    r = cli("case", "close", ref, "--outcome", "Not upheld at review", "--by", "Tom Reid",
            "--json")
    closed = json.loads(r.out)
    assert closed["status"] == "closed"
    assert closed["ombudsman"] == "Local Government and Social Care Ombudsman"
    actions = [e["action"] for e in closed["audit"]]
    assert actions == [
        "opened", "assigned", "extended", "queued", "responded", "stage2_requested", "assigned",
        "responded", "closed",
    ]
    assert closed["audit"][3]["detail"] == "extension_notice to ann@example.com"
    assert all(e["actor"] for e in closed["audit"])

    r = cli("case", "reopen", ref, "--reason", "New evidence from the family", "--by", "Manager")
    assert r.code == 0
    assert show(cli, ref)["status"] == "stage2"


def test_late_stage2_request_is_accepted_but_flagged(cli) -> None:
    ref = open_complaint(cli, area="housing")
    cli("case", "assign", ref, "--officer", "Priya Shah", "--by", "Sam")
    cli("case", "respond", ref, "--on", "2027-01-06", "--by", "Priya Shah")
    r = cli("case", "stage2", ref, "--requested", "2027-02-04T10:00", "--by", "Sam", "--json")
    assert r.code == 0, r.err
    case = json.loads(r.out)
    assert case["deadlines"]["stage2_request_by"] == "2027-02-03"
    assert "late_stage2_request" in case["flags"]
    assert "a manager must decide" in case["audit"][-1]["detail"]
    cli("case", "assign", ref, "--reviewer", "Tom Reid", "--by", "Sam")
    cli("case", "respond", ref, "--on", "2027-02-20", "--by", "Tom Reid")
    closed = json.loads(cli("case", "close", ref, "--by", "Tom Reid", "--json").out)
    assert closed["ombudsman"] == "Housing Ombudsman Service"


def test_reclassify_keeps_the_correction_and_starts_the_clock(cli) -> None:
    r = cli("case", "open", "--kind", "other", "--name", "Bob", "--phone", "01632 960001",
            "--summary", "Asked about charges", "--received", "2026-12-21T10:00",
            "--source", "phone", "--by", "Sam", "--json")
    ref = json.loads(r.out)["ref"]
    assert json.loads(r.out)["acknowledgement_due"] is None
    assert "needs_letter" in json.loads(r.out)["flags"]
    r = cli("case", "reclassify", ref, "--kind", "complaint", "--by", "Sam", "--json")
    case = json.loads(r.out)
    assert case["kind"] == "complaint"
    assert case["acknowledgement_due"] == "2026-12-30"
    assert case["audit"][-1]["detail"] == "other -> complaint"


def test_unknown_case_and_out_of_time_flag(cli) -> None:
    r = cli("case", "show", "CSQ-2026-99999")
    assert r.code == 1 and "no case with reference" in r.err
    r = cli("case", "open", "--kind", "complaint", "--name", "Old", "--email", "o@example.com",
            "--summary", "x", "--received", "2026-12-21T10:00", "--incident-date", "2025-11-30",
            "--by", "Sam", "--json")
    assert "out_of_time" in json.loads(r.out)["flags"]
    listing = json.loads(cli("cases", "--kind", "complaint", "--json").out)
    assert [c["ref"] for c in listing] == ["CSQ-2026-00001"]


def test_init_db_twice_is_harmless(cli, database_url: str) -> None:
    open_complaint(cli)
    assert cli("init-db").code == 0
    assert cli("init-db").code == 0
    assert show(cli, "CSQ-2026-00001")["ref"] == "CSQ-2026-00001"


def test_references_are_sequential_and_unique_under_concurrency(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url, pool_size=10) if "postgresql" in database_url else (
        make_engine(database_url)
    )
    sessions = session_factory(engine)
    from datetime import datetime
    from zoneinfo import ZoneInfo

    calendar = WorkingCalendar(Policy(), ZoneInfo("Europe/London"))
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for _ in range(10):
                new = NewCase(kind=Kind.COMPLAINT, source=Source.EMAIL,
                              received_at=datetime(2026, 12, 21, 10, tzinfo=calendar.tz),
                              requester_name=f"Worker {n}")
                with sessions.begin() as session:
                    open_case(session, new, calendar, utcnow(), "test")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.connect() as conn:
        refs = sorted(conn.scalars(select(cases.c.ref)))
        assert conn.scalar(select(func.count()).select_from(case_events)) == 80
    engine.dispose()
    assert refs == [f"CSQ-2026-{n:05d}" for n in range(1, 81)]
