"""Screening: one test per rule, and the human messages that must not be caught."""

from __future__ import annotations

import pytest

from mailbot.intake.parsing import ParsedMessage, parse_message
from mailbot.intake.screening import (
    AUTO_REPLY,
    BOUNCE,
    MAILING_LIST,
    NO_REPLY_SENDER,
    OWN_MESSAGE,
    Screening,
    screen,
)

OURS = frozenset({"care.quality@council.example", "noreply-cases@council.example"})


def mail(
    *extra_headers: str,
    sender: str = "Mary Jones <mary.jones@example.org>",
    subject: str = "Re: My mother's care",
    content_type: str = "text/plain; charset=utf-8",
    body: str = "Thank you for calling me back.",
) -> ParsedMessage:
    lines = [
        f"From: {sender}",
        "To: Care Quality <care.quality@council.example>",
        f"Subject: {subject}",
        "Date: Tue, 2 Apr 2024 09:15:00 +0100",
        "Message-ID: <m1@example.org>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        *extra_headers,
        "",
        body,
    ]
    return parse_message("\r\n".join(lines).encode())


def kind(msg: ParsedMessage) -> str | None:
    found = screen(msg, OURS)
    return found.kind if found else None


# --- people ---------------------------------------------------------------------------------


def test_a_person_replying_is_not_screened() -> None:
    msg = mail(
        "Return-Path: <mary.jones@example.org>",
        "In-Reply-To: <ack-1@council.example>",
        "X-Mailer: Microsoft Outlook 16.0",
    )
    assert screen(msg, OURS) is None


@pytest.mark.parametrize(
    "sender",
    [
        "Ann Postlethwaite <ann.postlethwaite@example.org>",
        "Postman Pat <postman.pat@example.org>",
        "Mary <post@example.org>",
        "Post Office Customer <postoffice@example.org>",
        "Daemon Fan <mailer.daemon.fan@example.org>",
    ],
)
def test_names_that_merely_contain_post_or_daemon_are_people(sender: str) -> None:
    assert screen(mail(sender=sender), OURS) is None


@pytest.mark.parametrize(
    "subject",
    [
        "Out of office hours care was poor",
        "Undeliverable promises from the care agency",
        "Returned mail from my mother's address",
        "Automatic replies are all I get from you",
        "Delivery of meals failed again",
    ],
)
def test_people_can_write_words_that_look_like_machine_subjects(subject: str) -> None:
    assert screen(mail(subject=subject), OURS) is None


def test_auto_submitted_no_means_a_person() -> None:
    assert screen(mail("Auto-Submitted: no"), OURS) is None


def test_a_web_form_from_a_no_reply_address_with_a_person_in_reply_to() -> None:
    msg = mail(
        "Reply-To: Mary Jones <mary.jones@example.org>",
        sender="Council website <noreply@council.example>",
        subject="Contact form: complaint",
    )
    assert screen(msg, OURS) is None


# --- bounces --------------------------------------------------------------------------------

DSN_BODY = """--B
Content-Type: text/plain

Delivery failed.
--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; nobody@example.net
Action: failed
Status: 5.1.1
--B--
"""


@pytest.mark.parametrize("report_type", ["delivery-status", "disposition-notification"])
def test_multipart_report(report_type: str) -> None:
    msg = mail(
        sender="Mary Jones <mary.jones@example.org>",
        subject="Your message",
        content_type=f'multipart/report; report-type={report_type}; boundary="B"',
        body=DSN_BODY,
    )
    assert screen(msg, OURS) == Screening(
        BOUNCE, f"Content-Type multipart/report (report-type={report_type})"
    )


def test_bare_delivery_status_content_type() -> None:
    msg = mail(subject="", content_type="message/delivery-status", body="Action: failed\r\n")
    assert screen(msg, OURS) == Screening(BOUNCE, "Content-Type message/delivery-status")


def test_x_failed_recipients() -> None:
    msg = mail("X-Failed-Recipients: nobody@example.net", subject="Hello")
    assert screen(msg, OURS) == Screening(BOUNCE, "X-Failed-Recipients: nobody@example.net")


@pytest.mark.parametrize("value", ["<>", "< >", ""])
def test_empty_return_path(value: str) -> None:
    msg = mail(f"Return-Path: {value}", subject="Hello")
    found = screen(msg, OURS)
    assert found is not None and found.kind == BOUNCE
    assert found.reason.startswith("empty Return-Path")


@pytest.mark.parametrize(
    "sender",
    [
        "Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>",
        "mailer-daemon@googlemail.com",
        "Postmaster <postmaster@example.net>",
        "<POSTMASTER@Example.NET>",
    ],
)
def test_mail_system_senders(sender: str) -> None:
    found = screen(mail(sender=sender, subject="Hello"), OURS)
    assert found is not None and found.kind == BOUNCE
    assert "is a mail system address" in found.reason


