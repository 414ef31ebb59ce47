"""The CLI contract: deadlines as JSON, clear one-line configuration errors, --help everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_deadlines_json(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOT_TIMEZONE", "Europe/London")
    r = cli("deadlines", "--received", "2026-12-24T17:45", "--json")
    assert r.code == 0, r.err
    # Christmas Eve after 17:00 -> Tuesday 29 December (25th and 28th are bank holidays).
    assert json.loads(r.out) == {
        "stage": 1,
        "deemed_received": "2026-12-29",
        "acknowledgement_due": "2027-01-06",  # 30, 31, (1 Jan), 4, 5, 6
        "response_due": "2027-01-13",  # 30, 31, 4, 5, 6, 7, 8, 11, 12, 13
    }


def test_deadlines_with_acknowledged_and_responded(cli) -> None:
    r = cli(
        "deadlines", "--received", "2026-12-21T10:00", "--acknowledged", "2026-12-22T09:00",
        "--responded", "2027-01-06T12:00+00:00", "--json",
    )
    assert r.code == 0, r.err
    assert json.loads(r.out) == {
        "stage": 1,
        "deemed_received": "2026-12-21",
        "acknowledgement_due": "2026-12-30",
        # From Tue 22: 23, 24, 29, 30, 31, 4, 5, 6, 7, 8
        "response_due": "2027-01-08",
        "stage2_request_by": "2027-02-03",
    }


def test_deadlines_stage2(cli) -> None:
    r = cli("deadlines", "--received", "2027-01-18T10:00", "--stage", "2", "--json")
    assert json.loads(r.out)["acknowledgement_due"] == "2027-01-25"
    assert json.loads(r.out)["response_due"] == "2027-02-15"


def test_bad_time_is_a_clear_usage_error(cli) -> None:
    r = cli("deadlines", "--received", "next tuesday")
    assert r.code == 2
    assert "is not an ISO 8601 time" in r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MAILBOT_TIMEZONE", "Mars/Olympus", "MAILBOT_TIMEZONE: unknown time zone"),
        ("MAILBOT_MAILBOX_URL", "pop3://mail.example", "MAILBOT_MAILBOX_URL: unsupported scheme"),
        ("MAILBOT_MAILBOX_URL", "imap://mail.example/INBOX", "MAILBOT_MAILBOX_URL: no user name"),
        ("MAILBOT_SMTP_URL", "smtp://relay.example:notaport", "MAILBOT_SMTP_URL: bad port"),
        ("MAILBOT_DATABASE_URL", "mysql://x@y/z", "MAILBOT_DATABASE_URL:"),
        ("MAILBOT_DATABASE_URL", "::::", "MAILBOT_DATABASE_URL: cannot parse"),
        ("MAILBOT_TEAM_ADDRESS", "not an address", "MAILBOT_TEAM_ADDRESS:"),
        ("MAILBOT_POLICY", "/nonexistent/policy.toml", "MAILBOT_POLICY:"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_variable(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    r = cli("deadlines", "--received", "2026-12-21T10:00")
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert expected in lines[0]


def test_policy_file_with_a_typo_names_the_key(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("stage1_acknowledgment_working_days = 3\n")
    monkeypatch.setenv("MAILBOT_POLICY", str(policy))
    r = cli("deadlines", "--received", "2026-12-21T10:00")
    assert r.code == 2
    assert "unknown policy key 'stage1_acknowledgment_working_days'" in r.err


def test_policy_file_changes_the_deadlines(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('stage1_acknowledgement_working_days = 3\nclosure_dates = ["2026-12-22"]\n')
    monkeypatch.setenv("MAILBOT_POLICY", str(policy))
    r = cli("deadlines", "--received", "2026-12-21T10:00", "--json")
    assert json.loads(r.out)["acknowledgement_due"] == "2026-12-29"  # 23, 24, 29


def test_console_script_and_module_both_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    for cmd in (
        [str(Path(sys.executable).with_name("mailbot"))],
        [sys.executable, "-m", "mailbot"],
    ):
        out = subprocess.run(
            [*cmd, "deadlines", "--received", "2026-12-21T10:00", "--json"],
            capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
        )
        assert json.loads(out.stdout)["response_due"] == "2027-01-07"


def test_every_command_has_help(cli) -> None:
    from mailbot.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        r = cli(name, "--help")
        assert r.code == 0 and "usage:" in r.out, name
