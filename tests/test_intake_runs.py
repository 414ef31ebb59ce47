"""Intake in runs (``intake_runs``) writes exactly what one message at a time writes.

The same mail goes through the worker's batch path and, on an emptied database, through the
one-at-a-time path it replaced (``worker._process_one`` per message); every case, event,
reminder, stored message, queued email and attachment must come out the same, and stored and
queued mail in the same order. The mail is chosen so that messages of one window depend on
each other in the ways the window's read could get wrong: a duplicate, an auto-reply and a
reply to a case opened moments before, a reference quoted in a subject, one sender past the
cap on automatic replies, a reply whose references name messages on two cases.
"""

from __future__ import annotations

import email.policy
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, insert, select

from mailbot import worker
from mailbot.adapters.mailbox import RawMessage
from mailbot.adapters.orm import (
    attachments,
    case_events,
    cases,
    messages,
    metadata,
    reference_counters,
    reminders,
)
from mailbot.bootstrap import App, build_app, intake_context
from mailbot.config import load_settings
from mailbot.intake.parse_ahead import Ahead
from mailbot.services import intake_runs
from mailbot.services.cases import get_case, save_new_case
from mailbot.services.intake import IntakeContext
from mailbot.worker import _process_one, process_batch
from mailbot.workflow import lifecycle
from mailbot.workflow.model import Kind, Source
from tests.mail_factory import COMPLAINT, COMPLIMENT, make_email

LONDON = ZoneInfo("Europe/London")
SENT = datetime(2026, 12, 21, 10, 0, tzinfo=LONDON)
NOW = datetime(2026, 12, 21, 10, 5, tzinfo=LONDON).astimezone(UTC)


@pytest.fixture
def app(mailbot_env: dict[str, str]) -> Iterator[App]:
    application = build_app(load_settings())
    yield application
    application.close()


@pytest.fixture
def ctx(app: App) -> IntakeContext:
    return intake_context(app)


