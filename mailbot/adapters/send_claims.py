"""Which queued emails this process may send now: a claim on a round of outbox rows that lasts
across the commit after each email and dies with the process (or connection) that made it.

Why not ``SELECT ... FOR UPDATE SKIP LOCKED`` per row: a row lock ends at the commit that
marks the row sent, so each email needed its own claim statement; claiming a round at once
halves the database's part of sending. A lease column would outlive a killed worker, and the
mail it claimed would wait for the lease to run out; these claims do not.

* PostgreSQL: session-level advisory locks, one per row id, taken in one statement and
  released in one. The server drops them when the connection goes, however the worker ends.
* SQLite: one flusher at a time, by an exclusive ``flock`` on a file beside the database, held
  for the whole flush (the kernel drops it when the process ends). SQLite has one writer at a
  time anyway; the lock keeps a second process (``mailbot outbox flush`` beside the worker)
  from sending the same rows, without holding the database's write lock while the relay
  answers. A second flusher finds the lock taken and sends nothing, as a PostgreSQL flusher
  does that finds every due row claimed: the first sends what is due.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: First half of the advisory lock key for outbox rows ("mb" in ASCII); the row id is the second.
OUTBOX_LOCKS = 0x6D62


_LOCK = text(
    "SELECT id FROM unnest(CAST(:ids AS integer[])) AS id "
    "WHERE pg_try_advisory_lock(:space, id) ORDER BY id")
_UNLOCK = text(
    "SELECT pg_advisory_unlock(:space, id) FROM unnest(CAST(:ids AS integer[])) AS id")


class Claims(Protocol):
    def claim(self, session: Session, ids: Sequence[int]) -> list[int]:
        """Those of ``ids`` no other flusher has, now claimed by this one, in order."""

    def release(self, session: Session) -> None:
        """Give back what ``claim`` took."""


class _AdvisoryClaims:
    def __init__(self) -> None:
        self.held: list[int] = []

    def claim(self, session: Session, ids: Sequence[int]) -> list[int]:
        with session.begin():
            got = list(session.scalars(_LOCK, {"space": OUTBOX_LOCKS, "ids": list(ids)}))
        self.held += got
        return got

    def release(self, session: Session) -> None:
        if self.held:
            held, self.held = self.held, []
            with session.begin():
                session.execute(_UNLOCK, {"space": OUTBOX_LOCKS, "ids": held})


class _WholeOutbox:
    """Holding the flush lock already claims every row."""

    def claim(self, session: Session, ids: Sequence[int]) -> list[int]:
        return list(ids)

    def release(self, session: Session) -> None:
        pass


@contextmanager
def claims_for(session: Session) -> Iterator[Claims]:
    """Claims for one flush on ``session``, which must keep one connection throughout (its
    bind is a ``Connection``): advisory locks belong to the connection that took them."""
    conn = session.get_bind()
    assert isinstance(conn, Connection), "claims need a session pinned to one connection"
    if conn.dialect.name == "postgresql":
        claims = _AdvisoryClaims()
        try:
            yield claims
        finally:
            try:
                claims.release(session)
            except Exception:
                # The connection is gone (and the locks with it), or the locks would stay with
                # it in the pool: discard it either way, which ends its server session.
                log.warning("outbox claims not released; dropping their connection",
                            exc_info=True)
                conn.invalidate()
        return
    with _flush_lock(conn.engine.url.database) as mine:
        yield _WholeOutbox() if mine else _Nothing()


class _Nothing:
    """Another process is flushing: it sends what is due, this flush sends nothing."""

    def claim(self, session: Session, ids: Sequence[int]) -> list[int]:
        return []

    def release(self, session: Session) -> None:
        pass


@contextmanager
def _flush_lock(database: str | None) -> Iterator[bool]:
    """True while this process holds the flush lock; False if another process has it."""
    if not database or database == ":memory:":
        yield True  # no other process can open this database
        return
    fd = os.open(database + ".outbox-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock

