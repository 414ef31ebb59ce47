"""Every email mailbot sends, rendered from ``templates/`` and given safe headers.

Templates are plain text (Jinja2, autoescape off: nothing here is HTML). Each starts with a
``Subject:`` line and a blank line.

The message bytes are assembled here rather than through ``email.message.EmailMessage``: its
header registry costs about 0.8 ms a message, forty times the rest of composing, and that is
most of a reminder sweep or an intake pass. What we send is one fixed shape (a handful of
headers and a UTF-8 text/plain body), so the standard library's encoders do the parts that
need care: every header value is made a single line by ``one_line`` (no CR/LF can reach the
output, so no header can be injected), non-ASCII is encoded by ``email.header.Header``
(RFC 2047) and the body by ``quopri``. The tests parse the result back with the standard
library and check every header and the body.
"""

from __future__ import annotations

import quopri
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.header import Header
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


_CONTROL_TO_SPACE = {c: " " for c in (*range(32), 127)}


def one_line(value: str, limit: int = 200) -> str:
    """A header-safe single line: control characters become spaces, length is capped."""
    return " ".join(value.translate(_CONTROL_TO_SPACE).split())[:limit]


def _header(name: str, value: str) -> str:
    value = one_line(value, 2000)
    if not value.isascii():
        value = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {value}\r\n"


@dataclass(frozen=True)
class Composed:
    message_id: str  # without angle brackets
    subject: str
    body: str
    raw: bytes  # the whole message, CRLF line endings


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
            # The templates ship with the release; checking each one's modification time
            # before every email was a file-system call per message sent.
            auto_reload=False,
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
        message_id = make_msgid(idstring="mailbot", domain=self.domain)
        headers = [
            ("Message-ID", message_id),
            ("Date", format_datetime(now)),
            ("From", f"Care and Support Quality <{self.team_address}>"),
            ("To", one_line(to, 320)),
            ("Subject", subject),
        ]
        if auto_reply:
            # RFC 3834: tells other robots not to answer us, and us not to answer them.
            headers += [("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All")]
        else:
            headers.append(("Auto-Submitted", "auto-generated"))
        if in_reply_to:
            refs = [one_line(r, 500) for r in [*references, in_reply_to][-10:]]
            headers.append(("In-Reply-To", f"<{refs[-1]}>"))
        if urgent:
            headers += [("Importance", "High"), ("X-Priority", "1")]
        headers += [("MIME-Version", "1.0"), ("Content-Type", 'text/plain; charset="utf-8"'),
                    ("Content-Transfer-Encoding", "quoted-printable")]
        head = "".join(_header(k, v) for k, v in headers)
        if in_reply_to:
            # Folded one identifier a line, so ten long ones stay under the line limit.
            head += "References: " + "\r\n ".join(f"<{r}>" for r in refs) + "\r\n"
        text = body.replace("\r\n", "\n").replace("\n", "\r\n")
        raw = head.encode("ascii") + b"\r\n" + quopri.encodestring(text.encode("utf-8"))
        return Composed(message_id.strip("<>"), subject, body, raw)
