"""The service's errors: one hierarchy, one handler, one JSON body.

::

    ServiceError                    base; carries status, code, message, field and fix
    ├── BadRequestError        400  the request is malformed beyond schema validation
    ├── NotFoundError          404  unknown job (or another tenant's), unknown download type
    ├── RequestTimeoutError    408  the request body stopped arriving (a stalled client)
    ├── ConflictError          409  the job's state does not allow it (results of a RUNNING job)
    ├── PayloadTooLargeError   413  an upload or the request body is over the size limit
    ├── TooManyRequestsError   429  over a rate limit or the tenant's job quota (Retry-After)
    ├── UnprocessableError     422  the request is well-formed but wrong
    │   ├── FeatureDisabledError    a flag asks for a feature that an environment variable turns off
    │   └── UploadInvalidError      an uploaded file is not what its field says (names the file)
    └── UnavailableError       503  a backend is not answering, or the service is at capacity

Domain errors from the layers below are mapped by the same handler, so routers raise whatever is
natural: :class:`~precise_mrd.service.jobs.model.JobNotFoundError` -> 404,
:class:`~precise_mrd.service.jobs.model.JobStateError` -> 409 (with the state),
:class:`~precise_mrd.core.errors.ConfigError` and :class:`~precise_mrd.core.errors.InputError`
-> 422 (``field`` is the dotted config key or the file), FastAPI's request validation -> 422, any
other exception -> 500 without internals. Every body has the same shape::

    {"error": {"code": "job_not_found", "message": "...", "field": null, "fix": "...",
               "request_id": "..."}}

>>> error = FeatureDisabledError("use_ml_calling", "ENABLE_ML_CALLING")
>>> error.status_code, error.code, error.field
(422, 'feature_disabled', 'use_ml_calling')
>>> error_body(error, request_id="r1")["error"]["fix"]
'set ENABLE_ML_CALLING=true in the server environment and restart it, or omit use_ml_calling'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SqlPoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Send

from precise_mrd.core.errors import ConfigError, InputError
from precise_mrd.service.jobs.model import JobNotFoundError, JobStateError
from precise_mrd.service.storage import (
    ArtifactNotFoundError,
    ArtifactStoreError,
    ArtifactTooLargeError,
    InvalidArtifactKeyError,
)

logger = logging.getLogger("precise_mrd.service")


class ServiceError(Exception):
    """Base of the errors the API raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        fix: str | None = None,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message
        self.field = field
        self.fix = fix
        if code is not None:
            self.code = code
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        super().__init__(message)


class BadRequestError(ServiceError):
    status_code = 400
    code = "bad_request"


class UnauthenticatedError(ServiceError):
    """No credentials, or credentials that do not verify (answered with ``WWW-Authenticate``)."""

    status_code = 401
    code = "unauthenticated"


class ForbiddenError(ServiceError):
    """Authenticated, but the role does not allow this (on the caller's own tenant only: another
    tenant's job is a 404)."""

    status_code = 403
    code = "forbidden"


class TooManyRequestsError(ServiceError):
    status_code = 429
    code = "rate_limited"


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class RequestTimeoutError(ServiceError):
    """The client stopped sending its request body (a slow or stalled client)."""

    status_code = 408
    code = "request_timeout"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnprocessableError(ServiceError):
    status_code = 422
    code = "unprocessable"


class FeatureDisabledError(UnprocessableError):
    """A request flag asks for a feature switched off by ``variable``."""

    code = "feature_disabled"

    def __init__(self, flag: str, variable: str) -> None:
        super().__init__(
            f"{flag} was requested but this server has it switched off ({variable} is false)",
            field=flag,
            fix=f"set {variable}=true in the server environment and restart it, or omit {flag}",
            extra={"variable": variable},
        )


class UploadInvalidError(UnprocessableError):
    """An uploaded file failed sniffing or validation; ``field`` is the form field."""

    code = "invalid_upload"


class UnavailableError(ServiceError):
    status_code = 503
    code = "unavailable"


class ErrorDetail(BaseModel):
    """What went wrong, where, and how to fix it."""

    code: str
    message: str
    field: str | None = None
    fix: str | None = None
    request_id: str | None = None
    state: str | None = None
    variable: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


#: 503 codes of a service shedding load on purpose (not a backend failing)
SHEDDING_CODES = frozenset({"busy", "queue_full"})
#: what a 503 for an unreachable database asks the client to wait
DATABASE_RETRY_AFTER_SECONDS = 5


