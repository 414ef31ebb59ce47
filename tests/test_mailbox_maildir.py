"""The Maildir mailbox adapter: the same contract as IMAP, on a local directory."""

from __future__ import annotations

import contextlib
import logging
import mailbox as stdlib_mailbox
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbot.adapters.mailbox import MailboxUnavailable, open_mailbox
from mailbot.adapters.mailbox_maildir import MaildirMailbox
from mailbot.config import parse_mailbox_url

LF_MESSAGE = b"From: a@example.org\nSubject: LF only\n\nBody\n"
CRLF_MESSAGE = b"From: b@example.org\r\nSubject: CRLF\r\n\r\nBody \xe2\x80\x93 8-bit\r\n"
ODD_MESSAGE = b"\x00\x01 not really an email \xff\xfe\n"


def drop(
    maildir: Path,
    name: str,
    data: bytes,
    *,
    sub: str = "new",
    mtime: float | None = None,
    info: str = "",
) -> Path:
    """Deliver like an MDA: write in tmp/, then rename into new/ (or cur/ with info)."""
    tmp = maildir / "tmp" / name
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    final = maildir / sub / (f"{name}:{info}" if info else name)
    os.rename(tmp, final)
    return final


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


@contextlib.contextmanager
def later(delay: float, action: Callable[[], Any]) -> Iterator[None]:

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=10)


def test_the_maildir_structure_is_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "mail" / "inbox"
    mailbox = MaildirMailbox(path)
    assert all((path / sub).is_dir() for sub in ("tmp", "new", "cur"))
    assert mailbox.fetch_waiting() == []


def test_fetch_is_oldest_first_with_exact_bytes_and_changes_nothing(
    maildir_mailbox: MaildirMailbox,
) -> None:
    box = maildir_mailbox.path
    now = time.time()
    drop(box, "1700000003.M3P1.host", LF_MESSAGE, mtime=now - 10)
    drop(box, "1700000001.M1P1.host", CRLF_MESSAGE, sub="cur", info="2,S", mtime=now - 30)
    drop(box, "1700000002.M2P1.host", ODD_MESSAGE, mtime=now - 20)
    drop(box, "1700000000.M0P1.host", b"same time, later name\n", mtime=now - 10)
    before = {p: p.stat().st_mtime_ns for p in box.rglob("*")}

    fetched = maildir_mailbox.fetch_waiting()

    assert [m.data for m in fetched] == [
        CRLF_MESSAGE,
        ODD_MESSAGE,
        b"same time, later name\n",  # equal mtimes: by name
        LF_MESSAGE,
    ]
    assert [m.key for m in fetched] == [
        f"maildir:{box};KEY=1700000001.M1P1.host",
        f"maildir:{box};KEY=1700000002.M2P1.host",
        f"maildir:{box};KEY=1700000000.M0P1.host",
        f"maildir:{box};KEY=1700000003.M3P1.host",
    ]
    assert {p: p.stat().st_mtime_ns for p in box.rglob("*")} == before  # no renames, no flags
    assert maildir_mailbox.fetch_waiting() == fetched
    assert maildir_mailbox.fetch_waiting(limit=2) == fetched[:2]
    assert maildir_mailbox.fetch_waiting(limit=0) == []
    # The next batch while the first is still in the inbox: the first is left out.
    assert maildir_mailbox.fetch_waiting(limit=2, skip={m.key for m in fetched[:2]}) == \
        fetched[2:]


def test_mail_delivered_by_the_stdlib_is_found(maildir_mailbox: MaildirMailbox) -> None:
    key = stdlib_mailbox.Maildir(maildir_mailbox.path, create=False).add(LF_MESSAGE)
    (raw,) = maildir_mailbox.fetch_waiting()
    assert raw.key.endswith(f";KEY={key}")
    assert raw.data == LF_MESSAGE


def test_hidden_files_directories_and_symlinks_are_not_mail(
    maildir_mailbox: MaildirMailbox, tmp_path: Path
) -> None:
    box = maildir_mailbox.path
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for the inbox")
    (box / "new" / ".half-written").write_bytes(b"partial")
    (box / "new" / "a-directory").mkdir()
    (box / "new" / "1700000000.link.host").symlink_to(secret)
    drop(box, "1700000001.real.host", LF_MESSAGE)

    assert [m.data for m in maildir_mailbox.fetch_waiting()] == [LF_MESSAGE]


