"""The mailbox port: where raw mail comes from, and where it goes once it has been dealt with.

The worker only ever sees this module's types. Two adapters implement the port:

- :class:`mailbot.adapters.mailbox_imap.ImapMailbox` for ``imap://`` and ``imaps://`` URLs
  (production: the team's shared mailbox on the council's mail server);
- :class:`mailbot.adapters.mailbox_maildir.MaildirMailbox` for ``maildir://`` URLs (the
  embedded default, demos and tests).

The contract both keep (data flow steps 1 and 9 of the design):

- ``fetch_waiting`` returns every message still in the inbox, oldest first, as the exact stored
  bytes with a stable ``key``; fetching changes nothing (no ``\\Seen``), so a crash before the
  caller's transaction commits loses nothing.
- ``mark_processed`` and ``quarantine`` move messages out of the inbox, and only ever move:
  nothing is deleted, and a key that no longer names the same message (IMAP UIDVALIDITY
  changed, the file is gone) is skipped with a warning instead of moving something else.
- ``MailboxUnavailable`` means "the mailbox cannot be reached or used right now" (server down
  after bounded retries, login refused, folder missing); the worker exits non-zero or retries.
  It never means "this message is bad": bad messages are the caller's to quarantine.
- ``ValueError`` means a key from another mailbox was passed in: a programming error, refused
  before anything is touched.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mailbot.config import MailboxURL

PROCESSED_FOLDER = "Processed"
QUARANTINE_FOLDER = "Quarantine"


@dataclass(frozen=True)
class RawMessage:
    """One message as stored in the mailbox.

    ``key`` identifies the stored copy, not the message: IMAP
    ``imap://user@host:port/FOLDER;UIDVALIDITY=v;UID=u`` (RFC 5092 style, user and folder
    percent-encoded), Maildir ``maildir:/abs/path;KEY=<maildir key>``. The same message
    delivered twice has two keys; the caller de-duplicates by Message-ID and content.
    """

    key: str
    data: bytes

    def __repr__(self) -> str:  # the bytes can be megabytes; keep logs and tracebacks short
        return f"RawMessage(key={self.key!r}, data=<{len(self.data)} bytes>)"


class MailboxUnavailable(Exception):
    """The mailbox cannot be reached or used now; the message never contains a password."""


class Mailbox(Protocol):
    """Where the worker gets mail from and moves it to (see the module docstring)."""

    def fetch_waiting(
        self, limit: int = 500, skip: Collection[str] = ()
    ) -> list[RawMessage]:
        """Every message still in the inbox folder, oldest first, at most ``limit``, leaving
        out the keys in ``skip`` (a batch fetched already and not yet moved)."""
        ...

    def mark_processed(self, keys: Sequence[str]) -> None:
        """Move these messages to the "Processed" folder (created when missing)."""
        ...

    def quarantine(self, keys: Sequence[str]) -> None:
        """Move these messages to the "Quarantine" folder (created when missing)."""
        ...

    def wait_for_mail(self, timeout: float) -> bool:
        """Block until new mail may be waiting (True) or ``timeout`` seconds pass (False)."""
        ...

    def close(self) -> None:
        """Release the connection; safe to call twice."""
        ...


def open_mailbox(url: MailboxURL, **options: Any) -> Mailbox:
    """The adapter for ``url``; an IMAP mailbox is connected (and logged in) straight away.

    Connecting eagerly makes a wrong host or password fail at start-up, with
    ``MailboxUnavailable``, rather than at the first fetch. ``options`` go to the adapter's
    constructor (retry and backoff settings, folder names, ``use_move``/``use_idle``).
    """
    if url.scheme in ("imap", "imaps"):
        from mailbot.adapters.mailbox_imap import ImapMailbox

        imap = ImapMailbox.from_url(url, **options)
        imap.connect()
        return imap
    if url.scheme == "maildir":
        from mailbot.adapters.mailbox_maildir import MaildirMailbox

        if url.path is None:
            raise MailboxUnavailable("maildir mailbox URL without a path")
        return MaildirMailbox(url.path, **options)
    raise MailboxUnavailable(f"unsupported mailbox scheme {url.scheme!r}")
