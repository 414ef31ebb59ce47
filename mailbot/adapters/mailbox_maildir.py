"""The Maildir mailbox adapter (``maildir:///ABS/PATH``): the embedded default and the demo.

Layout: the inbox is the Maildir at ``path`` (``tmp/``, ``new/``, ``cur/``); processed and
quarantined mail go to **Maildir++ subfolders inside it**, ``path/.Processed`` and
``path/.Quarantine`` (each a Maildir with a ``maildirfolder`` marker). Chosen over sibling
Maildirs because:

- a move is one ``os.rename`` within one directory tree, so it is atomic and can never cross a
  filesystem (a sibling could be a different mount, and ``rename`` would fail or, done as
  copy-and-delete, stop being atomic);
- it is the layout Dovecot and Courier use, so pointing an IMAP server (or a mail client) at
  the same Maildir shows the inbox with Processed and Quarantine folders beside it;
- one path in the configuration names everything.

Behaviour matches the IMAP adapter: messages waiting are the regular files in ``new/`` and
``cur/``, oldest first by modification time, then name; ``data`` is the file's bytes exactly;
fetching changes nothing (no rename from ``new/`` to ``cur/``, no flags). A move renames the
file into the target's ``cur/`` with the ``S`` (seen) flag added to its info, keeping other
flags. The key is the Maildir unique name (the file name up to ``:``), which survives a mail
client renaming the file to change flags; a key whose file has gone is skipped with a warning.
Keys are checked before use, so a forged key cannot name a path outside the Maildir.

Maildir has no change notification we can rely on everywhere, so ``wait_for_mail`` lists
``new/`` and ``cur/`` every ``poll_interval`` seconds (0.2 by default) and returns True when a
message appears that this adapter has not returned yet. Filesystem errors (the directory
unreadable, a rename refused) are ``MailboxUnavailable``.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from mailbot.adapters.mailbox import (
    PROCESSED_FOLDER,
    QUARANTINE_FOLDER,
    MailboxUnavailable,
    RawMessage,
)

log = logging.getLogger(__name__)

SUBDIRS = ("tmp", "new", "cur")
#: Separates the unique name from the info ("2,FLAGS") in cur/ file names.
COLON = ":"


def _unique_name(filename: str) -> str:
    return filename.split(COLON, 1)[0]


def _flags(filename: str) -> str:
    _, _, info = filename.partition(COLON)
    return info[2:] if info.startswith("2,") else ""


def _check_folder_name(name: str) -> str:
    if not name or "/" in name or "\0" in name or name.startswith(".") or name in SUBDIRS:
        raise ValueError(f"{name!r} cannot be a Maildir++ folder name")
    return name


class MaildirMailbox:
    """A local Maildir as the inbox; see the module docstring for the layout."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        processed_folder: str = PROCESSED_FOLDER,
        quarantine_folder: str = QUARANTINE_FOLDER,
        poll_interval: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        self.processed_folder = _check_folder_name(processed_folder)
        self.quarantine_folder = _check_folder_name(quarantine_folder)
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._key_prefix = f"maildir:{self.path};KEY="
        # Unique names returned by fetch_waiting and still in the inbox; see wait_for_mail.
        self._returned: set[str] = set()
        self._ensure_maildir(self.path)

    def __repr__(self) -> str:
        return f"MaildirMailbox({str(self.path)!r})"

    def __enter__(self) -> MaildirMailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- layout --------------------------------------------------------------------------

    def _ensure_maildir(self, path: Path, subfolder: bool = False) -> None:
        """Create tmp/, new/ and cur/ (and the parents) when missing; 0700 as Maildir wants."""
        try:
            for sub in SUBDIRS:
                (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            if subfolder:
                marker = path / "maildirfolder"
                if not marker.exists():
                    marker.touch(mode=0o600)
        except OSError as exc:
            raise MailboxUnavailable(f"cannot create the Maildir {path}: {exc}") from exc

    def _folder_path(self, folder: str) -> Path:
        return self.path / f".{folder}"

    # -- keys ----------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return f"{self._key_prefix}{name}"

    def _parse_key(self, key: str) -> str:
        """The unique name inside one of our keys; ValueError for anybody else's or a forgery."""
        if not isinstance(key, str) or not key.startswith(self._key_prefix):
            raise ValueError(f"{key!r} is not a message of this mailbox ({self._key_prefix}...)")
        name = key[len(self._key_prefix) :]
        if not name or name.startswith(".") or "/" in name or "\0" in name or COLON in name:
            raise ValueError(f"{key!r} is not a valid Maildir message key")
        return name

    # -- listing -------------------------------------------------------------------------

    def _scan(self, with_stat: bool) -> list[tuple[int, str, Path]]:
        """(mtime_ns, unique name, path) of every message file in new/ and cur/.

        Dot files are half-written or hidden by convention; only regular files count (a
        symlink or a directory planted in the Maildir is ignored, not followed). A file may
        vanish between listing and stat (another worker moved it): it is left out.
        """
        found: list[tuple[int, str, Path]] = []
        seen: set[str] = set()
        try:
            for sub in ("new", "cur"):
                with os.scandir(self.path / sub) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        name = _unique_name(entry.name)
                        if not name or name in seen:
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if not stat.S_ISREG(st.st_mode):
                            continue
                        seen.add(name)
                        found.append((st.st_mtime_ns if with_stat else 0, name, Path(entry.path)))
        except FileNotFoundError as exc:
            # Not recreated here: a missing Maildir is more likely an unmounted volume than an
            # empty inbox, and an empty Maildir in its place would hide that.
            raise MailboxUnavailable(f"the Maildir {self.path} has gone: {exc}") from exc
        except OSError as exc:
            raise MailboxUnavailable(f"cannot read the Maildir {self.path}: {exc}") from exc
        return found

    # -- the port ------------------------------------------------------------------------

    def fetch_waiting(self, limit: int = 500, skip: Collection[str] = ()) -> list[RawMessage]:
        """Every message file in new/ and cur/, oldest first (mtime, then name), at most limit."""
        if limit <= 0:
            return []
        entries = sorted(self._scan(with_stat=True), key=lambda e: (e[0], e[1]))
        present = {name for _, name, _ in entries}
        messages: list[RawMessage] = []
        for _, name, path in entries:
            if len(messages) >= limit:
                break
            if skip and self._key(name) in skip:
                continue
            try:
                data = _read_regular_file(path)
            except FileNotFoundError:
                continue  # moved away since the listing
            except OSError as exc:
                raise MailboxUnavailable(f"cannot read {path}: {exc}") from exc
            messages.append(RawMessage(self._key(name), data))
        self._returned = (self._returned & present) | {self._parse_key(m.key) for m in messages}
        return messages

    def mark_processed(self, keys: Sequence[str]) -> None:
        self._move(keys, self.processed_folder)

    def quarantine(self, keys: Sequence[str]) -> None:
        self._move(keys, self.quarantine_folder)

    def _move(self, keys: Sequence[str], folder: str) -> None:
        names = [self._parse_key(key) for key in keys]  # ValueError before any change
        if not names:
            return
        target = self._folder_path(folder)
        self._ensure_maildir(target, subfolder=True)
        where = {name: path for _, name, path in self._scan(with_stat=False)}
        for name in names:
            source = where.pop(name, None)
            if source is None:
                log.warning(
                    "not moving %s to %s: no such message (already moved?)", self._key(name), folder
                )
                continue
            flags = "".join(sorted(set(_flags(source.name)) | {"S"}))
            destination = target / "cur" / f"{name}{COLON}2,{flags}"
            if destination.exists():
                # rename() would silently replace it, and nothing is ever to be lost.
                destination = target / "cur" / f"{name}.{time.time_ns()}{COLON}2,{flags}"
            try:
                os.rename(source, destination)
            except FileNotFoundError:
                log.warning(
                    "not moving %s to %s: it vanished (moved by someone else?)",
                    self._key(name),
                    folder,
                )
            except OSError as exc:
                raise MailboxUnavailable(f"cannot move {source} to {destination}: {exc}") from exc
            self._returned.discard(name)

    def wait_for_mail(self, timeout: float) -> bool:
        """Poll new/ and cur/ until a message this adapter has not returned appears.

        True at once when such a message is already there (it arrived while the caller was
        busy, or was beyond ``limit``); messages already returned but not moved do not count.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            names = {name for _, name, _ in self._scan(with_stat=False)}
            if names - self._returned:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sleep(min(self.poll_interval, remaining))

    def close(self) -> None:
        """Nothing to release; present for the port."""


def _read_regular_file(path: Path) -> bytes:
    """The file's bytes, refusing to follow a symlink swapped in after the listing."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        return handle.read()
