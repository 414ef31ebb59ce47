"""Raw RFC 822 bytes to one normalised, safe record (data flow step 2).

Every message that reaches the inbox is hostile input: broken MIME, unknown or lying charsets,
8-bit bytes in headers, CR/LF smuggled through encoded words, path traversal in attachment
names, 10 MB bodies. This module turns any of that into a :class:`ParsedMessage` whose strings
are decoded, single-line where they are headers, and bounded in size, or raises
:class:`UnparseableMessage` when there is nothing usable at all, so that the caller can
quarantine that one message and carry on with the others.

``mail-parser`` is tried first and the standard library's ``email`` package is the fallback when
it raises (it does, e.g. on a bounce whose enclosed original is truncated mid-multipart). What
each is used for was decided by checking their behaviour on real mail, not assumed:

* mail-parser is used for the address headers (it decodes display names in their lexical
  context, so ``=?utf-8?q?Smith=2C_John?= <j@x>`` stays one mailbox) and as a second opinion on
  the date and on MIME defects.
* Everything else is read from the ``email.message.Message`` tree that mail-parser itself built
  with the standard library, because mail-parser's own views lose what we need: its header
  decoding silently *drops* undecodable bytes (``caf\\xe9`` in an ``x-unknown`` word becomes
  ``caf``) and keeps CR/LF from encoded words; its ``text_plain`` mixes the text of attached
  messages and DSN parts into the body; it rejects dates without a zone; and it cannot tell a
  forwarded ``message/rfc822`` from the body. Walking the tree here keeps those decisions in
  one place and identical on both paths.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import html as html_module
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import mailparser
from inscriptis import get_text
from mailparser.const import ADDRESSES_HEADERS as _MP_ADDRESS_HEADERS
from mailparser.dates import date_diagnostics, parse_mail_date
from mailparser.exceptions import MailParserRecursionError
from mailparser.utils import get_addresses as mp_get_addresses

from mailbot.intake import feedparser_tail
from mailbot.intake.reply_text import Forwarded, is_forward_subject, split_reply

log = logging.getLogger(__name__)

feedparser_tail.install()  # the same parse, without a scan of every body (see that module)

PARSER_MAIL_PARSER = "mail-parser"
PARSER_EMAIL = "email"

# Headers the screening and threading steps rely on; always kept, whatever the caps below.
SCREENING_HEADERS = (
    "auto-submitted",
    "x-auto-response-suppress",
    "precedence",
    "list-id",
    "list-unsubscribe",
    "return-path",
    "x-failed-recipients",
    "content-type",
    "x-autoreply",
    "x-autorespond",
    "x-loop",
    "x-mailer",
    "sender",
    "x-envelope-from",
)
_MAX_HEADER_NAMES = 100  # other headers kept, beyond SCREENING_HEADERS
_MAX_HEADER_CHARS = 4000  # per value; a legitimate header is far shorter
_MAX_REFERENCES = 100
_MAX_DEFECTS = 50
_MAX_PARTS = 1000  # MIME parts walked; beyond that the rest is reported as a defect
_MAX_DEPTH = 50
_HTML_INPUT_FACTOR = 4  # HTML converted at most max_text_chars * this many characters
_MAX_FILENAME = 100


class UnparseableMessage(Exception):
    """Nothing usable could be read from the bytes; the message belongs in quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Attachment:
    """One attached file. ``payload`` is None when it was too large to keep."""

    filename: str
    content_type: str
    size: int
    payload: bytes | None
    omitted_reason: str | None


@dataclass(frozen=True)
class ParsedMessage:
    """A message as the rest of mailbot sees it: decoded, single-line headers, bounded text."""

    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    sender_name: str
    sender_email: str | None
    reply_to: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: datetime | None
    text: str
    html_converted: bool
    new_text: str
    forwarded: Forwarded | None
    attachments: tuple[Attachment, ...]
    headers: dict[str, str] = field(hash=False)
    content_type: str
    parser: str
    defects: tuple[str, ...]


