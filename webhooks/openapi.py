"""GET /openapi.json: the OpenAPI 3.1 description of every endpoint.

The request and response schemas are generated from the pydantic models in ``schemas``, which also
validate the requests, so the document cannot drift from the validation; the tests check that
every route is described and that real responses match what is described here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from webhooks import schemas
from webhooks.auth import SIGNATURE_HEADER, SIGNATURE_HELP
from webhooks.phone_cases import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY
from webhooks.staff_api import ACTIONS

bp = Blueprint("openapi", __name__)

REQUESTS: list[type[BaseModel]] = [schemas.PhoneCaseIn, *(m for m, _, _ in ACTIONS.values())]
RESPONSES: list[type[BaseModel]] = [
    schemas.Error, schemas.FieldErrors, schemas.RuleError, schemas.PhoneCaseCreated,
    schemas.CaseList, schemas.CaseDetail, schemas.Health,
]
STAFF: list[dict[str, list[str]]] = [{"staffToken": []}]
REF = {
    "name": "ref", "in": "path", "required": True,
    "description": "case reference", "schema": {"type": "string", "example": "CSQ-2026-00001"},
}


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(document())


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _answer(description: str, schema: str = "Error", **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _json(schema), **extra}


UNAUTHORIZED = _answer("missing, malformed or wrong credentials")
TOO_LARGE = _answer("the body is larger than 64 KiB")
NOT_JSON = _answer("the body is not JSON, or not sent as application/json")
INVALID = _answer("some fields are invalid: one message per field", "FieldErrors")
NOT_FOUND = _answer("no case with that reference")
UNAVAILABLE = _answer("the database cannot be reached; retry later")


@cache
def document() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in REQUESTS), *((m, "serialization") for m in RESPONSES)
    ]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    paths: dict[str, Any] = {
        "/api/v1/phone-cases": {"post": _phone_case()},
        "/api/v1/cases": {"get": {
            "summary": "List cases, oldest first, a page at a time",
            "description": (
                f"At most `limit` cases (default {schemas.DEFAULT_PAGE}) in the order they were "
                "opened. When more follow, `links.next` is the URL of the next page (the same "
                "filters, `after` the last case of this one); it is null on the last page. "
                "Cases opened while a client pages through join the end: no case is listed "
                "twice."
            ),
            "operationId": "listCases",
            "security": STAFF,
            "parameters": [
                {"name": "status", "in": "query", "schema": _ref("Status")},
                {"name": "kind", "in": "query", "schema": _ref("Kind")},
                {"name": "overdue", "in": "query", "schema": {"type": "boolean"},
                 "description": "true: only cases past their response date"},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_PAGE,
                            "default": schemas.DEFAULT_PAGE},
                 "description": "cases per page"},
                {"name": "after", "in": "query",
                 "schema": {"type": "string", "pattern": schemas.CASE_REF,
                            "example": "CSQ-2026-00050"},
                 "description": "the reference of the last case of the page before; "
                                "links.next carries it"},
            ],
            "responses": {"200": _answer("a page of cases", "CaseList"), "401": UNAUTHORIZED,
                          "422": _answer("a bad filter, a limit out of range, or an unknown "
                                         "case in after: one message per parameter",
                                         "FieldErrors"),
                          "503": UNAVAILABLE},
        }},
        "/api/v1/cases/{ref}": {"get": {
            "summary": "One case: details, deadlines, messages, reminder plan and audit trail",
            "operationId": "getCase",
            "security": STAFF,
            "parameters": [REF],
            "responses": {"200": _answer("the case", "CaseDetail"), "401": UNAUTHORIZED,
                          "404": NOT_FOUND, "503": UNAVAILABLE},
        }},
    }
    for name, (model, _, summary) in ACTIONS.items():
        paths[f"/api/v1/cases/{{ref}}/{name}"] = {"post": {
            "summary": summary[0].upper() + summary[1:],
            "description": "Acts as the token's staff member, who is named in the audit trail.",
            "operationId": f"{name}Case",
            "security": STAFF,
            "parameters": [REF],
            "requestBody": {"required": False, "content": _json(model.__name__)},
            "responses": {
                "200": _answer("done: the case as it now is", "CaseDetail"),
                "401": UNAUTHORIZED, "404": NOT_FOUND,
                "409": _answer("refused by a rule of the complaints procedure; nothing changed",
                               "RuleError"),
                "413": TOO_LARGE, "415": NOT_JSON, "422": INVALID, "503": UNAVAILABLE,
            },
        }}
    paths["/healthz"] = {"get": {
        "summary": "Whether the database can be reached",
        "operationId": "health",
        "security": [],
        "responses": {"200": _answer("healthy", "Health"),
                      "503": _answer("the database cannot be reached", "Health")},
    }}
    paths["/openapi.json"] = {"get": {
        "summary": "This document",
        "operationId": "openapi",
        "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailbot",
            "version": "1",
            "description": "Phone-logged cases and staff actions for the Care and Support "
                           "Quality team. Errors are JSON: {\"error\": \"what to fix\"}.",
        },
        "paths": paths,
        "components": {
            "schemas": top["$defs"],
            "securitySchemes": {
                "signature": {"type": "apiKey", "in": "header", "name": SIGNATURE_HEADER,
                              "description": SIGNATURE_HELP + "; at most 300 s old"},
                "staffToken": {"type": "http", "scheme": "bearer",
                               "description": "issued by `mailbot staff add-token NAME`"},
            },
        },
    }


def _phone_case() -> dict[str, Any]:
    created_headers = {
        "Location": {"description": "the case", "schema": {"type": "string"}},
        "Idempotent-Replayed": {
            "description": "present (true) when this is the stored answer to an earlier call",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
    return {
        "summary": "Log a phone call as a case",
        "description": (
            "Opens a case exactly as an email would: deadlines, acknowledgement by email when "
            "an address is given (otherwise the case is flagged for a letter), out-of-time flag "
            "for events more than 12 months ago. Without a kind, the classifier decides. "
            "A retry with the same Idempotency-Key and body, or a replay of the same signed "
            "request, returns the original answer and creates nothing."
        ),
        "operationId": "createPhoneCase",
        "security": [{"signature": []}],
        "parameters": [{
            "name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
            "description": "any unique string per call (a UUID); reuse it only to retry",
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY},
        }],
        "requestBody": {"required": True, "content": _json("PhoneCaseIn")},
        "responses": {
            "201": _answer("the case was opened (or, on a retry, had been)", "PhoneCaseCreated",
                           headers=created_headers),
            "400": _answer(f"a malformed {IDEMPOTENCY_HEADER} header"),
            "401": UNAUTHORIZED,
            "409": _answer(f"the {IDEMPOTENCY_HEADER} was used before with another body"),
            "413": TOO_LARGE, "415": NOT_JSON, "422": INVALID, "503": UNAVAILABLE,
        },
    }
