"""Helpers for the fault tests (tests/test_faults.py): varied mail, subprocess workers, tallies.

Nothing here fakes a server: the tests use the real Dovecot, aiosmtpd and PostgreSQL fixtures;
these helpers only build input, start and stop ``mailbot`` processes, and count what arrived.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from mailbot.adapters.orm import cases, messages, reminders
from tests.mail_factory import COMPLAINT, COMPLIMENT, make_email

MAILBOT = str(Path(sys.executable).with_name("mailbot"))

#: How each kind of test message should end: a case (and one acknowledgement), a recorded
#: auto-generated message (never answered), or a quarantined message.
CASE, AUTO, BROKEN = "case", "auto", "broken"

_COMPLAINTS = [
    COMPLAINT,
    "Dad's carers have missed four visits this month and nobody rang to tell us. When I "
    "complained on the phone I was promised a call from the manager, which never came. I "
    "want an explanation and an assurance that the visits will happen.",
    "I applied for a blue badge assessment in March and have heard nothing despite three "
    "emails. Your website says six weeks. I want someone to tell me what is happening and why "
    "nobody has replied.",
    "My mother's direct payment was stopped without any letter or explanation and the agency "
    "is now threatening to withdraw her care. This is a failure to follow your own process and "
    "I want it put right.",
]
_COMPLIMENTS = [
    COMPLIMENT,
    "I just wanted to say thank you to the day centre staff. Mum looks forward to Tuesdays "
    "all week and they always make her feel welcome. Please pass on our thanks.",
    "Thank you so much to the occupational therapist who visited last week. The new rails and "
    "the bath seat have made such a difference, and she was so kind and patient with Dad.",
]


@dataclass(frozen=True)
class TestMail:
    __test__ = False  # not a pytest test class

    raw: bytes
    kind: str  # CASE, AUTO or BROKEN
    message_id: str | None
    sender: str | None


def varied_mail(count: int, rng: random.Random, *, prefix: str = "m",
                sent: datetime | None = None) -> list[TestMail]:
    """``count`` messages: mostly complaints and compliments, a few auto-replies and bounces,
    and a few broken ones, shuffled with ``rng``. Every sender is different, so the
    per-recipient cap on automatic replies (5 a day) never withholds an acknowledgement."""
    sent = sent or datetime.now(UTC) - timedelta(minutes=5)
    n_auto = max(1, count // 20)
    n_broken = max(1, count // 30)
    kinds = [AUTO] * n_auto + [BROKEN] * n_broken
    kinds += [CASE] * (count - len(kinds))
    rng.shuffle(kinds)
    out: list[TestMail] = []
    for i, kind in enumerate(kinds):
        mid = f"{prefix}{i}.{rng.randrange(10**9)}@example.org"
        sender = f"person{i}.{prefix}@example.org"
        if kind == BROKEN:
            raw = b"\x00\x01\x02 not an email " + str(i).encode() + b" \xff\xfe\r\n"
            out.append(TestMail(raw, BROKEN, None, None))
            continue
        if kind == AUTO:
            variant = i % 3
            if variant == 0:  # Outlook-style automatic reply
                raw = make_email(sender=f"Person {i} <{sender}>",
                                 subject="Automatic reply: my mother's care",
                                 body="I am out of the office until Monday.", date=sent,
                                 message_id=mid,
                                 headers={"X-Auto-Response-Suppress": "All",
                                          "Auto-Submitted": "auto-replied"})
            elif variant == 1:  # a delivery report
                sender = f"mailer-daemon.{i}@mx{i}.example.net"
                raw = make_email(sender=f"Mail Delivery System <MAILER-DAEMON@mx{i}.example.net>",
                                 subject="Undelivered Mail Returned to Sender",
                                 body="This is the mail system. I'm sorry to have to inform "
                                      "you that your message could not be delivered.",
                                 date=sent, message_id=mid,
                                 headers={"Auto-Submitted": "auto-replied",
                                          "X-Failed-Recipients": "gone@example.org"})
                sender = f"mailer-daemon@mx{i}.example.net"
            else:  # a list mailing
                raw = make_email(sender=f"Care News <{sender}>", subject=f"Care news {i}",
                                 body=COMPLAINT, date=sent, message_id=mid,
                                 headers={"List-Id": f"<news{i}.lists.example.com>",
                                          "Precedence": "bulk"})
            out.append(TestMail(raw, AUTO, mid, sender))
            continue
        if rng.random() < 0.55:
            body = rng.choice(_COMPLAINTS)
            subject = rng.choice(["Complaint", "Still waiting", "Not good enough", "Mum's care"])
        else:
            body = rng.choice(_COMPLIMENTS)
            subject = rng.choice(["Thank you", "A big thank you", "Compliment"])
        raw = make_email(sender=f"Person {i} <{sender}>", subject=f"{subject} ({i})",
                         body=body, date=sent, message_id=mid)
        out.append(TestMail(raw, CASE, mid, sender))
    return out


def worker_env(tmp: Path, database_url: str, mailbox_url: str, smtp_url: str,
               **extra: str) -> dict[str, str]:
    """The environment for a ``mailbot`` subprocess: only our MAILBOT_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update({
        "MAILBOT_VAR_DIR": str(tmp / "var"),
        "MAILBOT_DATABASE_URL": database_url,
        "MAILBOT_MAILBOX_URL": mailbox_url,
        "MAILBOT_SMTP_URL": smtp_url,
        "MAILBOT_TIMEZONE": "Europe/London",
        "PYTHONUNBUFFERED": "1",
        **extra,
    })
    return env