def parse_message(
    raw: bytes,
    *,
    max_attachment_bytes: int = 10 * 1024 * 1024,
    max_text_chars: int = 200_000,
) -> ParsedMessage:
    """Parse raw RFC 822 bytes; raise :class:`UnparseableMessage` only if nothing is usable."""
    data = bytes(raw)
    if not data.strip():
        raise UnparseableMessage("empty message")
    if data.startswith(_OLE_MAGIC):
        raise UnparseableMessage(
            "an Outlook .msg file (OLE compound document), not RFC 822 mail; save it as .eml"
        )
    if _looks_binary(data):
        raise UnparseableMessage("binary data with no mail headers, not an RFC 822 message")
    if not _HEADER_START.match(data.lstrip(b" \t\r\n")):
        # Without a single header there is no sender to answer and nothing to thread on:
        # this is not mail, and quarantine (with the bytes kept) is the honest outcome.
        raise UnparseableMessage("no mail headers at the start, not an RFC 822 message")
    limits = _Limits(max_attachment_bytes, max_text_chars)
    notes: list[str] = []

    mp: Any = _mail_parser_view(data)
    if mp is None:
        try:
            mp = mailparser.parse_from_bytes(data)
        except MailParserRecursionError as exc:
            # The stdlib parser recurses the same way; trying it again only burns time.
            raise UnparseableMessage(f"MIME nesting too deep to parse: {exc}") from exc
        except Exception as exc:  # mail-parser raises many types on hostile input; stdlib next
            notes.append(f"mail-parser failed: {type(exc).__name__}: {exc}")
    if mp is not None:
        if isinstance(mp.message, Message):
            try:
                return _build(mp.message, mp, PARSER_MAIL_PARSER, limits, notes)
            except UnparseableMessage:
                raise
            except Exception as exc:
                log.warning("reading mail-parser's result failed, using email: %r", exc)
                notes.append(f"mail-parser result unusable: {type(exc).__name__}: {exc}")
        else:
            notes.append("mail-parser returned no message")

    last: Exception | None = None
    for policy in (email.policy.default, email.policy.compat32):
        try:
            msg = email.message_from_bytes(data, policy=policy)
            return _build(msg, None, PARSER_EMAIL, limits, notes)
        except UnparseableMessage:
            raise
        except Exception as exc:
            last = exc
            notes.append(f"email ({_policy_name(policy)}) failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, RecursionError):
                break
    raise UnparseableMessage("; ".join(notes) or "no parser could read it") from last


# --------------------------------------------------------------------------------------------
# what mail-parser contributes, without the rest of its work


class _MailParserView:
    """The parts of a ``MailParser`` that :func:`_build` reads, computed the way it computes them.

    ``mailparser.parse_from_bytes`` costs twice the standard-library parse it wraps: it also
    parses every ``Received`` header, extracts and re-encodes every attachment and decodes every
    body part, and :func:`_build` uses none of that. It reads the address headers (mail-parser's
    ``get_addresses``, first occurrence), the ``Date`` fallback (``parse_mail_date``), the defect
    report and the epilogue recovery. The first three are computed here with mail-parser's own
    functions on the same ``email.message_from_bytes`` tree it would build, so the record is the
    same; the defect report leaves out what describes mail-parser's own extraction, which mailbot
    does not use (see :func:`_mail_parser_view`).
    """

    def __init__(self, message: Message) -> None:
        self.message = message
        self.defects: list[dict[str, list[str]]] = []
        self.defects_categories: set[str] = set()
        self.text_plain: list[str] = []  # only the epilogue recovery reads it; never used here
        addresses = self._read_addresses(message)
        self.from_ = addresses.get("from", [])
        self.reply_to = addresses.get("reply-to", [])
        self.to = addresses.get("to", [])
        self.cc = addresses.get("cc", [])
        self.date = self._read_date(message)

    def _read_addresses(self, message: Message) -> dict[str, list[tuple[str, str]]]:
        # As MailParser._reset: every occurrence of every address header is read, in sorted
        # header order, for the diagnostics; the first occurrence gives the addresses. Values
        # are what compat32's items() returns (a Header where raw 8-bit bytes were kept).
        values: dict[str, list[Any]] = {}
        for name, value in message.raw_items():
            key = name.lower()
            if key in _MP_ADDRESS_HEADERS:
                values.setdefault(key, []).append(message.policy.header_fetch_parse(name, value))
        out: dict[str, list[tuple[str, str]]] = {}
        reports: list[str] = []
        for header in sorted(_MP_ADDRESS_HEADERS):
            for occurrence, value in enumerate(values.get(header, [])):
                diagnostics: list[dict[str, Any]] = []
                parsed = mp_get_addresses(value, defects=diagnostics, decode_names=True)
                if occurrence == 0:
                    # MailParser._header_value: a name equal to the address is no name.
                    out[header] = [("" if n == a else n, a) for n, a in parsed if a]
                reports.extend(
                    f"AddressHeaderDefect: {header}[{occurrence}]: {d['reason']}"
                    for d in diagnostics
                )
        if reports:
            self.defects_categories.add("AddressHeaderDefect")
            self.defects.append({"address-headers": reports})
        return out

    def _read_date(self, message: Message) -> datetime | None:
        # As MailParser._reset, less the Received headers' dates (see _mail_parser_view).
        date: datetime | None = None
        reports: list[str] = []
        occurrences: dict[str, int] = {}
        for name, raw in message.raw_items():
            header = name.lower()
            if header not in ("date", "resent-date"):
                continue
            occurrence = occurrences.get(header, 0)
            occurrences[header] = occurrence + 1
            result = parse_mail_date(raw)
            if header == "date" and occurrence == 0:
                date = result.value
            reports.extend(
                f"DateHeaderDefect: {d['header']}[{d['occurrence']}]: {d['reason']}"
                for d in date_diagnostics(result, raw, header, occurrence)
            )
        if reports:
            self.defects_categories.add("DateHeaderDefect")
            self.defects.append({"date-headers": reports})
        return date


_MIME_HEADERS = ("content-type", "content-disposition", "content-id", "content-transfer-encoding")
# Past this many parts the full parser runs: its recursive walk is then the one to judge depth.
_MAX_VIEW_PARTS = 200


def _mail_parser_view(data: bytes) -> _MailParserView | None:
    """mail-parser's contribution without running all of it, or None when it must run.

    The full ``MailParser`` is still built, by the caller, when the tree has anything that
    mail-parser treats specially: a MIME defect on any part (a ``StartBoundaryNotFoundDefect``
    means its epilogue recovery may find text that the standard library left behind, and it
    reports every defect with its description), a part whose MIME headers carry bytes that are
    not UTF-8 (it reports those too), or any failure here (it would meet the same one and
    :func:`parse_message` must see exactly what it raises). On all other mail the record is
    the one the full parser gives, except that its defect report lacks what only concerns
    mail-parser's own extraction: its diagnostics of ``Received`` headers (and their dates) and
    of charsets it could not apply to the body parts it decodes for itself.
    """
    try:
        msg = email.message_from_bytes(data)  # compat32, exactly as mail-parser parses
        # Iterative, unlike Message.walk(): mail-parser's walk meets RecursionError on a deep
        # tree, and then the full parser must run to report it; the stack keeps that for it.
        stack: list[Any] = [msg]
        parts = 0
        while stack:
            part = stack.pop()
            parts += 1
            if not isinstance(part, Message) or part.defects or parts > _MAX_VIEW_PARTS:
                return None
            for name, value in part.raw_items():
                if name.lower() in _MIME_HEADERS and _has_surrogates(str(value)):
                    return None
            if part.is_multipart():
                children = part.get_payload()
                if not isinstance(children, list):
                    return None
                stack.extend(children)
        return _MailParserView(msg)
    except Exception:  # the full parser is the judge of anything unusual
        return None


# --------------------------------------------------------------------------------------------
# building the record


@dataclass(frozen=True)
class _Limits:
    attachment_bytes: int
    text_chars: int


@dataclass
class _Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Message] = field(default_factory=list)
    truncated: bool = False


