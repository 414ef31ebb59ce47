"""From a request to a validated model, or to a 415/422 that says what to fix.

A body must be sent as JSON (415 otherwise, or when it does not parse); each bad field gets one
message (422), worded for the person who has to fix the sending system, not pydantic's own.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from webhooks.errors import ApiError
from webhooks.schemas import PATTERN_HINTS

M = TypeVar("M", bound=BaseModel)


def read_json(model: type[M], body: bytes, context: dict[str, Any] | None = None,
              allow_empty: bool = False) -> M:
    """Validate ``body`` (strictly: dates are ISO strings, never numbers) against ``model``."""
    if allow_empty and not body.strip():
        body = b"{}"
    elif not _is_json(request.mimetype):
        raise ApiError(415, "send the body as JSON with Content-Type: application/json (got "
                            f"{request.mimetype or 'no Content-Type'})")
    try:
        return model.model_validate_json(body, strict=True, context=context)
    except ValidationError as exc:
        raise _bad(model, exc) from None


def read_query(model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise _bad(model, exc) from None


def field_error(name: str, message: str) -> ApiError:
    """A 422 for one field, shaped as validation's own: for checks that need the database."""
    return ApiError(422, f"fix these fields: {name}: {message}", fields={name: message})


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _bad(model: type[BaseModel], exc: ValidationError) -> ApiError:
    errors = exc.errors()
    for e in errors:
        if e["type"] == "json_invalid":
            return ApiError(415, f"the body is not valid JSON ({e['msg']})")
    fields: dict[str, str] = {}
    for e in errors:
        ctx = e.get("ctx") or {}
        name = ".".join(str(p) for p in e["loc"]) or str(ctx.get("field", "body"))
        fields.setdefault(name, _message(model, e))
    summary = "; ".join(f"{k}: {v}" for k, v in fields.items())
    return ApiError(422, f"fix these fields: {summary}", fields=fields)


def _message(model: type[BaseModel], e: ErrorDetails) -> str:
    kind, ctx = e["type"], e.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field; the fields are " + ", ".join(model.model_fields)
    if kind == "model_type" and not e["loc"]:
        return "must be a JSON object"
    if kind == "string_pattern_mismatch":
        return PATTERN_HINTS.get(str(ctx.get("pattern")), e["msg"])
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be blank"
    if kind.startswith("date_") and kind != "date_range":
        return "must be a date such as 2026-11-23"
    if kind.startswith("datetime_"):
        return "must be an ISO 8601 time such as 2026-11-23T14:05:00Z"
    return e["msg"]
