"""The new words of a message: quoted history and signatures removed, forwards split out.

Splitting replies is done by ``mail-parser-reply`` (it knows the quote headers of Gmail, Outlook,
Apple Mail and Thunderbird in many languages). What it cannot know is whether a quoted block is
history to drop or a forwarded message to keep; that depends on the subject and the forward
markers, and is decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from mailparser_reply.parser import EmailMessage

from mailbot.intake.quote_headers import QuoteHeaders

_FORWARD_SUBJECT = re.compile(r"^\s*((fwd?|fw|tr|wg|rv|doorst)\s*:\s*)+", re.IGNORECASE)
_REPLY_SUBJECT = re.compile(r"^\s*((re|aw|sv|antw)\s*:\s*)+", re.IGNORECASE)
_FORWARD_MARKER = re.compile(
    r"^[\s>]*(-{2,}\s*(Forwarded message|Original Message|Weitergeleitete Nachricht)\s*-{2,}"
    r"|Begin forwarded message:"
    r"|Forwarded message:\s*$"
    r"|-------- (Forwarded|Original) Message --------)",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_LINE = re.compile(r"^\s*\**(From|Sent|Date|To|Cc|Subject)\**\s*:\s*\**(.*?)\**\s*$",
                          re.IGNORECASE)

_MAILTO = re.compile(r"\[\s*mailto:\s*([^\]\s]+)\s*\]", re.IGNORECASE)

_TWELVE_HOUR = re.compile(r"\d\s*[AP]M\b", re.IGNORECASE)

#: The quote-header languages mail-parser-reply looks for: English, the council's mail.
LANGUAGES = ("en",)
_PATTERNS = EmailMessage(text="", languages=list(LANGUAGES))

_HEADERS = QuoteHeaders(_PATTERNS.HEADER_REGEX)


def read_replies(text: str) -> list[Any]:
    """mail-parser-reply's replies for ``text``, as its ``EmailReplyParser.read`` gives them,
    with its patterns compiled once instead of for every message and its quote-header search
    in linear time (see ``quote_headers``)."""
    return EmailMessage(
        text=text,
        languages=list(LANGUAGES),
        _header_regex=_HEADERS,
        _disclaimers_regex=_PATTERNS.DISCLAIMERS_REGEX,
        _signature_regex=_PATTERNS.SIGNATURE_REGEX,
    ).read().replies


@dataclass(frozen=True)
class Forwarded:
    """The original message inside a staff forward."""

    author_name: str
    author_email: str | None
    date: datetime | None
    subject: str
    text: str


@dataclass(frozen=True)
class ReplyParts:
    new_text: str
    forwarded: Forwarded | None


def is_forward_subject(subject: str) -> bool:
    return bool(_FORWARD_SUBJECT.match(subject or ""))


def strip_subject_prefixes(subject: str) -> str:
    s = subject or ""
    while True:
        t = _REPLY_SUBJECT.sub("", _FORWARD_SUBJECT.sub("", s))
        if t == s:
            return s.strip()
        s = t


def split_reply(text: str, subject: str = "") -> ReplyParts:
    """The sender's new text, and the forwarded original when the message is a forward.

    A quoted block is treated as a forward when the subject says so (Fwd:, FW:) or when an
    explicit forward marker precedes it; otherwise it is reply history and dropped.
    """
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        return ReplyParts("", None)
    replies = read_replies(text)
    if not replies:
        return ReplyParts(text.strip(), None)
    first = replies[0]
    new_text = (first.body or "").strip()
    if not new_text and not first.headers:
        new_text = (first.content or "").strip()
    # The marker line itself ("---- Forwarded message ----") is not the sender's words, and
    # neither is what it leaves behind: a lone ">" or an Outlook rule ("_____", "-----").
    new_text = _strip_residue(_FORWARD_MARKER.sub("", new_text))
    forwarded: Forwarded | None = None
    marker = _FORWARD_MARKER.search(text)
    forwarded_by_marker = bool(marker) and "forward" in marker.group(0).lower() if marker else False
    is_forward = is_forward_subject(subject) or forwarded_by_marker
    if is_forward and first.headers:
        # The text opens with the original's header block (Outlook forwards with nothing
        # added: "From: ... Sent: ... Subject: ..."): the forwarder wrote no words of their own.
        return ReplyParts("", _forwarded_from(replies))
    if len(replies) > 1 and is_forward:
        forwarded = _forwarded_from(replies[1:])
    return ReplyParts(new_text, forwarded)


_RESIDUE_LINE = re.compile(r"^[\s>_\-=*]*$")


def _strip_residue(text: str) -> str:
    lines = text.strip().splitlines()
    while lines and _RESIDUE_LINE.match(lines[-1]):
        lines.pop()
    while lines and _RESIDUE_LINE.match(lines[0]):
        lines.pop(0)
    return "\n".join(lines).strip()


def _forwarded_from(replies: list[Any]) -> Forwarded | None:
    # The forwarded message is the first later part that has both headers and words.
    for rep in replies:
        block = rep.headers or ""
        headers = _parse_header_block(block)
        body = (rep.body or "").strip()
        if not body and not block.strip():
            body = (rep.content or "").strip()
        # New Outlook puts no blank line after "Subject:", so the reply parser counts the first
        # line of the original as part of the header block; give it back to the body.
        spill = _after_last_header_line(block)
        if spill and headers:
            body = (spill + "\n" + body).strip()
        if not body:
            # e.g. a lone "-----Original Message-----" line taken for a header block.
            continue
        name, email = _author(headers, block)
        return Forwarded(
            author_name=name,
            author_email=email.lower() if email else None,
            date=_parse_date(headers.get("date") or headers.get("sent") or ""),
            subject=headers.get("subject", ""),
            text=_unquote(body),
        )
    return None


_LAST_ANGLE_ADDR = re.compile(r"<\s*([^<>\s@]+@[^<>\s]+)\s*>\s*$")
_ON_WROTE = re.compile(r"^\W*On\s+(.+?),\s*(.*?)\s*<([^<>\s]+@[^<>\s]+)>\s*wrote:", re.I | re.S)


def _author(headers: dict[str, str], block: str) -> tuple[str, str | None]:
    if "from" not in headers:
        # A reply-style quote header used for a forward (Outlook for Mac):
        # 'On 28/10/2021 12:46, "John Doe" <john.doe@acme.com> wrote:'
        match = _ON_WROTE.match(block.strip())
        if match:
            return match.group(2).strip().strip('"').strip(), match.group(3)
        return "", None
    # Outlook desktop writes "Name [mailto:name@example.org]"; Outlook on the web can leave
    # "Name<mailto:a@b> <a@b<mailto:a@b>>" and "X on behalf of Y" in plain text.
    sender = _MAILTO.sub(r"<\1>", headers["from"])
    sender = re.sub(r"<mailto:[^<>]*>", "", sender, flags=re.IGNORECASE)
    sender = re.split(r"\s+on behalf of\s+", sender, maxsplit=1, flags=re.IGNORECASE)[0].strip()
    if "@" not in sender:
        return sender.strip('"').strip(), None
    # "Doe, John <john.doe@acme.com>" (Exchange's surname-first display names) is one mailbox,
    # though the comma is not quoted.
    angle = _LAST_ANGLE_ADDR.search(sender)
    if angle and sender.count("<") == 1:
        return sender[: angle.start()].strip().strip('"').strip(), angle.group(1)
    parsed = getaddresses([sender])
    if not parsed:
        return "", None
    name, email = parsed[0][0].strip(), (parsed[0][1].strip() or None)
    if email and "@" not in email:
        name, email = name or email, None
    return name, email


_ANY_HEADER_LINE = re.compile(r"^\s*\**[A-Za-z][A-Za-z-]{0,30}\**\s*:")
_SUBJECT_LINE = re.compile(r"^\s*\**subject\**\s*:", re.IGNORECASE)


def _after_last_header_line(block: str) -> str:
    """Lines after a closing "Subject:" line (Outlook's last header) that belong to the body.

    Only after "Subject:": other clients end with To/Cc, whose wrapped address lists must stay
    in the header block.
    """
    lines = block.splitlines()
    last = max((i for i, line in enumerate(lines) if _ANY_HEADER_LINE.match(line.lstrip("> "))),
               default=None)
    if last is None or not _SUBJECT_LINE.match(lines[last].lstrip("> ")):
        return ""
    return "\n".join(lines[last + 1 :]).strip()


def _parse_header_block(block: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.splitlines():
        m = _HEADER_LINE.match(line.lstrip("> "))
        if m and m.group(1).lower() not in out:
            out[m.group(1).lower()] = m.group(2).strip()
    return out


def _parse_date(value: str) -> datetime | None:
    if not value:
        return None
    # parsedate ignores "PM" ("Wednesday, October 27, 2021 3:14 PM" came out as 03:14), so
    # 12-hour times go to the explicit formats below.
    if not _TWELVE_HOUR.search(value):
        try:
            return parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            pass
    # Apple Mail ends with a zone abbreviation ("... at 09:15:00 BST") that strptime cannot read.
    value = re.sub(r"\s+(?!AM$|PM$)[A-Z]{2,5}$", "", value.strip())
    for fmt in ("%d %B %Y %H:%M", "%A, %B %d, %Y %I:%M %p", "%a, %d %b %Y at %H:%M",
                "%a, %b %d, %Y at %I:%M %p", "%d %B %Y at %H:%M", "%d %B %Y at %H:%M:%S"):
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    return None


def _unquote(text: str) -> str:
    lines = text.splitlines()
    quoted = sum(1 for line in lines if line.startswith(">"))
    # Most lines quoted: the client quoted the whole original (a long line it re-wrapped may
    # have lost its ">").
    if lines and quoted * 2 > sum(1 for line in lines if line.strip()):
        lines = [line[1:].lstrip(" ") if line.startswith(">") else line for line in lines]
    return "\n".join(lines).strip()