def _build(
    msg: Message, mp: Any, parser: str, limits: _Limits, notes: list[str]
) -> ParsedMessage:
    raw_headers = _raw_headers(msg)
    headers = _header_dict(raw_headers, msg)
    content_type = _content_type(msg)

    subject = _first(raw_headers, "subject")
    sender = _addresses(msg, mp, "from")
    sender_name, sender_email = sender[0] if sender else ("", None)
    reply_to = _addresses(msg, mp, "reply-to")

    body = _walk(msg)
    text, html_converted = _body_text(body, limits.text_chars)
    if not text and not body.plain and not body.html and _epilogue_recovered(mp):
        # mail-parser recovers parts that the stdlib leaves in the epilogue of a multipart
        # whose start boundary is broken; use its text only when our walk found no text part.
        recovered = [t for t in (mp.text_plain or []) if isinstance(t, str)]
        text = _finish_text("\n".join(recovered), limits.text_chars)

    attachments = tuple(
        _attachment(part, index, limits.attachment_bytes)
        for index, part in enumerate(body.attachments, start=1)
    )
    if not raw_headers and not text and not attachments:
        raise UnparseableMessage("no headers and no body")

    parts = split_reply(text, subject)
    forwarded = parts.forwarded
    if forwarded is None and (is_forward_subject(subject) or _FORWARD_HINT.search(text)):
        forwarded = _forwarded_from_attachment(body.attachments, limits.text_chars)
    if forwarded is not None and forwarded.date is not None and forwarded.date.tzinfo is None:
        # Quoted header blocks rarely give a zone; as for Date:, assume UTC rather than hand
        # on a naive datetime that cannot be compared with the aware ones.
        forwarded = replace(forwarded, date=forwarded.date.replace(tzinfo=UTC))

    defects = list(notes)
    if body.truncated:
        defects.append(f"more than {_MAX_PARTS} MIME parts or {_MAX_DEPTH} levels; rest skipped")
    defects.extend(_defects(msg, mp))

    return ParsedMessage(
        message_id=_message_id(_first(raw_headers, "message-id")),
        in_reply_to=_message_id(_first(raw_headers, "in-reply-to")),
        references=_references(_first(raw_headers, "references")),
        sender_name=sender_name,
        sender_email=sender_email,
        reply_to=reply_to[0][1] if reply_to else None,
        to=_unique(addr for _, addr in _addresses(msg, mp, "to")),
        cc=_unique(addr for _, addr in _addresses(msg, mp, "cc")),
        subject=subject,
        date=_date(_first(raw_headers, "date"), mp),
        text=text,
        html_converted=html_converted,
        new_text=parts.new_text,
        forwarded=forwarded,
        attachments=attachments,
        headers=headers,
        content_type=content_type,
        parser=parser,
        defects=tuple(defects[:_MAX_DEFECTS]),
    )


