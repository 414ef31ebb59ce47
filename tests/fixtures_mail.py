"""Pytest fixtures for mailbox tests: a real Dovecot, fresh IMAP accounts, Maildirs.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ["tests.fixtures_mail"]``
(or, for a one-off run, ``pytest -p tests.fixtures_mail``).

- ``dovecot`` (session): one server for the whole run; skipped with a reason when Dovecot is not
  installed. Tests never see each other's mail because each takes a fresh user.
- ``fresh_dovecot`` (function): a server of the test's own, for tests that stop and start it,
  so a failing fault test cannot leave the shared server down.
- ``imap_account`` (function): a fresh user (empty mailbox) on the shared server; ``.url``,
  ``.deliver(raw)``, ``.deliver_many(raws)``, ``.client()`` for a second connection.
- ``imap_mailbox`` (function): an ``ImapMailbox`` on that account's INBOX with small, fast
  retry settings; closed afterwards.
- ``maildir_mailbox`` (function): a ``MaildirMailbox`` in ``tmp_path / "inbox"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbot.adapters.mailbox_imap import ImapMailbox
from mailbot.adapters.mailbox_maildir import MaildirMailbox
from tests.dovecot import Account, DovecotServer, dovecot_available

#: Retry settings for tests: three attempts within about a quarter of a second.
FAST_RETRY: dict[str, Any] = {
    "connect_attempts": 3,
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "timeout": 10,
}


def _started_server() -> DovecotServer:
    reason = dovecot_available()
    if reason:
        pytest.skip(reason)
    server = DovecotServer()
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """The shared Dovecot for this test session (stopped and removed at the end)."""
    server = _started_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fresh_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot for one test only: free to stop, start and restart."""
    server = _started_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_account(dovecot: DovecotServer) -> Account:
    """A new user with an empty mailbox on the shared server."""
    dovecot.start()  # a no-op unless an earlier test left it stopped
    return dovecot.add_user()


@pytest.fixture
def imap_mailbox(imap_account: Account) -> Iterator[ImapMailbox]:
    """The adapter on ``imap_account``'s INBOX, retrying fast."""
    server = imap_account.server
    mailbox = ImapMailbox(
        server.host, server.port, imap_account.user, imap_account.password, **FAST_RETRY
    )
    try:
        yield mailbox
    finally:
        mailbox.close()


@pytest.fixture
def maildir_mailbox(tmp_path: Path) -> Iterator[MaildirMailbox]:
    """The Maildir adapter on a new Maildir at ``tmp_path / "inbox"``."""
    mailbox = MaildirMailbox(tmp_path / "inbox")
    try:
        yield mailbox
    finally:
        mailbox.close()
