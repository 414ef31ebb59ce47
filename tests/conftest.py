"""Shared fixtures: a migrated database on every configured backend, and the CLI in-process.

Database tests run on SQLite always, and on PostgreSQL as well when MAILBOT_TEST_POSTGRES_URL is
set (``.ci/run`` sets it). Each PostgreSQL test session works in a schema of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailbot.adapters.database import upgrade
from mailbot.adapters.orm import metadata
from mailbot.cli import main
from tests.fixtures_mail import (  # noqa: F401
    dovecot,
    fresh_dovecot,
    imap_account,
    imap_mailbox,
    maildir_mailbox,
)
from tests.fixtures_smtp import smtp_server, smtp_server_factory, smtp_tls_certificate  # noqa: F401

POSTGRES_URL = os.environ.get("MAILBOT_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    assert POSTGRES_URL
    schema = f"mailbot_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).set(
        drivername="postgresql+psycopg", query={"options": f"-csearch_path={schema}"}
    )
    rendered = url.render_as_string(hide_password=False)
    upgrade(rendered)
    try:
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _truncate_postgres(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailbot.db'}"
        upgrade(url)
        return url
    url = str(request.getfixturevalue("postgres_schema_url"))
    _truncate_postgres(url)
    return url


@pytest.fixture
def mailbot_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str
) -> dict[str, str]:
    """Environment for in-process CLI and app runs against the test database."""
    env = {
        "MAILBOT_VAR_DIR": str(tmp_path / "var"),
        "MAILBOT_DATABASE_URL": database_url,
        "MAILBOT_TIMEZONE": "Europe/London",
    }
    for key in list(os.environ):
        if key.startswith("MAILBOT_") and key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``mailbot ARGS...`` in-process and return its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
