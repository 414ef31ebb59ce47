"""Forgetting old webhook idempotency keys, so that ``idempotency_keys`` stops growing.

The webhook stores one key per phone call (the client's ``Idempotency-Key``, or the signature of
a call sent without one) with the answer it gave, so that a retry is answered from the store
instead of opening a second case. That protection is needed for as long as a retry can arrive:
a signed request is refused 300 seconds after it was signed (``webhooks.auth``), so a replayed
signature is worthless within minutes, and a client's retry queue drains within hours even after
an outage over a long weekend. A week (``RETENTION``) covers both with room to spare; a key older
than that is deleted, and a "retry" with it after that is taken as a new call.

``mailbot webhook purge-keys`` runs this; the worker may run it on a schedule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete
from sqlalchemy.orm import Session

from mailbot.adapters.orm import idempotency_keys

#: How long a key is kept after the call that stored it (the one place this number lives).
RETENTION = timedelta(days=7)
#: The least that may be kept: well past the signature window (300 s), so a captured signed
#: request can never be replayed once its key is gone.
MIN_RETENTION = timedelta(hours=1)


def purge_expired(session: Session, now: datetime, keep: timedelta = RETENTION) -> int:
    """Delete the keys stored before ``now - keep``, in the caller's transaction; return how many.

    ``now`` must be timezone-aware (as every time in the database is). It is one DELETE: on
    PostgreSQL it locks only the rows it deletes, so calls logged meanwhile go ahead; on SQLite
    they wait for the write lock until the caller commits, which for a day's keys is moments.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    if keep < MIN_RETENTION:
        raise ValueError(f"keep idempotency keys for at least {MIN_RETENTION} (asked: {keep}), "
                         "or a captured signed request could be replayed")
    result = cast(CursorResult[Any], session.execute(
        delete(idempotency_keys).where(idempotency_keys.c.created_at < now - keep)
    ))
    return int(result.rowcount)
