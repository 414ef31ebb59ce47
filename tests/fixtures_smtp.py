"""A real SMTP server for tests: aiosmtpd on a free loopback port (design, "Real components").

Fixtures:

- ``smtp_server``: a plain SMTP server (no TLS, no AUTH), started for one test.
- ``smtp_server_factory``: ``make(tls=None | "starttls" | "smtps", auth=(user, password))`` for
  the other set-ups; every server it made is stopped after the test.
- ``smtp_tls_certificate``: a self-signed certificate for 127.0.0.1 (made with the ``openssl``
  command; tests that need it are skipped without it). Point ``SSL_CERT_FILE`` at
  ``.cert`` (``monkeypatch.setenv``) to make the default SSL context trust it.

The server accepts ``MAIL FROM:<>`` (recorded as ``mail_from == ""``), 8-bit data and
SMTPUTF8, keeps the exact bytes received, can be stopped and started again on the same port,
and can be told to refuse or drop the next transactions.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
Stage = Literal["mail", "rcpt", "data"]
TLSMode = Literal["starttls", "smtps"] | None

_TEXT = {
    421: "421 4.3.2 Service shutting down (test)",
    450: "450 4.2.0 Mailbox busy (test)",
    451: "451 4.3.0 Try again later (test)",
    452: "452 4.3.1 Insufficient storage (test)",
    550: "550 5.1.1 Mailbox unavailable (test)",
    552: "552 5.3.4 Message too big (test)",
    554: "554 5.7.1 Rejected (test)",
}


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server got it; ``mail_from`` is "" for the null sender ``<>``."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage
    mail_options: list[str]
    session: int  # 1-based number of the SMTP session that delivered it


@dataclass
class _Failure:
    code: int | None  # None: drop the connection without a reply
    stage: Stage


@dataclass
class SMTPTestServer:
    """Handle on one aiosmtpd server; thread-safe (the server runs in its own thread)."""

    port: int
    tls: TLSMode = None
    auth: tuple[str, str] | None = None
    certificate: TLSCertificate | None = None
    host: str = HOST
    _lock: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _messages: list[ReceivedMessage] = field(default_factory=list, repr=False)
    _failures: deque[_Failure] = field(default_factory=deque, repr=False)
    _rejected: dict[str, int] = field(default_factory=dict, repr=False)
    _sessions: int = 0
    _transactions: int = 0
    _auth_attempts: list[str] = field(default_factory=list, repr=False)
    _controller: Controller | None = field(default=None, repr=False)

    # -- what tests read ------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = {None: "smtp", "starttls": "smtp+starttls", "smtps": "smtps"}[self.tls]
        return f"{scheme}://{self.host}:{self.port}"

    def url_with_login(self, username: str, password: str) -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{username}:{password}@{rest}"

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of what arrived, in order."""
        with self._lock:
            return list(self._messages)

    @property
    def sessions(self) -> int:
        """SMTP sessions that got as far as EHLO/HELO (the start-up probe does not count)."""
        with self._lock:
            return self._sessions

    @property
    def transactions(self) -> int:
        """MAIL FROM commands seen, accepted or not."""
        with self._lock:
            return self._transactions

    @property
    def auth_attempts(self) -> list[str]:
        """User names that tried AUTH."""
        with self._lock:
            return list(self._auth_attempts)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; AssertionError after ``timeout``."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                got = [(m.mail_from, m.rcpt_tos, m.message["Subject"]) for m in self._messages]
                raise AssertionError(
                    f"expected {count} message(s) within {timeout}s, got {len(got)}: {got}"
                )
            return list(self._messages)

    # -- what tests control -----------------------------------------------------------------

    def fail_next(self, n: int = 1, code: int = 451, stage: Stage = "rcpt") -> None:
        """Refuse the next ``n`` transactions with ``code`` at ``stage``.

        ``rcpt`` refuses every recipient of the transaction; ``data`` takes the data and then
        refuses it (nothing is recorded). ``421`` also closes the connection after the reply.
        """
        with self._lock:
            self._failures.extend(_Failure(code, stage) for _ in range(n))

    def disconnect_next(self, n: int = 1, stage: Stage = "mail") -> None:
        """Drop the connection, without a reply, in the next ``n`` transactions at ``stage``."""
        with self._lock:
            self._failures.extend(_Failure(None, stage) for _ in range(n))

    def reject_recipient(self, address: str, code: int = 550) -> None:
        """Refuse RCPT TO this address with ``code`` until further notice."""
        with self._lock:
            self._rejected[address.lower()] = code

    def start(self) -> None:
        """(Re)start on the same port; asyncio binds with SO_REUSEADDR, so TIME_WAIT is fine."""
        assert self._controller is None, "already running"
        kwargs: dict[str, Any] = {
            "hostname": HOST,
            "port": self.port,
            "server_hostname": "smtp.test",
            "ident": "mailbot-test-smtpd",
            "enable_SMTPUTF8": True,
            "decode_data": False,
        }
        if self.tls is not None:
            assert self.certificate is not None
            context = self.certificate.server_context()
            if self.tls == "smtps":
                kwargs["ssl_context"] = context
            else:
                kwargs["tls_context"] = context
        if self.auth is not None:
            kwargs["authenticator"] = self._authenticate
            # With STARTTLS, AUTH is offered only after it, like a real relay. aiosmtpd does not
            # count implicit TLS (smtps) as TLS for this check, and smtp:// offers it in clear.
            kwargs["auth_require_tls"] = self.tls == "starttls"
        controller = Controller(_Handler(self), **kwargs)
        deadline = time.monotonic() + 5
        while True:
            try:
                controller.start()
                break
            except OSError:  # the port is still held by the previous instance
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and cut every open connection (clients see a dropped connection)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    # -- called from the server thread ------------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.auth is None:
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        with self._lock:
            self._auth_attempts.append(user)
        ok = (auth_data.login, auth_data.password) == (
            self.auth[0].encode("utf-8"),
            self.auth[1].encode("utf-8"),
        )
        return AuthResult(success=ok, handled=False)

    def _greeted(self, server: SMTP) -> None:
        # One SMTP instance per connection; aiosmtpd makes a new Session object after STARTTLS.
        if getattr(server, "mailbot_number", None) is None:
            with self._lock:
                self._sessions += 1
                server.mailbot_number = self._sessions  # type: ignore[attr-defined]

    def _begin_transaction(self) -> _Failure | None:
        with self._lock:
            self._transactions += 1
            return self._failures.popleft() if self._failures else None

    def _rejection(self, address: str) -> int | None:
        with self._lock:
            return self._rejected.get(address.lower())

    def _record(self, server: SMTP, envelope: Envelope) -> None:
        data = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        received = ReceivedMessage(
            mail_from="" if mail_from == "<>" else mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            message=email.message_from_bytes(data, policy=email.policy.default),
            mail_options=list(envelope.mail_options),
            session=getattr(server, "mailbot_number", 0),
        )
        with self._lock:
            self._messages.append(received)
            self._lock.notify_all()


