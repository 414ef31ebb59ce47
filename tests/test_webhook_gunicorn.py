"""The app as deployed: gunicorn running ``webhooks:create_app()`` on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailbot.adapters.database import make_engine, session_factory
from webhooks.auth import add_token, sign

SECRET = "gunicorn-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, data=body, headers=headers or {},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_DATABASE_URL=database_url, MAILBOT_WEBHOOK_SECRET=SECRET,
               MAILBOT_VAR_DIR=str(tmp_path / "var"))
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    proc = subprocess.Popen(
        [gunicorn, "--workers", "2", "--bind", f"127.0.0.1:{port}", "webhooks:create_app()"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, 30, lambda: proc.communicate()[0])
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_gunicorn_serves_phone_cases_and_the_staff_api(
    server: tuple[str, subprocess.Popen[str]], database_url: str
) -> None:
    base, proc = server
    engine = make_engine(database_url)
    with session_factory(engine).begin() as session:
        token = add_token(session, "Sam Duty", datetime.now(UTC))
    engine.dispose()

    body = json.dumps({
        "caller_name": "Ann Example", "email": "ann@example.org", "kind": "complaint",
        "summary": "No call back", "details": "Nobody called me back.", "logged_by": "Pat Phone",
    }).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "gunicorn-1",
               "X-Mailbot-Signature": sign(SECRET, body, int(time.time()))}
    status, got, created = request(f"{base}/api/v1/phone-cases", body, headers)
    assert status == 201, created
    assert got["Location"] == created["links"]["self"]
    status, got, again = request(f"{base}/api/v1/phone-cases", body, headers)
    assert (status, again, got.get("Idempotent-Replayed")) == (201, created, "true")

    status, _, detail = request(base + created["links"]["self"],
                                headers={"Authorization": f"Bearer {token}"})
    assert status == 200
    assert detail["ref"] == created["ref"]
    assert [m["template"] for m in detail["messages"]] == [None, "complaint_acknowledgement"]

    status, _, refused = request(f"{base}/api/v1/phone-cases", body,
                                 {**headers, "X-Mailbot-Signature": sign("wrong-secret-x", body,
                                                                         int(time.time()))})
    assert status == 401 and "does not match" in refused["error"]
    big = b'{"details": "' + b"x" * (65 * 1024) + b'"}'
    status, _, too_big = request(f"{base}/api/v1/phone-cases", big,
                                 {"Content-Type": "application/json"})
    assert (status, too_big["error"]) == (413, "the body is larger than 64 KiB; send less")

    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, output
    assert "Traceback" not in output


# Start-up with the deployed settings (the Procfile's --config gunicorn.conf.py) ------------------

CONFIG = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"


def _gunicorn(env: dict[str, str], tmp_path: Path, port: int) -> subprocess.Popen[str]:
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    return subprocess.Popen(
        [gunicorn, "--config", str(CONFIG), "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "--pid", str(tmp_path / "gunicorn.pid"), "webhooks:create_app()"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_healthy(proc: subprocess.Popen[str], base: str, seconds: float,
                 output: Callable[[], str]) -> Any:
    """The body of the first 200 from ``base``/healthz; fails with ``output()`` if gunicorn
    exits or does not answer within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, _, body = request(f"{base}/healthz")
            if status == 200:
                return body
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"gunicorn did not start:\n{output()}")
        time.sleep(0.1)


def _finish(proc: subprocess.Popen[str], timeout: float) -> str:
    """The whole output once ``proc`` exits; kills it (and fails) if it has not in ``timeout``."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
        raise AssertionError(f"gunicorn was still running after {timeout} s:\n{output}") from None


@pytest.mark.parametrize(("setting", "expected"), [
    ({}, "MAILBOT_WEBHOOK_SECRET: must be set to at least 16 characters"),
    ({"MAILBOT_WEBHOOK_SECRET": SECRET, "MAILBOT_STAFF_DIRECTORY": "/nonexistent/staff.csv"},
     "MAILBOT_STAFF_DIRECTORY: no such file"),
], ids=["no-secret", "no-staff-directory"])
def test_gunicorn_with_a_bad_setting_exits_2_with_one_line(
    tmp_path: Path, setting: dict[str, str], expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_VAR_DIR=str(tmp_path / "var"), **setting)
    port = free_port()
    proc = _gunicorn(env, tmp_path, port)
    output = _finish(proc, timeout=60)
    assert proc.returncode == 2, output
    errors = [line for line in output.splitlines() if "configuration error" in line]
    assert len(errors) == 1, output
    assert f"[ERROR] mailbot: configuration error: {expected}" in errors[0], output
    assert "Traceback" not in output
    # Stopped before binding the port or forking a worker, and leaves no pid file behind.
    assert "Listening at" not in output and "Booting worker" not in output, output
    assert not (tmp_path / "gunicorn.pid").exists()


def test_gunicorn_with_a_good_configuration_starts_and_stops_cleanly(
    database_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(MAILBOT_DATABASE_URL=database_url, MAILBOT_WEBHOOK_SECRET=SECRET,
               MAILBOT_VAR_DIR=str(tmp_path / "var"))
    port = free_port()
    proc = _gunicorn(env, tmp_path, port)
    try:
        health = wait_healthy(proc, f"http://127.0.0.1:{port}", 60, lambda: _finish(proc, 20))
        assert health == {"status": "ok", "database": "ok"}
        assert (tmp_path / "gunicorn.pid").read_text().strip() == str(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    output = _finish(proc, timeout=30)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "configuration" not in output, "the check passed in silence"
