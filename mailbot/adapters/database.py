"""Engine, sessions and schema migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from mailbot.adapters import orm

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, *, relaxed_commits: bool = False, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs for several processes to share it.

    ``relaxed_commits`` (the worker's engine): on PostgreSQL a COMMIT returns before its WAL
    is on disk (``synchronous_commit = off``), which saves a disk wait (2-3 ms here) per
    transaction. The commit is still atomic and in order; a crash of the database server (not
    of mailbot, nor a restart or a lost connection) can undo the last half second of them. The
    worker therefore calls ``make_durable`` before anything leaves the database, so what it can
    lose is only work it will redo: the messages are still in the inbox and nothing was sent.
    (SQLite in WAL mode with ``synchronous=NORMAL`` keeps commits through a crash of mailbot but
    not of the machine, whatever this says; see ``make_durable``.)
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    else:
        if relaxed_commits:
            # Added to the URL's own options (a search_path, say), which this would replace.
            given = parsed.query.get("options", "")
            options = " ".join([*([given] if isinstance(given, str) else given),
                                "-c synchronous_commit=off"]).strip()
            kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "options": options}
        engine = create_engine(url, pool_pre_ping=True, **kwargs)
    return engine


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # pysqlite's own transaction handling is switched off so that BEGIN is ours (below).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at the start of each transaction: two processes that both read and
    # then write would otherwise deadlock, and SQLite would fail one with "database is locked".
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_durable(session: Session) -> None:
    """Return once every transaction committed so far is on disk (PostgreSQL; SQLite: nothing).

    The barrier that makes ``relaxed_commits`` safe: called before anything leaves the database
    (a message moved out of the inbox, an email handed to the relay). A transaction that wrote
    to the WAL waits at COMMIT, when ``synchronous_commit`` is on, until the WAL up to its
    commit record is flushed; that WAL holds every earlier commit, the relaxed ones included:
    one disk wait for all of them. Both conditions must be made true here: the worker's
    connections have the setting off, and a transaction that only draws an id (or only reads)
    writes no WAL and so never waits. ``pg_logical_emit_message`` writes one small record and
    nothing else (no table, no privilege beyond connecting).

    SQLite (WAL, ``synchronous=NORMAL``) keeps every commit through a crash of mailbot, not
    through a power cut or a crash of the machine; it has no cheaper barrier than committing
    every transaction with ``synchronous=FULL``, which mailbot does not do.
    """
    with session.begin():
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET LOCAL synchronous_commit = on"))
            session.execute(text("SELECT pg_logical_emit_message(true, 'mailbot', 'durable')"))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    orm.start_mappers()
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> str:
    """Bring the database to the latest schema; harmless when it is already there."""
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    return current_revision(url) or "base"


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def schema_is_current(engine: Engine) -> bool:
    return "cases" in inspect(engine).get_table_names()
