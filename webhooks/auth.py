"""Who may call: an HMAC signature for the contact-centre webhook, bearer tokens for staff.

The webhook signature covers ``<t>.`` followed by the raw body, so neither the body nor the time
can be changed without the secret, and a captured request stops working after five minutes.
Staff tokens are random and kept only as SHA-256 digests (a slow hash adds nothing for 256 random
bits); each token carries the staff member's name, which is what the audit trail records.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mailbot.adapters.orm import staff_tokens

SIGNATURE_HEADER = "X-Mailbot-Signature"
TOLERANCE_SECONDS = 300
SIGNATURE_HELP = (
    f"sign each request with {SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256, keyed "
    "with MAILBOT_WEBHOOK_SECRET, of '<t>.' followed by the exact body bytes>"
)
TOKEN_PREFIX = "mbt_"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,200}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class Unauthorized(Exception):
    pass


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (for clients and tests)."""
    return f"t={timestamp},v1={_digest(_key(secret), timestamp, body)}"


def verify_signature(secret: str | bytes, header: str | None, body: bytes, now: float) -> str:
    """Check the header against the body; return the digest that matched.

    Several ``v1=`` entries may be sent (a client rolling over to a new secret); one must match.
    """
    if not header:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header; {SIGNATURE_HELP}")
    stamps: list[str] = []
    digests: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise Unauthorized(f"malformed {SIGNATURE_HEADER} header; {SIGNATURE_HELP}")
        if name == "t":
            stamps.append(value)
        elif name == "v1":
            digests.append(value)
    if len(stamps) != 1 or not stamps[0].isascii() or not stamps[0].isdigit() or (
        len(stamps[0]) > 12
    ) or not digests or not all(_HEX64.match(d) for d in digests):
        raise Unauthorized(f"malformed {SIGNATURE_HEADER} header; {SIGNATURE_HELP}")
    timestamp = int(stamps[0])
    skew = now - timestamp
    if abs(skew) > TOLERANCE_SECONDS:
        raise Unauthorized(
            f"the signature's timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'ahead'}; "
            f"sign each request when you send it (allowed: {TOLERANCE_SECONDS} s) and check "
            "the sender's clock"
        )
    expected = _digest(_key(secret), timestamp, body)
    for candidate in digests:
        if hmac.compare_digest(expected, candidate.lower()):
            return expected
    raise Unauthorized(
        "the signature does not match the body; " + SIGNATURE_HELP
        + ", and send the body exactly as signed"
    )


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


# Staff tokens ---------------------------------------------------------------------------------


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(session: Session, name: str, now: datetime) -> str:
    """Store a new token for ``name``; the token is returned once and never stored."""
    token = new_token()
    session.execute(insert(staff_tokens).values(
        name=name, token_sha256=hash_token(token), created_at=now))
    return token


def staff_name(session: Session, authorization: str | None) -> str:
    """The name behind an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "send Authorization: Bearer <token>; `mailbot staff add-token NAME` issues one"
        )
    if not _TOKEN.match(token):
        raise Unauthorized("that bearer token is not valid; ask for a new one")
    name = session.scalar(
        select(staff_tokens.c.name).where(
            staff_tokens.c.token_sha256 == hash_token(token),
            staff_tokens.c.revoked_at.is_(None),
        )
    )
    if name is None:
        raise Unauthorized("that bearer token is not valid or was revoked; ask for a new one")
    return name
