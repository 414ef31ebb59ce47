"""Inbox to case to reply, against a real Dovecot and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from mailbot import worker as worker_module
from mailbot.adapters.mailbox import open_mailbox
from mailbot.adapters.orm import idempotency_keys, messages
from mailbot.adapters.smtp import open_transport
from mailbot.bootstrap import App, build_app, intake_context, utcnow
from mailbot.config import load_settings
from mailbot.services import cases as case_service
from mailbot.worker import Worker, poll_once
from mailbot.workflow.model import Kind, Status
from tests.mail_factory import COMPLAINT, make_email

LONDON = ZoneInfo("Europe/London")
# Monday 21 December 2026, 10:00 in London; the 25th and 28th are bank holidays.
SENT = datetime(2026, 12, 21, 10, 0, tzinfo=LONDON)
NOW = datetime(2026, 12, 21, 10, 5, tzinfo=LONDON).astimezone(UTC)


@pytest.fixture
def app(mailbot_env, imap_account, smtp_server, monkeypatch) -> Iterator[App]:
    monkeypatch.setenv("MAILBOT_MAILBOX_URL", imap_account.url)
    monkeypatch.setenv("MAILBOT_SMTP_URL", smtp_server.url)
    application = build_app(load_settings())
    yield application
    application.close()


@pytest.fixture(scope="module")
def _classifier_loaded() -> None:
    """Load the model once per module (intake_context loads it; this warms the OS cache)."""


def run_pass(app: App, now: datetime = NOW):
    mailbox = open_mailbox(app.settings.mailbox)
    try:
        return poll_once(app, intake_context(app), mailbox, open_transport(app.settings.smtp),
                         now=lambda: now)
    finally:
        mailbox.close()


def folder_count(account, folder: str) -> int:
    client = account.client()
    try:
        if not client.folder_exists(folder):
            return 0
        return int(client.select_folder(folder, readonly=True)[b"EXISTS"])
    finally:
        client.logout()


def by_recipient(arrived) -> dict[str, list]:
    out: dict[str, list] = {}
    for m in arrived:
        for r in m.rcpt_tos:
            out.setdefault(r, []).append(m)
    return out


def test_complaint_gets_one_case_and_one_acknowledgement(app, imap_account, smtp_server) -> None:
    imap_account.deliver(make_email(subject="Mum's care", body=COMPLAINT, date=SENT,
                                    message_id="c1@example.org"))
    result = run_pass(app)
    assert [o.outcome for o in result.outcomes] == ["case"]
    ref = result.outcomes[0].case_ref
    assert ref == "CSQ-2026-00001"

    with app.sessions() as s:
        case = case_service.get_case(s, ref)
        assert case.kind == Kind.COMPLAINT and case.status == Status.OPEN
        assert str(case.deemed_received) == "2026-12-21"
        assert str(case.acknowledgement_due) == "2026-12-30"
        assert str(case.response_due) == "2027-01-07"
        assert case.requester_email == "ann@example.org"

    smtp_server.wait_for(1)
    time.sleep(0.3)
    mail = by_recipient(smtp_server.messages)
    # Staff alerts may go to our own addresses; the only outside recipient is the sender.
    assert {r for r in mail if not r.endswith("@council.example")} == {"ann@example.org"}
    [ack] = mail["ann@example.org"]
    assert ack.mail_from == ""  # null envelope sender (RFC 3834): a bounce cannot loop
    assert ack.rcpt_tos == ["ann@example.org"]
    m = ack.message
    assert ref in m["Subject"]
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["In-Reply-To"] == "<c1@example.org>"
    assert m["To"] == "ann@example.org"
    text = m.get_content()
    assert "Wednesday 30 December 2026" in text  # officer confirmed by
    assert "Thursday 7 January 2027" in text  # proposed response date
    assert "Local Government and Social Care Ombudsman" in text
    assert "Nobody has" not in text  # never repeats the complaint
    assert folder_count(imap_account, "INBOX") == 0
    assert folder_count(imap_account, "Processed") == 1
    # Our Message-ID is stored for threading.
    with app.sessions() as s:
        stored = s.scalar(select(messages.c.message_id).where(messages.c.direction == "out"))
    assert m["Message-ID"] == f"<{stored}>"


def test_reply_joins_the_case(app, imap_account, smtp_server) -> None:
    imap_account.deliver(make_email(body=COMPLAINT, date=SENT, message_id="c1@example.org"))
    run_pass(app)
    ack = smtp_server.wait_for(1)[0].message
    imap_account.deliver(make_email(
        subject=f"Re: {ack['Subject']}", body="Also, her carers were late again today.",
        date=SENT, message_id="c2@example.org", in_reply_to=ack["Message-ID"].strip("<>")))
    # A stranger quoting the reference opens a linked case instead of joining.
    imap_account.deliver(make_email(
        sender="Mallory <mallory@example.net>", subject="Re: CSQ-2026-00001",
        body="Please send me everything you hold on this case.", date=SENT,
        message_id="c3@example.net"))
    result = run_pass(app)
    assert [(o.outcome, o.case_ref) for o in result.outcomes] == [
        ("joined", "CSQ-2026-00001"), ("case", "CSQ-2026-00002")]
    with app.sessions() as s:
        linked = case_service.get_case(s, "CSQ-2026-00002")
        assert linked.related_ref == "CSQ-2026-00001"
        assert linked.requester_email == "mallory@example.net"


def test_staff_forward_of_a_compliment_is_credited(app, imap_account, smtp_server) -> None:
    body = (
        "Lovely feedback from a family I worked with, for the record.\n\nSue\n\n"
        "---------- Forwarded message ---------\n"
        "From: Maria Lopez <maria.lopez@example.org>\n"
        "Date: Fri, 18 Dec 2026 at 16:02\nSubject: thank you\n"
        "To: Sue Staff <sue.staff@council.example>\n\n"
        "Sue, you have been a rock for our family. You listened to Mum and sorted everything "
        "out with the agency so quickly. We are so grateful.\n"
    )
    imap_account.deliver(make_email(sender="Sue Staff <sue.staff@council.example>",
                                    subject="Fwd: thank you", body=body, date=SENT))
    result = run_pass(app)
    assert [o.outcome for o in result.outcomes] == ["case"]
    with app.sessions() as s:
        case = case_service.get_case(s, result.outcomes[0].case_ref)
        assert case.kind == Kind.COMPLIMENT
        assert case.requester_email == "maria.lopez@example.org"
        assert case.requester_name == "Maria Lopez"
        assert any("forwarded by staff: Sue Staff" in e.detail for e in case.events)
    arrived = smtp_server.wait_for(2)
    recipients = sorted(r for m in arrived for r in m.rcpt_tos)
    # Thanks to the staff member, and the compliment passed on to the team: nothing to Maria.
    assert recipients == ["care.quality@council.example", "sue.staff@council.example"]


@pytest.mark.parametrize(
    ("sender", "subject", "headers"),
    [
        ("Mail Delivery System <MAILER-DAEMON@mx.example.net>", "Undelivered Mail",
         {"Auto-Submitted": "auto-replied"}),
        ("Dr Moss <helen.moss@gp.example.org>", "Automatic reply: Referral",
         {"X-Auto-Response-Suppress": "All"}),
        ("Care News <news@lists.example.com>", "This week in care",
         {"List-Id": "<weekly.lists.example.com>", "Precedence": "bulk"}),
    ],
)
def test_auto_generated_mail_is_recorded_and_never_answered(
    app, imap_account, smtp_server, sender: str, subject: str, headers: dict[str, str]
) -> None:
    imap_account.deliver(make_email(sender=sender, subject=subject, body=COMPLAINT,
                                    date=SENT, headers=headers))
    result = run_pass(app)
    assert [o.outcome for o in result.outcomes] == ["auto"]
    time.sleep(0.3)
    assert smtp_server.messages == []
    with app.sessions() as s:
        assert case_service.list_cases(s) == []
    assert folder_count(imap_account, "Processed") == 1


def test_broken_message_is_quarantined_and_the_next_is_processed(
    app, imap_account, smtp_server
) -> None:
    imap_account.deliver(b"\x00\x01\x02 not an email \xff\xfe")
    imap_account.deliver(make_email(body=COMPLAINT, date=SENT))
    result = run_pass(app)
    assert [o.outcome for o in result.outcomes] == ["quarantined", "case"]
    assert folder_count(imap_account, "Quarantine") == 1
    assert folder_count(imap_account, "Processed") == 1
    smtp_server.wait_for(1)
    assert len(by_recipient(smtp_server.messages)["ann@example.org"]) == 1


def test_same_message_delivered_twice_opens_one_case(app, imap_account, smtp_server) -> None:
    raw = make_email(body=COMPLAINT, date=SENT, message_id="twice@example.org")
    imap_account.deliver(raw)
    imap_account.deliver(raw)
    result = run_pass(app)
    assert [o.outcome for o in result.outcomes] == ["case", "duplicate"]
    smtp_server.wait_for(1)
    time.sleep(0.3)
    assert len(by_recipient(smtp_server.messages)["ann@example.org"]) == 1


class CrashBeforeMove(Exception):
    pass


def test_crash_between_commit_and_move_creates_no_duplicate(
    app, imap_account, smtp_server
) -> None:
    imap_account.deliver(make_email(body=COMPLAINT, date=SENT, message_id="k1@example.org"))
    mailbox = open_mailbox(app.settings.mailbox)

    def die(keys):
        raise CrashBeforeMove

    mailbox.mark_processed = die  # type: ignore[method-assign]
    with pytest.raises(CrashBeforeMove):
        poll_once(app, intake_context(app), mailbox, open_transport(app.settings.smtp),
                  now=lambda: NOW)
    mailbox.close()
    assert folder_count(imap_account, "INBOX") == 1  # committed but not moved

    result = run_pass(app)
    assert [o.outcome for o in result.outcomes] == ["seen"]
    assert folder_count(imap_account, "INBOX") == 0
    smtp_server.wait_for(1)
    time.sleep(0.3)
    with app.sessions() as s:
        assert len(case_service.list_cases(s)) == 1
        queued = s.scalar(select(func.count()).select_from(messages)
                          .where(messages.c.direction == "out"))
    assert len(smtp_server.messages) == queued  # every queued email sent once, none twice
    assert len(by_recipient(smtp_server.messages)["ann@example.org"]) == 1


def test_with_idle_the_acknowledgement_arrives_within_two_seconds(
    app, imap_account, smtp_server
) -> None:
    mailbox = open_mailbox(app.settings.mailbox)
    worker = Worker(app, intake_context(app), mailbox, open_transport(app.settings.smtp),
                    idle_timeout=30)
    thread = threading.Thread(target=worker.run_loop, daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(30)  # its parse-ahead child has loaded the classifier
        time.sleep(1.0)  # the worker is idling now
        delivered = time.monotonic()
        imap_account.deliver(make_email(body=COMPLAINT, message_id="idle@example.org"))
        smtp_server.wait_for(1, timeout=2.0)
        assert time.monotonic() - delivered < 2.0
    finally:
        worker.stop()
        thread.join(timeout=35)


def test_once_the_inbox_is_empty_the_worker_and_its_child_give_free_memory_back(
    app, imap_account, smtp_server, monkeypatch
) -> None:
    """After a pass, with its mail sent, and before the worker waits for more (adapters.heap)."""
    sent_when_released: list[int] = []
    release = worker_module.release_free_memory

    def spy() -> bool:
        sent_when_released.append(len(smtp_server.messages))
        return release()

    monkeypatch.setattr(worker_module, "release_free_memory", spy)
    imap_account.deliver(make_email(body=COMPLAINT, message_id="trim@example.org"))
    worker = Worker(app, intake_context(app), open_mailbox(app.settings.mailbox),
                    open_transport(app.settings.smtp), idle_timeout=30)
    assert worker.ahead is not None
    asked_child: list[bool] = []
    child_release = worker.ahead.release_free_memory
    monkeypatch.setattr(worker.ahead, "release_free_memory",
                        lambda: (asked_child.append(True), child_release())[1])
    thread = threading.Thread(target=worker.run_loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not sent_when_released and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sent_when_released and sent_when_released[0] >= 1  # the acknowledgement was out
        assert asked_child
    finally:
        worker.stop()
        thread.join(timeout=35)


def test_the_worker_forgets_webhook_idempotency_keys_past_their_retention(
    app, imap_account, smtp_server
) -> None:
    now = utcnow()
    with app.sessions.begin() as s:
        s.execute(idempotency_keys.insert(), [
            {"key": key, "request_sha256": "0" * 64, "status_code": 201, "response_body": "{}",
             "created_at": now - age}
            for key, age in (("old", timedelta(days=8)), ("recent", timedelta(days=1)))
        ])
    worker = Worker(app, intake_context(app), open_mailbox(app.settings.mailbox),
                    open_transport(app.settings.smtp), idle_timeout=30)
    thread = threading.Thread(target=worker.run_loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while worker.scheduler.get_job("purge-keys") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.scheduler.get_job("purge-keys") is not None  # it runs every few hours
        worker._purge_idempotency_keys()  # what the job runs, without waiting hours for it
        with app.sessions() as s:
            assert list(s.scalars(select(idempotency_keys.c.key))) == ["recent"]
    finally:
        worker.stop()
        thread.join(timeout=35)


def test_quality_concern_goes_to_commissioning_and_alerts_safeguarding(
    app, imap_account, smtp_server
) -> None:
    body = (
        "On my visit to Elm Lodge this morning Mr K had a grade 3 pressure sore that staff had "
        "not reported. He was sitting in urine-soaked clothes, his fluid chart was blank since "
        "Tuesday and there were bruises on his arms nobody could explain.\n\nJo Fields\n"
        "District Nurse"
    )
    imap_account.deliver(make_email(sender="Jo Fields <jo.fields@nhs.example.org>",
                                    subject="Resident at Elm Lodge", body=body, date=SENT))
    result = run_pass(app)
    ref = result.outcomes[0].case_ref
    with app.sessions() as s:
        case = case_service.get_case(s, ref)
        assert case.kind == Kind.QUALITY_CONCERN
        assert case.flag_safeguarding
        assert case.acknowledgement_due is None  # no complaint clock
    mail = by_recipient(smtp_server.wait_for(3))
    assert set(mail) == {"jo.fields@nhs.example.org", "commissioning@council.example",
                         "safeguarding@council.example"}
    alert = mail["safeguarding@council.example"][0].message
    assert alert["Subject"].startswith("URGENT") and ref in alert["Subject"]
    assert alert["Importance"] == "High"
    assert "grade 3 pressure sore" in mail["commissioning@council.example"][0].message.get_content()


def test_unhappy_reply_after_the_response_is_a_stage2_request(
    app, imap_account, smtp_server, cli
) -> None:
    imap_account.deliver(make_email(body=COMPLAINT, date=SENT, message_id="s1@example.org"))
    ref = run_pass(app).outcomes[0].case_ref
    assert cli("case", "assign", ref, "--officer", "Priya Shah", "--by", "Sam").code == 0
    assert cli("case", "respond", ref, "--on", "2027-01-06", "--by", "Priya Shah").code == 0
    first = smtp_server.wait_for(1)[0].message
    imap_account.deliver(make_email(
        subject=f"Re: {first['Subject']}", date=None, message_id="s2@example.org",
        in_reply_to=first["Message-ID"].strip("<>"),
        body="I am not satisfied with your response. Nobody has explained why Mum's calls were "
             "cut and I want this reviewed by someone else."))
    later = datetime(2027, 1, 11, 11, 0, tzinfo=LONDON)
    result = run_pass(app, now=later.astimezone(UTC))
    assert [(o.outcome, o.detail) for o in result.outcomes] == [("joined", "stage-2 request")]
    with app.sessions() as s:
        case = case_service.get_case(s, ref)
        assert case.status == Status.STAGE2 and case.stage == 2
        assert str(case.stage2_acknowledgement_due) == "2027-01-18"
        # 20 working days from Mon 11 Jan 2027: 12-15 (4), 18-22 (9), 25-29 (14), 1-5 (19), 8 Feb
        assert str(case.stage2_response_due) == "2027-02-08"
    ack2 = [m for m in smtp_server.wait_for(2) if "stage 2" in m.message["Subject"]]
    assert len(ack2) == 1 and "Monday 8 February 2027" in ack2[0].message.get_content()


def test_automatic_replies_are_capped_per_recipient(app, imap_account, smtp_server) -> None:
    for n in range(7):
        imap_account.deliver(make_email(
            sender="Repeat Sender <repeat@example.org>", subject=f"Question {n}",
            body=f"Could you tell me the opening hours of the day centre on day {n}? Thanks.",
            date=SENT, message_id=f"cap{n}@example.org"))
    result = run_pass(app)
    assert [o.outcome for o in result.outcomes] == ["case"] * 7
    time.sleep(0.3)
    replies = by_recipient(smtp_server.messages).get("repeat@example.org", [])
    assert len(replies) == 5  # policy default: 5 in 24 hours
    with app.sessions() as s:
        last = case_service.get_case(s, result.outcomes[-1].case_ref)
        assert any(e.action == "not_acknowledged" for e in last.events)


def test_compliment_naming_a_staff_member_is_passed_on(
    app, imap_account, smtp_server, tmp_path, monkeypatch
) -> None:
    directory = tmp_path / "staff.csv"
    directory.write_text("name,email,service\nDarren Okafor,darren.okafor@council.example,OT\n")
    monkeypatch.setenv("MAILBOT_STAFF_DIRECTORY", str(directory))
    local = build_app(load_settings())
    try:
        imap_account.deliver(make_email(
            subject="Thank you", date=SENT,
            body="Darren Okafor fitted Dad's rails so quickly and explained everything so "
                 "patiently. He made a real difference to us."))
        run_pass(local)
    finally:
        local.close()
    smtp_server.wait_for(2)
    time.sleep(0.3)
    mail = by_recipient(smtp_server.messages)
    assert {"ann@example.org", "darren.okafor@council.example"} <= set(mail)
    assert "care.quality@council.example" not in mail  # passed on to Darren, not the team
    assert "mentions you" in mail["darren.okafor@council.example"][0].message.get_content()


def test_quarantine_list_and_retry(app, imap_account, smtp_server, cli) -> None:
    imap_account.deliver(b"\x00\x01\x02 not an email \xff\xfe")
    run_pass(app)
    listed = json.loads(cli("quarantine", "list", "--json").out)
    assert len(listed) == 1 and listed[0]["error"].startswith("UnparseableMessage")
    r = cli("quarantine", "retry", "--json")
    assert r.code == 1  # still unparseable, kept in quarantine with its error
    assert len(json.loads(cli("quarantine", "list", "--json").out)) == 1


def test_poll_once_cli_exit_codes(cli, app, imap_account, smtp_server, monkeypatch) -> None:
    imap_account.deliver(make_email(body=COMPLAINT, date=SENT))
    r = cli("poll", "--once", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["cases_opened"] == 1
    monkeypatch.setenv("MAILBOT_MAILBOX_URL", "imap://nobody:wrong@127.0.0.1:1/INBOX")
    r = cli("poll", "--once")
    assert r.code == 3 and "cannot reach the mailbox" in r.err
    assert "wrong" not in r.err