class WorkerProcess:
    """One ``mailbot`` subprocess, its output in a log file (a pipe could fill and block it)."""

    def __init__(self, args: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen([MAILBOT, *args], env=dict(env), cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap it: no clean-up code of the worker runs."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time (then the test fails)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.pid} ignored SIGTERM for {timeout}s") from None
        self._out.close()
        return code

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.pid} did not finish in {timeout}s:\n"
                                 f"{self.output()[-3000:]}") from None
        self._out.close()
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def run_mailbot(args: list[str], env: Mapping[str, str], cwd: Path,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAILBOT, *args], env=dict(env), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.1) -> Any:
    """Poll ``condition`` until it is truthy; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def folder_counts(account: Any, folders: Iterable[str] = ("INBOX", "Processed", "Quarantine"),
                  ) -> dict[str, int]:
    client = account.client()
    try:
        out = {}
        for folder in folders:
            if not client.folder_exists(folder):
                out[folder] = 0
                continue
            out[folder] = int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])
        return out
    finally:
        try:
            client.logout()
        except Exception:
            client.shutdown()


def folder_message_ids(account: Any, folder: str) -> list[str | None]:
    """The Message-ID of every message in ``folder`` (None where it has none)."""
    client = account.client()
    try:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        if not uids:
            return []
        fetched = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        out: list[str | None] = []
        for uid in uids:
            head = next((v for k, v in fetched[uid].items() if k.startswith(b"BODY[")), b"")
            value = head.decode("ascii", "replace").partition(":")[2].strip()
            out.append(value.strip("<>") or None)
        return out
    finally:
        try:
            client.logout()
        except Exception:
            client.shutdown()


def replies_by_original(received: Iterable[Any]) -> Counter[str]:
    """How many messages at the SMTP server answer each original Message-ID (In-Reply-To)."""
    out: Counter[str] = Counter()
    for m in received:
        irt = m.message["In-Reply-To"]
        if irt:
            out[str(irt).strip().strip("<>")] += 1
    return out


def received_ids(received: Iterable[Any]) -> Counter[str]:
    """Message-IDs of what arrived at the SMTP server, with how often each arrived."""
    return Counter(str(m.message["Message-ID"]).strip().strip("<>") for m in received)


class Database:
    """Read-only questions about the mailbot database, for assertions."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def count(self, stmt: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def inbound_outcomes(self) -> dict[str, str]:
        """Message-ID -> outcome of every inbound row that has a Message-ID."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(messages.c.message_id, messages.c.outcome)
                                .where(messages.c.direction == "in")).all()
        return {r.message_id: r.outcome for r in rows if r.message_id}

    def inbound_rows(self) -> int:
        return self.count(select(func.count()).select_from(messages)
                          .where(messages.c.direction == "in"))

    def cases(self) -> int:
        return self.count(select(func.count()).select_from(cases))

    def outbox(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(messages.c.id, messages.c.case_id, messages.c.message_id,
                       messages.c.template, messages.c.recipients, messages.c.attempts,
                       messages.c.last_error, messages.c.sent_at, messages.c.outcome,
                       messages.c.next_attempt_at)
                .where(messages.c.direction == "out").order_by(messages.c.id)).all())

    def sent_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(
                select(messages.c.message_id).where(messages.c.direction == "out",
                                                    messages.c.sent_at.is_not(None))
            ).scalars())

    def unsent(self) -> int:
        return self.count(select(func.count()).select_from(messages)
                          .where(messages.c.direction == "out", messages.c.sent_at.is_(None)))

    def reminders(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(reminders)).all())


class TcpProxy:
    """A TCP relay between the worker and a real server, to cut the network under it.

    ``cut(seconds)`` drops every open connection (both ends see the socket close, the way a
    failover or a network blip looks to a client) and refuses new ones for ``seconds``:
    accepted and closed at once. Nothing is interpreted or changed on the way through.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._refuse_until = 0.0
        self._closed = False
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                _hang_up(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _hang_up(client)
                continue
            with self._lock:
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _hang_up(sock)
            with self._lock:
                self._open = [s for s in self._open if s not in (src, dst)]

    def cut(self, seconds: float) -> int:
        """Drop every connection now and refuse new ones for ``seconds``; how many dropped."""
        self._refuse_until = time.monotonic() + seconds
        with self._lock:
            dropped, self._open = self._open, []
        for sock in dropped:
            _hang_up(sock)
        self.cuts += 1
        return len(dropped) // 2

    def close(self) -> None:
        self._closed = True
        self.cut(0)
        self._listener.close()
        self._thread.join(timeout=2)


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