_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADER_START = re.compile(rb"^(From |[!-9;-~]+:)")
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")


def _looks_binary(data: bytes) -> bool:
    head = data[:4096]
    if _HEADER_START.match(head.lstrip(b"\r\n")):
        return False
    return len(_BINARY_BYTES.findall(head)) > len(head) // 10


def _epilogue_recovered(mp: Any) -> bool:
    try:
        return mp is not None and "StartBoundaryNotFoundDefect" in mp.defects_categories
    except Exception:
        return False


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


def _policy_name(policy: object) -> str:
    return "compat32" if policy is email.policy.compat32 else "default"


# --------------------------------------------------------------------------------------------
# headers


def _raw_headers(msg: Message) -> list[tuple[str, str]]:
    """(lower-case name, decoded single-line value) for every header, in order."""
    hint = _part_charset(msg)
    out: list[tuple[str, str]] = []
    for name, value in msg.raw_items():
        # raw_items() gives the undecoded wire value on both policies; decode it ourselves.
        out.append((_single_line(str(name)).lower(), header_text(value, hint)))
    return out


def _first(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key == name:
            return value
    return ""


def _header_dict(raw_headers: list[tuple[str, str]], msg: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw_headers:
        if key in SCREENING_HEADERS and key not in out:
            out[key] = value[:_MAX_HEADER_CHARS]
    others = 0
    for key, value in raw_headers:
        if key in out or not key:
            continue
        if others >= _MAX_HEADER_NAMES:
            break
        out[key] = value[:_MAX_HEADER_CHARS]
        others += 1
    if _content_type(msg) == "multipart/report":
        report_type = _param(msg, "report-type")
        if report_type:
            out["report-type"] = report_type.lower()
    return out


def header_text(raw: object, hint: str | None = None) -> str:
    """Decode one raw header value: 8-bit bytes, RFC 2047 words, folded to a single line.

    ``hint`` is a charset to try for raw 8-bit bytes (they carry no label of their own).
    """
    return _single_line(_decode_encoded_words(_undo_surrogates(str(raw), hint)))


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")


def _decode_encoded_words(value: str) -> str:
    if "=?" not in value:
        return value
    pieces: list[tuple[str | bytes, str]] = []  # (text, "") or (bytes, charset)
    pos = 0
    after_word = False
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        # RFC 2047 6.2: white space between adjacent encoded words is not displayed.
        if between and not (after_word and not between.strip()):
            pieces.append((between, ""))
        charset = match.group(1).split("*", 1)[0]  # drop an RFC 2231 language tag
        decoded = _decode_word(match.group(2), match.group(3))
        if decoded is None:
            pieces.append((match.group(0), ""))
            after_word = False
        else:
            pieces.append((decoded, charset))
            after_word = True
        pos = match.end()
    pieces.append((value[pos:], ""))

    out: list[str] = []
    pending = b""
    pending_charset = ""
    for chunk, charset in pieces:
        if isinstance(chunk, bytes) and (not pending or charset.lower() == pending_charset):
            # Adjacent words in one charset are joined first: clients split multi-byte
            # characters across encoded words.
            pending += chunk
            pending_charset = charset.lower()
            continue
        if pending:
            out.append(decode_bytes(pending, pending_charset))
            pending, pending_charset = b"", ""
        if isinstance(chunk, bytes):
            pending, pending_charset = chunk, charset.lower()
        else:
            out.append(chunk)
    if pending:
        out.append(decode_bytes(pending, pending_charset))
    return "".join(out)


def _decode_word(encoding: str, text: str) -> bytes | None:
    try:
        if encoding in "bB":
            data = re.sub(r"[^A-Za-z0-9+/]", "", text)
            if len(data) % 4 == 1:
                data = data[:-1]
            return base64.b64decode(data + "=" * (-len(data) % 4))
        return binascii.a2b_qp(text.encode("utf-8", "surrogateescape"), header=True)
    except (binascii.Error, ValueError, UnicodeError):
        return None


_LINE_BREAKS = re.compile(r"[ \t]*(?:\r\n|\r|\n|\x85|\u2028|\u2029)[ \t]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _single_line(value: str) -> str:
    """Unfold and neutralise a header value: no CR, LF or other control characters."""
    value = _LINE_BREAKS.sub(" ", value).replace("\t", " ")
    return _CONTROL.sub("", value).strip()


def _has_surrogates(value: str) -> bool:
    """Whether the parser kept raw 8-bit bytes in this header as surrogate escapes."""
    return _SURROGATES.search(value) is not None


def _undo_surrogates(value: str, hint: str | None = None) -> str:
    """Turn 8-bit header bytes (kept by the parser as surrogate escapes) back into text."""
    if not _has_surrogates(value):
        return value
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", value)
    return decode_bytes(data, None, hint)


# --------------------------------------------------------------------------------------------
# charsets

_CHARSET_ALIASES = {
    "x-unknown": "",
    "unknown": "",
    "unknown-8bit": "",
    "x-user-defined": "",
    "default": "",
    "iso-8859-1": "cp1252",  # as browsers and mail clients do: 0x80-0x9f are cp1252 text
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "windows-874": "cp874",
}
# Python codecs that are not mail charsets: binary transforms and Python-specific escapes.
_DENIED_CODECS = {
    "base64",
    "hex",
    "bz2",
    "zlib",
    "quopri",
    "uu",
    "rot-13",
    "unicode-escape",
    "raw-unicode-escape",
    "punycode",
    "idna",
    "undefined",
    "mbcs",
    "oem",
}


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = str(charset).strip().strip("\"'").lower()
    if not name or len(name) > 40:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if info.name in _DENIED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None, hint: str | None = None) -> str:
    """Decode bytes in any declared charset; never raises, never returns surrogates or NUL.

    A real declaration is tried strictly, then UTF-8 (the usual truth when a declaration is
    wrong), then the declared charset with replacement characters. Bytes with no usable
    declaration (none, ``us-ascii``, ``x-unknown``, ``unknown-8bit``, a bogus name) are read
    as UTF-8, then as ``hint`` (e.g. the message's charset), then as mostly-UTF-8 with
    replacement characters, and finally as windows-1252, which is what mailers that send
    unlabelled 8-bit text almost always mean.
    """
    codec = _codec(charset)
    if codec and codec != "ascii":
        for name, errors in ((codec, "strict"), ("utf-8", "strict"), (codec, "replace")):
            text = _try_decode(data, name, errors)
            if text is not None:
                return _clean(text)
    text = _try_decode(data, "utf-8", "strict")
    if text is not None:
        return _clean(text)
    hint_codec = _codec(hint)
    if hint_codec and hint_codec not in ("ascii", "utf-8"):
        text = _try_decode(data, hint_codec, "strict")
        if text is not None:
            return _clean(text)
    text = data.decode("utf-8", "replace")
    high = sum(1 for byte in data if byte > 0x7F)
    if text.count("\ufffd") * 8 <= high:  # a stray bad byte in otherwise UTF-8 text
        return _clean(text)
    return _clean(data.decode("cp1252", "replace"))


def _try_decode(data: bytes, codec: str, errors: str) -> str | None:
    try:
        return data.decode(codec, errors)
    except (UnicodeError, LookupError, ValueError, TypeError):
        return None


_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _clean(text: str) -> str:
    # NUL cannot be stored in PostgreSQL text; lone surrogates cannot be encoded anywhere.
    return _SURROGATES.sub("\ufffd", text.replace("\x00", ""))


# --------------------------------------------------------------------------------------------
# addresses, ids, dates


_MP_ADDRESS_ATTRS = {"from": "from_", "reply-to": "reply_to", "to": "to", "cc": "cc"}
_SINGLE_MAILBOX = ("from", "reply-to", "sender")
_LAST_ANGLE_ADDR = re.compile(r"<\s*([^<>\s@]+@[^<>\s]+)\s*>\s*$")


def _addresses(msg: Message, mp: Any, name: str) -> list[tuple[str, str]]:
    """(display name, lower-case address) pairs of the first ``name`` header.

    Which mailbox: mail-parser's, because it resolves ``a@x <b@y>`` to ``b@y`` (the address
    mail is delivered to; ``a@x`` is just a display name). Which display name: the one decoded
    here when there is one for that address, because mail-parser leaves quoted encoded words
    undecoded and turns raw 8-bit names into backslash escapes (``L\\udcfctkebohle``).
    """
    raw = next((value for key, value in msg.raw_items() if key.lower() == name), None)
    if raw is None:
        return []
    ours = _stdlib_addresses(str(raw), name, _part_charset(msg))
    pairs = ours
    if mp is not None:
        try:
            got = getattr(mp, _MP_ADDRESS_ATTRS[name])
        except Exception:  # mail-parser's address recovery is best effort
            got = None
        if isinstance(got, list) and got:
            names = {addr.lower(): display for display, addr in ours if display}
            pairs = [
                (names.get(str(a).lower()) or header_text(n), str(a))
                for n, a in got
                if isinstance(a, str)
            ]
    out: list[tuple[str, str]] = []
    for display, addr in pairs:
        clean_addr = _single_line(_undo_surrogates(addr)).replace(" ", "").strip("<>").lower()
        if "@" not in clean_addr or clean_addr.startswith("@"):
            continue
        clean_name = _single_line(_undo_surrogates(display)).strip("\"' ")
        if clean_name.lower() == clean_addr:
            clean_name = ""
        out.append((clean_name, clean_addr))
    return out


def _stdlib_addresses(raw: str, name: str, hint: str | None) -> list[tuple[str, str]]:
    """Address pairs read compat32-style from the undecoded value.

    The modern policy's parser is not used for addresses: on real mail it takes
    ``a@x <b@y>`` as ``a@x`` and drops ``(comment)`` names. Splitting the undecoded value first
    and decoding each display name on its own also keeps an encoded comma
    (``=?utf-8?q?Smith=2C_John?=``) from splitting one mailbox into two.
    """
    text = _LINE_BREAKS.sub(" ", _undo_surrogates(raw, hint)).strip()
    if name in _SINGLE_MAILBOX:
        match = _LAST_ANGLE_ADDR.search(text)
        if match and text.count("<") == 1:
            return [(header_text(text[: match.start()]), match.group(1))]
    return [(header_text(display), addr) for display, addr in getaddresses([text])]


_ANGLE_ID = re.compile(r"<([^<>]*)>")


def _message_id(value: str) -> str | None:
    match = _ANGLE_ID.search(value)
    ident = match.group(1) if match else value
    ident = re.sub(r"\s+", "", ident)
    return ident[:998] or None


def _references(value: str) -> tuple[str, ...]:
    found = _ANGLE_ID.findall(value) or value.split()
    out: list[str] = []
    for item in found:
        ident = re.sub(r"\s+", "", item)[:998]
        if ident and ident not in out:
            out.append(ident)
    return tuple(out[-_MAX_REFERENCES:])


def _date(value: str, mp: Any) -> datetime | None:
    parsed: datetime | None = None
    if value:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
    if parsed is None and mp is not None and isinstance(getattr(mp, "date", None), datetime):
        parsed = mp.date
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # no zone given ("-0000" or none): assume UTC
    return parsed


# --------------------------------------------------------------------------------------------
# MIME structure


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:  # a malformed Content-Type must not cost the whole message
        return "application/octet-stream"


def _param(part: Message, name: str) -> str:
    try:
        value: Any = part.get_param(name)
    except Exception:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
        value = value[2]
    return header_text(value) if value else ""


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _raw_filename(part: Message) -> str:
    """The declared file name, decoded (RFC 2231, RFC 2047 or raw 8-bit), not yet sanitised."""
    # The parsed Content-Disposition has already turned raw 8-bit bytes into U+FFFD, so the
    # two headers are re-read from their wire values into a scratch message first.
    view = Message()
    hint = _part_charset(part)
    for key, value in part.raw_items():
        if key.lower() in ("content-disposition", "content-type"):
            view[key] = _LINE_BREAKS.sub(" ", _undo_surrogates(str(value), hint))
    try:
        name: Any = view.get_filename()
    except Exception:
        name = None
    if isinstance(name, tuple):
        name = name[2]
    return header_text(name, hint) if name else ""


def _walk(msg: Message) -> _Body:
    """Split the tree into body text parts and attachments, without recursion.

    Attached messages (``message/*``) are never descended into: a forwarded original is an
    attachment, not part of the forwarder's words, and a DSN's enclosed original is not the
    bounce's text.
    """
    body = _Body()
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > _MAX_PARTS or depth > _MAX_DEPTH:
            body.truncated = True
            break
        ctype = _content_type(part)
        maintype = ctype.split("/", 1)[0]
        disposition = _disposition(part)
        if maintype == "message":
            body.attachments.append(part)
        elif part.is_multipart():
            if disposition == "attachment":
                body.attachments.append(part)
                continue
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in reversed(children)
                             if isinstance(child, Message))
        elif _is_attachment(part, ctype, disposition):
            body.attachments.append(part)
        elif ctype == "text/html":
            body.html.append(_part_text(part))
        elif ctype == "text/plain" or maintype == "multipart":
            # A multipart without a usable boundary arrives as one opaque text blob.
            body.plain.append(_part_text(part))
        else:
            body.attachments.append(part)
    return body


def _is_attachment(part: Message, ctype: str, disposition: str) -> bool:
    if disposition == "attachment":
        return True
    if ctype not in ("text/plain", "text/html"):
        return not ctype.startswith("multipart/")
    # A named text part is a file unless it is explicitly shown inline.
    return bool(_raw_filename(part)) and disposition != "inline"


def _part_bytes(part: Message) -> bytes:
    try:
        payload: Any = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    try:
        raw: Any = part.get_payload()
    except Exception:
        return b""
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _part_charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return str(charset) if charset else None


def _part_text(part: Message) -> str:
    return decode_bytes(_part_bytes(part), _part_charset(part))


def _body_text(body: _Body, max_chars: int) -> tuple[str, bool]:
    plain = [t for t in body.plain if t.strip()]
    if plain:
        return _finish_text("\n".join(plain), max_chars), False
    html = [t for t in body.html if t.strip()]
    if html:
        return _finish_text(html_to_text("\n".join(html), max_chars), max_chars), True
    return "", False


def html_to_text(html: str, max_chars: int = 200_000) -> str:
    """HTML to readable text with inscriptis: scripts and styles dropped, entities decoded."""
    html = html[: max_chars * _HTML_INPUT_FACTOR]
    try:
        return str(get_text(html))
    except Exception as exc:  # lxml refuses a few pathological documents
        log.warning("inscriptis could not convert HTML (%r); stripping tags instead", exc)
        stripped = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html)
        return html_module.unescape(re.sub(r"(?s)<[^>]*>", " ", stripped))


