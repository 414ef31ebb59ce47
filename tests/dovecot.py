"""A real Dovecot IMAP server for tests, on a free loopback port, in a temporary directory.

Why a real server: the mailbox adapter's job is to get IMAP right (UID SEARCH/FETCH batching,
MOVE, IDLE, UIDVALIDITY, reconnects), and a fake server would only test our own idea of IMAP.

The server is started with a minimal, standalone configuration (no system ``dovecot.conf``
include), so it neither needs nor touches the machine's mail set-up. Facts about Dovecot 2.3
that shaped this module:

- It refuses uid 0 for mail users, so mail is stored as ``nobody`` when the tests run as root
  (and as the current user otherwise).
- Its mail user must be able to traverse every directory above the mail store: a ``0700``
  temporary directory (which is what ``tempfile.mkdtemp`` and pytest's ``tmp_path`` give)
  makes every login fail, so the base directory is made ``0755`` (and created under /tmp when
  TMPDIR is private).
- ``dovecot -c CONF`` daemonises; the master's PID is read from ``BASE/run/master.pid``.
  After stopping, the old master must be gone before a new one can bind the same port and
  base dir.
- The imap processes serving logged-in clients outlive a SIGTERMed master and go on serving
  their connections, so "stopping the server" would not disconnect anybody. ``stop()``
  therefore signals the master's whole process group (the daemonised master leads its own)
  and waits until every member has gone.
- Each user has a ``passwd-file`` of its own (``users/%u``): Dovecot checks a shared file for
  changes at most once a second, so a user added to it just after a login is refused for up
  to a second. With a file per user, tests add a fresh user (so a fresh, empty mailbox) at any
  time without a restart or a wait.
- Every failed login from an address makes Dovecot delay the next logins from it ("auth
  penalty", up to 15 s), which would slow every test after a bad-login test: switched off by
  closing the ``anvil-auth-penalty`` socket (``mode = 0``). A failed login still takes 0.5 s.

Only processes started here are ever signalled: the process group led by the master whose PID
Dovecot wrote, and only when that group is not the test runner's own.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from imapclient import IMAPClient

_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")

DOVECOT = Path(os.environ.get("MAILBOT_TEST_DOVECOT", "/usr/sbin/dovecot"))
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


class DovecotError(RuntimeError):
    """Dovecot could not be started or stopped; the message carries the end of its log."""


def dovecot_available() -> str | None:
    """Return why Dovecot cannot be used here, or None when it can."""
    if not DOVECOT.is_file() or not os.access(DOVECOT, os.X_OK):
        return f"Dovecot is not installed ({DOVECOT} missing; apt-get install dovecot-imapd)"
    libexec = Path("/usr/lib/dovecot/imap")
    if not libexec.is_file():
        return f"Dovecot's IMAP service is not installed ({libexec} missing; dovecot-imapd)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie still answers kill(0); treat it as gone when /proc says so.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _group_alive(pgid: int) -> bool:
    """True while a process (other than a zombie) is left in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False  # cannot tell; the master's exit has to do
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _traversable_by_others(path: Path) -> bool:
    """Can a process of another user reach ``path`` (search permission on every ancestor)?"""
    for directory in (path, *path.parents):
        try:
            if not directory.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _make_base_dir() -> str:
    """A new temporary directory the mail user (``nobody`` under root) can get into.

    Under root the mail processes run as ``nobody``, so the directory's ancestors must be
    searchable by others; a private TMPDIR (some CI runners set one) is not, then /tmp is used.
    """
    candidates: list[str | None] = [None]
    if os.geteuid() == 0:
        candidates.append("/tmp")
    for parent in candidates:
        base = tempfile.mkdtemp(prefix="mailbot-dovecot-", dir=parent)
        if os.geteuid() != 0 or _traversable_by_others(Path(base).parent):
            return base
        os.rmdir(base)
    raise DovecotError(
        f"no temporary directory that user 'nobody' can reach ({tempfile.gettempdir()} and "
        "/tmp are not searchable by others); set TMPDIR to one that is"
    )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class Account:
    """One mail user on the test server."""

    server: DovecotServer
    user: str
    password: str

    @property
    def url(self) -> str:
        return self.server.url(self.user)

    def folder_url(self, folder: str) -> str:
        return self.server.url(self.user, folder)

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        self.server.deliver(self.user, raw, folder)

    def deliver_many(self, messages: Iterable[bytes], folder: str = "INBOX") -> None:
        self.server.deliver_many(self.user, messages, folder)

    def client(self, folder: str | None = None) -> IMAPClient:
        return self.server.client(self.user, folder)


