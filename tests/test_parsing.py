"""Parsing raw mail into ParsedMessage: real structures, hostile input, forwards and replies.

Messages are built with the standard library's ``email`` package or written out by hand as raw
bytes (the only way to produce the broken ones); every assertion is on exact output.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from email import encoders
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import mailparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailparser_reply import EmailReplyParser

from mailbot.intake import parsing, quote_headers, reply_text
from mailbot.intake.parsing import (
    Attachment,
    ParsedMessage,
    UnparseableMessage,
    parse_message,
    sanitize_filename,
)
from mailbot.intake.reply_text import LANGUAGES, read_replies

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def raw(text: str) -> bytes:
    """Hand-written message text as wire bytes (CRLF line ends, as on the wire)."""
    return text.lstrip("\n").replace("\n", "\r\n").encode("utf-8")


def assert_single_line_headers(msg: ParsedMessage) -> None:
    values = [msg.subject, msg.sender_name, *msg.headers.values(), *msg.headers.keys()]
    values += [msg.sender_email or "", msg.reply_to or "", *msg.to, *msg.cc]
    values += [msg.message_id or "", msg.in_reply_to or "", *msg.references]
    values += [a.filename for a in msg.attachments]
    for value in values:
        assert "\r" not in value and "\n" not in value, value


# --- plain messages -------------------------------------------------------------------------


def test_plain_message_fields() -> None:
    msg = parse_message(
        raw(
            """