def _finish_text(text: str, max_chars: int) -> str:
    # U+FEFF (a byte-order mark) is invisible junk wherever it appears in mail text, and it
    # hides "On ... wrote:" lines from the reply parser.
    text = _clean(text).replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    return text.strip()[:max_chars]


# --------------------------------------------------------------------------------------------
# attachments

_DEFAULT_EXTENSIONS = {
    "message/rfc822": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "message/feedback-report": ".txt",
    "text/rfc822-headers": ".txt",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "application/pdf": ".pdf",
    "application/ms-tnef": ".dat",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
}


def _attachment(part: Message, index: int, max_bytes: int) -> Attachment:
    ctype = _content_type(part)
    data = _attachment_bytes(part, ctype)
    size = len(data)
    filename = sanitize_filename(_raw_filename(part), index, ctype)
    if size > max_bytes:
        return Attachment(filename, ctype, size, None, f"too large ({size} bytes)")
    return Attachment(filename, ctype, size, data, None)


def _attachment_bytes(part: Message, ctype: str) -> bytes:
    if not part.is_multipart():
        return _part_bytes(part)
    if ctype.startswith("multipart/"):
        return _as_bytes(part)
    # message/rfc822 holds one message; message/delivery-status a list of header blocks.
    payload: Any = part.get_payload()
    if isinstance(payload, list):
        return b"\n".join(_as_bytes(p) for p in payload if isinstance(p, Message))
    return b""


