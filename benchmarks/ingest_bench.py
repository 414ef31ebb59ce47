"""Intake speed, latency and memory against a real Dovecot and a real SMTP server (aiosmtpd).

Run from the repository root with the project's virtual environment (``scripts/bootstrap --test``
installs Dovecot and the test tools this needs):

    .venv/bin/python benchmarks/ingest_bench.py ingest  [--db sqlite,postgresql] [--profile]
    .venv/bin/python benchmarks/ingest_bench.py latency [--db sqlite] [--messages 100]
    .venv/bin/python benchmarks/ingest_bench.py memory  [--db sqlite] [--messages 1000]
    .venv/bin/python benchmarks/ingest_bench.py all     # the three, with their defaults

``ingest``: 1,000 varied messages (complaints, compliments, concerns, enquiries, follow-ups,
staff forwards, duplicates, out-of-office replies, delivery reports, newsletters, a few broken
files; plain, HTML and with attachments, of realistic sizes) wait in Dovecot. A bare IMAPClient
loop fetches them (``UID FETCH BODY.PEEK[]`` in batches of 100; the median of three runs), then
one ``poll_once`` processes them end to end: fetch, parse, screen, classify, store, move, and
send every queued email to the SMTP server. Messages per second for both, and their ratio, on
SQLite (a file in a temporary directory) and PostgreSQL (a schema of its own, dropped after).
``--profile`` adds a separate run per database under cProfile (not timed: cProfile slows
Python code about twofold) and prints the top functions by cumulative time.

``latency``: ``mailbot run`` (the real worker, as a subprocess) idles in IMAP IDLE; messages
are APPENDed one at a time with a seeded pause between, and each one's latency is the time
from just before its APPEND to the arrival of its acknowledgement at the SMTP server (both
read from CLOCK_MONOTONIC, which every process on the machine shares). A second IMAP
connection also IDLEs and records when Dovecot announces each message: the floor under any
IDLE client's latency.

``memory``: resident memory (VmRSS, and the peak VmHWM) of a ``mailbot run`` subprocess at rest
(model loaded, nothing processed), and after it has processed 1,000 messages delivered at once.

Everything is on loopback; every wait is bounded. The SMTP server runs in a child process of
this script (``smtp-server`` subcommand, the tests' ``SMTPTestServer`` recording only arrival
times), so that it does not share this process's interpreter lock with the code measured.
The messages are generated from the classifier's corpus with a fixed seed: the same bytes every
run. Exit status: 0, or 2 when Dovecot (or a requested PostgreSQL) is not available, 1 when a
run went wrong (a message not processed, an acknowledgement that never came).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar, NoReturn
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.procstat import Proc, children, process_table, steal_seconds  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LONDON = ZoneInfo("Europe/London")
#: The fixed "now" of the ingest runs: Monday 21 December 2026, 10:05 in London.
INGEST_NOW = datetime(2026, 12, 21, 10, 5, tzinfo=LONDON).astimezone(UTC)
TEAM = "care.quality@council.example"
SEED = 20261221


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"ingest_bench: {message}", file=sys.stderr)
    raise SystemExit(code)


def require_dovecot() -> None:
    try:
        from tests.dovecot import dovecot_available
    except ImportError as exc:  # imapclient missing: the project is not installed
        fail(f"cannot import tests.dovecot ({exc}); run scripts/bootstrap --test first", 2)
    reason = dovecot_available()
    if reason is not None:
        fail(f"{reason}. This benchmark needs a real Dovecot (scripts/bootstrap --test "
             "installs it).", 2)


# ----------------------------------------------------------------------------------------------
# The machine


def machine() -> dict[str, Any]:
    def cpuinfo(key: str) -> str:
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        return platform.processor() or "unknown"

    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    dovecot = subprocess.run([os.environ.get("MAILBOT_TEST_DOVECOT", "/usr/sbin/dovecot"),
                              "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpuinfo("model name"),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "os": Path("/etc/debian_version").read_text().strip()
        if Path("/etc/debian_version").exists() else platform.platform(),
        "dovecot": dovecot.stdout.strip(),
        "loadavg_at_start": os.getloadavg(),
    }


def worker_rss(pid: int) -> dict[str, float]:
    """``rss_of`` the worker, plus its child processes (the parse-ahead child) and the total."""
    out = rss_of(pid)
    out["children_vmrss"] = round(sum(rss_of(c).get("vmrss", 0.0) for c in children(pid)), 1)
    out["total_vmrss"] = round(out.get("vmrss", 0.0) + out["children_vmrss"], 1)
    return out


def rss_of(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB (MiB)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0].lower()] = round(int(line.split()[1]) / 1024, 1)
    return out


# ----------------------------------------------------------------------------------------------
# The messages

FIRST = ["Ann", "Brian", "Chloe", "Darren", "Eilidh", "Fatima", "Gareth", "Hannah", "Imran",
         "Jo", "Kwame", "Lucy", "Mohammed", "Niamh", "Olu", "Priya", "Rhys", "Siobhán", "Tom",
         "Zoë", "Łukasz", "Aoife", "Bernard", "Carys", "Dev", "Esther", "Frank", "Grace",
         "Harpreet", "Iris", "Jamal", "Kate", "Lewis", "Maureen", "Noel", "Olivia"]
LAST = ["Example", "Okafor", "Smith", "Jones", "Patel", "Williams", "Brown", "Taylor", "Davies",
        "Evans", "Khan", "Wilson", "Thomas", "Roberts", "Johnson", "Lewis", "Walker", "Wright",
        "O'Brien", "Nowak", "Müller", "Hughes", "Green", "Hall", "Clarke", "Jackson", "Begum",
        "Mensah", "Reid", "Fields"]
DOMAINS = ["example.org", "example.com", "mail.example.net", "gmail.example.com",
           "outlook.example.com", "btinternet.example.co.uk", "nhs.example.org",
           "carehomes.example.co.uk", "parliament.example.uk", "advocacy.example.org.uk"]
SUBJECTS = {
    "complaint": ["Complaint", "Still waiting", "Formal complaint about my mother's care",
                  "No call back", "Unhappy with the service", "Care package cut", "Invoice"],
    "compliment": ["Thank you", "Thanks to the team", "A big thank you", "Compliment",
                   "Feedback", "Just wanted to say"],
    "quality_concern": ["Concern about a care home", "Concerns", "Visit this morning",
                        "Worried about a resident", "Provider concern"],
    "other": ["Question", "Enquiry", "Opening hours", "Information request", "Help please",
              "Blue badge", "Direct payments"],
}
SIGNATURES = [
    "\n\nSent from my iPhone",
    "\n\nKind regards\n{name}",
    "\n\n--\n{name}\nTel: 07700 900{n:03d}",
    "\n\nMany thanks,\n{name}\n\nThis email and any attachments are confidential and intended "
    "solely for the addressee. If you have received it in error please notify the sender and "
    "delete it. Any views expressed are those of the author and not of the organisation.",
    "\n\nGet Outlook for Android",
    "",
]
OUTLOOK_STYLE = (
    "<style><!--\n/* Font Definitions */\n"
    + "".join(f"@font-face\n\t{{font-family:\"Font {i}\";\n\tpanose-1:2 11 6 4 2 2 2 2 2 4;}}\n"
              for i in range(12))
    + "/* Style Definitions */\np.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0cm;\n\t"
    "font-size:11.0pt;\n\tfont-family:\"Calibri\",sans-serif;\n\tmso-fareast-language:EN-US;}\n"
    "a:link, span.MsoHyperlink\n\t{mso-style-priority:99;\n\tcolor:#0563C1;\n\t"
    "text-decoration:underline;}\nspan.EmailStyle17\n\t{mso-style-type:personal-compose;\n\t"
    "font-family:\"Calibri\",sans-serif;\n\tcolor:windowtext;}\n.MsoChpDefault\n\t"
    "{mso-style-type:export-only;\n\tfont-size:10.0pt;}\n@page WordSection1\n\t"
    "{size:612.0pt 792.0pt;\n\tmargin:72.0pt 72.0pt 72.0pt 72.0pt;}\ndiv.WordSection1\n\t"
    "{page:WordSection1;}\n--></style>"
)


@dataclass
class Generated:
    kind: str  # what it was made as (complaint, ooo, bounce, duplicate, ...)
    raw: bytes
    message_id: str | None
    sender: str | None
    answerable: bool  # should get an automatic reply to its sender
    person: Person | None = None


@dataclass
class Person:
    name: str
    email: str


def _ascii(s: str) -> str:
    table = str.maketrans({"ö": "o", "ü": "u", "é": "e", "á": "a", "ł": "l", "Ł": "L",
                           "ë": "e", "'": ""})
    return s.translate(table)


class MessageFactory:
    """Deterministic, varied inbound mail made from the classifier's corpus."""

    def __init__(self, seed: int, now: datetime) -> None:
        from mailbot.classifier.corpus import load_corpus

        self.rng = random.Random(seed)
        self.now = now
        self.by_label: dict[str, list[Any]] = defaultdict(list)
        for ex in load_corpus():
            self.by_label[ex.label].append(ex)
        self.counter = 0
        self.boundaries = 0

    # -- pieces ---------------------------------------------------------------------------

    def person(self) -> Person:
        self.counter += 1
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        local = f"{_ascii(first)}.{_ascii(last)}{self.counter}".lower()
        return Person(f"{first} {last}", f"{local}@{self.rng.choice(DOMAINS)}")

    def msgid(self, domain: str) -> str:
        return f"{self.rng.getrandbits(64):016x}.{self.counter}@{domain}"

    def date(self) -> datetime:
        return (self.now - timedelta(minutes=self.rng.randint(1, 3 * 24 * 60))).astimezone(LONDON)

    def trace_headers(self, msg: EmailMessage, domain: str) -> None:
        """Received, DKIM and anti-spam headers: a real inbound message carries 2-6 KB."""
        rng = self.rng
        sent = datetime.now(UTC)
        with contextlib.suppress(Exception):
            sent = msg["Date"].datetime
        hops = rng.randint(3, 6)
        for hop in range(hops):  # newest first, as each relay prepends its own
            ip = f"192.0.2.{rng.randint(1, 254)}"
            when = sent + timedelta(seconds=2 * (hops - hop))
            msg["Received"] = (
                f"from mx{hop}.{domain} (mx{hop}.{domain} [{ip}]) by mail{hop}.council.example "
                f"(Postfix) with ESMTPS id {rng.getrandbits(40):010X} for <{TEAM}>; "
                f"{format_datetime(when)}")
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        sig = "".join(rng.choice(alphabet) for _ in range(344))
        folded = " ".join(sig[i : i + 60] for i in range(0, len(sig), 60))  # FWS is allowed
        msg["DKIM-Signature"] = (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s1; "
                                 f"h=from:to:subject:date:message-id; bh={sig[:44]}=; "
                                 f"b={folded}")
        msg["Authentication-Results"] = (f"mail.council.example; dkim=pass header.d={domain}; "
                                         f"spf=pass smtp.mailfrom={domain}; dmarc=pass")
        msg["X-Spam-Status"] = f"No, score={rng.uniform(-3, 2):.1f} required=5.0"

    def signature(self, who: Person) -> str:
        return self.rng.choice(SIGNATURES).format(name=who.name, n=self.rng.randint(0, 999))

    def quoted(self, who: Person) -> str:
        """An earlier exchange below the new text, the way mail clients quote it."""
        ex = self.rng.choice(self.by_label[self.rng.choice(list(self.by_label))])
        lines = "\n".join("> " + line for line in ex.body.splitlines())
        when = format_datetime(self.date() - timedelta(days=self.rng.randint(3, 40)))
        return f"\n\nOn {when}, {who.name} <{who.email}> wrote:\n{lines}\n"

    def html_of(self, text: str) -> str:
        paras = "".join(
            f'<p class="MsoNormal">{p.replace("&", "&amp;").replace("<", "&lt;")}</p>\n'
            for p in text.split("\n\n"))
        if self.rng.random() < 0.5:  # Outlook
            return ('<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>'
                    '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
                    '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">'
                    f'{OUTLOOK_STYLE}</head><body lang="EN-GB" link="#0563C1">'
                    f'<div class="WordSection1">{paras}</div></body></html>')
        return f'<div dir="ltr">{paras}</div>'  # Gmail

    def attachment(self, msg: EmailMessage) -> None:
        rng = self.rng
        size = int(min(max(rng.lognormvariate(11.9, 0.9), 8_000), 3_000_000))  # median ~150 KB
        kind = rng.random()
        if kind < 0.5:
            data = b"\xff\xd8\xff\xe0\x00\x10JFIF" + rng.randbytes(size)
            name = f"IMG_2026121{rng.randint(0, 9)}_{rng.randint(0, 999999):06d}.jpg"
            msg.add_attachment(data, maintype="image", subtype="jpeg", filename=name)
        elif kind < 0.85:
            data = b"%PDF-1.7\n" + rng.randbytes(size)
            msg.add_attachment(data, maintype="application", subtype="pdf",
                               filename=rng.choice(["letter from the agency.pdf", "invoice.pdf",
                                                    "care plan.pdf", "Scan_0042.pdf"]))
        else:
            data = b"PK\x03\x04" + rng.randbytes(size)
            msg.add_attachment(
                data, maintype="application",
                subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
                filename="timeline of events.docx")

    def fix_boundaries(self, msg: EmailMessage) -> None:
        """Fixed MIME boundaries (the email package would draw them from the global RNG)."""
        for part in msg.walk():
            if part.is_multipart() and part.get_boundary() is None:
                self.boundaries += 1
                part.set_boundary(f"----=_Part_{self.boundaries}_{self.rng.getrandbits(32):08x}")

    def public(self, label: str, who: Person | None = None, reply_to: Generated | None = None,
               subject: str | None = None) -> Generated:
        """A message from a member of the public (or a professional) to the team."""
        rng = self.rng
        who = who or self.person()
        ex = rng.choice(self.by_label[label])
        body = ex.body.strip()
        if rng.random() < 0.3:  # a longer message: a second paragraph about the same matter
            body += "\n\n" + rng.choice(self.by_label[label]).body.strip()
        body += self.signature(who)
        if reply_to is not None or rng.random() < 0.2:
            body += self.quoted(who)
        domain = who.email.split("@")[1]
        msg = EmailMessage()
        msg["From"] = f"{who.name} <{who.email}>"
        msg["To"] = f"Care Quality <{TEAM}>"
        if reply_to is not None:
            subj = subject or "Re: your email"
        else:
            subj = ex.subject or rng.choice(SUBJECTS[label])
        msg["Subject"] = subj
        msg["Date"] = format_datetime(self.date())
        mid = self.msgid(domain)
        msg["Message-ID"] = f"<{mid}>"
        if reply_to is not None and reply_to.message_id:
            msg["In-Reply-To"] = f"<{reply_to.message_id}>"
            msg["References"] = f"<{reply_to.message_id}>"
        msg["MIME-Version"] = "1.0"
        self.trace_headers(msg, domain)
        shape = rng.random()
        if shape < 0.45:
            msg.set_content(body, cte=rng.choice(["quoted-printable", "8bit", "base64"]))
        elif shape < 0.85:
            msg.set_content(body, cte="quoted-printable")
            msg.add_alternative(self.html_of(body), subtype="html", cte="quoted-printable")
        else:
            msg.set_content(self.html_of(body), subtype="html", cte="quoted-printable")
        if rng.random() < 0.15:
            for _ in range(1 if rng.random() < 0.8 else 2):
                self.attachment(msg)
        self.fix_boundaries(msg)
        return Generated(label, msg.as_bytes(), mid, who.email, True, who)

    def staff_forward(self) -> Generated:
        rng = self.rng
        staff_first, staff_last = rng.choice(FIRST), rng.choice(LAST)
        staff = Person(f"{staff_first} {staff_last}",
                       f"{_ascii(staff_first)}.{_ascii(staff_last)}".lower() + "@council.example")
        writer = self.person()
        ex = rng.choice(self.by_label["compliment"])
        when = self.date() - timedelta(days=rng.randint(1, 5))
        body = (f"Lovely feedback from a family I worked with, for the record.\n\n"
                f"{staff_first}\n\n---------- Forwarded message ---------\n"
                f"From: {writer.name} <{writer.email}>\n"
                f"Date: {when:%a, %d %b %Y} at {when:%H:%M}\nSubject: thank you\n"
                f"To: {staff.name} <{staff.email}>\n\n{ex.body.strip()}\n")
        msg = EmailMessage()
        msg["From"] = f"{staff.name} <{staff.email}>"
        msg["To"] = f"Care Quality <{TEAM}>"
        msg["Subject"] = rng.choice(["Fwd: thank you", "FW: thank you", "Fwd: compliment"])
        msg["Date"] = format_datetime(self.date())
        mid = self.msgid("council.example")
        msg["Message-ID"] = f"<{mid}>"
        self.trace_headers(msg, "council.example")
        msg.set_content(body, cte="quoted-printable")
        self.fix_boundaries(msg)
        return Generated("staff_forward", msg.as_bytes(), mid, staff.email, True)

    def out_of_office(self) -> Generated:
        rng = self.rng
        who = self.person()
        msg = EmailMessage()
        msg["From"] = f"{who.name} <{who.email}>"
        msg["To"] = f"Care Quality <{TEAM}>"
        msg["Subject"] = "Automatic reply: " + rng.choice(
            ["Your complaint CSQ-2026-00017", "Referral", "Safeguarding meeting", "Invoice"])
        msg["Date"] = format_datetime(self.date())
        mid = self.msgid(who.email.split("@")[1])
        msg["Message-ID"] = f"<{mid}>"
        style = rng.random()  # some Outlook replies carry only one of these signs
        if style < 0.6:
            msg["Auto-Submitted"] = "auto-replied"
        if style > 0.3:
            msg["X-Auto-Response-Suppress"] = "All"
        self.trace_headers(msg, who.email.split("@")[1])
        text = (f"Thank you for your email. I am out of the office until "
                f"{(self.now + timedelta(days=rng.randint(1, 14))):%A %d %B} with limited "
                "access to email. For urgent matters please call the duty desk on 0300 123 4567."
                f"\n\n{who.name}")
        msg.set_content(text)
        msg.add_alternative(self.html_of(text), subtype="html", cte="quoted-printable")
        self.fix_boundaries(msg)
        return Generated("out_of_office", msg.as_bytes(), mid, who.email, False)

    def bounce(self) -> Generated:
        """A delivery status notification (RFC 3464) enclosing one of our acknowledgements."""
        rng = self.rng
        rcpt = self.person().email
        mx = f"mx.{rcpt.split('@')[1]}"
        when = format_datetime(self.date())
        b = f"{rng.getrandbits(64):016x}"
        original = (f"From: Care Quality <{TEAM}>\r\nTo: {rcpt}\r\n"
                    f"Subject: We have received your complaint [CSQ-2026-{rng.randint(1, 999):05d}]"
                    f"\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <{b}@council.example>\r\n"
                    f"Date: {when}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                    + "Thank you for your email. We have logged it as a complaint.\r\n" * 20)
        mid = self.msgid(mx)
        raw = (
            f"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@{mx}>\r\n"
            f"To: {TEAM}\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: {when}\r\n"
            f"Message-ID: <{mid}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{b}"\r\n\r\n'
            f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"This is the mail system at host {mx}.\r\n\r\nI'm sorry to have to inform you that "
            f"your message could not be delivered to one or more recipients.\r\n\r\n"
            f"<{rcpt}>: host {mx} said: 550 5.1.1 User unknown\r\n\r\n"
            f"--{b}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {mx}\r\nArrival-Date: {when}\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
            f"--{b}\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--{b}--\r\n"
        ).encode()
        return Generated("bounce", raw, mid, None, False)

    def newsletter(self) -> Generated:
        rng = self.rng
        msg = EmailMessage()
        msg["From"] = "Care Sector News <news@lists.example.com>"
        msg["To"] = TEAM
        msg["Subject"] = f"This week in adult social care ({rng.randint(1, 52)})"
        msg["Date"] = format_datetime(self.date())
        mid = self.msgid("lists.example.com")
        msg["Message-ID"] = f"<{mid}>"
        msg["List-Id"] = "<weekly.lists.example.com>"
        msg["List-Unsubscribe"] = "<mailto:leave@lists.example.com>"
        msg["Precedence"] = "bulk"
        self.trace_headers(msg, "lists.example.com")
        stories = [rng.choice(self.by_label["other"]).body.strip()
                   for _ in range(rng.randint(6, 14))]
        text = "\n\n".join(stories) + "\n\nUnsubscribe at any time."
        rows = "".join(
            '<tr><td style="padding:12px;font-family:Arial,sans-serif;font-size:14px;'
            f'color:#333333;border-bottom:1px solid #eeeeee"><h3>Story {i}</h3><p>{s}</p>'
            '<a href="https://news.example.com/story?utm_source=newsletter&amp;utm_medium='
            f'email&amp;id={rng.getrandbits(48):x}">Read more</a></td></tr>'
            for i, s in enumerate(stories))
        html = (f'<html><head>{OUTLOOK_STYLE}</head><body><table width="600" cellpadding="0" '
                f'cellspacing="0" border="0" align="center">{rows}</table></body></html>')
        msg.set_content(text, cte="quoted-printable")
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
        self.fix_boundaries(msg)
        return Generated("newsletter", msg.as_bytes(), mid, None, False)

    def broken(self) -> Generated:
        return Generated("broken", b"\x00\x01\x02 not an email \xff\xfe" + self.rng.randbytes(64),
                         None, None, False)

    # -- the mix --------------------------------------------------------------------------

    MIX: ClassVar[dict[str, int]] = {  # per 1,000 messages
        "complaint": 280, "compliment": 170, "quality_concern": 140, "other": 180,
        "follow_up": 40, "staff_forward": 30, "out_of_office": 60, "bounce": 40,
        "newsletter": 30, "duplicate": 27, "broken": 3,
    }

    def mix(self, n: int, only_answerable: bool = False) -> list[Generated]:
        mix = ({k: v for k, v in self.MIX.items()
                if k in ("complaint", "compliment", "quality_concern", "other")}
               if only_answerable else self.MIX)
        total = sum(mix.values())
        kinds = [k for k, v in mix.items() for _ in range(round(v * n / total))]
        kinds = (kinds + ["complaint"] * n)[:n]
        self.rng.shuffle(kinds)
        out: list[Generated] = []
        for kind in kinds:
            earlier = [g for g in out if g.answerable and g.kind != "staff_forward"
                       and g.kind != "follow_up"]
            if kind in ("follow_up", "duplicate") and not earlier:
                kind = "complaint"
            if kind in SUBJECTS:
                out.append(self.public(kind))
            elif kind == "follow_up":
                first = self.rng.choice(earlier)
                g = self.public(self.rng.choice(["complaint", "other"]),
                                who=first.person, reply_to=first,
                                subject="Re: " + self.rng.choice(["Complaint", "my email",
                                                                  "Still waiting"]))
                g.kind = "follow_up"
                out.append(g)
            elif kind == "duplicate":
                first = self.rng.choice(earlier)
                out.append(Generated("duplicate", first.raw, first.message_id, first.sender, False))
            else:
                out.append(getattr(self, kind)())
        return out


def describe(messages: list[Generated]) -> dict[str, Any]:
    sizes = sorted(len(m.raw) for m in messages)
    return {
        "messages": len(messages),
        "kinds": dict(sorted(Counter(m.kind for m in messages).items())),
        "size_kb_median": round(statistics.median(sizes) / 1024, 1),
        "size_kb_mean": round(statistics.fmean(sizes) / 1024, 1),
        "size_kb_p95": round(sizes[int(0.95 * (len(sizes) - 1))] / 1024, 1),
        "size_kb_max": round(sizes[-1] / 1024, 1),
        "total_mb": round(sum(sizes) / 1024 / 1024, 1),
        "with_attachments": sum(1 for m in messages if b"Content-Disposition: attachment" in m.raw),
    }


# ----------------------------------------------------------------------------------------------
# The SMTP server, in a child process


IN_REPLY_TO = re.compile(rb"(?im)^In-Reply-To:[ \t]*<([^>\r\n]+)>")


def smtp_server_main(port: int) -> int:
    """Child process: the tests' SMTPTestServer, printing one JSON line per message received."""
    from tests.fixtures_smtp import SMTPTestServer

    lock = threading.Lock()

    class Recording(SMTPTestServer):
        def _record(self, server: Any, envelope: Any) -> None:  # runs in the server's thread
            t = time.monotonic()
            data = envelope.original_content or b""
            head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0]
            m = IN_REPLY_TO.search(head)
            line = json.dumps({"t": t, "rcpt": list(envelope.rcpt_tos),
                               "from": "" if envelope.mail_from == "<>" else envelope.mail_from,
                               "irt": m.group(1).decode("ascii", "replace") if m else None,
                               "size": len(data)})
            with lock:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = Recording(port=port)
    server.start()
    with lock:
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()
    # Also stop when the parent goes away (stdin closes).
    def watch_parent() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    stop.wait(24 * 3600)
    server.stop()
    return 0