def _describe(exc: BaseException) -> ServiceError:
    """Map any exception onto a :class:`ServiceError` (the one place status codes are chosen)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, JobNotFoundError):
        return NotFoundError(
            str(exc) or "no such job",
            code="job_not_found",
            fix="check the job id (GET /jobs lists your jobs)",
        )
    if isinstance(exc, JobStateError):
        return ConflictError(
            str(exc),
            code="job_state",
            fix="poll GET /status/{job_id} until the job is finished",
            extra={"state": str(exc.state)},
        )
    if isinstance(exc, ArtifactNotFoundError):
        return NotFoundError(
            f"artifact not found ({exc.key})",
            code="artifact_not_found",
            fix="GET /results/{job_id} lists the downloads a job has",
        )
    if isinstance(exc, ArtifactTooLargeError):
        return PayloadTooLargeError(
            f"larger than the limit of {exc.max_bytes} bytes",
            field=exc.key,
            fix="send a smaller file, or raise PRECISE_MRD_MAX_UPLOAD_BYTES on the server",
        )
    if isinstance(exc, InvalidArtifactKeyError):
        return UnprocessableError(exc.problem, field=exc.key, code="invalid_name")
    if isinstance(exc, ArtifactStoreError):
        return UnavailableError(f"artifact store error: {exc}", code="store_error")
    if isinstance(exc, OperationalError | SqlPoolTimeoutError):
        # NB: the database is down, restarting or saturated: a client should retry, not give up
        return UnavailableError(
            "the job database is not answering",
            code="database_unavailable",
            fix=f"retry in {DATABASE_RETRY_AFTER_SECONDS} s; GET /health shows what is down",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ConfigError):
        return UnprocessableError(exc.problem, field=exc.path, fix=exc.fix, code="invalid_config")
    if isinstance(exc, InputError):
        return UnprocessableError(exc.problem, field=exc.source, fix=exc.fix, code="invalid_input")
    if isinstance(exc, RequestValidationError):
        problems = exc.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
        return UnprocessableError(
            "; ".join(
                f"{'.'.join(str(p) for p in problem.get('loc', ()))}: {problem.get('msg')}"
                for problem in problems
            )
            or "invalid request",
            field=".".join(location) or None,
            fix="see /docs for the expected fields and types",
            code="validation_error",
        )
    if isinstance(exc, StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        error = ServiceError(
            str(exc.detail), code=codes.get(exc.status_code, f"http_{exc.status_code}")
        )
        error.status_code = exc.status_code
        return error
    return ServiceError("internal server error; the request id is in the server log")


def error_body(exc: BaseException, *, request_id: str | None) -> dict[str, Any]:
    """The JSON body for ``exc``."""
    error = _describe(exc)
    detail: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "field": error.field,
        "fix": error.fix,
        "request_id": request_id,
    }
    detail.update(error.extra)
    return {"error": detail}


def error_response(exc: BaseException, *, request_id: str | None) -> JSONResponse:
    """A JSON response with the right status code and headers for ``exc``."""
    error = _describe(exc)
    if error.code in SHEDDING_CODES:
        logger.debug("load shed: %s", error.message)  # NB: by design, and maybe 1000s a second
    elif error.status_code == 503:
        logger.warning("backend unavailable: %s (%s)", error.message, type(exc).__name__)
    elif error.status_code >= 500 and isinstance(exc, ServiceError):
        logger.error("%s: %s", error.code, error.message)  # NB: raised on purpose: no traceback
    elif error.status_code >= 500:
        logger.error("unhandled error", exc_info=exc)
    headers = dict(error.headers)
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers.update(exc.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    return JSONResponse(
        error_body(exc, request_id=request_id), status_code=error.status_code, headers=headers
    )


async def send_error(
    exc: BaseException, send: Send, *, request_id: str | None, close: bool = False
) -> None:
    """Answer with ``exc`` straight from an ASGI middleware, in place of the app (the request's
    body is not read); ``close`` ends the connection after it (the body may still be coming)."""
    response = error_response(exc, request_id=request_id)
    if close:
        response.headers["connection"] = "close"
    await response({"type": "http"}, _disconnected, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler of the app."""
    request_id = getattr(request.state, "request_id", None)
    return error_response(exc, request_id=request_id)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error type through :func:`handle_error`."""
    for exc_type in (
        ServiceError,
        JobNotFoundError,
        JobStateError,
        ArtifactStoreError,
        OperationalError,  # NB: named, so Starlette answers 503 instead of re-raising
        SqlPoolTimeoutError,
        ConfigError,
        InputError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_type, handle_error)


def responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting error codes with the :class:`ErrorBody` model."""
    descriptions = {
        400: "Malformed request",
        401: "No credentials, or credentials that do not verify (with auth on)",
        403: "The caller's role does not allow this (on its own tenant's jobs)",
        404: "Unknown job (or another tenant's job) or unknown resource",
        408: "The request body stopped arriving (PRECISE_MRD_CLIENT_BODY_TIMEOUT_SECONDS)",
        409: "The job's state does not allow this yet (the body carries the state)",
        413: "Upload or request body over the size limit",
        422: "Invalid input: the body names the field or file, the problem and the fix",
        429: "Over the rate limit: Retry-After says when to try again",
        503: "A backend is unavailable, or the service is at capacity (Retry-After says when)",
    }
    return {
        code: {"model": ErrorBody, "description": descriptions.get(code, "Error")}
        for code in status_codes
    }