def _with_attachment(sender: str, mid: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "care.quality@council.example"
    msg["Subject"] = "Photos of the room"
    msg["Message-ID"] = f"<{mid}>"
    msg["Date"] = "Mon, 21 Dec 2026 09:58:00 +0000"
    msg.set_content(COMPLAINT)
    msg.add_attachment(b"\x89PNG fake image bytes" * 40, maintype="image", subtype="png",
                       filename="room.png")
    return msg.as_bytes(policy=email.policy.SMTP)


def mail() -> list[bytes]:
    """One window's worth of mail whose messages depend on each other."""
    out = [
        make_email(sender="Ann <ann@example.org>", subject="Mum's care", body=COMPLAINT,
                   date=SENT, message_id="m0@example.org"),
        make_email(sender="Bob <bob@example.org>", subject="Thank you", body=COMPLIMENT,
                   date=SENT, message_id="m1@example.org"),
        make_email(sender="Jo Fields <jo@nhs.example.org>", subject="Resident at Elm Lodge",
                   body="On my visit to Elm Lodge Mr K had a pressure sore that staff had not "
                        "reported, and there were bruises on his arms nobody could explain.",
                   date=SENT, message_id="m2@example.org"),
        # Ann's out-of-office answering our acknowledgement thread: recorded on her case.
        make_email(sender="Ann <ann@example.org>", subject="Automatic reply: Mum's care",
                   body="I am away until Monday.", date=SENT, message_id="m3@example.org",
                   in_reply_to="m0@example.org",
                   headers={"Auto-Submitted": "auto-replied"}),
        # Bob's compliment again, delivered twice.
        make_email(sender="Bob <bob@example.org>", subject="Thank you", body=COMPLIMENT,
                   date=SENT, message_id="m1@example.org"),
        # Ann replies on the case opened three messages ago.
        make_email(sender="Ann <ann@example.org>", subject="Re: Mum's care",
                   body="Also the carers did not turn up again today.", date=SENT,
                   message_id="m5@example.org", in_reply_to="m0@example.org"),
        make_email(sender="Mail Delivery System <MAILER-DAEMON@mx.example.net>",
                   subject="Undelivered Mail Returned to Sender",
                   body="Your message could not be delivered.", date=SENT,
                   message_id="m6@example.org", headers={"Auto-Submitted": "auto-replied"}),
        b"\x00\x01\x02 not an email \xff\xfe\r\n",
        _with_attachment("Dee <dee@example.org>", "m8@example.org"),
    ]
    # Seven complaints from one person: the policy answers five a day automatically.
    out += [make_email(sender="Eve <eve@example.org>", subject=f"Complaint {n}",
                       body=COMPLAINT, date=SENT, message_id=f"e{n}@example.org")
            for n in range(7)]
    out += [
        # Quotes the first case's reference without threading: Ann is on it, so it joins.
        make_email(sender="Ann <ann@example.org>", subject="CSQ-2026-00001 any news?",
                   body="Is there any news on my complaint?", date=SENT,
                   message_id="m16@example.org"),
        make_email(sender="Sue Staff <sue.staff@council.example>", subject="Fwd: thank you",
                   body="For the record.\n\n---------- Forwarded message ---------\n"
                        "From: Maria Lopez <maria.lopez@example.org>\n"
                        "Date: Fri, 18 Dec 2026 at 16:02\nSubject: thank you\n"
                        "To: Sue Staff <sue.staff@council.example>\n\n"
                        "Sue, you have been a rock for our family. We are so grateful.\n",
                   date=SENT, message_id="m17@example.org"),
        make_email(sender="Fay <fay@example.org>", subject="Worried", body=COMPLAINT,
                   date=SENT, message_id="m18@example.org"),
    ]
    return out


def batch_of(raws: list[bytes], uidvalidity: int = 1) -> list[RawMessage]:
    return [RawMessage(f"imap://test@127.0.0.1:1/INBOX;UIDVALIDITY={uidvalidity};UID={n}", data)
            for n, data in enumerate(raws, 1)]


def one_at_a_time(app: App, ctx: IntakeContext, batch: list[RawMessage]) -> list[str]:
    with app.sessions() as session:
        return [_process_one(app, session, ctx, raw, lambda: NOW, Ahead()).outcome
                for raw in batch]


def empty(app: App) -> None:
    with app.sessions.begin() as session:
        for table in reversed(metadata.sorted_tables):
            session.execute(delete(table))


def snapshot(app: App) -> dict[str, list[Any]]:
    """Everything intake wrote, without row ids (and so comparable between two runs)."""
    with app.sessions() as s:
        ref = {row.id: row.ref for row in s.execute(select(cases.c.id, cases.c.ref))}
        key = {row.id: row.mailbox_key for row in s.execute(
            select(messages.c.id, messages.c.mailbox_key))}

        def rows(table: Any, order: Any) -> list[dict[str, Any]]:
            """The rows in ``order``: where the order is an id's, it is part of what is
            compared (the newest message of a thread decides its case, the outbox sends in id
            order, a case's audit trail reads in id order)."""
            out = []
            for row in s.execute(select(table).order_by(*order)).mappings():
                d = dict(row)
                d.pop("id", None)
                if "case_id" in d:
                    d["case_id"] = ref.get(d["case_id"])
                if "message_row_id" in d:
                    d["message_row_id"] = key.get(d["message_row_id"])
                for volatile in ("message_id", "raw"):  # composed mail: a fresh Message-ID
                    if d.get("direction") == "out":
                        d.pop(volatile, None)
                out.append(d)
            return out

        return {
            "cases": rows(cases, [cases.c.ref]),
            # A case's trail in order; across cases, the order of events is of no consequence.
            "events": sorted(rows(case_events, [case_events.c.id]),
                             key=lambda d: str(d["case_id"])),
            "messages": rows(messages, [messages.c.id]),
            "reminders": sorted(rows(reminders, [reminders.c.id]), key=repr),
            "attachments": rows(attachments, [attachments.c.id]),
        }


@pytest.mark.parametrize("window", [intake_runs.WINDOW, 3])
def test_runs_write_what_one_at_a_time_writes(
    app: App, ctx: IntakeContext, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = batch_of(mail())
    expected_outcomes = one_at_a_time(app, ctx, batch)
    expected = snapshot(app)
    empty(app)

    monkeypatch.setattr(intake_runs, "WINDOW", window)
    alone: list[str] = []

    def one_alone(*args: Any) -> Any:
        alone.append(args[3].key)
        return _process_one(*args)

    monkeypatch.setattr(worker, "_process_one", one_alone)
    outcomes = process_batch(app, ctx, batch, now=lambda: NOW)
    # Only what no read can decide went alone: the bytes that are not an email, and the
    # message that quotes a reference in its subject. The rest went in runs, a message that
    # depends on an earlier one of its window starting the next window.
    assert alone == [batch[7].key, batch[16].key]

    assert [o.outcome for o in outcomes] == expected_outcomes
    assert expected_outcomes == [
        "case", "case", "case", "auto", "duplicate", "joined", "auto", "quarantined", "case",
        *["case"] * 7, "joined", "case", "case"]
    got = snapshot(app)
    for table in expected:
        assert got[table] == expected[table], table
    # And what that is: Eve's last two complaints were not answered, Ann's auto-reply and
    # her follow-ups are on her case, and the picture is attached to Dee's message.
    acks = [m for m in got["messages"]
            if m["direction"] == "out" and m["recipients"] == "eve@example.org"]
    assert len(acks) == 5
    on_ann = [m["outcome"] for m in got["messages"]
              if m["direction"] == "in" and m["case_id"] == "CSQ-2026-00001"]
    assert sorted(on_ann) == ["auto", "case", "joined", "joined"]
    assert [a["filename"] for a in got["attachments"]] == ["room.png"]


def test_a_run_that_cannot_be_written_is_redone_one_message_at_a_time(
    app: App, ctx: IntakeContext
) -> None:
    """Another worker recorded the fourth message just before this worker's run was written:
    the run rolls back, and one at a time that message is found as the other worker's while
    the rest are processed as usual."""
    raws = [make_email(sender=f"P{n} <p{n}@example.org>", subject="Complaint", body=COMPLAINT,
                       date=SENT, message_id=f"p{n}@example.org") for n in range(6)]
    batch = batch_of(raws)
    taken = batch[3]
    with app.sessions() as session:
        with session.begin():
            # What the other worker wrote, after this worker found the entry unrecorded.
            theirs = lifecycle.open_case(
                "CSQ-2026-09999", lifecycle.NewCase(kind=Kind.COMPLAINT, source=Source.EMAIL,
                                                    received_at=NOW, requester_name="P3"),
                app.calendar, NOW, "other worker")
            save_new_case(session, theirs, app.calendar, NOW)
            session.execute(insert(messages).values(
                direction="in", mailbox_key=taken.key, outcome="case", case_id=theirs.id,
                received_at=NOW, subject="", recipients="", body_text="", attempts=0))

        outcomes = intake_runs.process_many(
            session, [(raw, Ahead()) for raw in batch], ctx, lambda: NOW,
            lambda raw, ahead: _process_one(app, session, ctx, raw, lambda: NOW, ahead))

    assert [(o.outcome, o.case_ref) for o in outcomes] == ([
        ("case", "CSQ-2026-00001"), ("case", "CSQ-2026-00002"), ("case", "CSQ-2026-00003"),
        ("seen", "CSQ-2026-09999"), ("case", "CSQ-2026-00004"), ("case", "CSQ-2026-00005")
    ] if app.engine.dialect.name == "sqlite" else [
        # PostgreSQL draws numbers outside the opening's transaction (cases.
        # allocate_references): the rolled-back run leaves its six as a gap, and so does the
        # fourth message's own attempt.
        ("case", "CSQ-2026-00007"), ("case", "CSQ-2026-00008"), ("case", "CSQ-2026-00009"),
        ("seen", "CSQ-2026-09999"), ("case", "CSQ-2026-00011"), ("case", "CSQ-2026-00012")
    ])
    with app.sessions() as s:
        assert s.scalar(select(reference_counters.c.last)) == (
            5 if app.engine.dialect.name == "sqlite" else 12)
        assert len(s.execute(select(messages.c.id).where(
            messages.c.direction == "out", messages.c.template == "complaint_acknowledgement"
        )).all()) == 5


LATER_SENT = datetime(2027, 1, 11, 10, 0, tzinfo=LONDON)
LATER = datetime(2027, 1, 11, 10, 5, tzinfo=LONDON).astimezone(UTC)
SAFEGUARDING_REPLY = ("Dad has bruises on his arms that nobody can explain and a pressure sore "
                      "the carers never reported.")
UNHAPPY_REPLY = ("I am not satisfied with your response. Nobody has explained why Mum's calls "
                 "were cut and I want this reviewed by someone else.")


def earlier_mail() -> list[bytes]:
    """Cases that the later mail answers, repeats or auto-replies to."""
    return [make_email(sender=f"{name.title()} <{name}@example.org>", subject=subject, body=body,
                       date=SENT, message_id=f"{name}0@example.org")
            for name, subject, body in [
                ("ann", "Mum's care", COMPLAINT), ("bob", "Dad's calls", COMPLAINT),
                ("cat", "Thank you", COMPLIMENT), ("dan", "Visits", COMPLAINT),
                ("fay", "Worried", COMPLAINT), ("hal", "Home care", COMPLAINT)]]


def later_mail() -> list[bytes]:
    """One window in which no message depends on another, but each on the earlier cases."""
    def reply(name: str, body: str, **kw: Any) -> bytes:
        return make_email(sender=f"{name.title()} <{name}@example.org>", subject="Re: your case",
                          body=body, date=LATER_SENT, message_id=f"{name}1@example.org",
                          in_reply_to=f"{name}0@example.org", **kw)
    return [
        reply("ann", "Also the carers did not turn up again today."),  # added to her case
        reply("bob", UNHAPPY_REPLY),  # after the stage-1 response: a stage-2 request
        reply("cat", "Thanks again, and one more thing."),  # the case is closed: flagged
        reply("dan", SAFEGUARDING_REPLY),  # a safeguarding alert on his case
        earlier_mail()[4],  # Fay's complaint again: a duplicate on her case
        make_email(sender="Hal's office <office@hal.example.org>", subject="Out of office",
                   body="I am away.", date=LATER_SENT, message_id="hal1@example.org",
                   in_reply_to="hal0@example.org", headers={"Auto-Submitted": "auto-replied"}),
        make_email(sender="Eve <eve@example.org>", subject="New complaint", body=COMPLAINT,
                   date=LATER_SENT, message_id="eve0@example.org"),
    ]


def answer_and_close(app: App) -> None:
    """Bob's complaint has its stage-1 response; Cat's compliment is closed."""
    with app.sessions.begin() as s:
        bob = get_case(s, "CSQ-2026-00002")
        lifecycle.assign(bob, NOW, "Sam", officer="Priya Shah")
        lifecycle.respond(bob, date(2026, 12, 23), app.calendar, NOW, "Priya Shah")
        lifecycle.close(get_case(s, "CSQ-2026-00003"), NOW, "Sam", None)


def test_replies_repeats_and_auto_replies_go_in_runs_and_write_what_one_at_a_time_writes(
    app: App, ctx: IntakeContext
) -> None:
    """Replies change the cases they answer (a stage-2 request, a flag on a closed case, a
    safeguarding alert) exactly as they do one at a time, without leaving the run."""
    results = {}
    for way in ("one at a time", "in runs"):
        empty(app)
        process_batch(app, ctx, batch_of(earlier_mail()), now=lambda: NOW)
        answer_and_close(app)
        later = batch_of(later_mail(), uidvalidity=2)
        alone: list[str] = []
        with app.sessions() as session:

            def one(raw: RawMessage, ahead: Ahead, session: Any = session,
                    alone: list[str] = alone) -> Any:
                alone.append(raw.key)
                return _process_one(app, session, ctx, raw, lambda: LATER, ahead)

            if way == "one at a time":
                outcomes = [one(raw, Ahead()) for raw in later]
            else:
                outcomes = intake_runs.process_many(
                    session, [(raw, Ahead()) for raw in later], ctx, lambda: LATER, one)
                assert alone == []  # every message was written in the run
        results[way] = ([(o.outcome, o.case_ref, o.detail) for o in outcomes], snapshot(app))

    expected_outcomes, expected = results["one at a time"]
    outcomes, got = results["in runs"]
    assert outcomes == expected_outcomes == [
        ("joined", "CSQ-2026-00001", "reply added"),
        ("joined", "CSQ-2026-00002", "stage-2 request"),
        ("joined", "CSQ-2026-00003", "reply on a closed case; flagged for triage"),
        ("joined", "CSQ-2026-00004", "reply added"),
        ("duplicate", "CSQ-2026-00005", ""),
        ("auto", "CSQ-2026-00006", "auto_reply"),
        ("case", "CSQ-2027-00001", "complaint"),
    ]
    for table in expected:
        assert got[table] == expected[table], table
    by_ref = {c["ref"]: c for c in got["cases"]}
    assert by_ref["CSQ-2026-00002"]["status"] == "stage2"
    assert by_ref["CSQ-2026-00003"]["flag_needs_triage"]
    queued = [(m["case_id"], m["recipients"], m["template"]) for m in got["messages"]
              if m["direction"] == "out"]
    assert ("CSQ-2026-00002", "bob@example.org", "stage2_acknowledgement") in queued
    alerts = Counter(ref for ref, _, template in queued if template == "safeguarding_alert")
    assert alerts["CSQ-2026-00004"] == 2  # the complaint that opened it, and Dan's reply


def test_a_reply_naming_messages_on_two_cases_joins_the_newer_as_one_at_a_time_does(
    app: App, ctx: IntakeContext
) -> None:
    """Ann's reply is added to her case, then Bob opens a case, then Cy answers Bob's message
    with a References header that also names Ann's reply: the newest of the messages Cy
    answers is Bob's, so Cy joins Bob's case, whichever way the mail is written."""
    first = [make_email(sender="Ann <ann@example.org>", subject="Mum's care", body=COMPLAINT,
                        date=SENT, message_id="a0@example.org")]
    later = [
        make_email(sender="Ann <ann@example.org>", subject="Re: Mum's care",
                   body="Also the carers did not turn up again today.", date=SENT,
                   message_id="x1@example.org", in_reply_to="a0@example.org"),
        make_email(sender="Bob <bob@example.org>", subject="Dad's calls", body=COMPLAINT,
                   date=SENT, message_id="x2@example.org"),
        make_email(sender="Cy <cy@example.org>", subject="Re: Dad's calls",
                   body="I am Bob's sister and I agree with everything he says.", date=SENT,
                   message_id="x3@example.org", in_reply_to="x2@example.org",
                   headers={"References": "<x2@example.org> <x1@example.org>"}),
    ]
    results = {}
    for way in ("one at a time", "in runs"):
        empty(app)
        process_batch(app, ctx, batch_of(first), now=lambda: NOW)
        batch = batch_of(later, uidvalidity=2)
        if way == "one at a time":
            one_at_a_time(app, ctx, batch)
        else:
            outcomes = process_batch(app, ctx, batch, now=lambda: NOW)
            assert [(o.outcome, o.case_ref) for o in outcomes] == [
                ("joined", "CSQ-2026-00001"), ("case", "CSQ-2026-00002"),
                ("joined", "CSQ-2026-00002")]
        with app.sessions() as s:
            joined = s.execute(select(cases.c.ref).join(messages, messages.c.case_id == cases.c.id)
                               .where(messages.c.message_id == "x3@example.org")).scalar_one()
        results[way] = (joined, snapshot(app))
    assert results["in runs"][0] == results["one at a time"][0] == "CSQ-2026-00002"
    assert results["in runs"][1] == results["one at a time"][1]