@dataclass
class Arrival:
    t: float
    rcpt: list[str]
    mail_from: str
    in_reply_to: str | None
    size: int


class SmtpSink:
    """Starts ``smtp-server`` as a child process and collects what arrives."""

    def __init__(self) -> None:
        from tests.dovecot import free_port

        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "smtp-server", "--port",
             str(self.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if not ready.startswith("READY"):
            self.stop()
            fail(f"the SMTP server did not start: {ready!r}")
        self.arrivals: list[Arrival] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.arrivals.append(Arrival(d["t"], d["rcpt"], d["from"], d["irt"], d["size"]))
                self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return len(self.arrivals)

    def wait_count(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.arrivals) >= n, timeout)

    def wait_quiet(self, quiet: float, timeout: float) -> int:
        """Wait until nothing has arrived for ``quiet`` seconds; the number arrived."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            n = self.count()
            if n == last:
                return n
            last = n
            time.sleep(quiet)
        return self.count()

    def wait_reply(self, message_id: str, rcpt: str, timeout: float) -> Arrival | None:
        def find() -> Arrival | None:
            for a in reversed(self.arrivals):
                if a.in_reply_to == message_id and rcpt in a.rcpt:
                    return a
            return None

        with self.cond:
            self.cond.wait_for(lambda: find() is not None, timeout)
            return find()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ----------------------------------------------------------------------------------------------
# Databases


#: ``--extra-indexes``: the experiment behind migration 0005 (its indexes are now in the schema).
EXTRA_INDEXES = (
    # auto_replies_since: ``lower(recipients) = ?`` otherwise scans every outgoing message.
    "CREATE INDEX ix_bench_messages_recipients_lower ON messages (lower(recipients), received_at)",
    # The duplicate check: SQLite (no statistics) otherwise picks ix_messages_outbox_due
    # (direction=?) and scans every incoming message; it takes an index only when that index
    # matches more of the three equalities (message_id, content_sha256) alone does not do.
    "CREATE INDEX ix_bench_messages_message_id_sha "
    "ON messages (message_id, content_sha256, direction)",
)


def preload(url: str, n: int, seed: int) -> float:
    """``n`` historic message rows (half in, half out, all older than a day), as a database
    holds after years of use: about 50 rows a working day. Returns the seconds it took."""
    from sqlalchemy import insert, text

    from mailbot.adapters.database import make_engine
    from mailbot.adapters.orm import messages

    rng = random.Random(seed)
    filler = " ".join(["We have received your message and will reply within ten working days."]
                      * 15)
    start = INGEST_NOW - timedelta(days=3 * 365)
    t0 = time.perf_counter()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for chunk in range(0, n, 5000):
                rows = []
                for i in range(chunk, min(n, chunk + 5000)):
                    when = start + timedelta(minutes=rng.randint(0, (3 * 365 - 2) * 24 * 60))
                    who = f"old.sender{rng.randint(0, n // 3)}@example.org"
                    if i % 2 == 0:
                        rows.append({
                            "direction": "in", "mailbox_key": f"imap://old/INBOX;UID={i}",
                            "message_id": f"{rng.getrandbits(64):016x}@example.org",
                            "content_sha256": f"{rng.getrandbits(256):064x}", "outcome": "case",
                            "detail": "", "sender": who, "recipients": TEAM,
                            "subject": "Complaint", "received_at": when, "body_text": filler,
                            "attempts": 0, "raw": None, "template": None, "sent_at": None})
                    else:
                        rows.append({
                            "direction": "out", "mailbox_key": None,
                            "message_id": f"{rng.getrandbits(64):016x}@council.example",
                            "content_sha256": None, "outcome": "sent", "detail": "",
                            "sender": "", "recipients": who, "subject": "We have received it",
                            "received_at": when, "body_text": filler,
                            "raw": (filler * 3).encode(), "attempts": 1,
                            "template": "complaint_acknowledgement", "sent_at": when})
                conn.execute(insert(messages), rows)
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE messages"))
    finally:
        engine.dispose()
    return time.perf_counter() - t0


def add_extra_indexes(url: str) -> None:
    from sqlalchemy import text

    from mailbot.adapters.database import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for ddl in EXTRA_INDEXES:
                conn.execute(text(ddl))
    finally:
        engine.dispose()


@contextlib.contextmanager
def database(kind: str, pg_url: str, tmp: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from mailbot.adapters.database import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{tmp / f'mailbot-{uuid.uuid4().hex[:6]}.db'}"
        upgrade(url)
        yield url
        return
    schema = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        fail(f"PostgreSQL at {pg_url} cannot be used ({type(exc).__name__}: "
             f"{str(exc).splitlines()[0]}); pass --db sqlite or --pg-url", 2)
    try:
        rendered = make_url(pg_url).set(query={"options": f"-csearch_path={schema}"}
                                        ).render_as_string(hide_password=False)
        upgrade(rendered)
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def check_postgres(pg_url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    except Exception as exc:
        fail(f"PostgreSQL at {pg_url} cannot be reached ({type(exc).__name__}: "
             f"{str(exc).splitlines()[0]}); pass --db sqlite or --pg-url", 2)
    finally:
        engine.dispose()
    return ""


def worker_env(tmp: Path, db_url: str, mailbox_url: str, smtp_url: str) -> dict[str, str]:
    return {
        "MAILBOT_VAR_DIR": str(tmp / "var"),
        "MAILBOT_DATABASE_URL": db_url,
        "MAILBOT_MAILBOX_URL": mailbox_url,
        "MAILBOT_SMTP_URL": smtp_url,
        "MAILBOT_TIMEZONE": "Europe/London",
    }


# ----------------------------------------------------------------------------------------------
# ingest


def bare_fetch(account: Any, batch: int = 100, quiet: bool = True) -> tuple[float, int, int]:
    """Seconds to SELECT, SEARCH and fetch every message with BODY.PEEK[] (login not timed).

    ``quiet``: with imaplib's unlogged trace switched off, as mailbot's adapter does
    (``mailbox_imap.lazy_debug_log``); otherwise IMAPClient as it comes."""
    from mailbot.adapters.mailbox_imap import lazy_debug_log

    client = account.client()
    if quiet:
        lazy_debug_log(client)
    try:
        t0 = time.perf_counter()
        client.select_folder("INBOX", readonly=True)
        uids = sorted(client.search(["ALL"]))
        n = size = 0
        for i in range(0, len(uids), batch):
            resp = client.fetch(uids[i : i + batch], ["BODY.PEEK[]"])
            for data in resp.values():
                body = data.get(b"BODY[]")
                if body is not None:
                    n += 1
                    size += len(body)
        return time.perf_counter() - t0, n, size
    finally:
        client.logout()


class Timers:
    """Wall time spent in each stage of poll_once (wrapped from outside; mailbot unchanged)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1
        return timed


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class SqlStats:
    """Time per SQL statement (by its text), from SQLAlchemy's cursor events on every engine."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._t: list[float] = []

    def before(self, *args: Any) -> None:
        self._t.append(time.perf_counter())

    def after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self._t:
            key = " ".join(statement.split())[:160]
            self.seconds[key] += time.perf_counter() - self._t.pop()
            self.calls[key] += 1

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self.before)
        event.listen(Engine, "after_cursor_execute", self.after)
        try:
            yield
        finally:
            event.remove(Engine, "before_cursor_execute", self.before)
            event.remove(Engine, "after_cursor_execute", self.after)

    def top(self, n: int = 15) -> list[dict[str, Any]]:
        rows = sorted(self.seconds, key=lambda k: -self.seconds[k])[:n]
        return [{"seconds": round(self.seconds[k], 3), "calls": self.calls[k], "sql": k}
                for k in rows]


def one_ingest(server: Any, sink: SmtpSink, messages: list[Generated], db: str, pg_url: str,
               tmp: Path, profile: Path | None = None, profiler_kind: str = "cprofile",
               sql_stats: SqlStats | None = None, extra_indexes: bool = False,
               preload_rows: int = 0, pg_async_commit: bool = False,
               parse_ahead: bool = True) -> dict[str, Any]:
    from mailbot import worker as worker_module
    from mailbot.adapters.mailbox import open_mailbox
    from mailbot.adapters.smtp import open_transport
    from mailbot.bootstrap import build_app, intake_context
    from mailbot.config import load_settings
    from mailbot.intake.parse_ahead import ParseAhead
    from mailbot.services import outbox

    account = server.add_user()
    t0 = time.perf_counter()
    account.deliver_many(m.raw for m in messages)
    append_s = time.perf_counter() - t0

    fetches = [bare_fetch(account) for _ in range(3)]
    for _, n, _ in fetches:
        if n != len(messages):
            fail(f"the bare fetch saw {n} messages, expected {len(messages)}")
    fetch_s = statistics.median(f[0] for f in fetches)
    default_fetch_s = bare_fetch(account, quiet=False)[0]

    with database(db, pg_url, tmp) as url:
        preload_s = preload(url, preload_rows, SEED) if preload_rows else 0.0
        if extra_indexes:
            add_extra_indexes(url)
        if pg_async_commit and db == "postgresql":
            from sqlalchemy.engine import make_url

            u = make_url(url)
            options = f"{u.query['options']} -csynchronous_commit=off"
            url = u.set(query={"options": options}).render_as_string(hide_password=False)
        settings = load_settings(worker_env(tmp, url, account.url, sink.url), cwd=tmp)
        app = build_app(settings, relaxed_commits=True)  # as `mailbot run` does
        t0 = time.perf_counter()
        ctx = intake_context(app)
        model_s = time.perf_counter() - t0
        mailbox = open_mailbox(settings.mailbox)
        transport = open_transport(settings.smtp)
        before = sink.count()
        timers = Timers()
        profiler: Any = None
        if profile and profiler_kind == "pyinstrument":
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.enable = profiler.start
            profiler.disable = profiler.stop
        elif profile:
            profiler = cProfile.Profile()
        try:
            with contextlib.ExitStack() as stack:
                if sql_stats is not None:
                    stack.enter_context(sql_stats.listening())
                for name in ("fetch_waiting", "mark_processed", "quarantine"):
                    stack.enter_context(patched(mailbox, name,
                                                timers.wrap(name, getattr(mailbox, name))))
                stack.enter_context(patched(outbox, "flush", timers.wrap("outbox.flush",
                                                                         outbox.flush)))
                stack.enter_context(patched(worker_module, "process_batch",
                                            timers.wrap("process_batch",
                                                        worker_module.process_batch)))
                threshold = ctx.settings.policy.triage_confidence_threshold
                ahead = ParseAhead(threshold) if parse_ahead else None
                if ahead is not None:
                    stack.callback(ahead.close)
                    ahead.start()  # as the worker does when it starts
                worker_module.settle()  # and then
                if profiler:
                    profiler.enable()
                procs0, steal0 = process_table(), steal_seconds()
                t0, cpu0 = time.perf_counter(), time.process_time()
                result = worker_module.poll_once(app, ctx, mailbox, transport,
                                                 now=lambda: INGEST_NOW, ahead=ahead)
                e2e_s = time.perf_counter() - t0
                cpu_s = time.process_time() - cpu0
                procs1, steal1 = process_table(), steal_seconds()
                if profiler:
                    profiler.disable()
        finally:
            mailbox.close()
            app.close()
        if not sink.wait_count(before + result.sent, timeout=30):
            fail(f"the SMTP server got {sink.count() - before} messages, "
                 f"poll_once reported {result.sent} sent")
        outcomes = Counter(o.outcome for o in result.outcomes)
        if len(result.outcomes) != len(messages):
            fail(f"poll_once handled {len(result.outcomes)} of {len(messages)} messages")
        if result.deferred:
            fail(f"{result.deferred} emails were deferred: the SMTP server refused them")
    out: dict[str, Any] = {
        "db": db,
        "messages": len(messages),
        "append_seconds": round(append_s, 2),
        "bare_fetch_seconds_median_of_3": round(fetch_s, 3),
        "bare_fetch_runs": [round(f[0], 3) for f in fetches],
        "bare_fetch_msgs_per_s": round(len(messages) / fetch_s),
        "bare_fetch_mb": round(fetches[0][2] / 1024 / 1024, 1),
        "bare_fetch_msgs_per_s_imapclient_default_trace": round(len(messages) / default_fetch_s),
        "model_load_seconds": round(model_s, 2),
        "end_to_end_seconds": round(e2e_s, 2),
        "end_to_end_msgs_per_s": round(len(messages) / e2e_s, 1),
        "end_to_end_cpu_seconds_of_this_process": round(cpu_s, 2),
        "cpu_seconds_by_process": cpu_split(procs0, procs1, sink.proc.pid),
        "cpu_seconds_stolen_by_the_hypervisor": round(steal1 - steal0, 2),
        "extra_indexes": extra_indexes,
        "preloaded_rows": preload_rows,
        "preload_seconds": round(preload_s, 1),
        "pg_async_commit": pg_async_commit and db == "postgresql", "parse_ahead": parse_ahead,
        "ratio_bare_fetch_to_end_to_end": round(e2e_s / fetch_s, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "emails_sent": result.sent,
        "stages_seconds": {k: round(v, 2) for k, v in timers.seconds.items()},
        "stage_calls": dict(timers.calls),
        "loadavg_after": os.getloadavg(),
    }
    if profiler and profile:
        if profiler_kind == "pyinstrument":
            profile.with_suffix(".txt").write_text(profiler.output_text(
                unicode=False, color=False, show_all=False, short_mode=False))
            profile.with_suffix(".html").write_text(profiler.output_html())
            out["profile_file"] = str(profile.with_suffix(".txt"))
        else:
            profiler.dump_stats(profile)
            out["profile_file"] = str(profile)
    if sql_stats is not None:
        out["sql_statements"] = sum(sql_stats.calls.values())
        out["sql_seconds"] = round(sum(sql_stats.seconds.values()), 2)
        out["sql_top"] = sql_stats.top()
    return out


def profile_summary(path: Path, top: int = 30) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    # Self time by package: where the time is actually spent, whoever called it.
    by_pkg: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        by_pkg[_package(filename)] += tt
    buf.write("\nSelf time by package (cProfile):\n")
    for pkg, tt in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:20]:
        buf.write(f"  {tt:7.2f} s  {100 * tt / total:5.1f}%  {pkg}\n")
    return buf.getvalue()


def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C functions)"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return "site-packages/" + parts[parts.index("site-packages") + 1]
    if "mailbot" in parts:
        i = len(parts) - 1 - parts[::-1].index("mailbot")
        return "/".join((*parts[i:-1], path.stem))
    if "python3.11" in parts or "lib" in parts:
        return "stdlib/" + (parts[-2] if parts[-2] not in ("python3.11", "lib") else path.stem)
    return filename


def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from tests.dovecot import DovecotServer

    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    for d in dbs:
        if d not in ("sqlite", "postgresql"):
            fail(f"--db: unknown database {d!r} (sqlite, postgresql)", 2)
    report: dict[str, Any] = {"machine": machine()}
    if "postgresql" in dbs:
        report["machine"]["postgresql"] = check_postgres(args.pg_url)
    messages = MessageFactory(args.seed, INGEST_NOW).mix(args.messages)
    report["corpus"] = describe(messages)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-ingest-bench-"))
    server = DovecotServer()
    sink: SmtpSink | None = None
    try:
        server.start()
        sink = SmtpSink()
        runs = []
        for db in dbs:
            for rep in range(args.repeat):
                r = one_ingest(server, sink, messages, db, args.pg_url, tmp,
                               parse_ahead=not args.no_parse_ahead,
                               extra_indexes=args.extra_indexes,
                               preload_rows=args.preload_messages,
                               pg_async_commit=args.pg_async_commit)
                r["repeat"] = rep + 1
                runs.append(r)
                print(json.dumps(r), file=sys.stderr)
        report["runs"] = runs
        if args.profile:
            profiles = {}
            kind = args.profiler
            if kind == "pyinstrument":
                try:
                    import pyinstrument  # noqa: F401
                except ImportError:
                    fail("--profiler pyinstrument: not installed (.venv/bin/pip install "
                         "pyinstrument), or use --profiler cprofile", 2)
            for db in dbs:
                path = Path(args.profile_dir) / f"ingest-{db}.prof"
                path.parent.mkdir(parents=True, exist_ok=True)
                r = one_ingest(server, sink, messages, db, args.pg_url, tmp, profile=path,
                               parse_ahead=not args.no_parse_ahead,
                               profiler_kind=kind, extra_indexes=args.extra_indexes)
                profiles[db] = {"profiled_seconds": r["end_to_end_seconds"],
                                "file": r["profile_file"]}
                summary = (profile_summary(path) if kind == "cprofile"
                           else Path(r["profile_file"]).read_text())
                print(f"\n==== {kind}, {db} (run took {r['end_to_end_seconds']} s under the "
                      f"profiler) ====\n{summary}", file=sys.stderr)
            report["profiles"] = profiles
        if args.sql_stats:
            report["sql"] = {}
            for db in dbs:
                stats = SqlStats()
                r = one_ingest(server, sink, messages, db, args.pg_url, tmp, sql_stats=stats,
                               parse_ahead=not args.no_parse_ahead,
                               extra_indexes=args.extra_indexes,
                               preload_rows=args.preload_messages,
                               pg_async_commit=args.pg_async_commit)
                report["sql"][db] = {k: r[k] for k in (
                    "end_to_end_seconds", "sql_statements", "sql_seconds", "sql_top")}
                print(json.dumps(report["sql"][db], indent=2), file=sys.stderr)
    finally:
        if sink:
            sink.stop()
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def cmd_components(args: argparse.Namespace) -> dict[str, Any]:
    """The CPU-bound steps alone, over the same messages, with no profiler attached."""
    import email as email_package

    import mailparser

    from mailbot.classifier.model import Classifier
    from mailbot.classifier.text import message_text
    from mailbot.intake.parsing import UnparseableMessage, parse_message

    messages = [m.raw for m in MessageFactory(args.seed, INGEST_NOW).mix(args.messages)]
    out: dict[str, Any] = {"machine": machine(), "messages": len(messages)}

    def timed(name: str, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        results: list[Any] = []
        best = float("inf")
        for _ in range(args.repeat):
            results = []
            t0 = time.perf_counter()
            for item in items:
                try:
                    results.append(func(item))
                except (UnparseableMessage, Exception):
                    results.append(None)
            best = min(best, time.perf_counter() - t0)
        out[name] = {"seconds": round(best, 3), "ms_per_message": round(1000 * best / len(items),
                                                                          3)}
        return results

    timed("stdlib email.message_from_bytes (compat32)", email_package.message_from_bytes,
          messages)
    timed("mailparser.parse_from_bytes", mailparser.parse_from_bytes, messages)
    parsed = timed("parse_message (all of it)", parse_message, messages)
    texts = [message_text(m) for m in parsed if m is not None]
    clf = Classifier.load()
    clf.classify(texts[0])
    timed("Classifier.classify (one at a time)", clf.classify, texts)
    t0 = time.perf_counter()
    list(clf.classify_many(texts))
    out["Classifier.classify_many (nlp.pipe)"] = {
        "seconds": round(time.perf_counter() - t0, 3),
        "ms_per_message": round(1000 * (time.perf_counter() - t0) / len(texts), 3)}

    # The floor under the outbox flush: the SMTP conversation alone, one connection, with
    # mailbot's own transport, for as many acknowledgement-sized emails as an ingest sends.
    from mailbot.adapters.smtp import open_transport
    from mailbot.config import parse_smtp_url
    from mailbot.services.compose import Composer

    composer = Composer(TEAM, LONDON)
    emails = [composer.compose(
        "general_receipt", f"person{i}@example.org", INGEST_NOW, auto_reply=True,
        in_reply_to=f"m{i}@example.org",
        context={"case": _FakeCase(f"CSQ-2026-{i:05d}"), "name": "Ann Example",
                 "policy": _policy(), "ombudsman": None}).raw for i in range(args.emails)]
    sink = SmtpSink()
    try:
        transport = open_transport(parse_smtp_url(sink.url))
        t0 = time.perf_counter()
        with transport.connect() as conn:
            for i, raw in enumerate(emails):
                conn.send("", [f"person{i}@example.org"], raw)
        smtp_s = time.perf_counter() - t0
        sink.wait_count(len(emails), timeout=30)
    finally:
        sink.stop()
    out["SMTP send only, one connection (outbox floor)"] = {
        "emails": len(emails), "seconds": round(smtp_s, 3),
        "ms_per_email": round(1000 * smtp_s / len(emails), 3)}
    return out


@dataclass
class _FakeCase:
    ref: str
    kind: str = "other"
    requester_name: str = "Ann Example"
    acknowledgement_due: Any = None
    response_due: Any = None
    deemed_received: Any = None
    officer: Any = None
    service_area: str = "social_care"
    stage: int = 1


def _policy() -> Any:
    from mailbot.workflow.policy import Policy

    return Policy()


# ----------------------------------------------------------------------------------------------
# The worker as a subprocess (latency, memory)


class WorkerProcess:
    """``mailbot run`` with its own environment; its log goes to a file."""

    def __init__(self, env: dict[str, str], tmp: Path, idle_timeout: float = 60.0) -> None:
        self.log_path = tmp / "worker.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
        full.update(env)
        mailbot = Path(sys.executable).with_name("mailbot")
        cmd = ([str(mailbot)] if mailbot.exists() else [sys.executable, "-m", "mailbot"])
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen([*cmd, "run", "--idle-timeout", str(idle_timeout)],
                                     cwd=tmp, env=full, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(f"the worker exited with {self.proc.returncode}:\n{self.tail()}")
            if b"worker running" in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        fail(f"the worker did not start within {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode


class IdleObserver:
    """A second IMAP connection in IDLE: when does Dovecot announce new mail to any client?"""

    def __init__(self, account: Any) -> None:
        self.client = account.client("INBOX")
        self.times: list[float] = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.client.idle()
        try:
            while not self.stop_flag.is_set():
                for r in self.client.idle_check(timeout=0.5):
                    if isinstance(r, tuple) and len(r) >= 2 and r[1] == b"EXISTS":
                        with self.lock:
                            self.times.append(time.monotonic())
        finally:
            with contextlib.suppress(Exception):
                self.client.idle_done()
                self.client.logout()

    def first_after(self, t: float) -> float | None:
        with self.lock:
            return next((x for x in self.times if x >= t), None)

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=5)


def cpu_split(before: dict[int, Proc], after: dict[int, Proc], sink_pid: int) -> dict[str, float]:
    """CPU seconds spent between two ``process_table`` samples, by role: this process (the
    worker's threads), its parse-ahead child, the SMTP server, Dovecot, PostgreSQL, the rest.
    A process that ended in between counts nothing."""
    me = os.getpid()

    def role(pid: int) -> str:
        if pid == me:
            return "worker"
        if pid == sink_pid:
            return "smtp_server"
        if after[pid].ppid == me:
            return "parse_ahead_child"
        if after[pid].comm == "postgres":
            return "postgresql"
        seen = set()
        while pid in after and pid not in seen:  # a Dovecot process, or a child of one
            seen.add(pid)
            if after[pid].comm == "dovecot":
                return "dovecot"
            pid = after[pid].ppid
        return "other"

    split: dict[str, float] = defaultdict(float)
    for pid, proc in after.items():
        earlier = before[pid].cpu_seconds if pid in before else 0.0
        split[role(pid)] += proc.cpu_seconds - earlier
    split = {k: round(v, 2) for k, v in split.items() if v >= 0.005}
    split["total"] = round(sum(split.values()), 2)
    return dict(sorted(split.items()))


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def answerable(messages: list[Generated], n: int) -> list[Generated]:
    """The first ``n`` that mailbot will answer: the corpus's "other" examples include
    auto-replies and delivery reports, which are (rightly) never acknowledged."""
    from mailbot.config import load_settings
    from mailbot.intake.parsing import parse_message
    from mailbot.intake.screening import screen

    own = load_settings({}).own_addresses
    out = [m for m in messages if screen(parse_message(m.raw), own) is None]
    if len(out) < n:
        fail(f"only {len(out)} answerable messages generated, {n} needed")
    return out[:n]


def cmd_latency(args: argparse.Namespace) -> dict[str, Any]:
    from tests.dovecot import DovecotServer

    if args.db == "postgresql":
        check_postgres(args.pg_url)
    report: dict[str, Any] = {"machine": machine(), "db": args.db}
    rng = random.Random(args.seed)
    factory = MessageFactory(args.seed, datetime.now(UTC))
    messages = answerable(factory.mix(2 * args.messages + 20, only_answerable=True),
                          args.messages + 1)
    report["corpus"] = describe(messages)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-latency-bench-"))
    tmp.chmod(0o755)
    server = DovecotServer()
    sink = worker = observer = None
    latencies: list[float] = []
    signals: list[float] = []
    try:
        server.start()
        sink = SmtpSink()
        account = server.add_user()
        with database(args.db, args.pg_url, tmp) as url:
            worker = WorkerProcess(worker_env(tmp, url, account.url, sink.url), tmp)
            observer = IdleObserver(account)
            appender = account.client()
            try:
                worker.wait_started()
                for i, m in enumerate(messages):
                    assert m.message_id and m.sender
                    t0 = time.monotonic()
                    appender.append("INBOX", m.raw)
                    got = sink.wait_reply(m.message_id, m.sender, timeout=args.timeout)
                    if got is None:
                        fail(f"message {i} ({m.kind}) got no acknowledgement within "
                             f"{args.timeout} s; worker log:\n{worker.tail()}")
                    if i > 0:  # the first one warms the worker up (templates, statements)
                        latencies.append(got.t - t0)
                        if i % 10 == 0:
                            print(f"latency: {i}/{len(messages) - 1}, p50 so far "
                                  f"{statistics.median(latencies):.3f} s", file=sys.stderr)
                        seen = observer.first_after(t0)
                        if seen is not None:
                            signals.append(seen - t0)
                    time.sleep(rng.uniform(args.pause_min, args.pause_max))
                rss = rss_of(worker.pid)
            finally:
                appender.logout()
                code = worker.stop()  # before the database goes
            if code != 0:
                fail(f"the worker exited with {code} after SIGTERM:\n{worker.tail()}")
    finally:
        if observer:
            observer.close()
        if worker:
            worker.stop()
        if sink:
            sink.stop()
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report.update({
        "measured": len(latencies),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
        "latency_max_s": round(max(latencies), 3),
        "latency_min_s": round(min(latencies), 3),
        "over_1_5_s": sum(1 for x in latencies if x > 1.5),
        "dovecot_idle_signal_p50_s": round(percentile(signals, 50), 3) if signals else None,
        "dovecot_idle_signal_p95_s": round(percentile(signals, 95), 3) if signals else None,
        "worker_rss_mb_after": rss,
        "pause_s": [args.pause_min, args.pause_max],
        "loadavg_after": os.getloadavg(),
    })
    return report


def cmd_memory(args: argparse.Namespace) -> dict[str, Any]:
    from tests.dovecot import DovecotServer

    if args.db == "postgresql":
        check_postgres(args.pg_url)
    report: dict[str, Any] = {"machine": machine(), "db": args.db}
    messages = MessageFactory(args.seed, datetime.now(UTC)).mix(args.messages)
    report["corpus"] = describe(messages)
    tmp = Path(tempfile.mkdtemp(prefix="mailbot-memory-bench-"))
    tmp.chmod(0o755)
    server = DovecotServer()
    sink = worker = None
    try:
        server.start()
        sink = SmtpSink()
        account = server.add_user()
        with database(args.db, args.pg_url, tmp) as url:
            worker = WorkerProcess(worker_env(tmp, url, account.url, sink.url), tmp)
            try:
                at_rest, after, processed_s, sent = _memory_run(args, worker, account, sink,
                                                                messages)
            finally:
                code = worker.stop()  # before the database goes
            if code != 0:
                fail(f"the worker exited with {code} after SIGTERM:\n{worker.tail()}")
    finally:
        if worker:
            worker.stop()
        if sink:
            sink.stop()
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report.update({
        "rss_mb_at_rest": at_rest,
        "rss_mb_after_messages": after,
        "seconds_to_process_all_as_a_running_worker": round(processed_s, 1),
        "emails_sent": sent,
        "loadavg_after": os.getloadavg(),
    })
    return report


def _memory_run(args: argparse.Namespace, worker: WorkerProcess, account: Any, sink: SmtpSink,
                messages: list[Generated]) -> tuple[dict[str, float], dict[str, float], float, int]:
    worker.wait_started()
    time.sleep(args.settle)  # first pass (nothing waiting), start-up sweep, then IDLE
    at_rest = worker_rss(worker.pid)
    t0 = time.monotonic()
    account.deliver_many(m.raw for m in messages)
    check = account.client()
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            done = sum(int(check.select_folder(f, readonly=True)[b"EXISTS"])
                       for f in ("Processed", "Quarantine") if check.folder_exists(f))
            if done >= len(messages):
                break
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                fail(f"only {done} of {len(messages)} messages were processed within "
                     f"{args.timeout} s:\n{worker.tail()}")
            time.sleep(0.2)
    finally:
        check.logout()
    processed_s = time.monotonic() - t0
    sent = sink.wait_quiet(2.0, timeout=60)
    return at_rest, worker_rss(worker.pid), processed_s, sent


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True,
                            metavar="{ingest,latency,memory,components,all}")

    def common(p: argparse.ArgumentParser, db: str) -> None:
        p.add_argument("--db", default=db, help=f"sqlite, postgresql (default {db})")
        p.add_argument("--pg-url", default=DEFAULT_PG, help=f"default {DEFAULT_PG}")
        p.add_argument("--seed", type=int, default=SEED)

    p = sub.add_parser("ingest", help="1,000 waiting messages: poll_once vs a bare fetch")
    common(p, "sqlite,postgresql")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=1, help="timed runs per database")
    p.add_argument("--no-parse-ahead", action="store_true",
                   help="parse in the worker process, as `mailbot run` did before parse-ahead")
    p.add_argument("--profile", action="store_true", help="add one profiled run per database")
    p.add_argument("--profiler", choices=["cprofile", "pyinstrument"], default="cprofile",
                   help="pyinstrument samples (less distortion) but is not a project dependency")
    p.add_argument("--sql-stats", action="store_true",
                   help="add one run per database timing every SQL statement")
    p.add_argument("--extra-indexes", action="store_true",
                   help="experiment behind migration 0005 (its indexes are now in the schema)")
    p.add_argument("--preload-messages", type=int, default=0, metavar="N",
                   help="experiment: N historic message rows in the database first")
    p.add_argument("--pg-async-commit", action="store_true",
                   help="experiment: synchronous_commit=off, to measure the cost of fsync")
    p.add_argument("--profile-dir", default=str(Path(tempfile.gettempdir()) / "mailbot-prof"))

    p = sub.add_parser("latency", help="APPEND to acknowledgement, worker idling in IDLE")
    common(p, "sqlite")
    p.add_argument("--messages", type=int, default=100)
    p.add_argument("--pause-min", type=float, default=0.5)
    p.add_argument("--pause-max", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=45.0)

    p = sub.add_parser("memory", help="worker RSS at rest and after 1,000 messages")
    common(p, "sqlite")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=600.0)

    p = sub.add_parser("components", help="parse and classify alone, no I/O, no profiler")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="best of N")
    p.add_argument("--emails", type=int, default=1500, help="emails for the SMTP floor")

    p = sub.add_parser("all", help="ingest (both databases, with profile), latency, memory")
    common(p, "sqlite,postgresql")

    p = sub.add_parser("smtp-server")  # internal: the SMTP server's child process
    p.add_argument("--port", type=int, required=True)

    args = ap.parse_args(argv)
    if args.command == "smtp-server":
        return smtp_server_main(args.port)
    if args.command == "components":
        print(json.dumps(cmd_components(args), indent=2, default=str))
        return 0
    require_dovecot()
    if args.command == "all":
        out = {}
        base = dict(db=args.db, pg_url=args.pg_url, seed=args.seed)
        out["ingest"] = cmd_ingest(argparse.Namespace(
            **base, messages=1000, repeat=1, profile=True, profiler="cprofile", sql_stats=True,
            extra_indexes=False, preload_messages=0, pg_async_commit=False,
            profile_dir=str(Path(tempfile.gettempdir()) / "mailbot-prof")))
        single = {**base, "db": "sqlite"}
        out["latency"] = cmd_latency(argparse.Namespace(
            **single, messages=100, pause_min=0.5, pause_max=2.0, timeout=45.0))
        out["memory"] = cmd_memory(argparse.Namespace(
            **single, messages=1000, settle=5.0, timeout=600.0))
    else:
        out = {"ingest": cmd_ingest, "latency": cmd_latency, "memory": cmd_memory}[
            args.command](args)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
