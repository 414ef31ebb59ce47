"""Outbound mail transports against a real SMTP server (aiosmtpd) and a real Maildir."""

from __future__ import annotations

import base64
import errno
import logging
import mailbox
import os
import stat
import traceback
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mailbot.adapters import smtp as smtp_module
from mailbot.adapters.smtp import (
    MaildirTransport,
    PermanentFailure,
    SMTPTransport,
    TemporaryFailure,
    TransportUnavailable,
    open_transport,
)
from mailbot.config import SMTPURL, parse_smtp_url
from tests.fixtures_smtp import SMTPTestServer, Stage, TLSCertificate, TLSMode

ServerFactory = Callable[..., SMTPTestServer]

TEAM = "care.quality@council.example"
RESIDENT = "resident@example.org"


def transport_for(url: str) -> SMTPTransport:
    transport = open_transport(parse_smtp_url(url), timeout=5, local_hostname="mailbot.test")
    assert isinstance(transport, SMTPTransport)
    return transport


def message(n: int = 1, *, to: str = RESIDENT, body: str | None = None) -> bytes:
    """A CRLF message as the outbox would store it."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = f"Care and Support Quality <{TEAM}>"
    msg["To"] = to
    msg["Subject"] = f"Your complaint CSQ-{n:04d}"
    msg["Message-ID"] = f"<ack-{n}@council.example>"
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(
        body
        or (
            f"Dear resident,\n\nWe received your message ({n}).\n"
            ".a line that starts with a dot\n.\n"
            "Mum’s care plan – reviewed by 12 June £0\n"
        )
    )
    return msg.as_bytes()


# --------------------------------------------------------------------------------------------
# SMTP: the happy path


def test_twenty_messages_go_over_one_connection_in_order_and_byte_exact(
    smtp_server: SMTPTestServer,
) -> None:
    transport = transport_for(smtp_server.url)
    sent = [message(n, to=f"person{n}@example.org") for n in range(20)]

    with transport.connect() as conn:
        for n, data in enumerate(sent):
            conn.send(TEAM, [f"person{n}@example.org"], data)
        assert conn.sessions == 1

    got = smtp_server.wait_for(20)
    assert len(got) == 20
    assert [m.data for m in got] == sent
    assert [m.mail_from for m in got] == [TEAM] * 20
    assert [m.rcpt_tos for m in got] == [[f"person{n}@example.org"] for n in range(20)]
    assert [m.message["Subject"] for m in got] == [f"Your complaint CSQ-{n:04d}" for n in range(20)]
    assert "BODY=8BITMIME" in got[0].mail_options
    assert smtp_server.sessions == 1
    assert {m.session for m in got} == {1}


def test_null_envelope_sender_is_sent_as_mail_from_empty(smtp_server: SMTPTestServer) -> None:
    with transport_for(smtp_server.url).connect() as conn:
        conn.send("", [RESIDENT], message())
    (got,) = smtp_server.wait_for(1)
    assert got.mail_from == ""
    assert got.rcpt_tos == [RESIDENT]


def test_several_recipients_and_bare_lf_data(smtp_server: SMTPTestServer) -> None:
    data = b"From: a@council.example\nSubject: lf\n\nline one\n.dot line\nlast line"
    with transport_for(smtp_server.url).connect() as conn:
        conn.send(TEAM, ["a@example.org", "b@example.org"], data)
    (got,) = smtp_server.wait_for(1)
    assert got.rcpt_tos == ["a@example.org", "b@example.org"]
    # Lines end in CRLF on the wire (RFC 5321 2.3.8); the dot is unstuffed again.
    assert got.data == data.replace(b"\n", b"\r\n") + b"\r\n"
    assert got.message["Subject"] == "lf"


def test_internationalised_address_uses_smtputf8(smtp_server: SMTPTestServer) -> None:
    with transport_for(smtp_server.url).connect() as conn:
        conn.send(TEAM, ["jörg@exämple.org"], message(to="jörg@exämple.org"))
    (got,) = smtp_server.wait_for(1)
    assert got.rcpt_tos == ["jörg@exämple.org"]
    assert "SMTPUTF8" in got.mail_options


def test_plain_ascii_message_does_not_ask_for_smtputf8(smtp_server: SMTPTestServer) -> None:
    with transport_for(smtp_server.url).connect() as conn:
        conn.send(TEAM, [RESIDENT], message(body="Plain ASCII only.\n"))
    (got,) = smtp_server.wait_for(1)
    assert "SMTPUTF8" not in got.mail_options
    assert "BODY=8BITMIME" not in got.mail_options


# --------------------------------------------------------------------------------------------
# SMTP: outages and refusals


def test_server_down_then_back(smtp_server: SMTPTestServer) -> None:
    transport = transport_for(smtp_server.url)
    smtp_server.stop()

    with pytest.raises(TransportUnavailable) as caught:
        transport.connect()
    assert isinstance(caught.value, TemporaryFailure)
    assert f"127.0.0.1:{smtp_server.port}" in str(caught.value)

    smtp_server.start()
    with transport.connect() as conn:
        conn.send(TEAM, [RESIDENT], message())
    assert len(smtp_server.wait_for(1)) == 1


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
@pytest.mark.parametrize(
    ("code", "expected", "unexpected"),
    [
        (451, TemporaryFailure, PermanentFailure),
        (452, TemporaryFailure, PermanentFailure),
        (550, PermanentFailure, TemporaryFailure),
        (554, PermanentFailure, TemporaryFailure),
    ],
)
def test_refusal_classified_and_connection_still_usable(
    smtp_server: SMTPTestServer,
    stage: Stage,
    code: int,
    expected: type[Exception],
    unexpected: type[Exception],
) -> None:
    smtp_server.fail_next(1, code=code, stage=stage)
    with transport_for(smtp_server.url).connect() as conn:
        with pytest.raises(expected) as caught:
            conn.send(TEAM, [RESIDENT], message(1))
        assert not isinstance(caught.value, unexpected)
        assert str(code) in str(caught.value)
        conn.send(TEAM, [RESIDENT], message(2))
        assert conn.sessions == 1

    (got,) = smtp_server.wait_for(1)
    assert got.message["Subject"] == "Your complaint CSQ-0002"
    assert smtp_server.sessions == 1


def test_530_at_mail_from_means_the_transport_is_misconfigured(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next(1, code=530, stage="mail")
    conn = transport_for(smtp_server.url).connect()
    with conn, pytest.raises(TransportUnavailable, match="530"):
        conn.send(TEAM, [RESIDENT], message())


def test_one_refused_recipient_means_nothing_is_sent(smtp_server: SMTPTestServer) -> None:
    smtp_server.reject_recipient("gone@example.org", 550)
    smtp_server.reject_recipient("full@example.org", 452)
    with transport_for(smtp_server.url).connect() as conn:
        with pytest.raises(PermanentFailure, match=r"gone@example\.org"):
            conn.send(TEAM, ["ok@example.org", "gone@example.org"], message(1))
        # Only a temporary refusal: retry later, and still nothing delivered to ok@ now.
        with pytest.raises(TemporaryFailure, match=r"full@example\.org") as caught:
            conn.send(TEAM, ["ok@example.org", "full@example.org"], message(2))
        assert not isinstance(caught.value, PermanentFailure)
        conn.send(TEAM, ["ok@example.org"], message(3))
    (got,) = smtp_server.wait_for(1)
    assert got.message["Subject"] == "Your complaint CSQ-0003"
    assert smtp_server.sessions == 1


def test_server_dropping_mid_batch_fails_one_message_then_reconnects(
    smtp_server: SMTPTestServer,
) -> None:
    transport = transport_for(smtp_server.url)
    with transport.connect() as conn:
        conn.send(TEAM, [RESIDENT], message(1))
        smtp_server.stop()
        smtp_server.start()
        with pytest.raises(TemporaryFailure) as caught:
            conn.send(TEAM, [RESIDENT], message(2))
        assert not isinstance(caught.value, TransportUnavailable)
        conn.send(TEAM, [RESIDENT], message(3))  # transparently reconnected
        conn.send(TEAM, [RESIDENT], message(4))
        assert conn.sessions == 2

    got = smtp_server.wait_for(3)
    assert [m.message["Subject"][-1] for m in got] == ["1", "3", "4"]
    assert [m.session for m in got] == [1, 2, 2]


def test_reconnect_is_tried_once_then_the_connection_is_unusable(
    smtp_server: SMTPTestServer,
) -> None:
    transport = transport_for(smtp_server.url)
    with transport.connect() as conn:
        conn.send(TEAM, [RESIDENT], message(1))
        smtp_server.stop()
        with pytest.raises(TemporaryFailure):
            conn.send(TEAM, [RESIDENT], message(2))
        with pytest.raises(TransportUnavailable, match="could not reconnect"):
            conn.send(TEAM, [RESIDENT], message(3))
        smtp_server.start()
        # Dead for good: no more connection attempts from this flush.
        with pytest.raises(TransportUnavailable):
            conn.send(TEAM, [RESIDENT], message(4))
        assert smtp_server.sessions == 1
    # The next flush gets a new connection.
    with transport.connect() as conn:
        conn.send(TEAM, [RESIDENT], message(5))
    got = smtp_server.wait_for(2)
    assert [m.message["Subject"][-1] for m in got] == ["1", "5"]


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_connection_cut_without_reply_is_temporary(
    smtp_server: SMTPTestServer, stage: Stage
) -> None:
    smtp_server.disconnect_next(1, stage=stage)
    with transport_for(smtp_server.url).connect() as conn:
        with pytest.raises(TemporaryFailure, match="dropped the connection"):
            conn.send(TEAM, [RESIDENT], message(1))
        conn.send(TEAM, [RESIDENT], message(2))
    (got,) = smtp_server.wait_for(1)
    assert got.message["Subject"].endswith("2")
    assert smtp_server.sessions == 2


def test_421_closes_the_session_and_the_next_send_reconnects(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_next(1, code=421, stage="mail")
    with transport_for(smtp_server.url).connect() as conn:
        with pytest.raises(TemporaryFailure, match="421"):
            conn.send(TEAM, [RESIDENT], message(1))
        conn.send(TEAM, [RESIDENT], message(2))
        assert conn.sessions == 2
    assert len(smtp_server.wait_for(1)) == 1


# --------------------------------------------------------------------------------------------
# Bad queued messages: refused before anything goes on the wire

BAD_SENDS = [
    pytest.param(TEAM, ["victim@example.org\r\nRCPT TO:<evil@example.net>"], id="crlf-rcpt"),
    pytest.param(TEAM, ["victim@example.org\nBcc: evil@example.net"], id="lf-rcpt"),
    pytest.param(TEAM + "\r\nRSET", [RESIDENT], id="crlf-sender"),
    pytest.param(TEAM, [], id="no-recipients"),
    pytest.param(TEAM, "resident@example.org", id="string-not-list"),
    pytest.param(TEAM, ["no-at-sign"], id="no-at"),
    pytest.param(TEAM, ["two@@example.org"], id="two-at"),
    pytest.param(TEAM, ["a b@example.org"], id="space"),
    pytest.param(TEAM, ["a,b@example.org"], id="comma"),
    pytest.param(TEAM, ["<x@example.org>"], id="brackets"),
    pytest.param(TEAM, ["@example.org"], id="empty-local"),
    pytest.param(TEAM, [""], id="empty"),
    pytest.param("<>", [RESIDENT], id="angle-null-sender"),
    pytest.param(TEAM, [None], id="not-a-string"),
]


@pytest.mark.parametrize(("sender", "recipients"), BAD_SENDS)
def test_bad_addresses_refused_without_sending(
    smtp_server: SMTPTestServer, sender: Any, recipients: Any
) -> None:
    with transport_for(smtp_server.url).connect() as conn:
        with pytest.raises(PermanentFailure):
            conn.send(sender, recipients, message())
        conn.send(TEAM, [RESIDENT], message(2))  # the connection is untouched
    assert smtp_server.wait_for(1)[0].rcpt_tos == [RESIDENT]
    assert smtp_server.transactions == 1


@pytest.mark.parametrize("data", ["a str message", b"", b"  \r\n", None], ids=repr)
def test_data_must_be_non_empty_bytes(smtp_server: SMTPTestServer, data: Any) -> None:
    conn = transport_for(smtp_server.url).connect()
    with conn, pytest.raises(PermanentFailure, match="data"):
        conn.send(TEAM, [RESIDENT], data)
    assert smtp_server.transactions == 0


def test_crlf_error_message_shows_the_line_break_escaped(smtp_server: SMTPTestServer) -> None:
    conn = transport_for(smtp_server.url).connect()
    with conn, pytest.raises(PermanentFailure) as caught:
        conn.send(TEAM, ["x@example.org\r\nDATA"], message())
    text = str(caught.value)
    assert "\r" not in text and "\n" not in text
    assert "line break" in text


# --------------------------------------------------------------------------------------------
# Credentials

PASSWORD = "S3cret-Pa55!word"


def _assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture, secret: str) -> None:
    forms = [secret, quote(secret), base64.b64encode(secret.encode()).decode()]
    rendered = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mailbot"))
    for form in forms:
        assert form not in rendered
        assert form not in ours


def test_wrong_password_is_unavailable_and_never_echoed(
    smtp_server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = smtp_server_factory(auth=("mailbot", "the-right-one"))
    transport = transport_for(server.url_with_login("mailbot", PASSWORD))
    with pytest.raises(TransportUnavailable) as caught:
        transport.connect()
    assert "535" in str(caught.value)
    assert "'mailbot'" in str(caught.value)
    assert set(server.auth_attempts) == {"mailbot"}  # smtplib tries PLAIN, then LOGIN
    _assert_no_secret(caught.value, caplog, PASSWORD)
    assert PASSWORD not in repr(transport)


def test_auth_not_offered_is_unavailable_and_never_echoes_password(
    smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = transport_for(smtp_server.url_with_login("mailbot", PASSWORD))
    with pytest.raises(TransportUnavailable, match="does not offer AUTH") as caught:
        transport.connect()
    _assert_no_secret(caught.value, caplog, PASSWORD)


@pytest.mark.parametrize("password", [PASSWORD, "pässwörd £5 ✓"], ids=["ascii", "utf8"])
def test_right_password_logs_in_and_sends(
    smtp_server_factory: ServerFactory, password: str
) -> None:
    server = smtp_server_factory(auth=("mailbot", password))
    transport = transport_for(server.url_with_login("mailbot", quote(password)))
    with transport.connect() as conn:
        conn.send(TEAM, [RESIDENT], message())
    assert len(server.wait_for(1)) == 1
    assert server.auth_attempts == ["mailbot"]


def test_server_reply_echoing_the_password_is_scrubbed() -> None:
    secrets = smtp_module._Secrets("mailbot", PASSWORD)
    plain = base64.b64encode(b"\0mailbot\0" + PASSWORD.encode()).decode()
    text = smtp_module._reply_text(f"535 bad {PASSWORD} {plain}\r\nnext".encode(), secrets)
    assert PASSWORD not in text and plain not in text
    assert text == "535 bad *** *** next"


# --------------------------------------------------------------------------------------------
# TLS


def test_starttls_with_a_trusted_certificate(
    smtp_server_factory: ServerFactory,
    smtp_tls_certificate: TLSCertificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls_certificate.cert))
    server = smtp_server_factory(tls="starttls", auth=("mailbot", PASSWORD))
    with transport_for(server.url_with_login("mailbot", PASSWORD)).connect() as conn:
        conn.send(TEAM, [RESIDENT], message(1))
        conn.send(TEAM, [RESIDENT], message(2))
    assert len(server.wait_for(2)) == 2
    assert server.sessions == 1  # STARTTLS and the second EHLO stay in one session


def test_smtps_with_a_trusted_certificate(
    smtp_server_factory: ServerFactory,
    smtp_tls_certificate: TLSCertificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls_certificate.cert))
    server = smtp_server_factory(tls="smtps")
    with transport_for(server.url).connect() as conn:
        conn.send("", [RESIDENT], message())
    assert server.wait_for(1)[0].mail_from == ""


@pytest.mark.parametrize("tls", ["starttls", "smtps"])
def test_untrusted_certificate_is_refused(
    smtp_server_factory: ServerFactory,
    tls: TLSMode,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    empty = tmp_path / "no-cas.pem"
    empty.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    server = smtp_server_factory(tls=tls)
    with pytest.raises(TransportUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        transport_for(server.url).connect()
    assert server.messages == []


def test_starttls_required_but_not_offered(smtp_server: SMTPTestServer) -> None:
    url = smtp_server.url.replace("smtp://", "smtp+starttls://")
    with pytest.raises(TransportUnavailable, match="does not offer STARTTLS"):
        transport_for(url).connect()


# --------------------------------------------------------------------------------------------
# Maildir


def test_maildir_writes_envelope_lines_then_the_exact_message(tmp_path: Path) -> None:
    root = tmp_path / "var" / "mail" / "sent"  # nothing exists yet
    transport = open_transport(parse_smtp_url(f"maildir://{root}"))
    assert isinstance(transport, MaildirTransport)
    sent = [message(1), message(2), message(3)]
    with transport.connect() as conn:
        conn.send(TEAM, ["a@x.example", "b@y.example"], sent[0])
        conn.send("", [RESIDENT], sent[1])
        conn.send(TEAM, [RESIDENT], sent[2])

    assert sorted(p.name for p in root.iterdir()) == ["cur", "new", "tmp"]
    assert list((root / "tmp").iterdir()) == []
    files = sorted((root / "new").iterdir(), key=lambda p: p.read_bytes())
    assert len(files) == 3
    contents = {p.read_bytes() for p in files}
    assert contents == {
        b"Return-Path: <care.quality@council.example>\r\n"
        b"X-Mailbot-Envelope-To: a@x.example, b@y.example\r\n" + sent[0],
        b"Return-Path: <>\r\nX-Mailbot-Envelope-To: resident@example.org\r\n" + sent[1],
        b"Return-Path: <care.quality@council.example>\r\n"
        b"X-Mailbot-Envelope-To: resident@example.org\r\n" + sent[2],
    }
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A mail client (here: the stdlib) reads the folder.
    box = mailbox.Maildir(root, create=False)
    subjects = sorted(str(m["Subject"]) for m in box)
    assert subjects == [f"Your complaint CSQ-000{n}" for n in (1, 2, 3)]


def test_maildir_keeps_lf_messages_lf(tmp_path: Path) -> None:
    data = b"From: a@council.example\nSubject: lf\n\nbody\n"
    with MaildirTransport(tmp_path / "sent").connect() as conn:
        conn.send(TEAM, [RESIDENT], data)
    (path,) = (tmp_path / "sent" / "new").iterdir()
    assert path.read_bytes() == (
        b"Return-Path: <care.quality@council.example>\n"
        b"X-Mailbot-Envelope-To: resident@example.org\n" + data
    )


def test_maildir_folds_a_long_envelope_to_line(tmp_path: Path) -> None:
    rcpts = [f"recipient-number-{n}@example.org" for n in range(8)]
    with MaildirTransport(tmp_path).connect() as conn:
        conn.send(TEAM, rcpts, message())
    (path,) = (tmp_path / "new").iterdir()
    raw = path.read_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n")[:4])
    parsed = mailbox.MaildirMessage(raw)
    assert [a.strip() for a in parsed["X-Mailbot-Envelope-To"].split(",")] == rcpts
    assert raw.endswith(message())


def test_maildir_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def half_then_disk_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 100:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with MaildirTransport(tmp_path).connect() as conn:
        monkeypatch.setattr(smtp_module.os, "write", half_then_disk_full)
        with pytest.raises(TemporaryFailure, match="No space left"):
            conn.send(TEAM, [RESIDENT], message())
        monkeypatch.undo()
        assert list((tmp_path / "new").iterdir()) == []
        assert list((tmp_path / "tmp").iterdir()) == []
        conn.send(TEAM, [RESIDENT], message(2))
    assert len(list((tmp_path / "new").iterdir())) == 1


@pytest.mark.parametrize(("sender", "recipients"), BAD_SENDS)
def test_maildir_refuses_bad_addresses_without_writing(
    tmp_path: Path, sender: Any, recipients: Any
) -> None:
    with MaildirTransport(tmp_path).connect() as conn, pytest.raises(PermanentFailure):
        conn.send(sender, recipients, message())
    assert list((tmp_path / "new").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_maildir_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransportUnavailable, match="cannot create the Maildir"):
        MaildirTransport(blocker / "sent").connect()


# --------------------------------------------------------------------------------------------
# Construction


def test_open_transport_picks_the_transport_and_hides_the_password(tmp_path: Path) -> None:
    for scheme in ("smtp", "smtp+starttls", "smtps"):
        transport = open_transport(parse_smtp_url(f"{scheme}://u:{PASSWORD}@relay.example"))
        assert isinstance(transport, SMTPTransport)
        assert PASSWORD not in repr(transport)
        assert transport.where.startswith(f"{scheme}://u@relay.example:")
    with pytest.raises(ValueError):
        open_transport(SMTPURL(scheme="imap", host="x"))
    with pytest.raises(ValueError):
        open_transport(SMTPURL(scheme="maildir"))
