"""Errors the domain raises, in ACS's own terms.

Each carries the kind of failure and ACS's error `code`; `api/errors.py` turns them into the
`{"error": {"code", "message"}}` body with the matching HTTP status, once, for every route.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorKind(IntEnum):
    # Values are the HTTP statuses ACS and ARM use for each kind.
    INVALID = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    REQUEST_TIMEOUT = 408
    PRECONDITION_FAILED = 412
    TOO_LARGE = 413
    UNPROCESSABLE = 422


class CallgridError(Exception):
    kind = ErrorKind.INVALID
    default_code = "BadRequest"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class InvalidRequest(CallgridError):
    kind = ErrorKind.INVALID
    default_code = "BadRequest"


class NotFound(CallgridError):
    kind = ErrorKind.NOT_FOUND
    default_code = "NotFound"


class Conflict(CallgridError):
    kind = ErrorKind.CONFLICT
    default_code = "Conflict"


class Forbidden(CallgridError):
    kind = ErrorKind.FORBIDDEN
    default_code = "Forbidden"


class Unauthorized(CallgridError):
    kind = ErrorKind.UNAUTHORIZED
    default_code = "Denied"


class PayloadTooLarge(CallgridError):
    kind = ErrorKind.TOO_LARGE
    default_code = "PayloadTooLarge"


class RequestTimeout(CallgridError):
    kind = ErrorKind.REQUEST_TIMEOUT
    default_code = "RequestTimeout"


class Unprocessable(CallgridError):
    kind = ErrorKind.UNPROCESSABLE
    default_code = "UnprocessableConfiguration"
