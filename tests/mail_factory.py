"""Hand-made test emails, as raw bytes the way a mail server would store them."""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime


def make_email(
    *,
    sender: str = "Ann Example <ann@example.org>",
    to: str = "care.quality@council.example",
    subject: str = "Still waiting",
    body: str = "Hello",
    date: datetime | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = format_datetime(date)
    if message_id:
        msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        msg["References"] = f"<{in_reply_to}>"
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


COMPLAINT = (
    "I rang three times last month about my mother's care package and was told each time "
    "that a social worker would call back within two days. Nobody has. Her calls were cut "
    "from four a day to two without explanation. I want someone to look into why nobody "
    "called and to review the decision."
)
COMPLIMENT = (
    "The reablement team were brilliant with my father after his operation. They were "
    "patient and cheerful and he is walking to the shops on his own again."
)
