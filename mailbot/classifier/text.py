"""The one place that turns a message into the text the classifier reads.

Intake and training must see text built the same way, or the model learns one distribution and
is asked about another. The classifier reads the subject and the sender's new words (quoted
history and signatures removed); for a forward, the forwarded original as well, because in a
staff forward of thanks the praise is in the forwarded part.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mailbot.intake.reply_text import split_reply, strip_subject_prefixes

if TYPE_CHECKING:
    from mailbot.intake.parsing import ParsedMessage

_WS = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")
#: Long letters carry their meaning early; capping keeps a 10 MB body from costing seconds.
MAX_CHARS = 5000


def classifier_text(subject: str, new_text: str, forwarded_text: str | None = None) -> str:
    parts = [strip_subject_prefixes(subject), new_text]
    if forwarded_text:
        parts.append(forwarded_text)
    text = "\n".join(p.strip() for p in parts if p and p.strip())
    text = _BLANK_LINES.sub("\n\n", _WS.sub(" ", text))
    return text[:MAX_CHARS].lower()


def message_text(msg: ParsedMessage) -> str:
    """What the classifier reads of a parsed email."""
    return classifier_text(msg.subject, msg.new_text,
                           msg.forwarded.text if msg.forwarded else None)


def classifier_text_from_body(subject: str, body: str) -> str:
    """For training and ``--jsonl`` input: a raw body, split the same way intake splits it."""
    parts = split_reply(body, subject)
    forwarded = parts.forwarded.text if parts.forwarded else None
    return classifier_text(subject, parts.new_text, forwarded)
