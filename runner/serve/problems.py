"""Errors as problem documents (RFC 9457; OpenAI's shape on /v1): statuses for opsrun's errors, redacted, no traceback.
Must not import runner.service.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from runner.errors import Blocked, DriftError, HumanNeeded, InvalidInput, LockError, MissingExtra, OpsrunError
from runner.secrets import redact, redact_data

log = logging.getLogger("opsrun.serve")
PROBLEM = "application/problem+json"
_NOT_FOUND = re.compile(r"^no (plan|job|run) '")  # how runner.service says an id is unknown


class Problem(BaseModel):
    """An error: what went wrong (title, detail) and what to do about it (hint)."""

    type: str = Field(default="about:blank", description="always about:blank: the status and title say it")
    title: str = Field(description="the kind of error, e.g. 'Invalid input'")
    status: int = Field(description="the HTTP status")
    detail: str = Field(default="", description="what went wrong, for a person (or a model) to act on")
    hint: str = Field(default="", description="what to do about it")
    errors: list[dict[str, Any]] = Field(default_factory=list,
                                         description="located problems: file, line, col, message, hint")


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None


class OpenAIError(BaseModel):
    """The error shape OpenAI clients read."""

    error: OpenAIErrorBody


STATUS_TITLES = {
    400: "Invalid input", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Refused", 413: "Request body too large", 422: "Invalid request",
    429: "Too many requests", 500: "Internal error", 502: "Upstream failed", 503: "Unavailable",
}


class ApiProblem(Exception):
    """Raised by routes for an HTTP-level refusal (401, 403, 404, 429 ...)."""

    def __init__(self, status: int, detail: str, *, hint: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.hint = hint
        self.headers = dict(headers or {})


def not_found(exc: OpsrunError) -> bool:
    return _NOT_FOUND.match(exc.message) is not None


def status_of(exc: OpsrunError) -> int:
    from runner.gateway.results import GatewayError  # light: no litellm

    if isinstance(exc, InvalidInput):
        return 404 if not_found(exc) else 400
    if isinstance(exc, GatewayError):
        return 502
    if isinstance(exc, MissingExtra):
        return 503
    if isinstance(exc, Blocked | DriftError | LockError | HumanNeeded):
        return 409
    return 409


def problem(status: int, detail: str, *, hint: str = "", errors: list[dict[str, Any]] | None = None,
            openai: bool = False, headers: dict[str, str] | None = None) -> JSONResponse:
    detail, hint = redact(detail), redact(hint)
    if openai:
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_exceeded", 502: "api_error", 503: "api_error"}.get(status, "invalid_request_error")
        text = detail + (f" (hint: {hint})" if hint else "")
        return JSONResponse({"error": {"message": text, "type": kind, "code": kind}}, status_code=status,
                            headers=headers)
    body = Problem(title=STATUS_TITLES.get(status, "Error"), status=status, detail=detail, hint=hint,
                   errors=redact_data(errors or []))
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM, headers=headers)


def _openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def install(app: FastAPI) -> None:
    """The exception handlers: every error leaves as a problem document."""

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem(exc.status, exc.detail, hint=exc.hint, headers=exc.headers, openai=_openai(request))

    @app.exception_handler(OpsrunError)
    async def _ours(request: Request, exc: OpsrunError) -> JSONResponse:
        errors = [d.as_dict() for d in exc.diagnostics] if isinstance(exc, InvalidInput) else []
        return problem(status_of(exc), exc.message, hint=exc.hint, errors=errors, openai=_openai(request))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()))
            errors.append({"file": "request", "line": 0, "col": 0, "path": loc, "message": str(e.get("msg", "")),
                           "hint": ""})
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5]) or "the request is not valid"
        return problem(422, detail, hint="see /openapi.json for the request's schema", errors=errors,
                       openai=_openai(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        return problem(exc.status_code, str(exc.detail), headers=headers or None, openai=_openai(request))

    @app.exception_handler(HTTPException)
    async def _fastapi_http(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None,
                       openai=_openai(request))

    @app.exception_handler(RecursionError)
    async def _deep(request: Request, exc: RecursionError) -> JSONResponse:
        return problem(400, "the input is nested too deeply to process", hint="flatten the data "
                       "(docs/playbooks.md, Input limits)", openai=_openai(request))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__,
                  redact(str(exc)))
        return problem(500, "internal error: the server log has the details", openai=_openai(request))


def responses(*codes: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of a route (problem documents; OpenAI errors on /v1)."""
    what = {
        400: "The input is invalid (diagnostics in `errors`).",
        401: "No or an unknown bearer token.",
        403: "The token's role does not allow this.",
        404: "No such plan, job or run.",
        409: "Refused: drift, a safety rule, the lock, or the state of the object.",
        413: "The request body is too large.",
        422: "The request does not match its schema.",
        429: "The server's rate limit is reached; retry after Retry-After seconds.",
        502: "No LLM provider answered.",
        503: "A part of the server is not available.",
    }
    model = OpenAIError if openai else Problem
    return {c: {"model": model, "description": what.get(c, STATUS_TITLES.get(c, "Error"))} for c in codes}
