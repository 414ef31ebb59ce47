"""Upkeep and start-up of the web app: purging old idempotency keys (the service and
``mailbot webhook purge-keys``), and a bad configuration stopping ``create_app()`` and
``flask run`` with one line naming the variable. (Gunicorn: ``test_webhook_gunicorn``.)"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from werkzeug.test import TestResponse

from mailbot.adapters.orm import idempotency_keys
from mailbot.config import ConfigError
from mailbot.services.idempotency import MIN_RETENTION, RETENTION, purge_expired
from tests import test_webhook
from tests.test_webhook import CALL, NOW, SECRET, Web
from webhooks import StartupError, check_startup, create_app

#: CALL without called_at: each call is received at the (moved) clock's time.
UNTIMED = {k: v for k, v in CALL.items() if k != "called_at"}

#: The app on every configured database (``test_webhook``'s fixtures, reused).
web = test_webhook.web
classifier = test_webhook.classifier


def call_at(web: Web, when: datetime, key: str | None = None) -> TestResponse:
    """A phone call signed and received at ``when``, with ``key`` as its Idempotency-Key."""
    web.state.clock = lambda: when
    r = web.call({**UNTIMED, "summary": f"call {key}"}, t=when, key=key)
    assert r.status_code == 201, r.json
    return r


def stored_keys(web: Web) -> set[str]:
    with web.state.core.sessions() as session:
        return set(session.scalars(select(idempotency_keys.c.key)))


def purge(web: Web, now: datetime, keep: timedelta = RETENTION) -> int:
    with web.state.core.sessions.begin() as session:
        return purge_expired(session, now, keep)


# purge_expired ---------------------------------------------------------------------------------


def test_keys_older_than_the_retention_are_deleted_and_newer_kept(web: Web) -> None:
    assert timedelta(days=7) == RETENTION
    call_at(web, NOW - timedelta(days=30), "ancient")
    call_at(web, NOW - RETENTION - timedelta(seconds=1), "old")
    call_at(web, NOW - RETENTION, "edge")
    call_at(web, NOW - timedelta(days=1), "recent")
    # A call without a key is kept under its signature, and purged the same way.
    web.state.clock = lambda: NOW - timedelta(days=8)
    r = web.call({**UNTIMED, "summary": "unkeyed"}, t=NOW - timedelta(days=8))
    assert r.status_code == 201
    assert len(stored_keys(web)) == 5

    assert purge(web, NOW) == 3
    assert stored_keys(web) == {"key:edge", "key:recent"}
    assert web.count() == 5, "the cases stay; only the keys go"
    assert purge(web, NOW) == 0


def test_a_retry_with_a_kept_key_gets_the_original_answer_and_a_purged_one_is_new(
    web: Web,
) -> None:
    old = call_at(web, NOW - timedelta(days=8), "old")
    recent = call_at(web, NOW - timedelta(days=2), "recent")
    assert purge(web, NOW) == 1

    retry = call_at(web, NOW, "recent")
    assert retry.data == recent.data
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert web.count() == 2
    # The key is gone, so the same call with it is taken as a new one (documented behaviour).
    again = call_at(web, NOW, "old")
    assert "Idempotent-Replayed" not in again.headers
    assert again.get_json()["ref"] != json.loads(old.data)["ref"]
    assert web.count() == 3


def test_purging_is_part_of_the_callers_transaction(web: Web) -> None:
    call_at(web, NOW - timedelta(days=8), "old")
    with web.state.core.sessions() as session:
        assert purge_expired(session, NOW) == 1
        session.rollback()
    assert stored_keys(web) == {"key:old"}
    assert purge(web, NOW) == 1
    assert stored_keys(web) == set()


def test_a_shorter_retention_down_to_an_hour(web: Web) -> None:
    call_at(web, NOW - timedelta(hours=2), "two-hours")
    call_at(web, NOW - timedelta(minutes=30), "half-hour")
    assert timedelta(hours=1) == MIN_RETENTION
    assert purge(web, NOW, MIN_RETENTION) == 1
    assert stored_keys(web) == {"key:half-hour"}


@pytest.mark.parametrize("zone", ["Europe/London", "Pacific/Auckland", "America/New_York"])
def test_now_in_any_time_zone_is_the_same_instant(web: Web, zone: str) -> None:
    call_at(web, NOW - RETENTION - timedelta(seconds=1), "just-old")
    call_at(web, NOW - RETENTION + timedelta(seconds=1), "just-kept")
    assert purge(web, NOW.astimezone(ZoneInfo(zone))) == 1
    assert stored_keys(web) == {"key:just-kept"}


@pytest.mark.parametrize(("now", "keep", "message"), [
    (NOW.replace(tzinfo=None), RETENTION, "timezone-aware"),
    (NOW, MIN_RETENTION - timedelta(seconds=1), "at least 1:00:00"),
    (NOW, timedelta(0), "at least 1:00:00"),
    (NOW, -RETENTION, "at least 1:00:00"),
])
def test_a_naive_now_or_a_retention_under_an_hour_is_refused(
    web: Web, now: datetime, keep: timedelta, message: str
) -> None:
    call_at(web, NOW - timedelta(days=30), "old")
    with web.state.core.sessions.begin() as session, pytest.raises(ValueError, match=message):
        purge_expired(session, now, keep)
    assert stored_keys(web) == {"key:old"}


# mailbot webhook purge-keys ---------------------------------------------------------------------


def test_purge_keys_deletes_by_days_and_says_how_many(web: Web, cli: Any) -> None:
    # The command runs on the real clock, so the keys are stored relative to it.
    now = datetime.now(UTC)
    for days, key in [(10, "ten-days"), (8, "eight-days"), (2, "two-days")]:
        call_at(web, now - timedelta(days=days), key)
    call_at(web, now - timedelta(hours=1), "an-hour")

    before = datetime.now(UTC)
    r = cli("webhook", "purge-keys", "--days", "9", "--json")
    after = datetime.now(UTC)
    assert (r.code, r.err) == (0, "")
    out = json.loads(r.out)
    assert (out["deleted"], out["days"]) == (1, 9)
    cutoff = datetime.fromisoformat(out["before"])
    assert (before - timedelta(days=9)).replace(microsecond=0) <= cutoff
    assert cutoff <= after - timedelta(days=9)
    assert stored_keys(web) == {"key:eight-days", "key:two-days", "key:an-hour"}

    r = cli("webhook", "purge-keys")
    assert r.code == 0, r.err
    assert re.fullmatch(r"deleted 1 idempotency key stored before \S+ "
                        r"\(kept: the last 7 days\)\n", r.out), r.out
    assert stored_keys(web) == {"key:two-days", "key:an-hour"}

    r = cli("webhook", "purge-keys", "--days", "1")
    assert re.fullmatch(r"deleted 1 idempotency key stored before \S+ "
                        r"\(kept: the last 1 day\)\n", r.out), r.out
    assert stored_keys(web) == {"key:an-hour"}

    r = cli("webhook", "purge-keys", "--days", "3650")
    assert r.code == 0
    assert r.out.startswith("deleted 0 idempotency keys stored before ")
    r = cli("webhook", "purge-keys", "--json")
    assert json.loads(r.out)["deleted"] == 0 and json.loads(r.out)["days"] == 7
    assert stored_keys(web) == {"key:an-hour"}


@pytest.mark.parametrize("days", ["0", "x", "-1", "1.5", "", "3651"])
def test_purge_keys_refuses_bad_days_as_a_usage_error(cli: Any, days: str) -> None:
    r = cli("webhook", "purge-keys", "--days", days)
    assert r.code == 2
    assert r.out == ""
    assert "usage: mailbot webhook purge-keys" in r.err
    assert f"argument --days: {days!r} is not a whole number of days from 1 to 3650" in r.err
    assert "Traceback" not in r.err


# Start-up ---------------------------------------------------------------------------------------


def test_create_app_without_the_secret_names_the_variable(mailbot_env: dict[str, str]) -> None:
    with pytest.raises(StartupError) as info:
        create_app()
    error = info.value
    assert isinstance(error, ConfigError)
    assert str(error).startswith("MAILBOT_WEBHOOK_SECRET: must be set")
    assert error.exit_code == 2
    assert error.line == f"mailbot: configuration error: {error}"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("MAILBOT_WEBHOOK_SECRET", "too-short", "MAILBOT_WEBHOOK_SECRET: must be set to at least 16"),
    ("MAILBOT_TIMEZONE", "Mars/Olympus", "MAILBOT_TIMEZONE: unknown time zone"),
    ("MAILBOT_STAFF_DIRECTORY", "/nonexistent/staff.csv", "MAILBOT_STAFF_DIRECTORY: no such"),
])
def test_create_app_with_a_bad_setting_names_the_variable(
    mailbot_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str,
    expected: str,
) -> None:
    monkeypatch.setenv("MAILBOT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv(name, value)
    with pytest.raises(StartupError) as info:
        create_app()
    assert str(info.value).startswith(expected), str(info.value)


def test_an_unreadable_staff_directory_is_a_startup_error(
    mailbot_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = tmp_path / "staff.csv"
    directory.write_bytes(b"name,email\nPriya Shah,\xff\xfe@example.org\n")
    monkeypatch.setenv("MAILBOT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MAILBOT_STAFF_DIRECTORY", str(directory))
    with pytest.raises(StartupError) as info:
        create_app()
    assert str(info.value).startswith(f"MAILBOT_STAFF_DIRECTORY: cannot read {directory} (")


def test_check_startup_prints_one_line_and_returns_2(
    mailbot_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check_startup() == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "mailbot: configuration error: MAILBOT_WEBHOOK_SECRET: must be set to at least 16 "
        "characters to serve the webhook"]
    assert err == ""
    monkeypatch.setenv("MAILBOT_WEBHOOK_SECRET", SECRET)
    assert check_startup() == 0
    assert capsys.readouterr() == ("", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("setting", "options", "expected"), [
    ({}, [], "MAILBOT_WEBHOOK_SECRET: must be set"),
    ({}, ["--debug"], "MAILBOT_WEBHOOK_SECRET: must be set"),
    ({"MAILBOT_WEBHOOK_SECRET": SECRET, "MAILBOT_TIMEZONE": "Mars/Olympus"}, [],
     "MAILBOT_TIMEZONE: unknown time zone"),
], ids=["no-secret", "no-secret-debug", "bad-timezone"])
def test_flask_run_with_a_bad_setting_exits_2_with_one_line(
    tmp_path: Path, setting: dict[str, str], options: list[str], expected: str
) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILBOT_", "FLASK_", "WERKZEUG_"))}
    env.update(MAILBOT_VAR_DIR=str(tmp_path / "var"),
               MAILBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'mailbot.db'}", **setting)
    flask = str(Path(sys.executable).with_name("flask"))
    # Bounded: were the app to start regardless, this would time out and fail.
    done = subprocess.run(
        [flask, "--app", "webhooks", "run", *options, "--host", "127.0.0.1",
         "--port", str(_free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"mailbot: configuration error: {expected}"), output
    assert "Traceback" not in output
