"""Every email mailbot sends, rendered from ``templates/`` and given safe headers.

Templates are plain text (Jinja2, autoescape off: nothing here is HTML). Each starts with a
``Subject:`` line and a blank line. Headers are set through ``email.message.EmailMessage``,
whose default policy refuses CR/LF in header values, so no input can inject a header; subjects
are still flattened first so that a hostile subject is shortened rather than refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"


def _longdate(value: date | None) -> str:
    if value is None:
        return "a date we will confirm"
    return f"{value:%A} {value.day} {value:%B %Y}"


def one_line(value: str, limit: int = 200) -> str:
    """A header-safe single line: control characters become spaces, length is capped."""
    cleaned = "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in value)
    return " ".join(cleaned.split())[:limit]


@dataclass(frozen=True)
class Composed:
    message_id: str  # without angle brackets
    subject: str
    body: str
    message: EmailMessage


class Composer:
    def __init__(self, team_address: str, timezone: ZoneInfo,
                 templates_dir: Path = TEMPLATES_DIR) -> None:
        self.team_address = team_address
        self.domain = team_address.rsplit("@", 1)[-1]
        self.tz = timezone
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=False,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
        )
        self.env.filters["longdate"] = _longdate
        self.env.filters["localtime"] = lambda v: (
            v.astimezone(self.tz).strftime("%d %B %Y %H:%M") if isinstance(v, datetime) else "-"
        )

    def render(self, template: str, **context: Any) -> tuple[str, str]:
        text = self.env.get_template(f"{template}.txt.j2").render(
            team_address=self.team_address, **context
        )
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise ValueError(f"template {template} must start with a Subject: line")
        return one_line(first[len("Subject:"):]), body.lstrip("\n")

    def compose(
        self,
        template: str,
        to: str,
        now: datetime,
        *,
        auto_reply: bool = False,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
        urgent: bool = False,
        context: dict[str, Any],
    ) -> Composed:
        subject, body = self.render(template, **context)
        msg = EmailMessage()
        message_id = make_msgid(idstring="mailbot", domain=self.domain)
        msg["Message-ID"] = message_id
        msg["Date"] = format_datetime(now)
        msg["From"] = f"Care and Support Quality <{self.team_address}>"
        msg["To"] = one_line(to, 320)
        msg["Subject"] = subject
        if auto_reply:
            # RFC 3834: tells other robots not to answer us, and us not to answer them.
            msg["Auto-Submitted"] = "auto-replied"
            msg["X-Auto-Response-Suppress"] = "All"
        else:
            msg["Auto-Submitted"] = "auto-generated"
        if in_reply_to:
            msg["In-Reply-To"] = f"<{one_line(in_reply_to, 500)}>"
            refs = [*references, in_reply_to]
            msg["References"] = " ".join(f"<{one_line(r, 500)}>" for r in refs[-10:])
        if urgent:
            msg["Importance"] = "High"
            msg["X-Priority"] = "1"
        msg.set_content(body, cte="quoted-printable")
        return Composed(message_id.strip("<>"), subject, body, msg)
