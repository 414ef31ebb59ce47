"""The worker's commits do not wait for the disk on PostgreSQL; ``make_durable`` must.

Each round commits a row through the worker's engine (``relaxed_commits``) and notes how far
the WAL then reached, calls ``make_durable`` at once, and asks PostgreSQL how far the WAL is on
disk. Without a working barrier the answer lags in most rounds: the WAL writer flushes
relaxed commits only every 200 ms by default.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from mailbot.adapters.database import make_durable, make_engine, session_factory
from mailbot.adapters.orm import reference_counters
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs MAILBOT_TEST_POSTGRES_URL")

ROUNDS = 20


def test_make_durable_puts_every_earlier_relaxed_commit_on_disk(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no such barrier (see make_durable)")
    engine = make_engine(database_url, relaxed_commits=True)
    sessions = session_factory(engine)
    lagging = 0
    try:
        for year in range(3000, 3000 + ROUNDS):
            with sessions.begin() as session:
                assert session.scalar(text("SHOW synchronous_commit")) == "off"
                session.execute(reference_counters.insert().values(year=year, last=1))
            with engine.connect() as probe:
                committed = probe.scalar(text("SELECT pg_current_wal_insert_lsn()"))
            with sessions() as session:
                make_durable(session)
            with engine.connect() as probe:
                lagging += bool(probe.scalar(
                    text("SELECT pg_current_wal_flush_lsn() < CAST(:lsn AS pg_lsn)"),
                    {"lsn": committed},
                ))
    finally:
        engine.dispose()
    assert lagging == 0, f"{lagging} of {ROUNDS} commits were not on disk after make_durable"