def _as_bytes(msg: Message) -> bytes:
    try:
        # No refolding: keep header lines as they arrived, as far as the email package can.
        return msg.as_bytes(policy=msg.policy.clone(max_line_length=0))
    except Exception:  # a lying charset or absurd nesting; keep what can be kept
        try:
            return msg.as_string().encode("utf-8", "surrogateescape")
        except Exception:
            return b""


_UNSAFE_FILENAME_CHARS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_RESERVED_FILENAME_CHARS = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\.|$)", re.IGNORECASE)


def sanitize_filename(name: str, index: int, content_type: str = "") -> str:
    """A name safe to show and to write anywhere: one component, no traversal, bounded.

    Path components (``/`` or ``\\``), control and bidirectional-override characters,
    characters reserved on Windows, leading dots and ``..`` runs are removed; long names
    are cut to about 100 characters keeping the extension; an empty result becomes
    ``attachment-<index><ext>``.
    """
    name = _LINE_BREAKS.sub(" ", name or "")
    name = _UNSAFE_FILENAME_CHARS.sub("", name)
    name = name.replace("\\", "/").split("/")[-1]
    name = _RESERVED_FILENAME_CHARS.sub("_", name)
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"\s+", " ", name).strip(" .")
    if _WINDOWS_DEVICES.match(name):
        name = "_" + name
    if len(name) > _MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            name = stem[: _MAX_FILENAME - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:_MAX_FILENAME].rstrip(" .")
    if not name:
        name = f"attachment-{index}{_DEFAULT_EXTENSIONS.get(content_type, '.bin')}"
    return name