class DovecotServer:
    """A Dovecot instance of our own: ``start()``, ``stop()``, ``restart()``, users, delivery.

    Ports and directories are chosen once, so a restarted server is reachable at the same URL
    and keeps its mail (that is what the reconnect tests need).
    """

    host = "127.0.0.1"

    def __init__(self, base: Path | None = None) -> None:
        self._own_base = base is None
        self.base = Path(base or _make_base_dir()).resolve()
        self.base.chmod(0o755)
        self.run_dir = self.base / "run"
        self.state_dir = self.base / "state"
        self.mail_dir = self.base / "mail"
        self.users_dir = self.base / "users"
        self.log_path = self.base / "dovecot.log"
        self.config_path = self.base / "dovecot.conf"
        self.port = free_port()
        self._passwords: dict[str, str] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._pid: int | None = None
        self._started_once = False
        self._setup_identity()
        for path in (self.state_dir, self.mail_dir, self.users_dir):
            path.mkdir(mode=0o755, exist_ok=True)
            path.chmod(0o755)
        os.chown(self.mail_dir, self._mail_uid, self._mail_gid)
        self._write_config()

    # -- configuration -------------------------------------------------------------------

    def _setup_identity(self) -> None:
        """Pick the system users Dovecot runs as; root needs unprivileged ones for mail."""
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._mail_uid, self._mail_gid = nobody.pw_uid, nobody.pw_gid
            self._internal_user = "dovecot" if _user_exists("dovecot") else "nobody"
            self._login_user = "dovenull" if _user_exists("dovenull") else "nobody"
        else:
            me = pwd.getpwuid(os.geteuid())
            self._mail_uid, self._mail_gid = me.pw_uid, me.pw_gid
            self._internal_user = self._login_user = me.pw_name
        self._internal_group = _group_of(self._internal_user)

    def _write_config(self) -> None:
        text = f"""\
# Generated by tests/dovecot.py: a throwaway Dovecot for mailbot's tests.
# No chroot for anvil and imap-login: chroot needs root, and tests may run without it.
protocols = imap
listen = {self.host}
base_dir = {self.run_dir}
state_dir = {self.state_dir}
instance_name = mailbot-test-{self.port}
log_path = {self.log_path}
info_log_path = {self.log_path}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{self.mail_dir}/%u
mail_uid = {self._mail_uid}
mail_gid = {self._mail_gid}
first_valid_uid = {min(self._mail_uid, 500)}
first_valid_gid = {min(self._mail_gid, 500)}
default_internal_user = {self._internal_user}
default_internal_group = {self._internal_group}
default_login_user = {self._login_user}
shutdown_clients = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.users_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = {self.users_dir}/%u
  default_fields = uid={self._mail_uid} gid={self._mail_gid}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  # Without this, every failed login from 127.0.0.1 makes the next logins wait up to
  # 15 s (Dovecot's auth penalty), which would slow every test after a bad-login test.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        self.config_path.write_text(text)

    def _write_user(self, user: str, password: str) -> None:
        """Write the user's own passwd-file, atomically, so Dovecot never reads half of it.

        One file per user (``users/%u`` in the config), because Dovecot checks a passwd-file
        for changes at most once a second: a user appended to a shared file just after a
        login would be unknown for up to a second. A new file is read on first use.
        """
        if not _USER_NAME.fullmatch(user):
            raise ValueError(f"test user names are letters, digits, '.', '_', '-': {user!r}")
        if ":" in password or "\n" in password:
            raise ValueError("a test password cannot contain ':' or a line break")
        tmp = self.users_dir / f".{user}.tmp"
        tmp.write_text(f"{user}:{{PLAIN}}{password}::::::\n")
        tmp.chmod(0o644)
        os.replace(tmp, self.users_dir / user)

    # -- users and mail ------------------------------------------------------------------

    def add_user(self, user: str | None = None, password: str | None = None) -> Account:
        """Create a user with an empty mailbox; by default a fresh name and password."""
        with self._lock:
            if user is not None and user in self._passwords:
                raise ValueError(f"user {user!r} exists already (its mailbox would be shared)")
            user = user or f"user{next(self._counter)}"
            password = password or secrets.token_urlsafe(12)
            self._write_user(user, password)
            self._passwords[user] = password
        return Account(self, user, password)

    def password(self, user: str) -> str:
        return self._passwords[user]

    def url(self, user: str, folder: str = "INBOX") -> str:
        return (
            f"imap://{quote(user, safe='')}:{quote(self._passwords[user], safe='')}"
            f"@{self.host}:{self.port}/{quote(folder, safe='')}"
        )

    def client(self, user: str, folder: str | None = None) -> IMAPClient:
        """A logged-in IMAPClient for ``user`` (the test's "other connection")."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=10)
        try:
            client.login(user, self._passwords[user])
            if folder is not None:
                if not client.folder_exists(folder):
                    client.create_folder(folder)
                client.select_folder(folder)
        except BaseException:
            _Closer(client).close()
            raise
        return client

    def deliver(self, user: str, raw: bytes, folder: str = "INBOX") -> None:
        """Put one message into ``folder`` with IMAP APPEND (created when missing)."""
        self.deliver_many(user, [raw], folder)

    def deliver_many(self, user: str, messages: Iterable[bytes], folder: str = "INBOX") -> None:
        """APPEND several messages over one connection, in order."""
        with contextlib.closing(_Closer(self.client(user))) as closer:
            client = closer.client
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            batch = list(messages)
            if client.has_capability("MULTIAPPEND"):  # one round trip per 100, in order
                for start in range(0, len(batch), 100):
                    client.multiappend(folder, batch[start : start + 100])
            else:
                for raw in batch:
                    client.append(folder, raw)

    # -- process control -----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._pid

    def _read_pid(self) -> int | None:
        try:
            return int((self.run_dir / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _log_since(self, offset: int) -> bytes:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read()
        except OSError:
            return b""

    def accepts_connections(self) -> bool:
        """True when the IMAP port answers with a greeting."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.settimeout(2)
                return sock.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def start(self) -> None:
        """Start the master and wait until the port greets; a no-op when already running."""
        if self._pid is not None and _pid_alive(self._pid):
            return
        # A port taken between free_port() and the first start: choose another and retry.
        # (After the first start the port is fixed: clients hold URLs with it.)
        for attempt in range(3):
            error = self._start_once()
            if error is None:
                self._started_once = True
                _register(self)
                return
            self._kill_and_wait()
            if "in use" in error and not self._started_once and attempt < 2:
                self.port = free_port()
                self._write_config()
                continue
            raise DovecotError(f"Dovecot did not start on port {self.port}:\n{error}")

    def _start_once(self) -> str | None:
        """Run ``dovecot -c CONF`` and wait for the greeting; None, or what went wrong."""
        # Output goes to a file, not a pipe: the daemonised master inherits the
        # descriptors, and a pipe would never reach EOF while it runs.
        out_path = self.base / "start.out"
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with out_path.open("wb") as out:
            proc = subprocess.run(
                [str(DOVECOT), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=START_TIMEOUT,
                check=False,
            )
        if proc.returncode != 0:
            output = out_path.read_text(errors="replace").strip()
            return f"dovecot exited with {proc.returncode}: {output}\n{self.log_tail()}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._pid = self._pid or self._read_pid()
            if self._pid is not None and self.accepts_connections():
                return None
            if self._pid is not None and not _pid_alive(self._pid):
                break
            if b"Fatal:" in self._log_since(log_start):  # a service cannot start
                break
            time.sleep(0.05)
        return self.log_tail()

    def stop(self) -> None:
        """Stop the master (and its client processes) and wait until it has exited."""
        self._kill_and_wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _kill_and_wait(self) -> None:
        """SIGTERM the master's process group, wait for every member, SIGKILL stragglers.

        Not just the master: Dovecot 2.3's imap processes outlive a SIGTERMed master and
        keep serving their connections (``shutdown_clients`` notwithstanding), so a client
        would never notice the "outage". The daemonised master leads a session and process
        group of its own, which all its children share; only that group is signalled, and
        only when it is the master's own (never the test runner's).
        """
        pid = self._pid or self._read_pid()
        self._pid = None
        if pid is None:
            return
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            group = None
        own_group = group == pid and group != os.getpgid(0)

        def signal_all(signum: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                if own_group:
                    os.killpg(pid, signum)
                else:
                    os.kill(pid, signum)

        signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _pid_alive(pid) or (own_group and _group_alive(pid)):
            if time.monotonic() > deadline:
                signal_all(signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
            time.sleep(0.02)
        # The master removes its pid file on a clean exit; after SIGKILL it would not.
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "master.pid").unlink()

    def close(self) -> None:
        """Stop the server and remove its directory (when we created it)."""
        self.stop()
        _unregister(self)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _group_of(user: str) -> str:
    import grp

    gid = pwd.getpwnam(user).pw_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class _Closer:
    """Log out of an IMAPClient on close, ignoring a connection that is already gone."""

    def __init__(self, client: IMAPClient) -> None:
        self.client = client

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                self.client.shutdown()


# Servers still running when the interpreter exits (a crashed session, a KeyboardInterrupt)
# are stopped here, so no Dovecot outlives the test run.
_RUNNING: set[DovecotServer] = set()
_RUNNING_LOCK = threading.Lock()


def _register(server: DovecotServer) -> None:
    with _RUNNING_LOCK:
        _RUNNING.add(server)


def _unregister(server: DovecotServer) -> None:
    with _RUNNING_LOCK:
        _RUNNING.discard(server)


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        servers = list(_RUNNING)
        _RUNNING.clear()
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


@contextlib.contextmanager
def running_dovecot() -> Iterator[DovecotServer]:
    """Start a server for the duration of a ``with`` block."""
    server = DovecotServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
