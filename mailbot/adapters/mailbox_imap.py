"""The IMAP mailbox adapter (``imap://`` and ``imaps://``), built on IMAPClient.

Why it is shaped like this:

- **Few round trips.** The help desk measured in the design fetched one message per round trip
  and managed 25 messages/s. Here a pass is one SELECT, one ``UID SEARCH`` and one
  ``UID FETCH BODY.PEEK[]`` per ``batch_size`` (100) messages; moves are one ``UID MOVE`` per
  up to 500 messages, with the UIDs compressed into ranges. ``fetch_commands`` and
  ``move_commands`` count what was sent, so tests can hold us to it.
- **Nothing changes until the caller says so.** ``BODY.PEEK[]`` does not set ``\\Seen``.
- **Only ever move.** With MOVE (RFC 6851) the server moves atomically. Without it we
  ``UID COPY`` and then flag the original ``\\Seen`` and ``$MailbotProcessed``; every search
  excludes that keyword, so the original stays in the inbox (for a person to tidy) but is never
  fetched again. We never EXPUNGE. If the connection drops between COPY and STORE the retry
  copies again: a duplicate in Processed, never a loss.
- **UIDVALIDITY is part of every key**, and the folder is re-SELECTed at the start of every
  call, so a key from before the folder was deleted and recreated is recognised as stale and
  skipped with a warning, never applied to whichever new message now has that UID. (Dovecot
  keeps a session alive when its selected folder is deleted underneath it, and then answers
  with the *new* folder's UIDs: trusting the old SELECT would move the wrong message.)
- **Reconnect, bounded.** Any network failure (``OSError`` including timeouts and TLS errors,
  ``imaplib`` aborts, IMAP ``NO``/``BAD`` answers) drops the connection; the call reconnects
  and retries the whole operation (all operations are idempotent) with exponential backoff
  and jitter, and raises ``MailboxUnavailable`` after ``connect_attempts`` attempts. A login
  refusal (other than RFC 5530 ``[UNAVAILABLE]``) or a missing inbox folder is not retried:
  waiting does not fix a password.
- **New-mail signal.** ``wait_for_mail`` first checks for messages this adapter has not yet
  returned (so mail that arrived while the caller was busy is not left waiting a whole
  timeout), then IDLEs when the server offers IDLE, else polls with NOOP. An ``EXISTS``
  response means new mail may be waiting. IDLE is re-issued every 24 minutes (RFC 2177 asks
  for under 29).

One adapter object holds one connection and is not thread-safe; give each thread its own.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailbot.adapters.mailbox import (
    PROCESSED_FOLDER,
    QUARANTINE_FOLDER,
    MailboxUnavailable,
    RawMessage,
)
from mailbot.config import MailboxURL

log = logging.getLogger(__name__)

#: The logger IMAPClient sends imaplib's protocol trace to.
IMAPLIB_LOGGER = logging.getLogger("imapclient.imaplib")


def lazy_debug_log(client: IMAPClient) -> IMAPClient:
    """Stop imaplib formatting a protocol trace that nobody logs.

    IMAPClient sets its imaplib connection's ``debug`` to 5 and routes the trace to the
    ``imapclient.imaplib`` logger, which drops it unless that logger is enabled for DEBUG. But
    imaplib builds each trace line before it calls the logger: the ``repr`` of every fetched
    message, twice (once as it arrives, once with the whole batch). On a backlog that was a
    fifth of the worker's own time (benchmarks/README.md). When the logger would drop the
    lines anyway, the trace is switched off (``debug`` 0); with DEBUG logging on, it stays.
    Written here because IMAPClient has no setting for it: ``_imap`` is its imaplib object.
    """
    imap = getattr(client, "_imap", None)
    if imap is not None and not IMAPLIB_LOGGER.isEnabledFor(logging.DEBUG):
        imap.debug = 0
    return client

T = TypeVar("T")

#: Set (with ``\Seen``) on originals that were copied because the server has no MOVE.
PROCESSED_KEYWORD = "$MailbotProcessed"
#: The search for "still waiting": everything not already copied out.
WAITING = ["UNKEYWORD", PROCESSED_KEYWORD]
#: UIDs per MOVE/COPY command (as ranges, so the command line stays short).
MOVE_BATCH = 500
#: Re-issue IDLE after this long; RFC 2177 says servers may drop clients idle for 30 minutes.
IDLE_RENEW = 24 * 60.0

#: Failures that mean "the connection or the server is in trouble": drop it and retry.
#: imaplib.IMAP4.error covers NO/BAD answers and imaplib.IMAP4.abort; OSError covers refused
#: connections, resets, timeouts (socket.timeout) and TLS errors (ssl.SSLError).
RETRYABLE: tuple[type[BaseException], ...] = (OSError, EOFError, imaplib.IMAP4.error)

_KEY_TAIL = re.compile(r"([0-9]+);UID=([0-9]+)")


class _Retry(imaplib.IMAP4.abort):
    """A failure worth retrying that imaplib does not raise itself (EOF during IDLE, BYE,
    a login refused only for now)."""


def _uid_ranges(uids: Sequence[int]) -> list[str]:
    """Compress sorted UIDs into IMAP sequence-set parts: [1, 2, 3, 7] -> ["1:3", "7"]."""
    parts: list[str] = []
    start = prev = None
    for uid in uids:
        if start is None:
            start = prev = uid
        elif prev is not None and uid == prev + 1:
            prev = uid
        else:
            parts.append(f"{start}:{prev}" if start != prev else f"{start}")
            start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if start != prev else f"{start}")
    return parts


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _signals_new_mail(responses: Sequence[Any]) -> bool:
    """True when unsolicited responses include ``* n EXISTS`` (or ``RECENT``)."""
    return any(
        isinstance(r, tuple) and len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses
    )


def _says_bye(responses: Sequence[Any]) -> bool:
    return any(isinstance(r, tuple) and r and r[0] == b"BYE" for r in responses)


class ImapMailbox:
    """One IMAP folder as the inbox, with sibling folders for processed and quarantined mail.

    ``processed_folder`` and ``quarantine_folder`` are full folder names on the server
    (default ``Processed`` and ``Quarantine`` at the top level); they are created and
    subscribed when missing. ``use_move``/``use_idle`` = None means "use it if the server
    offers it"; False forces the fallback (COPY and flag; NOOP polling every
    ``poll_interval`` seconds).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        folder: str = "INBOX",
        *,
        tls: bool = False,
        starttls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        processed_folder: str = PROCESSED_FOLDER,
        quarantine_folder: str = QUARANTINE_FOLDER,
        use_move: bool | None = None,
        use_idle: bool | None = None,
        batch_size: int = 100,
        timeout: float = 60.0,
        connect_attempts: int = 6,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        poll_interval: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if connect_attempts < 1:
            raise ValueError("connect_attempts must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.folder = folder
        self.processed_folder = processed_folder
        self.quarantine_folder = quarantine_folder
        self._tls = tls
        self._starttls = starttls
        self._ssl_context = ssl_context
        self._use_move = use_move
        self._use_idle = use_idle
        self.batch_size = batch_size
        self.timeout = timeout
        self.connect_attempts = connect_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self._sleep = sleep

        self._client: Any = None  # IMAPClient, untyped
        self._can_move = False
        self._can_idle = False
        self._folders_ready: set[str] = set()
        # The newest message handed to the caller: (UIDVALIDITY, UID); see wait_for_mail.
        self._seen: tuple[int, int] | None = None

        # Counters for tests and diagnostics (never reset).
        self.fetch_commands = 0
        self.move_commands = 0
        self.connects = 0

        self.where = f"imap{'s' if tls else ''}://{host}:{port}"
        self._key_prefix = (
            f"imap://{quote(username, safe='')}@{host.lower()}:{port}/"
            f"{quote(folder, safe='/')};UIDVALIDITY="
        )

    @classmethod
    def from_url(cls, url: MailboxURL, **options: Any) -> ImapMailbox:
        if url.scheme not in ("imap", "imaps"):
            raise ValueError(f"not an IMAP mailbox URL: scheme {url.scheme!r}")
        return cls(
            url.host,
            url.port or (993 if url.scheme == "imaps" else 143),
            url.username,
            url.password,
            url.folder or "INBOX",
            tls=url.scheme == "imaps",
            **options,
        )

    def __repr__(self) -> str:
        return f"ImapMailbox({self.username}@{self.where}/{self.folder})"

    def __enter__(self) -> ImapMailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys ----------------------------------------------------------------------------

    def _key(self, uidvalidity: int, uid: int) -> str:
        return f"{self._key_prefix}{uidvalidity};UID={uid}"

    def _parse_key(self, key: str) -> tuple[int, int]:
        """(UIDVALIDITY, UID) of one of our keys; ValueError for anybody else's."""
        if not isinstance(key, str) or not key.startswith(self._key_prefix):
            raise ValueError(f"{key!r} is not a message of this mailbox ({self._key_prefix}...)")
        match = _KEY_TAIL.fullmatch(key[len(self._key_prefix) :])
        if not match:
            raise ValueError(f"{key!r} is not a valid IMAP message key")
        return int(match.group(1)), int(match.group(2))

    # -- connection ----------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and log in now (with the usual retries), instead of at the first call."""
        self._call("connect", lambda client: None)

    def _open(self) -> Any:
        """A new, logged-in connection; raises MailboxUnavailable for non-retryable causes."""
        context = self._ssl_context
        if context is None and (self._tls or self._starttls):
            context = ssl.create_default_context()  # verifies the certificate and host name
        try:
            client = lazy_debug_log(IMAPClient(
                self.host, self.port, ssl=self._tls, ssl_context=context, timeout=self.timeout
            ))
            try:
                capabilities = self._login(client, context)
            except BaseException:
                self._shutdown(client)
                raise
        except ssl.SSLCertVerificationError as exc:
            raise MailboxUnavailable(
                f"{self.where}: the server's TLS certificate was refused ({exc.verify_message})"
            ) from None
        self._can_move = (b"MOVE" in capabilities) if self._use_move is None else self._use_move
        self._can_idle = (b"IDLE" in capabilities) if self._use_idle is None else self._use_idle
        self._folders_ready = set()
        self.connects += 1
        log.debug("connected to %s as %s", self.where, self.username)
        return client

    def _login(self, client: Any, context: ssl.SSLContext | None) -> set[bytes]:
        """STARTTLS when asked for, LOGIN, and the capabilities the server then announces."""
        if self._starttls:
            if not client.has_capability("STARTTLS"):
                raise MailboxUnavailable(f"{self.where}: the server does not offer STARTTLS")
            client.starttls(context)
        try:
            client.login(self.username, self._password)
        except LoginError as exc:
            reason = self._scrub(str(exc))
            if "[UNAVAILABLE]" in reason.upper():  # RFC 5530: the auth back end is down
                raise _Retry(f"login temporarily refused: {reason}") from None
            raise MailboxUnavailable(
                f"{self.where}: login as {self.username!r} refused ({reason}); "
                "check the user name and password in MAILBOT_MAILBOX_URL"
            ) from None
        return set(client.capabilities())

    def _scrub(self, text: str) -> str:
        """Server text, made safe to show: never echo the password, whatever the server says."""
        text = text.strip()
        if text.startswith(("b'", 'b"')):  # IMAPClient puts the bytes repr in its messages
            text = text[2:-1]
        if self._password:
            text = text.replace(self._password, "***")
        return text

    @staticmethod
    def _shutdown(client: Any) -> None:
        with contextlib.suppress(Exception):  # already gone
            client.shutdown()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._shutdown(client)

    def close(self) -> None:
        """Log out. The object stays usable: the next call connects again."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            self._shutdown(client)

    def _backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1, 2, ...): doubling, capped, jittered."""
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def _call(self, what: str, operation: Callable[[Any], T]) -> T:
        """Run ``operation(client)``, reconnecting and retrying on network failures.

        A failure on a connection left over from an earlier call is retried at once (the
        server may simply have restarted since); later retries back off.
        """
        last: BaseException | None = None
        fresh_failures = 0
        for attempt in range(self.connect_attempts):
            if fresh_failures:
                self._sleep(self._backoff(fresh_failures))
            reused = self._client is not None
            try:
                if self._client is None:
                    self._client = self._open()
                return operation(self._client)
            except MailboxUnavailable:
                self._drop()
                raise
            except RETRYABLE as exc:
                self._drop()
                last = exc
                fresh_failures += 0 if reused else 1
                log.warning(
                    "%s on %s failed (attempt %d of %d): %s",
                    what,
                    self.where,
                    attempt + 1,
                    self.connect_attempts,
                    self._scrub(str(exc)) or type(exc).__name__,
                )
            except BaseException:
                # A bug or KeyboardInterrupt, maybe mid-IDLE: the session state is unknown,
                # so the next call starts on a new connection.
                self._drop()
                raise
        reason = self._scrub(str(last)) or type(last).__name__
        raise MailboxUnavailable(
            f"{self.where}: {what} failed after {self.connect_attempts} attempts ({reason})"
        ) from last

    def _select(self, client: Any) -> int:
        """SELECT the inbox folder (every call: see the module docstring); its UIDVALIDITY."""
        try:
            info = client.select_folder(self.folder)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            if not client.folder_exists(self.folder):
                raise MailboxUnavailable(
                    f"{self.where}: folder {self.folder!r} does not exist for {self.username!r}"
                ) from None
            raise
        validity = info.get(b"UIDVALIDITY")
        if not isinstance(validity, int):
            raise MailboxUnavailable(f"{self.where}: SELECT {self.folder!r} gave no UIDVALIDITY")
        return validity

    def _ensure_folder(self, client: Any, folder: str) -> None:
        """Create (and subscribe) ``folder`` when missing; another worker may race us."""
        if folder in self._folders_ready:
            return
        if not client.folder_exists(folder):
            try:
                client.create_folder(folder)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                if not client.folder_exists(folder):
                    raise
            else:
                log.info("created folder %r on %s", folder, self.where)
            try:
                client.subscribe_folder(folder)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:  # only cosmetic: mail clients list it
                log.debug("could not subscribe to %r: %s", folder, exc)
        self._folders_ready.add(folder)

    # -- the port ------------------------------------------------------------------------

    def fetch_waiting(self, limit: int = 500, skip: Collection[str] = ()) -> list[RawMessage]:
        """Every message still waiting, oldest first (by UID: order of arrival in the folder).

        One SELECT, one UID SEARCH and one UID FETCH BODY.PEEK[] per ``batch_size``
        messages. A message moved away by someone else between SEARCH and FETCH is skipped.
        IMAP delivers lines with CRLF endings: ``data`` is exactly what the server serves.
        """
        if limit <= 0:
            return []

        def operation(client: Any) -> list[RawMessage]:
            validity = self._select(client)
            uids = sorted(uid for uid in client.search(WAITING)
                          if not skip or self._key(validity, uid) not in skip)[:limit]
            messages: list[RawMessage] = []
            for chunk in _chunks(uids, self.batch_size):
                self.fetch_commands += 1
                response = client.fetch(list(chunk), ["BODY.PEEK[]"])
                for uid in chunk:
                    data = response.get(uid, {}).get(b"BODY[]")
                    if data is not None:
                        messages.append(RawMessage(self._key(validity, uid), bytes(data)))
            self._note_seen(validity, uids)
            return messages

        return self._call("fetch", operation)

    def _note_seen(self, validity: int, uids: Sequence[int]) -> None:
        newest = max(uids, default=0)
        if self._seen is not None and self._seen[0] == validity:
            newest = max(newest, self._seen[1])
        self._seen = (validity, newest)

    def mark_processed(self, keys: Sequence[str]) -> None:
        self._move(keys, self.processed_folder)

    def quarantine(self, keys: Sequence[str]) -> None:
        self._move(keys, self.quarantine_folder)

    def _move(self, keys: Sequence[str], target: str) -> None:
        parsed = [(key, *self._parse_key(key)) for key in keys]  # ValueError before any I/O
        if not parsed:
            return

        def operation(client: Any) -> None:
            validity = self._select(client)
            stale = [key for key, v, _ in parsed if v != validity]
            if stale:
                log.warning(
                    "not moving %d message(s) to %s: %s %s was recreated (UIDVALIDITY now %d), "
                    "so their keys no longer name the same messages: %s",
                    len(stale),
                    target,
                    self.where,
                    self.folder,
                    validity,
                    ", ".join(stale),
                )
            uids = sorted({uid for _, v, uid in parsed if v == validity})
            if not uids:
                return
            self._ensure_folder(client, target)
            for chunk in _chunks(uids, MOVE_BATCH):
                self.move_commands += 1
                if self._can_move:
                    client.move(_uid_ranges(chunk), target)
                    continue
                # COPY fallback: skip what an interrupted earlier attempt already copied.
                pending = sorted(client.search(["UID", ",".join(_uid_ranges(chunk)), *WAITING]))
                if pending:
                    client.copy(_uid_ranges(pending), target)
                    client.add_flags(
                        _uid_ranges(pending), [b"\\Seen", PROCESSED_KEYWORD], silent=True
                    )

        self._call(f"move to {target}", operation)

    def wait_for_mail(self, timeout: float) -> bool:
        """Block until new mail may be waiting (True) or ``timeout`` seconds pass (False).

        Returns True at once when the folder holds messages this adapter has not returned
        from ``fetch_waiting`` yet (arrived while the caller was busy, or beyond ``limit``).
        Messages already returned but not moved do not count, so a message that cannot be
        moved does not make the caller spin. A dropped connection is re-established within
        the call (and the check repeated), so nothing that arrived meanwhile is missed.
        """
        deadline = time.monotonic() + max(0.0, timeout)

        def operation(client: Any) -> bool:
            validity = self._select(client)
            if self._has_unreturned(client, validity):
                return True
            if self._can_idle:
                return self._idle(client, deadline)
            return self._poll(client, deadline)

        return self._call("wait for mail", operation)

    def _has_unreturned(self, client: Any, validity: int) -> bool:
        uids = client.search(WAITING)
        if self._seen is None or self._seen[0] != validity:
            return bool(uids)
        return any(uid > self._seen[1] for uid in uids)

    def _idle(self, client: Any, deadline: float) -> bool:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            session_end = time.monotonic() + min(remaining, IDLE_RENEW)
            client.idle()
            signalled = False
            while not signalled:
                step = session_end - time.monotonic()
                if step <= 0:
                    break
                started = time.monotonic()
                responses = client.idle_check(timeout=step)
                if _says_bye(responses):
                    raise _Retry("the server said BYE during IDLE")
                signalled = _signals_new_mail(responses)
                # idle_check swallows EOF and returns nothing early: the server has gone.
                if not responses and time.monotonic() - started < step - 0.05:
                    raise _Retry("the connection closed during IDLE")
            _, responses = client.idle_done()
            if signalled or _signals_new_mail(responses):
                return True

    def _poll(self, client: Any, deadline: float) -> bool:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sleep(min(self.poll_interval, remaining))
            _, responses = client.noop()
            if _signals_new_mail(responses):
                return True
