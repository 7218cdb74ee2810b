"""Request limits as plain ASGI middleware: body size (413), one token bucket per server for every client (429).
Must not import fastapi, starlette or runner.service.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Clock = Callable[[], float]


class TokenBucket:
    """`burst` requests at once, refilled at per_minute/60 a second. `take()` never waits: it
    returns 0.0 when a token was taken, else the seconds until one will be there."""

    def __init__(self, per_minute: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, burst))
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


def problem_body(status: int, title: str, detail: str, *, openai: bool = False) -> bytes:
    """A problem document (RFC 9457), or the OpenAI error shape for the /v1 face."""
    if openai:
        kind = {413: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "api_error")
        return json.dumps({"error": {"message": detail, "type": kind, "code": kind}}).encode()
    return json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()


async def send_problem(send: Send, status: int, title: str, detail: str, *, openai: bool = False,
                       headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = problem_body(status, title, detail, openai=openai)
    ctype = b"application/json" if openai else b"application/problem+json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def is_openai(scope: Scope) -> bool:
    return str(scope.get("path", "")).startswith("/v1/")


class BodyLimit:
    """Refuse a request whose body is larger than `max_bytes` with 413, by its Content-Length
    or, without one, as soon as more arrived than allowed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is larger than {self.max_bytes} bytes (limits.max_body_bytes)"
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await send_problem(send, 413, "Request body too large", detail, openai=is_openai(scope))
                    return
        # read the body here (at most max_bytes), then hand it on: the app never sees more
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                chunks = []
                break
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await send_problem(send, 413, "Request body too large", detail, openai=is_openai(scope))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RateLimit:
    """One token bucket for every client of the server (everything but /health); a request
    over it gets 429 with Retry-After in whole seconds."""

    def __init__(self, app: ASGIApp, bucket: TokenBucket, *, exempt: tuple[str, ...] = ("/health",)) -> None:
        self.app = app
        self.bucket = bucket
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in self.exempt:
            wait = self.bucket.take()
            if wait > 0:
                await send_too_many(send, wait, "the server's request rate limit (limits.requests_per_minute) "
                                    "is reached", openai=is_openai(scope))
                return
        await self.app(scope, receive, send)


async def send_too_many(send: Send, wait: float, detail: str, *, openai: bool = False) -> None:
    seconds = max(1, math.ceil(wait))
    await send_problem(send, 429, "Too many requests", f"{detail}; retry after {seconds}s",
                       openai=openai, headers=((b"retry-after", str(seconds).encode()),))
