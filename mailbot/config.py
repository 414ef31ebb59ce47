"""Settings from environment variables (12-factor), with defaults that run a fresh checkout.

The variable names are a contract with the tools that deploy mailbot. A bad value stops start-up
with one line naming the variable (``ConfigError``), never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailbot.workflow.policy import Policy, PolicyError, load_policy


class ConfigError(Exception):
    """A setting that cannot be used; the message starts with the variable's name."""


@dataclass(frozen=True)
class MailboxURL:
    scheme: str  # "imap", "imaps" or "maildir"
    host: str = ""
    port: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    folder: str = "INBOX"
    path: Path | None = None  # maildir only


@dataclass(frozen=True)
class SMTPURL:
    scheme: str  # "smtp", "smtp+starttls", "smtps" or "maildir"
    host: str = ""
    port: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    path: Path | None = None  # maildir only


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    mailbox: MailboxURL
    smtp: SMTPURL
    team_address: str
    commissioning_address: str
    safeguarding_address: str
    manager_address: str
    webhook_secret: str | None
    timezone: ZoneInfo
    policy: Policy
    staff_directory: Path | None = None

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(
            a.lower()
            for a in (
                self.team_address,
                self.commissioning_address,
                self.safeguarding_address,
                self.manager_address,
            )
        )


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    value = _env(env, name) or default
    _, addr = parseaddr(value)
    if "\r" in value or "\n" in value or not addr or "@" not in addr or " " in addr:
        raise ConfigError(f"{name}: {value!r} is not an email address")
    return addr


def _maildir_path(name: str, url: str) -> Path:
    parsed = urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"{name}: a maildir URL takes an absolute path, maildir:///ABS/PATH")
    path = unquote(parsed.path)
    if not path.startswith("/"):
        raise ConfigError(f"{name}: the maildir path must be absolute, maildir:///ABS/PATH")
    return Path(path)


def _port(name: str, url: str, default: int) -> int:
    try:
        port = urlsplit(url).port
    except ValueError as exc:
        raise ConfigError(f"{name}: bad port in {_redact(url)} ({exc})") from exc
    return port or default


def _redact(url: str) -> str:
    parsed = urlsplit(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def parse_mailbox_url(url: str, name: str = "MAILBOT_MAILBOX_URL") -> MailboxURL:
    parsed = urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme == "maildir":
        return MailboxURL(scheme="maildir", path=_maildir_path(name, url))
    if scheme not in ("imap", "imaps"):
        raise ConfigError(
            f"{name}: unsupported scheme {parsed.scheme!r} in {_redact(url)}; "
            "use imap://USER:PASSWORD@HOST:PORT/FOLDER, imaps://... or maildir:///ABS/PATH"
        )
    if not parsed.hostname:
        raise ConfigError(f"{name}: no host in {_redact(url)}")
    if not parsed.username:
        raise ConfigError(f"{name}: no user name in {_redact(url)}")
    folder = unquote(parsed.path.lstrip("/")) or "INBOX"
    return MailboxURL(
        scheme=scheme,
        host=parsed.hostname,
        port=_port(name, url, 993 if scheme == "imaps" else 143),
        username=unquote(parsed.username),
        password=unquote(parsed.password or ""),
        folder=folder,
    )


def parse_smtp_url(url: str, name: str = "MAILBOT_SMTP_URL") -> SMTPURL:
    parsed = urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme == "maildir":
        return SMTPURL(scheme="maildir", path=_maildir_path(name, url))
    defaults = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
    if scheme not in defaults:
        raise ConfigError(
            f"{name}: unsupported scheme {parsed.scheme!r} in {_redact(url)}; "
            "use smtp://, smtp+starttls://, smtps:// or maildir:///ABS/PATH"
        )
    if not parsed.hostname:
        raise ConfigError(f"{name}: no host in {_redact(url)}")
    return SMTPURL(
        scheme=scheme,
        host=parsed.hostname,
        port=_port(name, url, defaults[scheme]),
        username=unquote(parsed.username or ""),
        password=unquote(parsed.password or ""),
    )


def _database_url(value: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ConfigError(f"MAILBOT_DATABASE_URL: cannot parse {value!r} ({exc})") from exc
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"MAILBOT_DATABASE_URL: {url.get_backend_name()!r} is not supported; "
            "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        # psycopg (3) is the driver we ship; plain postgresql:// would ask for psycopg2.
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    env = os.environ if env is None else env
    base = (cwd or Path.cwd()).resolve()
    var_dir = Path(_env(env, "MAILBOT_VAR_DIR") or base / "var").resolve()

    db = _database_url(_env(env, "MAILBOT_DATABASE_URL") or f"sqlite:///{var_dir / 'mailbot.db'}")
    mailbox = parse_mailbox_url(
        _env(env, "MAILBOT_MAILBOX_URL") or f"maildir://{var_dir / 'mail' / 'inbox'}"
    )
    smtp = parse_smtp_url(_env(env, "MAILBOT_SMTP_URL") or f"maildir://{var_dir / 'mail' / 'sent'}")

    tz_name = _env(env, "MAILBOT_TIMEZONE") or "Europe/London"
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"MAILBOT_TIMEZONE: unknown time zone {tz_name!r}") from exc

    policy_path = _env(env, "MAILBOT_POLICY")
    try:
        policy = load_policy(Path(policy_path) if policy_path else None)
    except PolicyError as exc:
        raise ConfigError(f"MAILBOT_POLICY: {exc}") from exc

    directory = _env(env, "MAILBOT_STAFF_DIRECTORY")
    if directory and not Path(directory).is_file():
        raise ConfigError(f"MAILBOT_STAFF_DIRECTORY: no such file {directory!r}")

    return Settings(
        var_dir=var_dir,
        database_url=db,
        mailbox=mailbox,
        smtp=smtp,
        team_address=_address(env, "MAILBOT_TEAM_ADDRESS", "care.quality@council.example"),
        commissioning_address=_address(
            env, "MAILBOT_COMMISSIONING_ADDRESS", "commissioning@council.example"
        ),
        safeguarding_address=_address(
            env, "MAILBOT_SAFEGUARDING_ADDRESS", "safeguarding@council.example"
        ),
        manager_address=_address(
            env, "MAILBOT_MANAGER_ADDRESS", "care.quality.manager@council.example"
        ),
        webhook_secret=_env(env, "MAILBOT_WEBHOOK_SECRET"),
        timezone=tz,
        policy=policy,
        staff_directory=Path(directory) if directory else None,
    )


def require_webhook_secret(settings: Settings) -> str:
    secret = settings.webhook_secret
    if not secret or len(secret) < 16:
        raise ConfigError(
            "MAILBOT_WEBHOOK_SECRET: must be set to at least 16 characters to serve the webhook"
        )
    return secret
