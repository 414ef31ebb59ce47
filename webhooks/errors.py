"""Every answer is JSON, errors included: ``{"error": "what to fix", ...}``, never a traceback.

Werkzeug's HTML error pages are replaced, a database that cannot be reached is a 503 the caller
can retry, and anything unexpected is logged here and answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

MESSAGES = {
    404: "no such endpoint; /openapi.json lists them",
    405: "this method is not allowed here; /openapi.json lists the methods of each endpoint",
    413: "the body is larger than 64 KiB; send less",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return error_response(code, MESSAGES.get(code, exc.description or exc.name), headers)

    @app.errorhandler(OperationalError)
    def database_down(exc: OperationalError) -> Response:
        log.error("database unavailable: %s", exc.orig or exc)
        return error_response(503, "the database cannot be reached; try again shortly",
                              {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal error; it has been logged")