# --------------------------------------------------------------------------------------------
# forwards sent as attachments

_FORWARD_HINT = re.compile(r"forwarded message|begin forwarded message", re.IGNORECASE)


def _forwarded_from_attachment(parts: list[Message], max_chars: int) -> Forwarded | None:
    """The original of a forward sent "as attachment" (Outlook's default for some setups)."""
    for part in parts:
        if _content_type(part) != "message/rfc822":
            continue
        payload: Any = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(inner, Message):
            continue
        raw_headers = _raw_headers(inner)
        author = _addresses(inner, None, "from")
        name, addr = author[0] if author else ("", None)
        body = _walk(inner)
        text, _ = _body_text(body, max_chars)
        return Forwarded(
            author_name=name,
            author_email=addr,
            date=_date(_first(raw_headers, "date"), None),
            subject=_first(raw_headers, "subject"),
            text=text,
        )
    return None


# --------------------------------------------------------------------------------------------
# defects


def _defects(msg: Message, mp: Any) -> list[str]:
    out: list[str] = []
    if mp is not None:
        try:
            for entry in mp.defects or []:
                if isinstance(entry, dict):
                    for where, items in entry.items():
                        for item in items if isinstance(items, list) else [items]:
                            out.append(_single_line(f"{where}: {item}")[:300])
                if len(out) >= _MAX_DEFECTS:
                    break
        except Exception:
            pass
        return out
    stack = [msg]
    for _ in range(_MAX_PARTS):
        if not stack or len(out) >= _MAX_DEFECTS:
            break
        part = stack.pop()
        for defect in getattr(part, "defects", []):
            out.append(f"{_content_type(part)}: {type(defect).__name__}")
        children: Any = part.get_payload() if part.is_multipart() else None
        if isinstance(children, list):
            stack.extend(c for c in reversed(children) if isinstance(c, Message))
    return out
