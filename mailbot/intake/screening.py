"""Is a person on the other end? Screening of auto-generated mail (data flow step 3).

Mail that a machine wrote (delivery reports, out-of-office replies, mailing lists, no-reply
senders, our own messages coming back) is recorded but must never be acknowledged and never
open a complaint clock: answering it loops, and the help desk measured in the field answered 56
of 87 real bounces. Relying on ``Auto-Submitted`` alone is what let those through, so every
signal real servers and clients actually send is checked, most specific first; the reason
names the header or rule that matched, for the log and for a person reviewing the decision.

Subject rules are the weakest evidence and a false positive costs a complainant their
acknowledgement, so they are anchored at the start of the subject and, where a person could
plausibly write the same words ("Out of office hours care..."), require the colon that the
machine adds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailbot.intake.parsing import ParsedMessage

BOUNCE = "bounce"
AUTO_REPLY = "auto_reply"
MAILING_LIST = "mailing_list"
NO_REPLY_SENDER = "no_reply_sender"
OWN_MESSAGE = "own_message"


@dataclass(frozen=True)
class Screening:
    """Why a message is auto-generated: ``kind`` (one of the constants above) and a reason."""

    kind: str
    reason: str


_REPORT_TYPES = {"message/delivery-status", "message/disposition-notification"}
_BOUNCE_LOCAL_PARTS = {"mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster"}
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliverable\s*:"
    r"|undelivered mail returned to sender"
    r"|delivery status notification\s*\("
    r"|mail delivery failed"
    r"|returned mail\s*:"
    r"|failure notice\s*$"
    r"|delivery has failed to these recipients)",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*\[?\s*(automatic reply|auto[- ]?reply|autoreply|auto[- ]?response"
    r"|out of (the )?office( auto[- ]?reply)?)\s*(:|\]|$)",
    re.IGNORECASE,
)
_NO_REPLY_LOCAL_PART = re.compile(
    r"(^|[-_.+])(no[-_.]?reply|do[-_.]?not[-_.]?reply)($|[-_.+])", re.IGNORECASE
)
_LIST_PRECEDENCE = {"bulk", "junk", "list"}
_ADDRESS = re.compile(r"[^\s<>,;\"'()]+@[^\s<>,;\"'()]+")


def screen(msg: ParsedMessage, own_addresses: frozenset[str]) -> Screening | None:
    """The reason ``msg`` was written by a machine, or None when a person wrote it."""
    own = frozenset(address.strip().lower() for address in own_addresses)
    for rule in (_own_message, _bounce, _auto_reply, _mailing_list, _no_reply_sender):
        found = rule(msg, own)
        if found is not None:
            return found
    return None


def _header(msg: ParsedMessage, name: str) -> str:
    return (msg.headers.get(name) or "").strip()


def _local_part(address: str | None) -> str:
    return (address or "").rpartition("@")[0].lower()


def _own_message(msg: ParsedMessage, own: frozenset[str]) -> Screening | None:
    if msg.sender_email and msg.sender_email.lower() in own:
        return Screening(OWN_MESSAGE, f"sent from our own address {msg.sender_email}")
    looped = set(_ADDRESS.findall(_header(msg, "x-loop").lower())) & own
    if looped:
        return Screening(OWN_MESSAGE, f"X-Loop names our address {min(looped)}")
    return None


def _bounce(msg: ParsedMessage, own: frozenset[str]) -> Screening | None:
    if msg.content_type == "multipart/report":
        report_type = _header(msg, "report-type") or "unspecified"
        return Screening(BOUNCE, f"Content-Type multipart/report (report-type={report_type})")
    if msg.content_type in _REPORT_TYPES:
        return Screening(BOUNCE, f"Content-Type {msg.content_type}")
    failed = _header(msg, "x-failed-recipients")
    if failed:
        return Screening(BOUNCE, f"X-Failed-Recipients: {failed[:200]}")
    for name in ("return-path", "x-envelope-from"):
        if name in msg.headers and re.sub(r"\s", "", msg.headers[name]) in ("<>", ""):
            label = "Return-Path" if name == "return-path" else "X-Envelope-From"
            return Screening(BOUNCE, f"empty {label} (<>), the null sender of delivery reports")
    local = _local_part(msg.sender_email)
    if local in _BOUNCE_LOCAL_PARTS:
        return Screening(BOUNCE, f"sender {msg.sender_email} is a mail system address")
    match = _BOUNCE_SUBJECT.match(msg.subject)
    if match:
        return Screening(BOUNCE, f"delivery-failure subject ({match.group(1).strip()!r})")
    return None


def _auto_reply(msg: ParsedMessage, own: frozenset[str]) -> Screening | None:
    submitted = _header(msg, "auto-submitted")
    if submitted and submitted.split(";", 1)[0].strip().lower() != "no":
        return Screening(AUTO_REPLY, f"Auto-Submitted: {submitted[:100]}")
    suppress = _header(msg, "x-auto-response-suppress")
    if suppress:
        return Screening(AUTO_REPLY, f"X-Auto-Response-Suppress: {suppress[:100]}")
    for name, label in (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond")):
        value = _header(msg, name)
        if value and value.lower() not in ("no", "false", "0"):
            return Screening(AUTO_REPLY, f"{label}: {value[:100]}")
    precedence = _header(msg, "precedence").lower()
    if precedence == "auto_reply":
        return Screening(AUTO_REPLY, "Precedence: auto_reply")
    match = _AUTO_REPLY_SUBJECT.match(msg.subject)
    if match:
        return Screening(AUTO_REPLY, f"auto-reply subject ({match.group(1).strip()!r})")
    return None


def _mailing_list(msg: ParsedMessage, own: frozenset[str]) -> Screening | None:
    list_id = _header(msg, "list-id")
    if list_id:
        return Screening(MAILING_LIST, f"List-Id: {list_id[:100]}")
    if _header(msg, "list-unsubscribe"):
        return Screening(MAILING_LIST, "List-Unsubscribe header")
    precedence = _header(msg, "precedence").lower()
    if precedence in _LIST_PRECEDENCE:
        return Screening(MAILING_LIST, f"Precedence: {precedence}")
    return None


def _no_reply_sender(msg: ParsedMessage, own: frozenset[str]) -> Screening | None:
    local = _local_part(msg.sender_email)
    if not local or not _NO_REPLY_LOCAL_PART.search(local):
        return None
    reply_to = (msg.reply_to or "").lower()
    if reply_to and reply_to != msg.sender_email and not _NO_REPLY_LOCAL_PART.search(
        _local_part(reply_to)
    ):
        # Web forms (the council's own "contact us" among them) send a person's words from a
        # no-reply address with the person in Reply-To: that person must be answered.
        return None
    return Screening(NO_REPLY_SENDER, f"no-reply sender {msg.sender_email}")