Return-Path: <mary.jones@example.org>
Message-ID: <  CAB123.456@mail.example.org >
In-Reply-To: <ack-1@council.example> (Care Quality's message of 1 April)
References: <first@council.example>
 <ack-1@council.example>
From: "Jones, Mary" <Mary.Jones@Example.ORG>
Reply-To: Mary <mary@home.example>
To: Care Quality <Care.Quality@Council.Example>, other@council.example
Cc: "Smith, Ann" <ann.smith@example.org>
Subject: Re: My mother's care at Elm House
Date: Tue, 2 Apr 2024 09:15:00 +0100
X-Mailer: Microsoft Outlook 16.0
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Thank you for your reply.

I am still unhappy that nobody called me back.

Mary
"""
        )
    )
    assert msg.parser == "mail-parser"
    assert msg.message_id == "CAB123.456@mail.example.org"
    assert msg.in_reply_to == "ack-1@council.example"
    assert msg.references == ("first@council.example", "ack-1@council.example")
    assert msg.sender_name == "Jones, Mary"
    assert msg.sender_email == "mary.jones@example.org"
    assert msg.reply_to == "mary@home.example"
    assert msg.to == ("care.quality@council.example", "other@council.example")
    assert msg.cc == ("ann.smith@example.org",)
    assert msg.subject == "Re: My mother's care at Elm House"
    assert msg.date == datetime(2024, 4, 2, 9, 15, tzinfo=timezone(timedelta(hours=1)))
    assert msg.text == (
        "Thank you for your reply.\n\nI am still unhappy that nobody called me back.\n\nMary"
    )
    assert msg.html_converted is False
    assert msg.new_text == msg.text
    assert msg.forwarded is None
    assert msg.attachments == ()
    assert msg.content_type == "text/plain"
    assert msg.headers["x-mailer"] == "Microsoft Outlook 16.0"
    assert msg.headers["return-path"] == "<mary.jones@example.org>"
    assert msg.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Tue, 2 Apr 2024 09:15:00", datetime(2024, 4, 2, 9, 15, tzinfo=UTC)),
        ("Tue, 2 Apr 2024 09:15:00 -0000", datetime(2024, 4, 2, 9, 15, tzinfo=UTC)),
        ("Tue, 2 Apr 2024 09:15:00 GMT", datetime(2024, 4, 2, 9, 15, tzinfo=UTC)),
        ("2 Apr 2024 17:30 -0500", datetime(2024, 4, 2, 22, 30, tzinfo=UTC)),
        ("not a date", None),
        ("Mon, 32 Apr 2024 09:15:00 +0000", None),
    ],
)
def test_dates_are_aware_and_utc_when_zoneless(header: str, expected: datetime | None) -> None:
    msg = parse_message(raw(f"From: a@example.org\nDate: {header}\n\nhello\n"))
    assert msg.date == expected
    if msg.date is not None:
        assert msg.date.tzinfo is not None


def test_multipart_alternative_prefers_the_plain_part() -> None:
    mime = MIMEMultipart("alternative")
    mime["From"] = "Mary Jones <mary.jones@example.org>"
    mime["To"] = "care.quality@council.example"
    mime["Subject"] = "Concern about Elm House"
    mime.attach(MIMEText("The carers arrived two hours late again.\n", "plain", "utf-8"))
    mime.attach(MIMEText("<p>The carers arrived <b>two hours</b> late again.</p>", "html"))
    msg = parse_message(mime.as_bytes())
    assert msg.text == "The carers arrived two hours late again."
    assert msg.html_converted is False
    assert msg.content_type == "multipart/alternative"
    assert msg.attachments == ()


def test_empty_plain_alternative_falls_back_to_html() -> None:
    mime = MIMEMultipart("alternative")
    mime["From"] = "a@example.org"
    mime.attach(MIMEText("\n  \n", "plain"))
    mime.attach(MIMEText("<p>Only the HTML has words.</p>", "html"))
    msg = parse_message(mime.as_bytes())
    assert msg.text == "Only the HTML has words."
    assert msg.html_converted is True


def test_html_only_drops_scripts_and_styles_and_decodes_entities() -> None:
    html = (
        "<html><head><style>p { color: red }</style>"
        "<script>alert('steal cookies')</script></head><body>"
        "<p>My Mum&#x27;s carer was late &amp; rude.</p>"
        "<script type='text/javascript'>document.write('x')</script>"
        "<p>Please&nbsp;call&nbsp;me.</p></body></html>"
    )
    mime = MIMEText(html, "html", "utf-8")
    mime["From"] = "Mary Jones <mary.jones@example.org>"
    mime["Subject"] = "Complaint"
    msg = parse_message(mime.as_bytes())
    assert msg.html_converted is True
    assert msg.text == "My Mum's carer was late & rude.\n\nPlease call me."
    assert msg.new_text == msg.text
    for leaked in ("alert", "document.write", "color", "<", "&#x27;", "&amp;"):
        assert leaked not in msg.text


def test_plain_text_is_not_html_unescaped() -> None:
    msg = parse_message(raw("From: a@example.org\n\nMy Mum's care & support: 5 < 6\n"))
    assert msg.text == "My Mum's care & support: 5 < 6"


# --- encodings --------------------------------------------------------------------------------


def test_rfc2047_subject_and_from_in_utf8_and_latin1() -> None:
    msg = parse_message(
        raw(
            """
From: =?utf-8?b?w4FpbmUgTsOtIFbDoWxhaWdo?= <aine@example.ie>
To: =?iso-8859-1?q?J=F6rg_M=FCller?= <jorg@example.de>
Subject: =?iso-8859-1?q?Beschwerde_=FCber?= =?utf-8?q?_die_Pfleger=C3=AFn?=
Content-Type: text/plain; charset=utf-8

text
"""
        )
    )
    assert msg.sender_name == "Áine Ní Válaigh"
    assert msg.sender_email == "aine@example.ie"
    assert msg.to == ("jorg@example.de",)
    assert msg.subject == "Beschwerde über die Pflegerïn"


def test_encoded_comma_in_a_name_keeps_one_mailbox() -> None:
    msg = parse_message(raw("From: =?utf-8?q?Smith=2C_John?= <John@Example.com>\n\nhi\n"))
    assert (msg.sender_name, msg.sender_email) == ("Smith, John", "john@example.com")


def test_multibyte_character_split_across_encoded_words() -> None:
    # "é" is C3 A9 in UTF-8; some clients cut encoded words between the two bytes.
    msg = parse_message(
        raw("From: a@example.org\nSubject: =?utf-8?q?caf=C3?=\n =?utf-8?q?=A9?=\n\n.\n")
    )
    assert msg.subject == "café"


def test_quoted_encoded_word_display_name_is_decoded() -> None:
    # Not RFC-conforming, but real clients send it and every client shows it decoded.
    msg = parse_message(raw('From: "=?utf-8?b?w4FpbmU=?=" <aine@example.ie>\n\nhi\n'))
    assert msg.sender_name == "Áine"


@pytest.mark.parametrize("charset", ["x-unknown", "unknown-8bit", "bogus-charset-42", "base64"])
def test_unknown_charsets_fall_back_without_raising(charset: str) -> None:
    body = "Café staff were lovely — thank you".encode()
    msg = parse_message(
        b"From: a@example.org\r\nSubject: =?" + charset.encode() + b"?q?caf=C3=A9?=\r\n"
        b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    )
    assert msg.text == "Café staff were lovely — thank you"
    assert msg.subject == "café"


def test_unlabelled_latin1_body_reads_as_windows_1252() -> None:
    msg = parse_message(
        b"From: a@example.org\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n"
        b"caf\xe9 \x93quoted\x94\r\n"
    )
    assert msg.text == "café \u201cquoted\u201d"


def test_wrong_declared_charset_is_corrected_or_replaced() -> None:
    utf8_declared_ascii = parse_message(
        b"From: a@example.org\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + "Zoë".encode()
    )
    assert utf8_declared_ascii.text == "Zoë"
    latin1_declared_utf8 = parse_message(
        b"From: a@example.org\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nZo\xeb ok\r\n"
    )
    assert latin1_declared_utf8.text == "Zo\ufffd ok"


def test_raw_8bit_headers_are_decoded() -> None:
    msg = parse_message(
        b"From: Ingo L\xfctkebohle <ingo@example.de>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nhi\r\n"
    )
    assert msg.sender_name == "Ingo Lütkebohle"
    assert msg.subject == "Grüße"


def test_eight_bit_garbage_never_raises_or_leaks_surrogates() -> None:
    garbage = bytes(range(256)) * 4
    msg = parse_message(
        b"From: \xff\xfe\x00 <x@example.org>\r\nSubject: \x80\x81\x8d\x00\xff\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + garbage
    )
    for value in (msg.text, msg.subject, msg.sender_name, msg.new_text):
        value.encode("utf-8")  # no lone surrogates
        assert "\x00" not in value
    assert "\ufffd" in msg.text
    assert_single_line_headers(msg)


# --- header injection -------------------------------------------------------------------------


def test_crlf_in_encoded_headers_is_folded_to_spaces() -> None:
    # "Hello\r\nBcc: evil@example.com" and "Mary\r\nX-Evil: 1", base64-encoded.
    msg = parse_message(
        raw(
            """
From: =?utf-8?b?TWFyeQ0KWC1FdmlsOiAx?= <mary@example.org>
Subject: =?utf-8?b?SGVsbG8NCkJjYzogZXZpbEBleGFtcGxlLmNvbQ==?=
X-Mailer: =?utf-8?q?Evil=0D=0AContent-Type:_text/html?=

body
"""
        )
    )
    assert msg.subject == "Hello Bcc: evil@example.com"
    assert msg.sender_name == "Mary X-Evil: 1"
    assert msg.headers["x-mailer"] == "Evil Content-Type: text/html"
    assert "bcc" not in msg.headers and "x-evil" not in msg.headers
    assert_single_line_headers(msg)


def test_folded_and_unicode_line_breaks_do_not_survive() -> None:
    msg = parse_message(
        raw("From: a@example.org\nSubject: part one\n  part two\n\nx\n").replace(
            b"part two", "two\u2028three\u0085four".encode()
        )
    )
    assert msg.subject == "part one two three four"


# --- attachments ------------------------------------------------------------------------------


def _with_attachment(
    filename: str, payload: bytes = b"data", ctype: str = "application/pdf"
) -> MIMEMultipart:
    mime = MIMEMultipart("mixed")
    mime["From"] = "a@example.org"
    mime["Subject"] = "files"
    mime.attach(MIMEText("See attached.", "plain"))
    maintype, subtype = ctype.split("/")
    part = MIMEBase(maintype, subtype)
    part.set_payload(payload)
    encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    mime.attach(part)
    return mime


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/absolute/path/report.pdf", "report.pdf"),
        ("C:\\Users\\me\\Desktop\\letter.docx", "letter.docx"),
        ("evil\x07name\x00.pdf", "evilname.pdf"),
        (".htaccess", "htaccess"),
        ("...", "attachment-1.pdf"),
        ("a..b...c.txt", "a.b.c.txt"),
        ("what?<>|*:\".txt", "what_______.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("CON.txt", "_CON.txt"),
        ("résumé.pdf", "résumé.pdf"),
    ],
)
def test_attachment_names_are_sanitised(declared: str, expected: str) -> None:
    msg = parse_message(_with_attachment(declared).as_bytes())
    assert [a.filename for a in msg.attachments] == [expected]
    assert msg.attachments[0].payload == b"data"


def test_crlf_and_control_characters_in_an_encoded_filename() -> None:
    msg = parse_message(
        raw(
            """
From: a@example.org
Content-Type: multipart/mixed; boundary=XX

--XX
Content-Type: text/plain

body
--XX
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="=?utf-8?q?evil=0D=0AContent-Type=3A_x=09.txt?="
Content-Transfer-Encoding: base64

ZGF0YQ==
--XX--
"""
        )
    )
    assert [a.filename for a in msg.attachments] == ["evil Content-Type_ x .txt"]


def test_very_long_filename_is_cut_keeping_its_extension() -> None:
    msg = parse_message(_with_attachment("x" * 300 + ".pdf").as_bytes())
    (attachment,) = msg.attachments
    assert attachment.filename == "x" * 96 + ".pdf"


def test_rfc2231_filename() -> None:
    msg = parse_message(
        raw(
            """
From: a@example.org
Content-Type: multipart/mixed; boundary=XX

--XX
Content-Type: text/plain

body
--XX
Content-Type: application/pdf
Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20final.pdf
Content-Transfer-Encoding: base64

ZGF0YQ==
--XX--
"""
        )
    )
    assert [a.filename for a in msg.attachments] == ["résumé final.pdf"]


def test_nameless_attachment_gets_a_default_name() -> None:
    assert sanitize_filename("", 1) == "attachment-1.bin"
    assert sanitize_filename("  ../ ", 3, "image/png") == "attachment-3.png"
    assert sanitize_filename("\r\n", 2, "message/rfc822") == "attachment-2.eml"


def test_oversized_attachment_is_kept_as_a_record_without_payload() -> None:
    mime = _with_attachment("scan.pdf", b"%PDF" + b"x" * 5000)
    msg = parse_message(mime.as_bytes(), max_attachment_bytes=1000)
    assert msg.attachments == (
        Attachment("scan.pdf", "application/pdf", 5004, None, "too large (5004 bytes)"),
    )
    small = parse_message(mime.as_bytes(), max_attachment_bytes=5004)
    assert small.attachments[0].payload == b"%PDF" + b"x" * 5000
    assert small.attachments[0].omitted_reason is None


def test_tnef_winmail_dat_stays_an_attachment() -> None:
    tnef = b"\x78\x9f\x3e\x22" + b"\x00" * 60
    mime = MIMEMultipart("mixed")
    mime["From"] = "Outlook User <user@example.org>"
    mime["Subject"] = "Rich text"
    mime.attach(MIMEText("Body text.", "plain"))
    part = MIMEApplication(tnef, "ms-tnef")
    part.add_header("Content-Disposition", "attachment", filename="winmail.dat")
    mime.attach(part)
    msg = parse_message(mime.as_bytes())
    assert msg.text == "Body text."
    assert msg.attachments == (Attachment("winmail.dat", "application/ms-tnef", 64, tnef, None),)


def test_inline_image_counts_as_an_attachment() -> None:
    related = MIMEMultipart("related")
    related["From"] = "a@example.org"
    related.attach(MIMEText('<p>Look: <img src="cid:pic1"></p>', "html"))
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<pic1>")
    image.add_header("Content-Disposition", "inline")
    related.attach(image)
    msg = parse_message(related.as_bytes())
    assert msg.text == "Look:"
    assert msg.attachments == (Attachment("attachment-1.png", "image/png", len(PNG), PNG, None),)


# --- forwards ---------------------------------------------------------------------------------


def _original() -> EmailMessage:
    original = EmailMessage()
    original["From"] = "Mary Jones <Mary.Jones@example.org>"
    original["To"] = "sam.carer@council.example"
    original["Subject"] = "Thank you"
    original["Date"] = "Mon, 1 Apr 2024 18:05:00 +0100"
    original.set_content("I want to thank Sam for the wonderful care given to my mum.\n")
    return original


def test_forward_as_attachment_builds_forwarded_from_the_enclosed_message() -> None:
    mime = MIMEMultipart("mixed")
    mime["From"] = "Sam Carer <sam.carer@council.example>"
    mime["To"] = "care.quality@council.example"
    mime["Subject"] = "FW: Thank you"
    mime.attach(MIMEText("A compliment for the team.\n", "plain"))
    mime.attach(MIMEMessage(_original()))
    msg = parse_message(mime.as_bytes())
    assert msg.new_text == "A compliment for the team."
    assert msg.forwarded is not None
    assert msg.forwarded.author_name == "Mary Jones"
    assert msg.forwarded.author_email == "mary.jones@example.org"
    assert msg.forwarded.subject == "Thank you"
    assert msg.forwarded.date == datetime(2024, 4, 1, 17, 5, tzinfo=UTC)
    assert msg.forwarded.text == "I want to thank Sam for the wonderful care given to my mum."
    (attachment,) = msg.attachments
    assert attachment.filename == "attachment-1.eml"
    assert attachment.content_type == "message/rfc822"
    assert attachment.payload is not None and b"Subject: Thank you" in attachment.payload
    # The enclosed message's words are not the forwarder's.
    assert "wonderful care" not in msg.text


def test_attached_message_without_forward_subject_is_not_a_forward() -> None:
    mime = MIMEMultipart("mixed")
    mime["From"] = "a@example.org"
    mime["Subject"] = "Evidence"
    mime.attach(MIMEText("The email they sent me is attached.\n", "plain"))
    mime.attach(MIMEMessage(_original()))
    msg = parse_message(mime.as_bytes())
    assert msg.forwarded is None
    assert [a.content_type for a in msg.attachments] == ["message/rfc822"]


FORWARDED_WORDS = "I want to thank Sam for the wonderful care given to my mum."


@pytest.mark.parametrize(
    ("client", "subject", "body", "new_text", "author_name"),
    [
        (
            "gmail",
            "Fwd: Thank you",
            "Please pass this on to the team.\n\n"
            "---------- Forwarded message ---------\n"
            "From: Mary Jones <mary.jones@example.org>\n"
            "Date: Tue, 2 Apr 2024 at 09:15\n"
            "Subject: Thank you\n"
            "To: <sam.carer@council.example>\n\n\n" + FORWARDED_WORDS + "\n",
            "Please pass this on to the team.",
            "Mary Jones",
        ),
        (
            "outlook",
            "FW: Thank you",
            "Forwarding a compliment for Sam.\n\n"
            "________________________________\n"
            "From: Mary Jones <mary.jones@example.org>\n"
            "Sent: 02 April 2024 09:15\n"
            "To: Sam Carer <sam.carer@council.example>\n"
            "Subject: Thank you\n\n" + FORWARDED_WORDS + "\n",
            "Forwarding a compliment for Sam.",
            "Mary Jones",
        ),
        (
            "outlook with nothing added",
            "FW: Thank you",
            "From: Mary Jones [mailto:mary.jones@example.org]\n"
            "Sent: 02 April 2024 09:15\n"
            "To: Sam Carer\n"
            "Subject: Thank you\n\n" + FORWARDED_WORDS + "\n",
            "",
            "Mary Jones",
        ),
        (
            "apple mail",
            "Fwd: Thank you",
            "See below.\n\nBegin forwarded message:\n\n"
            "> From: Mary Jones <mary.jones@example.org>\n"
            "> Subject: Thank you\n"
            "> Date: 2 April 2024 at 09:15:00 BST\n"
            "> To: sam.carer@council.example\n"
            "> \n> " + FORWARDED_WORDS + "\n",
            "See below.",
            "Mary Jones",
        ),
        (
            "apple mail with nothing added",
            "Fwd: Thank you",
            "> Begin forwarded message:\n>\n"
            "> From: Mary Jones <mary.jones@example.org>\n"
            "> Subject: Thank you\n"
            "> Date: 2 April 2024 at 09:15:00 BST\n"
            "> To: sam.carer@council.example\n"
            ">\n> " + FORWARDED_WORDS + "\n>\n",
            "",
            "Mary Jones",
        ),
        (
            "thunderbird",
            "Fwd: Thank you",
            "For the team.\n\n-------- Forwarded Message --------\n"
            "Subject: \tThank you\n"
            "Date: \tTue, 2 Apr 2024 09:15:00 +0100\n"
            "From: \tMary Jones <mary.jones@example.org>\n"
            "To: \tsam.carer@council.example\n\n" + FORWARDED_WORDS + "\n",
            "For the team.",
            "Mary Jones",
        ),
    ],
)
def test_forwards_from_common_clients(
    client: str, subject: str, body: str, new_text: str, author_name: str
) -> None:
    mime = MIMEText(body, "plain", "utf-8")
    mime["From"] = "Sam Carer <sam.carer@council.example>"
    mime["Subject"] = subject
    msg = parse_message(mime.as_bytes())
    assert msg.new_text == new_text, client
    assert msg.forwarded is not None, client
    assert msg.forwarded.author_name == author_name
    assert msg.forwarded.author_email == "mary.jones@example.org"
    assert msg.forwarded.subject == "Thank you"
    assert msg.forwarded.text == FORWARDED_WORDS
    assert msg.forwarded.date is not None and msg.forwarded.date.tzinfo is not None
    assert msg.sender_email == "sam.carer@council.example"


@pytest.mark.parametrize(
    ("client", "body", "author"),
    [
        (
            "new outlook, no blank line after Subject",
            "From: Mary Jones <mary.jones@example.org>\n"
            "Date: Tuesday, 2 April 2024 at 09:15\n"
            "To: sam.carer@council.example <sam.carer@council.example>\n"
            "Subject: Thank you\n" + FORWARDED_WORDS + "\n",
            ("Mary Jones", "mary.jones@example.org"),
        ),
        (
            "exchange surname-first display name",
            "________________________________\n"
            "From: Jones, Mary <mary.jones@example.org>\n"
            "Sent: 02 April 2024 09:15\n"
            "Subject: Thank you\n\n" + FORWARDED_WORDS + "\n",
            ("Jones, Mary", "mary.jones@example.org"),
        ),
        (
            "outlook on the web, shared mailbox",
            "________________________________\n"
            "From: Mary Jones<mailto:mary.jones@example.org> <mary.jones@example.org"
            "<mailto:mary.jones@example.org>> on behalf of family@example.org\n"
            "Sent: 02 April 2024 09:15\n"
            "Subject: Thank you\n\n" + FORWARDED_WORDS + "\n",
            ("Mary Jones", "mary.jones@example.org"),
        ),
        (
            "original message with a name only",
            "-----Original Message-----\n"
            "From: Mary Jones\n"
            "Sent: 02 April 2024 09:15\n"
            "Subject: Thank you\n\n" + FORWARDED_WORDS + "\n",
            ("Mary Jones", None),
        ),
        (
            "outlook for mac",
            'On 02/04/2024 09:15, "Mary Jones" <mary.jones@example.org> wrote:\n\n'
            "    " + FORWARDED_WORDS + "\n",
            ("Mary Jones", "mary.jones@example.org"),
        ),
    ],
)
def test_forward_header_variants_name_the_original_author(
    client: str, body: str, author: tuple[str, str | None]
) -> None:
    mime = MIMEText(body, "plain", "utf-8")
    mime["From"] = "Sam Carer <sam.carer@council.example>"
    mime["Subject"] = "FW: Thank you"
    msg = parse_message(mime.as_bytes())
    assert msg.new_text == "", client
    assert msg.forwarded is not None, client
    assert (msg.forwarded.author_name, msg.forwarded.author_email) == author, client
    assert msg.forwarded.text == FORWARDED_WORDS, client


def test_outlook_12_hour_forward_date_keeps_the_afternoon() -> None:
    body = (
        "________________________________\n"
        "From: Mary Jones <mary.jones@example.org>\n"
        "Sent: Wednesday, October 27, 2021 3:14 PM\n"
        "To: Sam Carer <sam.carer@council.example>\n"
        "Subject: Thank you\n\n" + FORWARDED_WORDS + "\n"
    )
    mime = MIMEText(body, "plain", "utf-8")
    mime["From"] = "sam.carer@council.example"
    mime["Subject"] = "FW: Thank you"
    msg = parse_message(mime.as_bytes())
    assert msg.forwarded is not None
    assert msg.forwarded.date == datetime(2021, 10, 27, 15, 14, tzinfo=UTC)


@pytest.mark.parametrize(
    ("client", "subject", "body", "new_text"),
    [
        (
            "gmail",
            "Re: Case CSQ-123",
            "Yes, Thursday afternoon suits me.\n\n"
            "On Tue, 2 Apr 2024 at 09:15, Care Quality <care.quality@council.example> wrote:\n"
            "> Could we call you on Thursday?\n>\n> Care Quality Team\n",
            "Yes, Thursday afternoon suits me.",
        ),
        (
            "outlook",
            "RE: Case CSQ-123",
            "Yes, Thursday afternoon suits me.\n\nKind regards\nMary\n\n"
            "From: Care Quality <care.quality@council.example>\n"
            "Sent: 02 April 2024 09:15\n"
            "To: Mary Jones <mary.jones@example.org>\n"
            "Subject: Case CSQ-123\n\nCould we call you on Thursday?\n",
            "Yes, Thursday afternoon suits me.",
        ),
        (
            "outlook original message",
            "RE: Case CSQ-123",
            "Yes, Thursday afternoon suits me.\n\n-----Original Message-----\n"
            "From: Care Quality <care.quality@council.example>\n"
            "Sent: 02 April 2024 09:15\n"
            "Subject: Case CSQ-123\n\nCould we call you on Thursday?\n",
            "Yes, Thursday afternoon suits me.",
        ),
        (
            "apple mail",
            "Re: Case CSQ-123",
            "Yes, Thursday afternoon suits me.\n\nSent from my iPhone\n\n"
            "> On 2 Apr 2024, at 09:15, Care Quality <care.quality@council.example> wrote:\n"
            "> \n> Could we call you on Thursday?\n",
            "Yes, Thursday afternoon suits me.",
        ),
        (
            "thunderbird",
            "Re: Case CSQ-123",
            "Yes, Thursday afternoon suits me.\n\n"
            "On 02/04/2024 09:15, Care Quality wrote:\n> Could we call you on Thursday?\n",
            "Yes, Thursday afternoon suits me.",
        ),
    ],
)
def test_replies_from_common_clients(client: str, subject: str, body: str, new_text: str) -> None:
    mime = MIMEText(body, "plain", "utf-8")
    mime["From"] = "Mary Jones <mary.jones@example.org>"
    mime["Subject"] = subject
    msg = parse_message(mime.as_bytes())
    assert msg.new_text == new_text, client
    assert msg.forwarded is None
    assert msg.text.startswith(new_text)


# --- size, structure and failure ----------------------------------------------------------


def test_ten_megabyte_plain_body_is_capped() -> None:
    line = b"The care plan was not followed and nobody told us why.\r\n"
    body = line * (10 * 1024 * 1024 // len(line) + 1)
    msg = parse_message(b"From: a@example.org\r\nSubject: long\r\n\r\n" + body)
    assert len(msg.text) == 200_000
    assert msg.text.startswith("The care plan was not followed")


def test_ten_megabyte_html_body_is_capped() -> None:
    paragraph = b"<p>The care plan was not followed &amp; nobody told us why.</p>\r\n"
    body = paragraph * (10 * 1024 * 1024 // len(paragraph) + 1)
    msg = parse_message(
        b"From: a@example.org\r\nContent-Type: text/html\r\n\r\n<html><body>" + body,
        max_text_chars=50_000,
    )
    assert len(msg.text) == 50_000
    assert msg.text.startswith("The care plan was not followed & nobody told us why.")


@pytest.mark.parametrize("data", [b"", b"   \r\n\r\n\t", b"\x00\x01\x02\x03" * 100])
def test_nothing_usable_raises_unparseable(data: bytes) -> None:
    with pytest.raises(UnparseableMessage):
        parse_message(data)


def test_outlook_msg_file_is_unparseable_with_a_clear_reason() -> None:
    with pytest.raises(UnparseableMessage, match=r"Outlook \.msg"):
        parse_message(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)


def test_headerless_text_is_not_mail() -> None:
    # No header at all: no sender to answer and nothing to thread on, so it is quarantined.
    with pytest.raises(UnparseableMessage, match="no mail headers"):
        parse_message(b"Just some words, no headers at all.\n")
    assert parse_message(b"Subject: hi\r\n\r\nbody\r\n").subject == "hi"


# A bounce whose enclosed original was cut off inside a multipart: real MTAs truncate the
# original, and mail-parser 4.8 raises AttributeError on it (found on corpus-style input).
TRUNCATED_BOUNCE = raw(
    """
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: care.quality@council.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce-1@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="A"

--A
Content-Type: text/plain

The mail system could not deliver your message.

--A
Content-Type: message/rfc822

From: care.quality@council.example
Content-Type: multipart/alternative; boundary="B"

(truncated)
"""
)


def test_mail_parser_raising_falls_back_to_the_email_package() -> None:
    with pytest.raises(AttributeError):
        mailparser.parse_from_bytes(TRUNCATED_BOUNCE)
    msg = parse_message(TRUNCATED_BOUNCE)
    assert msg.parser == "email"
    assert msg.sender_email == "mailer-daemon@mx.example.net"
    assert msg.subject == "Undelivered Mail Returned to Sender"
    assert msg.message_id == "bounce-1@mx.example.net"
    assert msg.text == "The mail system could not deliver your message."
    assert msg.content_type == "multipart/report"
    assert msg.headers["report-type"] == "delivery-status"
    assert msg.defects[0].startswith("mail-parser failed: AttributeError")
    assert [a.content_type for a in msg.attachments] == ["message/rfc822"]


def test_fallback_path_gives_the_same_record(monkeypatch: pytest.MonkeyPatch) -> None:
    mime = _with_attachment("../letter.pdf")
    mime["Subject"] = "=?utf-8?q?Beschwerde_=C3=BCber?="
    expected = parse_message(mime.as_bytes())

    def explode(data: bytes) -> None:
        raise RuntimeError("mail-parser exploded")

    monkeypatch.setattr(parsing.mailparser, "parse_from_bytes", explode)
    monkeypatch.setattr(parsing, "_mail_parser_view", lambda data: None)
    fallback = parse_message(mime.as_bytes())
    assert expected.parser == "mail-parser"
    assert fallback.parser == "email"
    assert fallback.defects == ("mail-parser failed: RuntimeError: mail-parser exploded",)
    for name in ("sender_email", "subject", "text", "new_text", "attachments", "headers"):
        assert getattr(fallback, name) == getattr(expected, name), name


def test_missing_boundaries_and_broken_structure_still_parse() -> None:
    msg = parse_message(
        raw(
            """
From: a@example.org
Subject: broken
Content-Type: multipart/mixed; boundary="never-used"

There is no boundary anywhere in this body.
"""
        )
    )
    assert msg.subject == "broken"
    assert msg.attachments == ()


def _nested(depth: int) -> bytes:
    head = "".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n" for i in range(depth)
    )
    return (
        b"From: a@example.org\r\nSubject: deep\r\n"
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
        + head.encode()
        + f"--b{depth}\r\nContent-Type: text/plain\r\n\r\ndeep text\r\n".encode()
    )


def test_deep_nesting_is_walked_only_so_far() -> None:
    msg = parse_message(_nested(200))
    assert msg.subject == "deep"
    assert msg.text == ""
    assert msg.defects[0] == "more than 1000 MIME parts or 50 levels; rest skipped"


def test_nesting_beyond_the_recursion_limit_is_unparseable() -> None:
    with pytest.raises(UnparseableMessage, match="nesting too deep"):
        parse_message(_nested(1000))


@settings(
    max_examples=150,
    deadline=None,
    database=None,  # write no example database into the working tree
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    subject=st.binary(max_size=80),
    sender=st.binary(max_size=60),
    body=st.binary(max_size=300),
    charset=st.sampled_from([b"utf-8", b"x-unknown", b"iso-8859-1", b"utf-16", b"bogus"]),
)
def test_arbitrary_bytes_never_raise_anything_but_unparseable(
    subject: bytes, sender: bytes, body: bytes, charset: bytes
) -> None:
    data = (
        b"From: " + sender + b"\r\nSubject: " + subject + b"\r\nSubject: =?"
        + charset + b"?b?" + base64.b64encode(subject) + b"?=\r\n"
        b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\n" + body
    )
    try:
        msg = parse_message(data)
    except UnparseableMessage:
        return
    assert_single_line_headers(msg)
    for value in (msg.text, msg.new_text, msg.subject, msg.sender_name):
        value.encode("utf-8")
        assert "\x00" not in value


# --- quote headers in linear time ----------------------------------------------------------


def _reply_shapes(replies: list[Any]) -> list[tuple[object, ...]]:
    return [(r.content, r.headers, r.signatures, r.disclaimers, r.body) for r in replies]


def _searched_text(text: str) -> str:
    """The text as mail-parser-reply searches it (its normalisation, done when it is built)."""
    from mailparser_reply.parser import EmailMessage as ReplyMessage

    return ReplyMessage(text=text, languages=list(LANGUAGES)).text


LIBRARY_HEADERS = reply_text._PATTERNS.HEADER_REGEX

QUOTE_EDGE_TEXTS = [
    "Thanks.\n\nOn Mon, 3 Mar 2026 at 10:14, Team <t@council.example> wrote:\n> earlier",
    "Thanks.\n\nON MON, 3 MAR 2026, TEAM <T@COUNCIL.EXAMPLE> WROTE:\n> earlier",
    "Thanks.\n> > On Monday\n> > Team wrote:\n> > > earlier",
    "On\nMonday\nTeam\nwrote:\nold",
    "On\nMonday\n\nwrote:\nold",
    "On On Monday Team wrote:\nold",
    "On. .\n\nOn Monday\nTeam wrote: more\nOn x wrote:",
    "On xwrote:\nOn a b\nwrote:",
    "On\n..\nOn a bwrote:\nc\nwrote: z",  # the look-ahead reads past the last "wrote:$"
    "On\n..\nOn a bwrote:\nc",
    "Reply.\n\nFrom: Ann <a@x.org>\nSent: Monday\nTo: Team\nSubject: care\n\nOld text",
    "Reply.\n\n*From:* Ann\n*Sent:* Monday\n*Subject:* care\n\nOld text",
    "Reply.\n> From: Ann\n> Date: Monday\n> old",
    "Reply.\n\nfrom: ann\nto: team\n\nold",
    "Reply.\n\n\u017fubject: care\n\u017fent: Monday\n\nold",  # long s folds to s
    "Reply.\n\n-----Original Message-----\nFrom: Ann\nold",
    "Reply.\n\n----- original message -----\nold",
    "Please write to: the manager, not to: me.",
    "Plain words with no header at all.\n\nKind regards,\nAnn",
    "",
]


def test_quote_headers_are_the_librarys_on_edge_cases_and_the_training_corpus() -> None:
    from mailbot.classifier.corpus import load_corpus
    from tests.mail_factory import COMPLAINT

    assert reply_text._HEADERS.exact, "mail-parser-reply's pattern changed: see quote_headers"
    corpus = load_corpus()
    texts = [*QUOTE_EDGE_TEXTS, COMPLAINT]
    texts += [f"{e.body}\n\nOn Tue, 4 Mar 2026, Ann <a@x.org> wrote:\n> {e.subject}"
              for e in corpus[:300]]
    texts += [f"{e.body}\n\nOn Tue, 4 Mar 2026, Ann <a@x.org> wrote: > {e.subject}"
              for e in corpus[300:600]]
    texts += [e.body for e in corpus]
    with_headers = 0
    for text in texts:
        searched = _searched_text(text)
        ours = reply_text._HEADERS.findall(searched)
        assert ours == LIBRARY_HEADERS.findall(searched), text
        assert _reply_shapes(read_replies(text)) == _reply_shapes(
            EmailReplyParser(languages=list(LANGUAGES)).read(text=text).replies), text
        with_headers += bool(ours)
    assert with_headers >= 300, "the texts must hold quote headers for this to mean much"


_PIECES = st.sampled_from([
    "On", "on", "ON", " ", "  ", "\n", "\n\n", ">", "> ", "*", ".", "x", "Ann", "Mon,",
    "wrote:", "WROTE:", "wrote", ":", "From:", "Sent:", "To:", "subject:", "Date:", "cc:",
    "\u017fent:", "-----", "Original Message", "-----Original Message-----", "\t",
])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_quote_headers_are_the_librarys_on_generated_text(text: str) -> None:
    assert reply_text._HEADERS.findall(text) == LIBRARY_HEADERS.findall(text)


def test_many_quote_headers_and_a_long_quoted_line_after_a_header() -> None:
    # Thousands of "On ... wrote:" lines: once, each match searched the rest of the text again.
    thread = "Latest.\n" + "On Mon, Ann <a@x.org> wrote:\n> earlier\n" * 3000
    assert reply_text._HEADERS.findall(thread) == LIBRARY_HEADERS.findall(thread)
    # A short header, then a quoted line of over MAX_HEADER_CHARS that also ends in "wrote:":
    # the header is still found (the window is cut at the last "wrote:" within the limit).
    text = ("Hi\n\nOn Mon, 3 Mar 2026, Ann <a@x.org> wrote:\n> " + "blah " * 220
            + "as Bob wrote:\n> old")
    assert _reply_shapes(read_replies(text)) == _reply_shapes(
        EmailReplyParser(languages=list(LANGUAGES)).read(text=text).replies)
    assert reply_text.split_reply(text, "Re: care").new_text == "Hi"


def test_another_pattern_is_left_to_the_library() -> None:
    import re

    german = re.compile(reply_text._PATTERNS.HEADER_REGEX.pattern + r"|(schrieb .*:)",
                        re.IGNORECASE | re.MULTILINE)
    assert not quote_headers.QuoteHeaders(german).exact
    text = "Neu.\nAm Mo., 3. März 2026 schrieb Ann <a@x.org>:\n> alt"
    assert quote_headers.QuoteHeaders(german).findall(text) == german.findall(text) != []
    dotall = re.compile(quote_headers.LIBRARY_PATTERN, re.I | re.M | re.S)
    assert not quote_headers.QuoteHeaders(dotall).exact


def test_a_long_line_starting_with_on_is_read_in_linear_time() -> None:
    # The library's pattern needs minutes for this (the time grows with the square of the
    # line); the window mailbot tries it on is at most MAX_HEADER_CHARS long.
    line = "On Monday " + "the carer did not come again and " * 6000 + "nobody rang"
    text = f"Still waiting.\n\n{line}\n\nOn Tue, 4 Mar 2026, Ann <a@x.org> wrote:\n> before"
    parts = reply_text.split_reply(text, "Re: care")
    assert parts.new_text.startswith("Still waiting.") and "nobody rang" in parts.new_text
    assert "before" not in parts.new_text
    assert len(line) > 100 * quote_headers.MAX_HEADER_CHARS
