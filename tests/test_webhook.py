"""The web API through Flask's test client: phone-logged cases, signatures, idempotency,
validation, the staff API's rules and errors, and the ``mailbot staff`` token commands."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from mailbot.adapters.orm import cases, idempotency_keys, messages
from mailbot.adapters.smtp import open_transport
from mailbot.classifier.model import Classifier
from mailbot.cli import staff_commands
from mailbot.config import ConfigError, load_settings
from mailbot.services import outbox
from mailbot.services import phone_cases as phone_service
from webhooks import create_app
from webhooks.auth import add_token, sign
from webhooks.state import WebState

SECRET = "test-webhook-secret-0123456789"
LONDON = ZoneInfo("Europe/London")
# Monday 21 December 2026, 10:05 in London; the 25th and 28th are bank holidays.
NOW = datetime(2026, 12, 21, 10, 5, tzinfo=LONDON).astimezone(UTC)
CALL = {
    "caller_name": "Ann Example",
    "phone": "01632 960 001",
    "email": "ann@example.org",
    "summary": "Nobody called back about Mum's care",
    "details": "I was promised a call back about my mother's care package last week.\n"
               "Nobody called. I want someone to sort this out.",
    "kind": "complaint",
    "logged_by": "Pat Phone",
    "called_at": "2026-12-21T10:00:00+00:00",
}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


@dataclass
class Web:
    app: Flask
    client: FlaskClient
    state: WebState
    loads: list[int]

    def call(self, payload: dict[str, Any] | bytes, *, t: datetime | None = None,
             secret: str = SECRET, key: str | None = None, signature: str | None = None,
             content_type: str = "application/json") -> TestResponse:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": content_type}
        stamp = int((t or NOW).timestamp())
        headers["X-Mailbot-Signature"] = signature or sign(secret, body, stamp)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post("/api/v1/phone-cases", data=body, headers=headers)

    def count(self, table: Any = cases) -> int:
        with self.state.core.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(table)) or 0)

    def token(self, name: str = "Sam Duty") -> dict[str, str]:
        with self.state.core.sessions.begin() as session:
            token = add_token(session, name, NOW)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def web(mailbot_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        classifier: Classifier) -> Iterator[Web]:
    monkeypatch.setenv("MAILBOT_WEBHOOK_SECRET", SECRET)
    loads: list[int] = []

    def load(*args: Any, **kwargs: Any) -> Classifier:
        loads.append(1)
        return classifier

    monkeypatch.setattr(Classifier, "load", load)
    app = create_app()
    state: WebState = app.extensions["mailbot"]
    state.clock = lambda: NOW
    yield Web(app, app.test_client(), state, loads)
    state.core.close()


def outgoing(web: Web) -> list[Any]:
    with web.state.core.sessions() as session:
        return list(session.execute(
            select(messages.c.template, messages.c.recipients, messages.c.envelope_from)
            .where(messages.c.direction == "out").order_by(messages.c.id)))


# Phone-logged cases ---------------------------------------------------------------------------


def test_phone_case_opens_a_case_with_deadlines_and_queues_the_acknowledgement(web: Web) -> None:
    r = web.call(CALL)
    assert r.status_code == 201, r.json
    assert r.json == {
        "ref": "CSQ-2026-00001",
        "kind": "complaint",
        "acknowledgement_due": "2026-12-30",
        "response_due": "2027-01-07",
        "links": {"self": "/api/v1/cases/CSQ-2026-00001"},
    }
    assert r.headers["Location"] == "/api/v1/cases/CSQ-2026-00001"
    assert [(m.template, m.recipients, m.envelope_from) for m in outgoing(web)] == [
        ("complaint_acknowledgement", "ann@example.org", "")
    ]
    detail = web.client.get("/api/v1/cases/CSQ-2026-00001", headers=web.token()).json
    assert detail["source"] == "phone"
    assert detail["requester_phone"] == "01632 960 001"
    assert detail["flags"] == []
    assert detail["deadlines"]["stage1_acknowledged_on"] == "2026-12-21"
    assert detail["audit"][0]["actor"] == "Pat Phone"
    assert detail["audit"][0]["action"] == "opened"
    logged = detail["messages"][0]
    assert (logged["direction"], logged["subject"]) == ("in", CALL["summary"])
    assert logged["text"] == CALL["details"]
    assert detail["reminders"], "a complaint has a reminder plan"
    assert web.loads == [1], "every call is read for safeguarding risk, also with a kind"
    assert "safeguarding" not in detail["flags"]


def test_the_acknowledgement_is_the_same_email_as_for_mail(
    web: Web, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert web.call(CALL).status_code == 201
    monkeypatch.setenv("MAILBOT_SMTP_URL", smtp_server.url)
    transport = open_transport(load_settings().smtp)
    assert outbox.flush(web.state.core.sessions, transport, lambda: NOW).sent == 1
    mail = smtp_server.wait_for(1)[0]
    assert mail.rcpt_tos == ["ann@example.org"]
    assert mail.mail_from == ""  # null envelope sender, as for every automatic reply
    assert mail.message["Subject"] == "We have received your complaint [CSQ-2026-00001]"
    assert mail.message["Auto-Submitted"] == "auto-replied"
    assert "Wednesday 30 December 2026" in mail.message.get_content()


def test_a_caller_without_email_is_flagged_for_a_letter(web: Web) -> None:
    call = {k: v for k, v in CALL.items() if k != "email"}
    r = web.call(call)
    assert r.status_code == 201
    assert outgoing(web) == []
    detail = web.client.get(r.json["links"]["self"], headers=web.token()).json
    assert detail["flags"] == ["needs_letter"]
    assert detail["deadlines"]["stage1_acknowledged_on"] is None
    assert any(e["action"] == "not_acknowledged" for e in detail["audit"])


def test_an_incident_over_twelve_months_old_is_out_of_time(web: Web) -> None:
    r = web.call({**CALL, "incident_date": "2025-12-18"})
    detail = web.client.get(r.json["links"]["self"], headers=web.token()).json
    assert detail["flags"] == ["out_of_time"]
    r = web.call({**CALL, "incident_date": "2025-12-22", "summary": "another"})
    assert web.client.get(r.json["links"]["self"], headers=web.token()).json["flags"] == []


@pytest.mark.parametrize(("kind", "templates"), [
    ("compliment", ["compliment_thanks", "staff_compliment"]),
    ("quality_concern", ["quality_concern_receipt", "commissioning_concern"]),
    ("other", ["general_receipt"]),
])
def test_each_kind_gets_the_mail_that_intake_would_send(
    web: Web, kind: str, templates: list[str]
) -> None:
    r = web.call({**CALL, "kind": kind})
    assert r.status_code == 201
    assert (r.json["kind"], r.json["acknowledgement_due"], r.json["response_due"]) == (
        kind, None, None)
    assert [m.template for m in outgoing(web)] == templates


def test_without_a_kind_the_classifier_decides_and_is_loaded_once(web: Web) -> None:
    call = {k: v for k, v in CALL.items() if k != "kind"}
    first = web.call(call)
    second = web.call({**call, "summary": "Still nobody has called back"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json["kind"] == "complaint"
    assert web.loads == [1]
    detail = web.client.get(first.json["links"]["self"], headers=web.token()).json
    assert detail["classification"]["label"] == "complaint"


def test_a_safeguarding_call_alerts_safeguarding(web: Web) -> None:
    call = {**{k: v for k, v in CALL.items() if k != "kind"},
            "summary": "Neighbour worried about an older man",
            "details": "The carer hits him and takes his money. He has bruises and is "
                       "scared of her. He has not been fed for two days."}
    r = web.call(call)
    assert r.status_code == 201
    assert "safeguarding_alert" in [m.template for m in outgoing(web)]


def test_a_call_whose_kind_staff_chose_still_alerts_safeguarding_on_a_named_risk(
    web: Web,
) -> None:
    """Staff chose "complaint", but the caller said the carer hits her father: Safeguarding is
    told at once, and the kind stays the one staff chose."""
    r = web.call({**CALL, "summary": "Complaint about Dad's carer",
                  "details": "The carer hits him and he has bruises on his arms. She also "
                             "keeps arriving late."})
    assert (r.status_code, r.json["kind"]) == (201, "complaint")
    assert [m.template for m in outgoing(web)] == [
        "complaint_acknowledgement", "safeguarding_alert"]
    detail = web.client.get(r.json["links"]["self"], headers=web.token()).json
    assert "safeguarding" in detail["flags"]
    assert "safeguarding_alert" in [e["action"] for e in detail["audit"]]


def test_optional_fields_may_be_null(web: Web) -> None:
    r = web.call({**CALL, "phone": None, "incident_date": None, "service_area": None,
                  "called_at": None})
    assert r.status_code == 201, r.json
    detail = web.client.get(r.json["links"]["self"], headers=web.token()).json
    assert (detail["service_area"], detail["requester_phone"]) == ("social_care", None)


def test_called_at_is_the_time_of_receipt(web: Web) -> None:
    # Saturday 19 December: deemed received on Monday 21st.
    r = web.call({**CALL, "called_at": "2026-12-19T11:00:00"})
    assert r.json["acknowledgement_due"] == "2026-12-30"
    detail = web.client.get(r.json["links"]["self"], headers=web.token()).json
    assert detail["received_at"] == "2026-12-19T11:00:00+00:00"  # naive = London time
    assert detail["deemed_received"] == "2026-12-21"
    # Without called_at, the case is received now.
    r = web.call({k: v for k, v in CALL.items() if k != "called_at"})
    detail = web.client.get(r.json["links"]["self"], headers=web.token()).json
    assert detail["received_at"] == NOW.isoformat()


# Signatures -----------------------------------------------------------------------------------


def _refused(r: TestResponse, web: Web, text: str) -> None:
    assert r.status_code == 401, r.json
    assert r.is_json and text in r.json["error"]
    assert web.count() == 0


def test_a_wrong_secret_is_refused(web: Web) -> None:
    _refused(web.call(CALL, secret="not-the-secret-at-all"), web, "does not match")


def test_an_old_timestamp_is_refused(web: Web) -> None:
    _refused(web.call(CALL, t=NOW - timedelta(seconds=301)), web, "301 s old")
    _refused(web.call(CALL, t=NOW + timedelta(seconds=301)), web, "301 s ahead")
    assert web.call(CALL, t=NOW - timedelta(seconds=299)).status_code == 201


def test_a_tampered_body_is_refused(web: Web) -> None:
    body = json.dumps(CALL).encode()
    signature = sign(SECRET, body, int(NOW.timestamp()))
    tampered = body.replace(b"Ann Example", b"Eve Example")
    _refused(web.call(tampered, signature=signature), web, "does not match")


@pytest.mark.parametrize("header", [
    "", "nonsense", "t=1766311500", "v1=" + "0" * 64, "t=soon,v1=" + "0" * 64,
    "t=1766311500,v1=xyz", "t=1766311500,t=1766311500,v1=" + "0" * 64,
])
def test_a_missing_or_malformed_signature_is_refused(web: Web, header: str) -> None:
    body = json.dumps(CALL).encode()
    r = web.client.post("/api/v1/phone-cases", data=body,
                        headers={"Content-Type": "application/json",
                                 **({"X-Mailbot-Signature": header} if header else {})})
    _refused(r, web, "X-Mailbot-Signature")


def test_one_matching_signature_among_several_is_enough(web: Web) -> None:
    body = json.dumps(CALL).encode()
    good = sign(SECRET, body, int(NOW.timestamp()))
    header = f"{good},v1={'0' * 64}"
    assert web.call(body, signature=header).status_code == 201


# Idempotency ----------------------------------------------------------------------------------


def test_a_retry_with_the_same_key_returns_the_original_answer(web: Web) -> None:
    first = web.call(CALL, key="call-42")
    again = web.call(CALL, key="call-42", t=NOW + timedelta(seconds=30))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.data == first.data
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert web.count() == 1
    assert len(outgoing(web)) == 1


def test_the_same_key_with_another_body_is_a_conflict(web: Web) -> None:
    assert web.call(CALL, key="call-42").status_code == 201
    r = web.call({**CALL, "summary": "Something else"}, key="call-42")
    assert r.status_code == 409
    assert "Idempotency-Key" in r.json["error"]
    assert web.count() == 1


def test_a_replayed_signed_request_creates_nothing(web: Web) -> None:
    body = json.dumps(CALL).encode()
    signature = sign(SECRET, body, int(NOW.timestamp()))
    first = web.call(body, signature=signature)
    replay = web.call(body, signature=signature)
    assert replay.status_code == 201 and replay.data == first.data
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert web.count() == 1
    # The same words in a new, freshly signed request are a new call.
    assert web.call(body, t=NOW + timedelta(seconds=1)).json["ref"] == "CSQ-2026-00002"


def test_concurrent_retries_open_one_case(web: Web) -> None:
    barrier = threading.Barrier(4)
    answers: list[TestResponse] = []

    def post() -> None:
        client = web.app.test_client()
        body = json.dumps(CALL).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": "same-call",
                   "X-Mailbot-Signature": sign(SECRET, body, int(NOW.timestamp()))}
        barrier.wait()
        answers.append(client.post("/api/v1/phone-cases", data=body, headers=headers))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [201] * 4
    assert {a.json["ref"] for a in answers} == {"CSQ-2026-00001"}
    assert web.count() == 1
    assert web.count(idempotency_keys) == 1


@pytest.mark.parametrize("key", ["", "x" * 201, "has space"])
def test_a_malformed_idempotency_key_is_refused(web: Web, key: str) -> None:
    r = web.call(CALL, key=key)
    assert r.status_code == 400
    assert "Idempotency-Key" in r.json["error"]


# Validation -----------------------------------------------------------------------------------


def test_each_bad_field_gets_one_message(web: Web) -> None:
    r = web.call({
        "caller_name": "  ", "email": "not an address", "summary": "x", "details": "y",
        "kind": "grumble", "incident_date": "21/12/2026", "service_area": "parks",
        "called_at": "1766311500", "colour": "blue",
    })
    assert r.status_code == 422
    assert r.json["fields"] == {
        "caller_name": "must not be blank",
        "email": "must be an email address such as name@example.org",
        "kind": "Input should be 'complaint', 'compliment', 'quality_concern' or 'other'",
        "incident_date": "must be a date such as 2026-11-23",
        "service_area": "Input should be 'social_care', 'housing', 'regulated_care' or 'other'",
        "logged_by": "required",
        "called_at": "must be an ISO 8601 time such as 2026-11-23T14:05:00Z",
        "colour": "unknown field; the fields are caller_name, phone, email, summary, details, "
                  "kind, incident_date, service_area, logged_by, called_at",
    }
    assert "caller_name: must not be blank" in r.json["error"]
    assert web.count() == 0


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"email": None, "phone": None}, "phone", "give phone or email (at least one)"),
    ({"incident_date": "2026-12-22"}, "incident_date", "must not be in the future"),
    ({"called_at": "2026-12-21T10:20:00Z"}, "called_at", "must not be in the future"),
    ({"called_at": "2026-11-20T10:00:00Z"}, "called_at", "must be within the last 30 days"),
    ({"called_at": "0001-01-01T00:00:00+14:00"}, "called_at", "must be between"),
    ({"details": "nul\u0000byte"}, "details", "without control characters"),
    ({"caller_name": "Ann\r\nBcc: x@example.org"}, "caller_name", "one line"),
    ({"phone": "call me"}, "phone", "must be a phone number"),
    ({"incident_date": 20261201}, "incident_date", "must be a date"),
    ({"summary": "x" * 501}, "summary", "at most 500"),
])
def test_a_bad_field_is_named(web: Web, change: dict[str, Any], field: str,
                              message: str) -> None:
    call = {k: v for k, v in {**CALL, **change}.items() if v is not None}
    r = web.call(call)
    assert r.status_code == 422, r.json
    assert list(r.json["fields"]) == [field]
    assert message in r.json["fields"][field]


def test_a_body_that_is_not_json_is_415(web: Web) -> None:
    r = web.call(json.dumps(CALL).encode(), content_type="text/plain")
    assert r.status_code == 415 and "Content-Type: application/json" in r.json["error"]
    r = web.call(b'{"caller_name": "Ann",', content_type="application/json")
    assert r.status_code == 415 and "not valid JSON" in r.json["error"]
    r = web.call(b"\xff\xfe{}")
    assert r.status_code == 415
    r = web.call(b"[1, 2]")
    assert r.status_code == 422 and r.json["fields"] == {"body": "must be a JSON object"}


def test_a_body_over_64_kib_is_413(web: Web) -> None:
    r = web.call({**CALL, "details": "x" * (64 * 1024)})
    assert r.status_code == 413
    assert r.json == {"error": "the body is larger than 64 KiB; send less"}
    assert web.call({**CALL, "details": "x" * 50_000}).status_code == 201


# Staff API ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Basic abc", "Bearer mbt_wrong-token-000000"]
)
def test_staff_api_needs_a_valid_token(web: Web, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = web.client.get("/api/v1/cases", headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in r.json["error"]


def _open(web: Web, **change: Any) -> str:
    r = web.call({**CALL, **change})
    assert r.status_code == 201, r.json
    return str(r.json["ref"])


def test_list_filters_by_status_kind_and_overdue(web: Web) -> None:
    auth = web.token()
    complaint = _open(web)
    compliment = _open(web, kind="compliment")
    r = web.client.get("/api/v1/cases", headers=auth)
    assert [c["ref"] for c in r.json["cases"]] == [complaint, compliment]
    r = web.client.get("/api/v1/cases?kind=compliment", headers=auth)
    assert [c["ref"] for c in r.json["cases"]] == [compliment]
    assert web.client.get("/api/v1/cases?status=closed", headers=auth).json["cases"] == []
    assert web.client.get("/api/v1/cases?overdue=true", headers=auth).json["cases"] == []
    web.state.clock = lambda: NOW + timedelta(days=30)
    r = web.client.get("/api/v1/cases?overdue=true", headers=auth)
    assert [c["ref"] for c in r.json["cases"]] == [complaint]
    r = web.client.get("/api/v1/cases?status=shut&overdue=maybe&page=2", headers=auth)
    assert r.status_code == 422
    assert set(r.json["fields"]) == {"status", "overdue", "page"}


def test_actions_follow_the_cli_rules_and_audit_the_token_name(web: Web) -> None:
    sam, priya, tom = web.token("Sam Duty"), web.token("Priya Shah"), web.token("Tom Reid")
    ref = _open(web)

    def act(action: str, who: dict[str, str], body: dict[str, Any] | None = None,
            ) -> TestResponse:
        return web.client.post(f"/api/v1/cases/{ref}/{action}", headers=who, json=body)

    r = act("respond", priya)
    assert (r.status_code, r.json["rule"]) == (409, "officer-required")
    assert "no investigating officer" in r.json["error"]
    assert act("assign", sam, {"officer": "Priya Shah"}).json["officer"] == "Priya Shah"
    r = act("extend", priya, {"until": "2027-01-06", "reason": "records"})
    assert (r.status_code, r.json["rule"]) == (409, "extension-later")
    r = act("extend", priya, {"until": "2027-01-21", "reason": "Awaiting records"})
    assert r.json["response_due"] == "2027-01-21"
    r = act("stage2", sam)
    assert (r.status_code, r.json["rule"]) == (409, "stage1-response-required")
    assert act("respond", priya, {"on": "2027-01-20", "outcome": "Partly upheld"}
               ).json["status"] == "responded"
    r = act("stage2", sam, {"requested": "2027-02-01T11:00", "reviewer": "priya shah"})
    assert (r.status_code, r.json["rule"]) == (409, "independent-reviewer")
    r = act("stage2", sam, {"requested": "2027-02-01T11:00", "reviewer": "Tom Reid"})
    assert (r.json["status"], r.json["stage"]) == ("stage2", 2)
    r = act("close", tom)
    assert (r.status_code, r.json["rule"]) == (409, "stage2-response-required")
    act("respond", tom, {"on": "2027-02-20"})
    r = act("close", tom, {"outcome": "Not upheld"})
    assert r.json["status"] == "closed"
    assert r.json["ombudsman"] == "Local Government and Social Care Ombudsman"
    r = act("reclassify", sam, {"kind": "compliment"})
    assert (r.status_code, r.json["rule"]) == (409, "case-closed")
    audit = web.client.get(f"/api/v1/cases/{ref}", headers=sam).json["audit"]
    actors = {(e["actor"], e["action"]) for e in audit}
    assert {("Sam Duty", "assigned"), ("Priya Shah", "extended"), ("Priya Shah", "responded"),
            ("Sam Duty", "stage2_requested"), ("Tom Reid", "closed")} <= actors


def test_a_refused_action_changes_nothing(web: Web) -> None:
    auth = web.token()
    ref = _open(web)
    before = web.client.get(f"/api/v1/cases/{ref}", headers=auth).json
    r = web.client.post(f"/api/v1/cases/{ref}/reclassify", headers=auth,
                        json={"kind": "complaint"})
    assert (r.status_code, r.json["rule"]) == (409, "same-kind")
    assert web.client.get(f"/api/v1/cases/{ref}", headers=auth).json == before


def test_reclassify_starts_and_stops_the_clock(web: Web) -> None:
    auth = web.token()
    ref = _open(web, kind="other")
    r = web.client.post(f"/api/v1/cases/{ref}/reclassify", headers=auth,
                        json={"kind": "complaint"})
    assert (r.json["kind"], r.json["response_due"]) == ("complaint", "2027-01-07")


def test_action_errors_are_json_and_say_what_to_fix(web: Web) -> None:
    auth = web.token()
    ref = _open(web)
    r = web.client.post("/api/v1/cases/CSQ-2026-99999/close", headers=auth)
    assert r.status_code == 404 and "CSQ-2026-99999" in r.json["error"]
    assert web.client.get("/api/v1/cases/nope", headers=auth).status_code == 404
    r = web.client.post(f"/api/v1/cases/{ref}/assign", headers=auth, json={})
    assert r.status_code == 422
    assert r.json["fields"] == {"officer": "give officer or reviewer (at least one)"}
    r = web.client.post(f"/api/v1/cases/{ref}/extend", headers=auth,
                        json={"until": "tomorrow", "reason": ""})
    assert set(r.json["fields"]) == {"until", "reason"}
    r = web.client.post(f"/api/v1/cases/{ref}/close", headers=auth, data="outcome=done",
                        content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415
    r = web.client.post(f"/api/v1/cases/{ref}/close", headers=auth,
                        json={"outcome": "done", "by": "Someone Else"})
    assert r.json["fields"] == {"by": "unknown field; the fields are outcome"}
    assert web.client.post(f"/api/v1/cases/{ref}/reopen", headers=auth).status_code == 404


def test_unknown_paths_and_methods_are_json(web: Web) -> None:
    r = web.client.get("/nowhere")
    assert (r.status_code, r.json["error"]) == (404, "no such endpoint; /openapi.json lists them")
    r = web.client.get("/api/v1/phone-cases")
    assert r.status_code == 405 and r.is_json and "POST" in r.headers["Allow"]


def test_an_unexpected_error_is_a_json_500_without_a_traceback(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("webhooks.phone_cases.log_call", broken)
    r = web.call(CALL)
    assert r.status_code == 500
    assert r.json == {"error": "internal error; it has been logged"}
    assert web.count() == 0


def test_healthz(web: Web) -> None:
    assert web.client.get("/healthz").json == {"status": "ok", "database": "ok"}


def test_an_unreachable_database_is_503(
    mailbot_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBOT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MAILBOT_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    app = create_app()
    client = app.test_client()
    r = client.get("/healthz")
    assert (r.status_code, r.json) == (503, {"status": "unavailable", "database": "unreachable"})
    r = client.get("/api/v1/cases", headers={"Authorization": "Bearer mbt_0000000000000000"})
    assert r.status_code == 503 and "database" in r.json["error"]


def test_the_app_refuses_to_start_without_a_secret(mailbot_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="MAILBOT_WEBHOOK_SECRET"):
        create_app()


def test_the_service_needs_a_kind_or_a_classification() -> None:
    call = phone_service.PhoneCall("Ann", "s", "d", "Pat", NOW, email="a@example.org")
    with pytest.raises(ValueError, match="kind"):
        phone_service.log_call(None, call, None, None, NOW)


# mailbot staff ... ----------------------------------------------------------------------------


def staff(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mailbot")
    staff_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.handler(args))


def test_staff_tokens_are_shown_once_stored_hashed_listed_and_revoked(
    web: Web, capsys: pytest.CaptureFixture[str]
) -> None:
    assert staff("staff", "list") == 0
    assert "no staff tokens" in capsys.readouterr().out
    assert staff("staff", "add-token", "Sam Duty") == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("mbt_")
    with web.state.core.engine.connect() as conn:
        dump = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM staff_tokens")
                        for v in row)
    assert token not in dump
    auth = {"Authorization": f"Bearer {token}"}
    ref = _open(web)
    r = web.client.post(f"/api/v1/cases/{ref}/assign", headers=auth, json={"officer": "Priya"})
    assert r.json["audit"][-1]["actor"] == "Sam Duty"
    assert staff("staff", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(x["name"], x["tokens"]) for x in listed] == [("Sam Duty", 1)]
    assert staff("staff", "revoke", "Sam Duty") == 0
    assert web.client.get("/api/v1/cases", headers=auth).status_code == 401
