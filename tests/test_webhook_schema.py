"""``/openapi.json`` is true: every route is described, the document is valid OpenAPI 3.1, and
schemathesis-generated requests (valid and invalid) get no 5xx and no answer the document does
not describe, with and without credentials."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode

from webhooks import create_app
from webhooks.auth import add_token, sign
from webhooks.openapi import document
from webhooks.state import WebState

SECRET = "schema-test-secret-0123456789"
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]


@pytest.fixture
def app(mailbot_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setenv("MAILBOT_WEBHOOK_SECRET", SECRET)
    application = create_app()
    yield application
    application.extensions["mailbot"].core.close()


def test_every_route_is_described_and_every_description_is_routed(app: Flask) -> None:
    routed = {
        (re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    described = {(path, method.upper()) for path, ops in document()["paths"].items()
                 for method in ops}
    assert routed == described


def test_the_document_is_valid_openapi_and_served(app: Flask) -> None:
    served = app.test_client().get("/openapi.json").json
    assert served == json.loads(json.dumps(document()))
    schemathesis.openapi.from_dict(served).validate()


class Credentials:
    """WSGI middleware that signs webhook bodies and adds a staff token, as a real client does."""

    def __init__(self, app: Callable[..., Iterable[bytes]], token: str) -> None:
        self.app, self.token = app, token

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if environ["PATH_INFO"] == "/api/v1/phone-cases":
            now = int(datetime.now().timestamp())
            environ["HTTP_X_MAILBOT_SIGNATURE"] = sign(SECRET, body, now)
        else:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        return self.app(environ, start_response)


def _seed(app: Flask) -> tuple[str, list[str]]:
    """A token, and cases in several states for generated requests to act on."""
    client = app.test_client()
    state: WebState = app.extensions["mailbot"]
    with state.core.sessions.begin() as session:
        token = add_token(session, "Schema Tester", datetime.now(UTC))
    refs = []
    for kind in ("complaint", "complaint", "compliment", "complaint"):
        body = json.dumps({"caller_name": "Ann", "phone": "01632 960001", "kind": kind,
                           "summary": f"seed {len(refs)}", "details": "seed",
                           "logged_by": "Pat"}).encode()
        r = client.post("/api/v1/phone-cases", data=body, headers={
            "Content-Type": "application/json",
            "X-Mailbot-Signature": sign(SECRET, body, int(datetime.now().timestamp()))})
        assert r.status_code == 201, r.json
        refs.append(r.json["ref"])
    auth = {"Authorization": f"Bearer {token}"}
    client.post(f"/api/v1/cases/{refs[1]}/assign", headers=auth, json={"officer": "Priya"})
    client.post(f"/api/v1/cases/{refs[1]}/respond", headers=auth, json={})
    client.post(f"/api/v1/cases/{refs[3]}/close", headers=auth, json={})
    return token, refs


@pytest.mark.slow
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_generated_requests_get_no_5xx_and_only_described_answers(
    app: Flask, signed: bool
) -> None:
    token, refs = _seed(app)
    if signed:
        app.wsgi_app = Credentials(app.wsgi_app, token)  # type: ignore[method-assign]
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    examples = 40 if signed else 8
    for result in schema.get_all_operations():
        operation = result.ok()
        _explore(operation, GenerationMode.POSITIVE, refs, examples)
        if operation.body or any(True for _ in operation.iter_parameters()):
            _explore(operation, GenerationMode.NEGATIVE, refs, examples)


def _explore(operation: Any, mode: GenerationMode, refs: list[str], examples: int) -> None:
    has_ref = "{ref}" in operation.path

    @hypothesis.settings(
        max_examples=examples, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        if has_ref and mode is GenerationMode.POSITIVE and data.draw(st.booleans()):
            case.path_parameters = {**(case.path_parameters or {}),
                                    "ref": data.draw(st.sampled_from(refs))}
        response = case.call()
        case.validate_response(response, checks=CHECKS)

    run()


def test_a_full_case_matches_the_described_case_detail(app: Flask) -> None:
    token, refs = _seed(app)
    auth = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    ref = refs[0]
    for action, body in [("assign", {"officer": "Priya"}),
                         ("extend", {"until": "2099-01-01", "reason": "records"}),
                         ("respond", {"outcome": "upheld"}),
                         ("stage2", {"reviewer": "Tom"}),
                         ("respond", {}), ("close", {"outcome": "done"})]:
        r = client.post(f"/api/v1/cases/{ref}/{action}", headers=auth, json=body)
        assert r.status_code == 200, r.json
    detail = client.get(f"/api/v1/cases/{ref}", headers=auth).json
    doc = json.loads(json.dumps(document()))
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/CaseDetail", "components": doc["components"]})
    validator.validate(detail)
    assert detail["extensions"] and detail["ombudsman"] and len(detail["messages"]) == 1