def _reply(server: SMTP, failure: _Failure) -> str:
    """The reply for a failure; for a drop, abort the connection (the reply is never sent)."""
    if failure.code is None:
        assert isinstance(server.transport, asyncio.Transport)
        server.transport.abort()
        return "421 4.3.2 dropped (test)"
    if failure.code == 421:
        # Reply first, then close, the way a server going down does.
        transport = server.transport
        assert transport is not None
        server.loop.call_soon(transport.close)
    return _TEXT.get(failure.code, f"{failure.code} Refused (test)")


class _Handler:
    """aiosmtpd hooks: count sessions, inject failures, record messages."""

    def __init__(self, owner: SMTPTestServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        self.owner._greeted(server)
        return responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        self.owner._greeted(server)
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        failure = self.owner._begin_transaction()
        if failure is not None and failure.stage == "mail":
            return _reply(server, failure)
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it truthy
        envelope.mail_options.extend(options)
        envelope.mailbot_failure = failure  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        failure: _Failure | None = getattr(envelope, "mailbot_failure", None)
        if failure is not None and failure.stage == "rcpt":
            return _reply(server, failure)
        code = self.owner._rejection(address)
        if code is not None:
            return _TEXT.get(code, f"{code} Refused (test)")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure: _Failure | None = getattr(envelope, "mailbot_failure", None)
        if failure is not None and failure.stage == "data":
            return _reply(server, failure)
        self.owner._record(server, envelope)
        return "250 2.0.0 Message accepted (test)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TLSCertificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="session")
def smtp_tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> TLSCertificate:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("smtp-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return TLSCertificate(cert=cert, key=key)


@pytest.fixture
def smtp_server_factory(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., SMTPTestServer]]:
    """``make(tls=None, auth=None)``: start another server; all are stopped after the test."""
    servers: list[SMTPTestServer] = []

    def make(tls: TLSMode = None, auth: tuple[str, str] | None = None) -> SMTPTestServer:
        certificate = request.getfixturevalue("smtp_tls_certificate") if tls else None
        server = SMTPTestServer(port=_free_port(), tls=tls, auth=auth, certificate=certificate)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    """A plain SMTP server on a free loopback port: ``.url``, ``.messages``, ``.wait_for()``."""
    return smtp_server_factory()
