"""API errors: raised as specific exceptions, mapped to JSON 4xx (or 503) in one place."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from shared.storage import ObjectMissing, StorageError, StorageUnavailable

logger = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        details: list[Any] | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message, self.details = message, details
        self.code = code or self.code
        self.status = status or self.status
        self.headers = dict(headers or {})


class Invalid(ApiError):
    status, code = 422, "invalid_params"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class TooMany(ApiError):
    status, code = 429, "rate_limited"


def error_response(status: int, code: str, message: str, details: list | None = None):
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return jsonify({"error": body}), status


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        resp = error_response(exc.status, exc.code, exc.message, exc.details)
        resp[0].headers.update(exc.headers)
        if exc.status == 401:
            resp[0].headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if not wants_json():
            return exc
        code = {413: "too_large", 404: "not_found", 405: "method_not_allowed"}.get(exc.code or 400, "bad_request")
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body over the limit of {request.max_content_length} bytes"
        return error_response(exc.code or 400, code, message)

    @app.errorhandler(StorageUnavailable)
    def _store_down(exc: StorageUnavailable):
        logger.error("object store unavailable: %s", exc)
        return error_response(503, "unavailable", "the object store is unavailable; try again shortly")

    @app.errorhandler(StorageError)
    def _object_gone(exc: StorageError):
        # The row that names the object exists, its bytes do not (or cannot be read): gone, not a server error.
        logger.warning("stored object %s: %s", exc.key, exc)
        code = "object_missing" if isinstance(exc, ObjectMissing) else "object_unreadable"
        return error_response(410, code, f"{exc} (removed from the store, or never written to it)")

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError):
        logger.error("database unavailable: %s", exc)
        return error_response(503, "unavailable", "the database is unavailable; try again shortly")

    @app.errorhandler(DBAPIError)
    def _db_error(exc: DBAPIError):
        if exc.connection_invalidated:
            return error_response(503, "unavailable", "the database connection was lost; try again shortly")
        raise exc

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")
