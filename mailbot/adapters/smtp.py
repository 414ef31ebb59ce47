"""Outbound mail transports: an SMTP relay in production, a local Maildir by default.

The outbox sender (design, data flow step 7) calls these. It opens ONE connection per flush and
sends every queued message over it, because a new SMTP connection per message was what made the
established help desk slow (design, "Lessons from the field"). Everything the caller needs to
decide what happens to a queued message is in the exception type:

- ``PermanentFailure``: this message can never be sent as it is (a 5xx reply to it, or a bad
  queued message such as a recipient with a line break in it). Mark it failed; do not retry.
- ``TemporaryFailure``: try this message again later (4xx replies, a dropped connection, a
  timeout). Nothing was delivered, with one unavoidable exception in SMTP itself: if the
  connection dies after the message data was sent but before the server's final reply, the
  server may have accepted it, and the retry can then deliver it a second time.
- ``TransportUnavailable`` (a ``TemporaryFailure``): no message can be sent right now (cannot
  connect, TLS or login failed, the connection was lost and could not be re-established). Keep
  the message queued and stop the flush; the next flush tries again. A ``530`` (authentication
  required) reply to MAIL FROM counts here too: every message would get it, so it must not
  mark them all failed.

Inputs are checked before any I/O (recipients present, each address one ``@`` and no CR/LF or
white space, data non-empty ``bytes``) and a violation is a ``PermanentFailure``. Over SMTP,
bare LF or CR line endings in the data are sent as CRLF; CRLF data goes out byte for byte.

Connection behaviour after a drop (``SMTPServerDisconnected``, a socket error or timeout, or a
``421`` reply): the message being sent raises ``TemporaryFailure`` and the socket is closed. The
next ``send`` on the same connection reconnects once, transparently. If that reconnect fails it
raises ``TransportUnavailable`` and the connection stays unusable: every later ``send`` raises
``TransportUnavailable`` at once, without touching the network, so a flush of a thousand
messages against a dead relay costs one connect timeout, not a thousand. Each drop earns one
reconnect, so relays that close the connection after N messages are handled.

A message goes to all of its recipients or to none: if any recipient is refused, the
transaction is abandoned with ``RSET`` before ``DATA``. A retry therefore never duplicates the
message for the recipients that had accepted it.

The SMTP password is never put into an exception message or a log line, and server replies are
scrubbed of it (and of its base64 forms) before they are quoted.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Protocol

from mailbot.config import SMTPURL

log = logging.getLogger(__name__)

__all__ = [
    "Connection",
    "MaildirTransport",
    "PermanentFailure",
    "SMTPTransport",
    "TemporaryFailure",
    "Transport",
    "TransportUnavailable",
    "open_transport",
]


class TemporaryFailure(Exception):
    """Try again later: connection refused/reset, timeouts, 4xx replies."""


class PermanentFailure(Exception):
    """A 5xx for this message/recipient, or a message that is invalid as queued: do not retry."""


class TransportUnavailable(TemporaryFailure):
    """Cannot connect / authenticate at all: keep the message queued and stop this flush."""


class Connection(Protocol):
    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> None:
        """Deliver ``data`` to ``recipients``; ``envelope_from`` "" is the null reverse-path.

        Auto-replies go out with ``MAIL FROM:<>`` (RFC 3834, RFC 5321 section 4.5.5) so that a
        bounce of an acknowledgement cannot start a mail loop.
        """
        ...


class Transport(Protocol):
    def connect(self) -> AbstractContextManager[Connection]:
        """Open ONE connection to be reused for a whole flush."""
        ...


# --------------------------------------------------------------------------------------------
# Input validation (shared by every transport)

_SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")
_FORBIDDEN_IN_ADDRESS = set('<>()[],;:\\"')


def _check_address(address: object, what: str) -> str:
    """Refuse anything that could inject commands or headers, or that smtplib would rewrite.

    Queued addresses come from hostile mail, so a CR/LF here would be SMTP command or header
    injection. We also insist that smtplib sends exactly the address we were given: its
    ``quoteaddr`` runs ``parseaddr``, which silently rewrites oddities such as ``a,b@x``.
    """
    if not isinstance(address, str):
        raise PermanentFailure(f"{what} {address!r} is not a string")
    if "\r" in address or "\n" in address:
        raise PermanentFailure(f"{what} {address!r} contains a line break (header injection?)")
    if address.strip() in ("<>", ""):
        hint = "; the null sender is given as ''" if what == "envelope sender" else ""
        raise PermanentFailure(f"{what} {address!r} is empty{hint}")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in address):
        raise PermanentFailure(f"{what} {address!r} contains white space or control characters")
    if address.count("@") != 1:
        raise PermanentFailure(f"{what} {address!r} must contain exactly one @")
    local, _, domain = address.partition("@")
    if not local or not domain:
        raise PermanentFailure(f"{what} {address!r} has an empty local part or domain")
    if _FORBIDDEN_IN_ADDRESS & set(address) or smtplib.quoteaddr(address) != f"<{address}>":
        raise PermanentFailure(f"{what} {address!r} is not a plain address (local@domain)")
    if len(address) > 254:
        raise PermanentFailure(f"{what} {address[:40]!r}... is longer than 254 characters")
    return address


def _validate(envelope_from: object, recipients: object, data: object) -> tuple[str, list[str]]:
    """Check a queued message before any I/O, so a bad one never looks like a transport outage."""
    if not isinstance(envelope_from, str):
        raise PermanentFailure(f"envelope sender {envelope_from!r} is not a string")
    if envelope_from != "":
        _check_address(envelope_from, "envelope sender")
    if isinstance(recipients, (str, bytes)) or not isinstance(recipients, Sequence):
        # A bare string would be iterated character by character.
        raise PermanentFailure(
            f"recipients must be a sequence of addresses, not {type(recipients).__name__}"
        )
    if not recipients:
        raise PermanentFailure("no recipients")
    checked = [_check_address(r, "recipient") for r in recipients]
    if not isinstance(data, bytes):
        raise PermanentFailure(
            f"message data must be bytes, not {type(data).__name__} (encode the message first)"
        )
    if not data.strip():
        raise PermanentFailure("message data is empty")
    return envelope_from, checked


_EOL = re.compile(rb"\r\n|\r|\n")


def _crlf(data: bytes) -> bytes:
    """SMTP lines end in CRLF (RFC 5321 2.3.8); bare LF is refused by hardened relays.

    Messages rendered with the ``email`` package's default policy use bare LF, so we convert;
    CRLF input is passed through byte for byte.
    """
    return _EOL.sub(b"\r\n", data)


# --------------------------------------------------------------------------------------------
# SMTP


class _Secrets:
    """Knows the password's spellings so no server reply can leak it into our messages."""

    def __init__(self, username: str, password: str) -> None:
        self._needles: list[str] = []
        if password:
            raw = password.encode("utf-8")
            plain = b"\0" + username.encode("utf-8") + b"\0" + raw
            needles = {
                password,
                base64.b64encode(raw).decode("ascii"),
                base64.b64encode(plain).decode("ascii"),
            }
            # Longest first: one form can contain another.
            self._needles = sorted(needles, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for needle in self._needles:
            text = text.replace(needle, "***")
        return text


def _reply_text(reply: bytes | str, secrets: _Secrets) -> str:
    """A server reply fit for one log line: decoded, no control characters, no password."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    text = " ".join(text.split())
    return secrets.scrub(text)[:300]


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class SMTPTransport:
    """Sends through an SMTP relay: ``smtp``, ``smtp+starttls`` (required) or ``smtps``.

    Both TLS modes verify the server certificate and host name with the default SSL context;
    a relay with a self-signed certificate is refused rather than trusted silently.
    """

    def __init__(
        self, url: SMTPURL, *, timeout: float = 30.0, local_hostname: str | None = None
    ) -> None:
        if url.scheme not in _SMTP_SCHEMES:
            raise ValueError(f"not an SMTP URL scheme: {url.scheme!r}")
        if not url.host:
            raise ValueError("SMTP URL has no host")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if local_hostname is not None and (
            not local_hostname or any(ch.isspace() for ch in local_hostname)
        ):
            raise ValueError(f"bad local_hostname {local_hostname!r}")
        self.scheme = url.scheme
        self.host = url.host
        self.port = url.port or {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[url.scheme]
        self.username = url.username
        self._password = url.password
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._secrets = _Secrets(url.username, url.password)
        self._warned_cleartext = False

    def __repr__(self) -> str:
        return f"<SMTPTransport {self.where}>"

    @property
    def where(self) -> str:
        """The relay for messages and logs; never includes the password."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"

    def connect(self) -> SMTPConnection:
        """Connect, secure and log in now, so an outage shows up before the first message.

        The returned connection is also the context manager (``with transport.connect() as c``)
        that says QUIT at the end of the flush.
        """
        return SMTPConnection(self, self._open())

    def _open(self) -> smtplib.SMTP:
        context = ssl.create_default_context() if self.scheme != "smtp" else None
        try:
            if self.scheme == "smtps":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=self.timeout,
                    context=context,
                )
            else:
                smtp = smtplib.SMTP(
                    self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
                )
        except smtplib.SMTPConnectError as exc:
            raise TransportUnavailable(
                f"{self.where} refused the session: {exc.smtp_code} "
                f"{_reply_text(exc.smtp_error, self._secrets)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportUnavailable(f"cannot connect to {self.where}: {exc}") from exc
        try:
            self._greet(smtp, context)
        except BaseException:
            _close_quietly(smtp)
            raise
        log.debug("connected to %s", self.where)
        return smtp

    def _greet(self, smtp: smtplib.SMTP, context: ssl.SSLContext | None) -> None:
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.scheme == "smtp+starttls":
                if not smtp.has_extn("starttls"):
                    raise TransportUnavailable(
                        f"{self.where} does not offer STARTTLS; refusing to send in clear text"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
        except TransportUnavailable:
            raise
        except smtplib.SMTPResponseException as exc:
            raise TransportUnavailable(
                f"{self.where} failed the greeting/STARTTLS: {exc.smtp_code} "
                f"{_reply_text(exc.smtp_error, self._secrets)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            # Certificate verification failures (ssl.SSLCertVerificationError) land here.
            raise TransportUnavailable(f"cannot set up a session with {self.where}: {exc}") from exc
        if self.username:
            self._login(smtp)

    def _login(self, smtp: smtplib.SMTP) -> None:
        # Every error below is raised "from None": the original exception is dropped so that no
        # traceback in a log can carry anything of the credentials exchange.
        if self.scheme == "smtp" and not _is_loopback(self.host) and not self._warned_cleartext:
            self._warned_cleartext = True
            log.warning("sending the SMTP password to %s without TLS", self.where)
        try:
            if (self.username + self._password).isascii():
                smtp.login(self.username, self._password)
            else:
                self._login_plain_utf8(smtp)
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportUnavailable(
                f"{self.where} refused the login for user {self.username!r}: {exc.smtp_code} "
                f"{_reply_text(exc.smtp_error, self._secrets)}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise TransportUnavailable(
                f"{self.where} does not offer AUTH on this connection; cannot log in as "
                f"{self.username!r} (does it need smtp+starttls:// or smtps://?)"
            ) from None
        except smtplib.SMTPServerDisconnected:
            raise TransportUnavailable(f"{self.where} closed the connection during AUTH") from None
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            raise TransportUnavailable(
                f"cannot log in to {self.where} as {self.username!r}: "
                f"{type(exc).__name__}: {self._secrets.scrub(str(exc))}"
            ) from None

    def _login_plain_utf8(self, smtp: smtplib.SMTP) -> None:
        """AUTH PLAIN in UTF-8 (RFC 4616): smtplib's own login encodes credentials as ASCII."""
        if "plain" not in smtp.esmtp_features.get("auth", "").lower().split():
            raise TransportUnavailable(
                f"{self.where} does not offer AUTH PLAIN, the only way to send a non-ASCII "
                "user name or password"
            )
        token = b"\0" + self.username.encode("utf-8") + b"\0" + self._password.encode("utf-8")
        code, reply = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(token).decode("ascii"))
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)


class SMTPConnection(AbstractContextManager["SMTPConnection"]):
    """One SMTP session reused for many messages; not safe to share between threads."""

    def __init__(self, transport: SMTPTransport, smtp: smtplib.SMTP) -> None:
        self._transport = transport
        self._smtp: smtplib.SMTP | None = smtp
        self._dead: str | None = None  # why the connection is unusable for good
        self._closed = False
        self.sessions = 1  # SMTP sessions opened so far (1 + reconnects)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Say QUIT politely; a relay that has already gone away is not an error here."""
        self._closed = True
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with suppress(OSError, smtplib.SMTPException):
                smtp.quit()
            _close_quietly(smtp)

    @property
    def where(self) -> str:
        return self._transport.where

    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> None:
        """Deliver one message to all recipients or to none (see the module docstring)."""
        sender, rcpts = _validate(envelope_from, recipients, data)
        payload = _crlf(data)
        smtp = self._session()
        options = self._mail_options(smtp, sender, rcpts, payload)
        try:
            self._transaction(smtp, sender, rcpts, payload, options)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # smtplib turns socket errors and timeouts into SMTPServerDisconnected (and closes).
            self._drop()
            raise TemporaryFailure(
                f"{self.where} dropped the connection while sending to {', '.join(rcpts)}: "
                f"{self._transport._secrets.scrub(str(exc)) or type(exc).__name__}; "
                "will retry later"
            ) from exc
        except smtplib.SMTPException as exc:
            # Anything else smtplib objects to mid-transaction: leave a clean state, retry later.
            self._reset(smtp)
            raise TemporaryFailure(
                f"{self.where}: {type(exc).__name__}: {self._transport._secrets.scrub(str(exc))}"
            ) from exc
        log.debug("sent %d bytes to %s via %s", len(payload), ", ".join(rcpts), self.where)

    def _session(self) -> smtplib.SMTP:
        if self._closed:
            raise TransportUnavailable(f"the connection to {self.where} has been closed")
        if self._dead is not None:
            raise TransportUnavailable(self._dead)
        if self._smtp is None:
            log.info("reconnecting to %s after the connection was dropped", self.where)
            try:
                self._smtp = self._transport._open()
            except TransportUnavailable as exc:
                self._dead = f"lost the connection to {self.where} and could not reconnect: {exc}"
                raise TransportUnavailable(self._dead) from None
            self.sessions += 1
        return self._smtp

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            _close_quietly(smtp)

    def _mail_options(
        self, smtp: smtplib.SMTP, sender: str, rcpts: list[str], payload: bytes
    ) -> list[str]:
        options: list[str] = []
        if smtp.has_extn("size"):
            limit = smtp.esmtp_features.get("size", "").strip()
            if limit.isdigit() and int(limit) and len(payload) > int(limit):
                raise PermanentFailure(
                    f"message of {len(payload)} bytes is over the {limit}-byte limit of "
                    f"{self.where}"
                )
            options.append(f"SIZE={len(payload)}")
        if not payload.isascii() and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in [sender, *rcpts]):
            if not smtp.has_extn("smtputf8"):
                raise PermanentFailure(
                    f"{self.where} does not support SMTPUTF8, needed for the non-ASCII address "
                    "in this message"
                )
            options.append("SMTPUTF8")
        elif smtp.has_extn("smtputf8") and not payload.split(b"\r\n\r\n", 1)[0].isascii():
            # Raw UTF-8 header fields (RFC 6532). Only asked for when needed: a relay must bounce
            # an SMTPUTF8 message it cannot pass on, so we do not flag plain messages.
            options.append("SMTPUTF8")
        return options

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        sender: str,
        rcpts: list[str],
        payload: bytes,
        options: list[str],
    ) -> None:
        code, reply = smtp.mail(sender, options)
        if code != 250:
            self._failed(smtp, code, reply, f"MAIL FROM:<{sender}>", during_mail=True)
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in rcpts:
            code, reply = smtp.rcpt(rcpt)
            if code == 421:
                self._failed(smtp, code, reply, f"RCPT TO:<{rcpt}>")
            if code not in (250, 251):
                refused[rcpt] = (code, reply)
        if refused:
            self._refused(smtp, refused)
        try:
            code, reply = smtp.data(payload)
        except smtplib.SMTPDataError as exc:
            self._failed(smtp, exc.smtp_code, exc.smtp_error, "DATA")
        if code != 250:
            self._failed(smtp, code, reply, "the message data")

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """RSET so the next message on this connection starts a clean transaction."""
        try:
            code, _ = smtp.rset()
        except (OSError, smtplib.SMTPException):
            code = 0
        if code != 250:
            self._drop()  # next send reconnects

    def _failed(
        self,
        smtp: smtplib.SMTP,
        code: int,
        reply: bytes | str,
        stage: str,
        *,
        during_mail: bool = False,
    ) -> NoReturn:
        text = f"{self.where} answered {code} {_reply_text(reply, self._transport._secrets)}"
        text = f"{text} to {stage}"
        if code == 421:
            # The server is closing the session: a temporary outage, not this message's fault.
            self._drop()
            raise TemporaryFailure(f"{text}; will retry later")
        self._reset(smtp)
        if during_mail and code == 530:
            # "Authentication required": a configuration problem that every message would hit.
            raise TransportUnavailable(f"{text}; check the SMTP user name and password")
        if 500 <= code <= 599:
            raise PermanentFailure(text)
        raise TemporaryFailure(f"{text}; will retry later")

    def _refused(self, smtp: smtplib.SMTP, refused: dict[str, tuple[int, bytes]]) -> NoReturn:
        self._reset(smtp)
        secrets = self._transport._secrets
        detail = "; ".join(
            f"{rcpt!r}: {code} {_reply_text(reply, secrets)}"
            for rcpt, (code, reply) in refused.items()
        )
        text = f"{self.where} refused recipient(s) {detail}; nothing was sent"
        if any(500 <= code <= 599 for code, _ in refused.values()):
            raise PermanentFailure(text)
        raise TemporaryFailure(f"{text}; will retry later")


