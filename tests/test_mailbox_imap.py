"""The IMAP mailbox adapter against a real Dovecot (see tests/dovecot.py).

Each test takes a fresh user, so mailboxes start empty and tests do not see each other's mail.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailbot.adapters.mailbox import MailboxUnavailable, RawMessage, open_mailbox
from mailbot.adapters.mailbox_imap import PROCESSED_KEYWORD, ImapMailbox, _uid_ranges
from mailbot.config import parse_mailbox_url
from tests.dovecot import Account, DovecotServer, free_port
from tests.fixtures_mail import FAST_RETRY

KEY = re.compile(r"imap://(?P<user>[^@]+)@127\.0\.0\.1:\d+/INBOX;UIDVALIDITY=(\d+);UID=(\d+)")


def message(n: int, body: str = "") -> bytes:
    """A small RFC 822 message with CRLF line ends (what IMAP serves back)."""
    text = (
        f"From: Resident {n} <resident{n}@example.org>\r\n"
        f"To: care.quality@council.example\r\n"
        f"Subject: Message {n}\r\n"
        f"Message-ID: <msg{n}@example.org>\r\n"
        f"Date: Mon, 3 Nov 2025 09:{n % 60:02d}:00 +0000\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n"
        f"\r\n"
        f"Body of message {n}.\r\n{body}"
    )
    return text.encode("utf-8")


def folder_contents(account: Account, folder: str) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """(bytes, flags) of every message in ``folder``, in UID order, without changing flags."""
    client = account.client()
    try:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = sorted(client.search("ALL"))
        if not uids:
            return []
        data = client.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
        return [(data[u][b"BODY[]"], data[u][b"FLAGS"]) for u in uids]
    finally:
        client.logout()


@contextlib.contextmanager
def later(delay: float, action: Callable[[], Any]) -> Iterator[None]:
    """Run ``action`` in a thread after ``delay`` seconds, while the block runs."""

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=10)


def bodies(messages: list[RawMessage]) -> list[bytes]:
    return [m.data for m in messages]


# -- fetching -----------------------------------------------------------------------------


def test_fetch_returns_exact_bytes_oldest_first_and_leaves_them_unseen(
    imap_account: Account, imap_mailbox: ImapMailbox
) -> None:
    sent = [
        message(1),
        message(2, body="Non-ASCII: Mum’s carer, café, £20 – “quoted”\r\n" + "x" * 2000 + "\r\n"),
        message(3),
    ]
    imap_account.deliver_many(sent)

    first = imap_mailbox.fetch_waiting()

    assert bodies(first) == sent
    uids = []
    for raw in first:
        match = KEY.fullmatch(raw.key)
        assert match, raw.key
        assert match.group("user") == imap_account.user
        uids.append(int(match.group(3)))
    assert uids == sorted(uids)
    assert all(b"\\Seen" not in flags for _, flags in folder_contents(imap_account, "INBOX"))
    assert imap_mailbox.fetch_waiting() == first  # nothing moved: the same again


def test_fetch_respects_the_limit(imap_account: Account, imap_mailbox: ImapMailbox) -> None:
    sent = [message(n) for n in range(5)]
    imap_account.deliver_many(sent)

    assert bodies(imap_mailbox.fetch_waiting(limit=2)) == sent[:2]
    assert imap_mailbox.fetch_waiting(limit=0) == []


def test_fetch_can_leave_out_a_batch_not_yet_moved(
    imap_account: Account, imap_mailbox: ImapMailbox
) -> None:
    """The worker fetches the next batch before moving the one it is writing."""
    sent = [message(n) for n in range(5)]
    imap_account.deliver_many(sent)
    first = imap_mailbox.fetch_waiting(limit=2)
    second = imap_mailbox.fetch_waiting(limit=2, skip={m.key for m in first})
    rest = imap_mailbox.fetch_waiting(limit=10, skip={m.key for m in first + second})
    assert bodies(first + second + rest) == sent


def test_an_empty_inbox_gives_nothing(imap_mailbox: ImapMailbox) -> None:
    assert imap_mailbox.fetch_waiting() == []
    assert imap_mailbox.fetch_commands == 0


def test_250_messages_come_in_three_fetch_commands(
    imap_account: Account, imap_mailbox: ImapMailbox
) -> None:
    sent = [message(n) for n in range(250)]
    imap_account.deliver_many(sent)

    fetched = imap_mailbox.fetch_waiting(limit=500)

    assert bodies(fetched) == sent
    assert len({m.key for m in fetched}) == 250
    assert imap_mailbox.fetch_commands == 3


def test_uid_ranges_compress_consecutive_uids() -> None:
    assert _uid_ranges([1, 2, 3, 7, 9, 10]) == ["1:3", "7", "9:10"]
    assert _uid_ranges([5]) == ["5"]
    assert _uid_ranges([]) == []


# -- moving -------------------------------------------------------------------------------


def test_mark_processed_and_quarantine_move_into_created_folders(
    imap_account: Account, imap_mailbox: ImapMailbox
) -> None:
    sent = [message(n) for n in range(4)]
    imap_account.deliver_many(sent)
    keys = [m.key for m in imap_mailbox.fetch_waiting()]
    assert folder_contents(imap_account, "Processed") == []  # not there yet

    imap_mailbox.mark_processed([keys[0], keys[2], keys[3]])
    imap_mailbox.quarantine([keys[1]])

    assert imap_mailbox.move_commands == 2
    assert folder_contents(imap_account, "INBOX") == []
    assert [data for data, _ in folder_contents(imap_account, "Processed")] == [
        sent[0],
        sent[2],
        sent[3],
    ]
    assert [data for data, _ in folder_contents(imap_account, "Quarantine")] == [sent[1]]
    assert imap_mailbox.fetch_waiting() == []


def test_moving_again_or_nothing_is_harmless(
    imap_account: Account, imap_mailbox: ImapMailbox
) -> None:
    imap_account.deliver_many([message(1), message(2)])
    first, second = imap_mailbox.fetch_waiting()

    imap_mailbox.mark_processed([first.key])
    imap_mailbox.mark_processed([first.key])  # already gone: nothing else may move
    imap_mailbox.quarantine([])

    assert [data for data, _ in folder_contents(imap_account, "INBOX")] == [second.data]
    assert [data for data, _ in folder_contents(imap_account, "Processed")] == [first.data]


def test_copy_fallback_flags_the_original_and_never_fetches_it_again(
    imap_account: Account,
) -> None:
    server = imap_account.server
    mailbox = ImapMailbox(
        server.host,
        server.port,
        imap_account.user,
        imap_account.password,
        use_move=False,
        **FAST_RETRY,
    )
    sent = [message(1), message(2)]
    imap_account.deliver_many(sent)
    try:
        first, second = mailbox.fetch_waiting()
        mailbox.mark_processed([first.key])
        mailbox.mark_processed([first.key])  # a retry must not copy it twice

        assert [data for data, _ in folder_contents(imap_account, "Processed")] == [sent[0]]
        inbox = folder_contents(imap_account, "INBOX")
        assert [data for data, _ in inbox] == sent  # nothing expunged
        assert {b"\\Seen", PROCESSED_KEYWORD.encode()} <= set(inbox[0][1])
        assert b"\\Seen" not in inbox[1][1]
        assert mailbox.fetch_waiting() == [second]
    finally:
        mailbox.close()


def test_a_stale_uidvalidity_key_is_skipped_not_applied_to_the_new_message(
    imap_account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    server = imap_account.server
    imap_account.deliver(message(1), folder="Intake")
    mailbox = ImapMailbox(
        server.host, server.port, imap_account.user, imap_account.password, "Intake", **FAST_RETRY
    )
    try:
        (old,) = mailbox.fetch_waiting()
        other = imap_account.client()
        other.delete_folder("Intake")
        other.create_folder("Intake")
        other.append("Intake", message(2))
        other.logout()

        with caplog.at_level(logging.WARNING, logger="mailbot.adapters.mailbox_imap"):
            mailbox.mark_processed([old.key])

        assert "UIDVALIDITY" in caplog.text and old.key in caplog.text
        assert folder_contents(imap_account, "Processed") == []
        (new,) = mailbox.fetch_waiting()
        assert new.data == message(2)
        # Same UID, different UIDVALIDITY: only the key's UIDVALIDITY tells them apart.
        assert new.key.rsplit(";", 1)[1] == old.key.rsplit(";", 1)[1]
        assert new.key != old.key
        assert [data for data, _ in folder_contents(imap_account, "Intake")] == [new.data]
    finally:
        mailbox.close()


def test_keys_from_another_mailbox_are_refused(
    dovecot: DovecotServer, imap_account: Account, imap_mailbox: ImapMailbox
) -> None:
    imap_account.deliver(message(1))
    (mine,) = imap_mailbox.fetch_waiting()
    stranger = dovecot.add_user()
    stranger.deliver(message(2))
    other = open_mailbox(parse_mailbox_url(stranger.url), **FAST_RETRY)
    try:
        (theirs,) = other.fetch_waiting()
    finally:
        other.close()

    other_folder = mine.key.replace("/INBOX;", "/Archive;")
    for bad in (theirs.key, other_folder, "maildir:/tmp/x;KEY=1", mine.key + "0;x", ""):
        with pytest.raises(ValueError):
            imap_mailbox.mark_processed([mine.key, bad])
    assert [data for data, _ in folder_contents(imap_account, "INBOX")] == [mine.data]


# -- waiting for mail ---------------------------------------------------------------------


@pytest.mark.parametrize("use_idle", [True, False], ids=["idle", "noop-polling"])
def test_wait_for_mail_returns_soon_after_a_delivery(imap_account: Account, use_idle: bool) -> None:
    server = imap_account.server
    mailbox = ImapMailbox(
        server.host,
        server.port,
        imap_account.user,
        imap_account.password,
        use_idle=use_idle,
        poll_interval=0.2,
        **FAST_RETRY,
    )
    try:
        assert mailbox.fetch_waiting() == []
        started = time.monotonic()
        with later(0.3, lambda: imap_account.deliver(message(1))):
            assert mailbox.wait_for_mail(5) is True
        assert time.monotonic() - started < 2.0
        # IDLE was ended properly: the same connection goes on working.
        assert bodies(mailbox.fetch_waiting()) == [message(1)]
        assert mailbox.connects == 1
    finally:
        mailbox.close()


@pytest.mark.parametrize("use_idle", [True, False], ids=["idle", "noop-polling"])
def test_wait_for_mail_times_out_when_nothing_comes(imap_account: Account, use_idle: bool) -> None:
    server = imap_account.server
    mailbox = ImapMailbox(
        server.host,
        server.port,
        imap_account.user,
        imap_account.password,
        use_idle=use_idle,
        poll_interval=0.2,
        **FAST_RETRY,
    )
    try:
        started = time.monotonic()
        assert mailbox.wait_for_mail(1) is False
        assert 0.9 <= time.monotonic() - started < 3.0
    finally:
        mailbox.close()


def test_wait_for_mail_counts_only_mail_not_yet_returned(
    imap_account: Account, imap_mailbox: ImapMailbox
) -> None:
    imap_account.deliver(message(1))
    started = time.monotonic()
    assert imap_mailbox.wait_for_mail(5) is True  # waiting, never returned: at once
    assert time.monotonic() - started < 2.0

    imap_mailbox.fetch_waiting()
    # Returned but not moved (say the move failed): no busy loop, wait the timeout out.
    started = time.monotonic()
    assert imap_mailbox.wait_for_mail(0.5) is False
    assert time.monotonic() - started >= 0.45


# -- failures -----------------------------------------------------------------------------


def test_reconnects_after_the_server_comes_back(fresh_dovecot: DovecotServer) -> None:
    account = fresh_dovecot.add_user()
    account.deliver(message(1))
    mailbox = ImapMailbox(
        fresh_dovecot.host, fresh_dovecot.port, account.user, account.password, **FAST_RETRY
    )
    try:
        (before,) = mailbox.fetch_waiting()
        fresh_dovecot.stop()

        started = time.monotonic()
        with pytest.raises(MailboxUnavailable) as raised:
            mailbox.fetch_waiting()
        assert time.monotonic() - started < 8.0  # bounded attempts, small backoff
        assert "3 attempts" in str(raised.value)
        assert account.password not in str(raised.value)

        fresh_dovecot.start()
        assert mailbox.fetch_waiting() == [before]  # same object, no re-creation
        mailbox.mark_processed([before.key])
        assert mailbox.fetch_waiting() == []
        assert mailbox.connects == 2
    finally:
        mailbox.close()


def test_a_server_restart_between_calls_is_invisible(fresh_dovecot: DovecotServer) -> None:
    account = fresh_dovecot.add_user()
    account.deliver(message(1))
    mailbox = ImapMailbox(
        fresh_dovecot.host, fresh_dovecot.port, account.user, account.password, **FAST_RETRY
    )
    try:
        (before,) = mailbox.fetch_waiting()
        fresh_dovecot.restart()
        assert mailbox.fetch_waiting() == [before]  # the dead connection is replaced at once
        assert mailbox.connects == 2
    finally:
        mailbox.close()


def test_the_server_going_away_during_idle_is_noticed(fresh_dovecot: DovecotServer) -> None:
    account = fresh_dovecot.add_user()
    mailbox = ImapMailbox(
        fresh_dovecot.host, fresh_dovecot.port, account.user, account.password, **FAST_RETRY
    )
    try:
        mailbox.connect()
        started = time.monotonic()
        with pytest.raises(MailboxUnavailable), later(0.3, fresh_dovecot.stop):
            mailbox.wait_for_mail(10)
        assert time.monotonic() - started < 9.0  # noticed, rather than waiting the full 10 s
    finally:
        mailbox.close()


def test_unreachable_server_backs_off_exponentially_then_gives_up() -> None:
    sleeps: list[float] = []
    mailbox = ImapMailbox(
        "127.0.0.1",
        free_port(),  # nothing listens there
        "nobody",
        "secret-password",
        connect_attempts=5,
        backoff_initial=0.5,
        backoff_max=1.5,
        timeout=2,
        sleep=sleeps.append,
    )
    with pytest.raises(MailboxUnavailable) as raised:
        mailbox.fetch_waiting()
    assert "5 attempts" in str(raised.value)
    assert "secret-password" not in str(raised.value)
    assert len(sleeps) == 4
    for delay, ceiling in zip(sleeps, [0.5, 1.0, 1.5, 1.5], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_bad_login_is_unavailable_without_the_password(imap_account: Account) -> None:
    server = imap_account.server
    password = "Sw0rdfish-not-the-real-one"
    url = parse_mailbox_url(f"imap://{imap_account.user}:{password}@{server.host}:{server.port}/")

    started = time.monotonic()
    with pytest.raises(MailboxUnavailable) as raised:
        open_mailbox(url, **FAST_RETRY)
    message_text = str(raised.value)
    assert "login" in message_text and imap_account.user in message_text
    assert password not in message_text
    assert raised.value.__cause__ is None  # no chained exception to leak it either
    assert time.monotonic() - started < 5.0  # a refused login is not retried


def test_a_missing_inbox_folder_is_unavailable(imap_account: Account) -> None:
    server = imap_account.server
    mailbox = ImapMailbox(
        server.host,
        server.port,
        imap_account.user,
        imap_account.password,
        "NoSuchFolder",
        **FAST_RETRY,
    )
    try:
        with pytest.raises(MailboxUnavailable, match="NoSuchFolder"):
            mailbox.fetch_waiting()
    finally:
        mailbox.close()


def test_open_mailbox_connects_from_a_url(imap_account: Account) -> None:
    imap_account.deliver(message(7))
    mailbox = open_mailbox(parse_mailbox_url(imap_account.url), **FAST_RETRY)
    try:
        assert isinstance(mailbox, ImapMailbox)
        assert mailbox.connects == 1
        assert bodies(mailbox.fetch_waiting()) == [message(7)]
    finally:
        mailbox.close()


def test_the_imaplib_trace_is_built_only_when_it_is_logged(
    imap_account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    imap_account.deliver(message(1, "first"))
    quiet = open_mailbox(parse_mailbox_url(imap_account.url), **FAST_RETRY)
    assert isinstance(quiet, ImapMailbox)
    try:
        with caplog.at_level(logging.INFO, logger="imapclient.imaplib"):
            assert bodies(quiet.fetch_waiting(10)) == [message(1, "first")]
        assert not [r for r in caplog.records if r.name == "imapclient.imaplib"]
        assert quiet._client is not None and quiet._client._imap.debug == 0
    finally:
        quiet.close()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="imapclient.imaplib"):
        traced = open_mailbox(parse_mailbox_url(imap_account.url), **FAST_RETRY)
        try:
            assert bodies(traced.fetch_waiting(10)) == [message(1, "first")]
        finally:
            traced.close()
    trace = [r.getMessage() for r in caplog.records if r.name == "imapclient.imaplib"]
    assert any("FETCH" in line for line in trace), trace[:5]