def test_moves_go_to_maildir_plus_plus_subfolders_with_identical_bytes(
    maildir_mailbox: MaildirMailbox,
) -> None:
    box = maildir_mailbox.path
    now = time.time()
    drop(box, "1.a.host", LF_MESSAGE, mtime=now - 3)
    drop(box, "2.b.host", CRLF_MESSAGE, sub="cur", info="2,F", mtime=now - 2)
    drop(box, "3.c.host", ODD_MESSAGE, mtime=now - 1)
    first, second, third = maildir_mailbox.fetch_waiting()

    maildir_mailbox.mark_processed([first.key, second.key])
    maildir_mailbox.quarantine([third.key])

    assert listing(box / "new") == [] and listing(box / "cur") == []
    processed = box / ".Processed"
    assert (processed / "maildirfolder").is_file()
    assert all((processed / sub).is_dir() for sub in ("tmp", "new", "cur"))
    assert listing(processed / "cur") == ["1.a.host:2,S", "2.b.host:2,FS"]  # flags kept, S added
    assert (processed / "cur" / "1.a.host:2,S").read_bytes() == LF_MESSAGE
    assert (processed / "cur" / "2.b.host:2,FS").read_bytes() == CRLF_MESSAGE
    assert listing(box / ".Quarantine" / "cur") == ["3.c.host:2,S"]
    assert (box / ".Quarantine" / "cur" / "3.c.host:2,S").read_bytes() == ODD_MESSAGE
    assert maildir_mailbox.fetch_waiting() == []


def test_moving_a_missing_message_warns_and_moving_never_overwrites(
    maildir_mailbox: MaildirMailbox, caplog: pytest.LogCaptureFixture
) -> None:
    box = maildir_mailbox.path
    drop(box, "1.a.host", LF_MESSAGE)
    (raw,) = maildir_mailbox.fetch_waiting()
    maildir_mailbox.mark_processed([raw.key])

    with caplog.at_level(logging.WARNING, logger="mailbot.adapters.mailbox_maildir"):
        maildir_mailbox.mark_processed([raw.key])  # already moved
    assert "no such message" in caplog.text

    # The same unique name delivered again (a broken MDA): both copies are kept.
    drop(box, "1.a.host", b"second copy\n")
    (again,) = maildir_mailbox.fetch_waiting()
    maildir_mailbox.mark_processed([again.key])
    kept = sorted(p.read_bytes() for p in (box / ".Processed" / "cur").iterdir())
    assert kept == sorted([LF_MESSAGE, b"second copy\n"])


def test_keys_from_another_mailbox_or_forged_are_refused(
    maildir_mailbox: MaildirMailbox, tmp_path: Path
) -> None:
    box = maildir_mailbox.path
    drop(box, "1.a.host", LF_MESSAGE)
    (mine,) = maildir_mailbox.fetch_waiting()
    other = MaildirMailbox(tmp_path / "other")
    drop(other.path, "2.b.host", LF_MESSAGE)
    (theirs,) = other.fetch_waiting()

    forged = [
        theirs.key,
        f"maildir:{box}/;KEY=1.a.host",
        f"maildir:{box};KEY=../../../etc/passwd",
        f"maildir:{box};KEY=.Processed",
        f"maildir:{box};KEY=1.a.host:2,S",
        f"maildir:{box};KEY=",
        "imap://user@127.0.0.1:143/INBOX;UIDVALIDITY=1;UID=1",
    ]
    for bad in forged:
        with pytest.raises(ValueError):
            maildir_mailbox.quarantine([mine.key, bad])
    assert maildir_mailbox.fetch_waiting() == [mine]  # nothing moved
    assert not (box / ".Quarantine").exists()


def test_wait_for_mail_sees_a_file_dropped_in_from_another_thread(
    maildir_mailbox: MaildirMailbox,
) -> None:
    box = maildir_mailbox.path
    assert maildir_mailbox.fetch_waiting() == []
    started = time.monotonic()
    with later(0.3, lambda: drop(box, "9.z.host", LF_MESSAGE)):
        assert maildir_mailbox.wait_for_mail(5) is True
    assert time.monotonic() - started < 3.0


def test_wait_for_mail_times_out_and_ignores_mail_already_returned(
    maildir_mailbox: MaildirMailbox,
) -> None:
    started = time.monotonic()
    assert maildir_mailbox.wait_for_mail(1) is False
    assert 0.95 <= time.monotonic() - started < 1.5

    drop(maildir_mailbox.path, "1.a.host", LF_MESSAGE)
    assert maildir_mailbox.wait_for_mail(5) is True  # waiting and never returned: at once
    maildir_mailbox.fetch_waiting()
    started = time.monotonic()
    assert maildir_mailbox.wait_for_mail(0.5) is False  # returned, not moved: no busy loop
    assert time.monotonic() - started >= 0.45


def test_open_mailbox_from_a_maildir_url(tmp_path: Path) -> None:
    url = parse_mailbox_url(f"maildir://{tmp_path / 'inbox'}")
    mailbox = open_mailbox(url)
    assert isinstance(mailbox, MaildirMailbox)
    drop(tmp_path / "inbox", "1.a.host", LF_MESSAGE)
    assert [m.data for m in mailbox.fetch_waiting()] == [LF_MESSAGE]
    mailbox.close()


def test_a_vanished_maildir_is_unavailable_not_silently_recreated(
    maildir_mailbox: MaildirMailbox,
) -> None:
    shutil.rmtree(maildir_mailbox.path)
    with pytest.raises(MailboxUnavailable):
        maildir_mailbox.fetch_waiting()
    assert not maildir_mailbox.path.exists()