@pytest.mark.parametrize(
    "subject",
    [
        "Undeliverable: Your complaint reference CSQ-123",
        "Delivery Status Notification (Failure)",
        "Delivery Status Notification (Delay)",
        "Mail delivery failed: returning message to sender",
        "Returned mail: see transcript for details",
        "Undelivered Mail Returned to Sender",
        "failure notice",
    ],
)
def test_bounce_subjects(subject: str) -> None:
    found = screen(mail(subject=subject, sender="Mail System <system@mx.example.net>"), OURS)
    assert found is not None and found.kind == BOUNCE
    assert found.reason.startswith("delivery-failure subject")


def test_a_bounce_that_also_says_auto_submitted_is_a_bounce() -> None:
    msg = mail("Auto-Submitted: auto-replied", "X-Failed-Recipients: a@example.net")
    assert kind(msg) == BOUNCE


# --- auto-replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["auto-replied", "auto-generated", "auto-notified; owner-email=x"]
)
def test_auto_submitted(value: str) -> None:
    assert screen(mail(f"Auto-Submitted: {value}"), OURS) == Screening(
        AUTO_REPLY, f"Auto-Submitted: {value}"
    )


@pytest.mark.parametrize("value", ["All", "OOF, AutoReply", "DR, RN, NRN, OOF, AutoReply"])
def test_x_auto_response_suppress(value: str) -> None:
    assert screen(mail(f"X-Auto-Response-Suppress: {value}"), OURS) == Screening(
        AUTO_REPLY, f"X-Auto-Response-Suppress: {value}"
    )


def test_x_autoreply() -> None:
    assert screen(mail("X-Autoreply: yes"), OURS) == Screening(AUTO_REPLY, "X-Autoreply: yes")


def test_x_autorespond() -> None:
    assert screen(mail("X-Autorespond: Thanks"), OURS) == Screening(
        AUTO_REPLY, "X-Autorespond: Thanks"
    )


def test_precedence_auto_reply() -> None:
    assert screen(mail("Precedence: auto_reply"), OURS) == Screening(
        AUTO_REPLY, "Precedence: auto_reply"
    )


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Your complaint reference CSQ-123",
        "Auto-Reply: Your complaint",
        "Autoreply: away until Monday",
        "AutoReply",
        "Out of Office: Your complaint",
        "Out of Office AutoReply: Your complaint",
        "[Auto-Reply] Your complaint",
    ],
)
def test_auto_reply_subjects(subject: str) -> None:
    found = screen(mail(subject=subject), OURS)
    assert found is not None and found.kind == AUTO_REPLY
    assert found.reason.startswith("auto-reply subject")


# --- mailing lists --------------------------------------------------------------------------


def test_list_id() -> None:
    assert screen(mail("List-Id: Care news <news.council.example>"), OURS) == Screening(
        MAILING_LIST, "List-Id: Care news <news.council.example>"
    )


def test_list_unsubscribe() -> None:
    assert screen(mail("List-Unsubscribe: <mailto:leave@lists.example>"), OURS) == Screening(
        MAILING_LIST, "List-Unsubscribe header"
    )


@pytest.mark.parametrize("value", ["bulk", "junk", "list", "Bulk"])
def test_list_precedence(value: str) -> None:
    assert screen(mail(f"Precedence: {value}"), OURS) == Screening(
        MAILING_LIST, f"Precedence: {value.lower()}"
    )


# --- no-reply senders -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "noreply@example.com",
        "no-reply@example.com",
        "No_Reply@example.com",
        "do-not-reply@example.com",
        "donotreply@example.com",
        "notifications-noreply@example.com",
        "noreply+bounces@example.com",
    ],
)
def test_no_reply_senders(address: str) -> None:
    assert screen(mail(sender=f"Service <{address}>"), OURS) == Screening(
        NO_REPLY_SENDER, f"no-reply sender {address.lower()}"
    )


def test_no_reply_with_no_reply_reply_to_is_still_no_reply() -> None:
    msg = mail("Reply-To: donotreply@example.com", sender="noreply@example.com")
    assert kind(msg) == NO_REPLY_SENDER


def test_noreply_like_words_inside_a_name_are_not_no_reply() -> None:
    assert screen(mail(sender="Noreen Plymouth <noreplymouth@example.org>"), OURS) is None


# --- our own messages -----------------------------------------------------------------------


def test_our_own_address() -> None:
    msg = mail(sender="Care Quality <Care.Quality@Council.Example>")
    assert screen(msg, OURS) == Screening(
        OWN_MESSAGE, "sent from our own address care.quality@council.example"
    )


def test_our_own_no_reply_address_is_own_message_first() -> None:
    assert kind(mail(sender="noreply-cases@council.example")) == OWN_MESSAGE


def test_x_loop_naming_our_address() -> None:
    msg = mail("X-Loop: care.quality@council.example")
    assert screen(msg, OURS) == Screening(
        OWN_MESSAGE, "X-Loop names our address care.quality@council.example"
    )


def test_own_addresses_are_compared_case_insensitively() -> None:
    msg = mail(sender="someone@council.example")
    found = screen(msg, frozenset({"SomeOne@Council.Example"}))
    assert found == Screening(OWN_MESSAGE, "sent from our own address someone@council.example")
