"""Outgoing messages parse back to exactly what was meant, whatever the input holds."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, date, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from mailbot.services.compose import Composer
from mailbot.workflow.policy import Policy


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def compose(**overrides: object) -> bytes:
    case = SimpleNamespace(ref="CSQ-2026-00001", acknowledgement_due=date(2026, 12, 30),
                           response_due=date(2027, 1, 7), flag_out_of_time=False,
                           service_area="social_care", requester_name="Zoë Ångström")
    context = {"case": case, "name": "Zoë Ångström", "policy": Policy(),
               "ombudsman": "Local Government and Social Care Ombudsman"}
    args: dict[str, object] = {"auto_reply": True, "in_reply_to": "orig@example.org",
                               "references": ["a@example.org", "b@example.org"]}
    args.update(overrides)
    c = Composer("care.quality@council.example", ZoneInfo("Europe/London"))
    return c.compose("complaint_acknowledgement", "zoe@example.org",
                     datetime(2026, 12, 21, 10, tzinfo=UTC), context=context,
                     **args).raw  # type: ignore[arg-type]


def test_headers_and_body_round_trip() -> None:
    raw = compose()
    assert b"\r\n\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    m = parse(raw)
    assert m["Subject"] == "We have received your complaint [CSQ-2026-00001]"
    assert m["To"] == "zoe@example.org"
    assert m["From"].addresses[0].addr_spec == "care.quality@council.example"
    assert m["Auto-Submitted"] == "auto-replied"
    assert m["In-Reply-To"] == "<orig@example.org>"
    assert m["References"].split() == ["<a@example.org>", "<b@example.org>",
                                       "<orig@example.org>"]
    assert m["Message-ID"].endswith("@council.example>")
    body = m.get_content()
    assert body.startswith("Dear Zoë Ångström,")
    assert "Wednesday 30 December 2026" in body and "Thursday 7 January 2027" in body


def test_no_input_can_inject_a_header() -> None:
    raw = compose(in_reply_to="x@example.org>\r\nBcc: victim@example.net\r\nX-Evil: <y",
                  references=["z@example.org\nBcc: other@example.net"])
    m = parse(raw)
    assert m["Bcc"] is None and m["X-Evil"] is None
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(not line.startswith((b"Bcc", b"X-Evil")) for line in head.split(b"\r\n"))


def test_non_ascii_subject_is_encoded() -> None:
    c = Composer("care.quality@council.example", ZoneInfo("Europe/London"))
    case = SimpleNamespace(ref="CSQ-2026-00002", requester_name="Łucja", kind="complaint",
                           stage=1, officer=None, reviewer=None)
    out = c.compose("staff_forward_thanks", "sue@council.example",
                    datetime(2026, 12, 21, 10, tzinfo=UTC),
                    context={"case": case, "staff_name": "Siân", "policy": Policy()})
    assert out.raw.isascii()
    m = parse(out.raw)
    assert m["Subject"] == "Compliment recorded [CSQ-2026-00002]"
    assert "Hello Siân," in m.get_content()