def _close_quietly(smtp: smtplib.SMTP) -> None:
    with suppress(OSError):
        smtp.close()


# --------------------------------------------------------------------------------------------
# Maildir


def _maildir_hostname() -> str:
    # Maildir file names must not contain "/" or ":" (the info separator).
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


class MaildirTransport:
    """Writes each outgoing message into a Maildir: the embedded default, for trying mailbot out.

    A person opening the folder in a mail client sees where each message would have gone
    (``Return-Path`` and ``X-Mailbot-Envelope-To`` lines, then the message bytes unchanged).

    Not ``mailbox.Maildir``: its files are created 0666 (so 0644 under the usual umask, and
    these are letters about people's care) and it never fsyncs, so a crash just after the
    outbox marked a message sent could leave an empty file. Here files are 0600, written in
    ``tmp/``, fsynced, and renamed into ``new/``, so ``new/`` never holds a partial file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"<MaildirTransport {self.path}>"

    def connect(self) -> MaildirConnection:
        try:
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportUnavailable(f"cannot create the Maildir {self.path}: {exc}") from exc
        return MaildirConnection(self.path)


class MaildirConnection(AbstractContextManager["MaildirConnection"]):
    """Nothing to hold open; exists so the outbox code is the same for Maildir and SMTP."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._host = _maildir_hostname()
        self._counter = 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def send(self, envelope_from: str, recipients: Sequence[str], data: bytes) -> None:
        sender, rcpts = _validate(envelope_from, recipients, data)
        eol = b"\r\n" if b"\r\n" in data else b"\n"
        content = b"".join(
            [
                f"Return-Path: <{sender}>".encode() + eol,
                _envelope_to_header(rcpts, eol),
                data,
            ]
        )
        name = self._unique_name()
        tmp = self.path / "tmp" / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path / "new" / name)
            _fsync_dir(self.path / "new")
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise TemporaryFailure(f"cannot write to the Maildir {self.path}: {exc}") from exc
        log.debug("wrote message for %s to %s", ", ".join(rcpts), self.path / "new" / name)

    def _unique_name(self) -> str:
        # The classic time.Mmicroseconds.Ppid.host pattern, plus a random part so that several
        # workers (or a clock step) can never pick the same name.
        self._counter += 1
        now = time.time()
        secs = int(now)
        usecs = int((now - secs) * 1_000_000)
        rand = uuid.uuid4().hex[:12]
        return f"{secs}.M{usecs}P{os.getpid()}Q{self._counter}R{rand}.{self._host}"


def _envelope_to_header(rcpts: list[str], eol: bytes) -> bytes:
    """``X-Mailbot-Envelope-To: a@x, b@y``, folded so that no line passes 78 characters."""
    lines: list[str] = []
    line = "X-Mailbot-Envelope-To:"
    for i, rcpt in enumerate(rcpts):
        piece = f" {rcpt}" + ("," if i < len(rcpts) - 1 else "")
        if len(line) + len(piece) > 78 and i > 0:
            lines.append(line)
            line = "\t" + piece.lstrip(" ")
        else:
            line += piece
    lines.append(line)
    return b"".join(part.encode("utf-8") + eol for part in lines)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------


def open_transport(
    url: SMTPURL, *, timeout: float = 30.0, local_hostname: str | None = None
) -> Transport:
    """The transport for ``MAILBOT_SMTP_URL``; nothing is opened until ``connect()``."""
    if url.scheme == "maildir":
        if url.path is None:
            raise ValueError("maildir SMTP URL has no path")
        return MaildirTransport(url.path)
    if url.scheme in _SMTP_SCHEMES:
        return SMTPTransport(url, timeout=timeout, local_hostname=local_hostname)
    raise ValueError(f"unsupported outbound mail scheme {url.scheme!r}")
