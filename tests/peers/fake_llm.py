"""A fake LLM server on loopback: the OpenAI chat API and the Ollama chat API, with scripted
answers and injected faults (500, 429 + Retry-After, hangs, slow bodies, 401, 404, context too
long, malformed bodies, answers cut at max_tokens). It records every request. Test-only; it
never leaves 127.0.0.1.

    python -m tests.peers.fake_llm --port 8089 --model qwen2.5-coder:7b --answer "hello"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI = "openai"
OLLAMA = "ollama"
ANY_MODEL = "*"


@dataclass(frozen=True)
class Reply:
    """One scripted outcome. Build them with the helpers below, not by hand."""

    kind: str  # text | error | hang | slow | malformed
    text: str = ""
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    error: str = ""  # error message (for kind == "error")
    code: str = ""  # OpenAI error code, e.g. context_length_exceeded
    seconds: float = 0.0  # hang: how long; slow: delay between pieces
    pieces: int = 1
    usage: tuple[int, int] | None = None  # (prompt_tokens, completion_tokens)
    finish: str = "stop"  # finish_reason (OpenAI) / done_reason (Ollama)


def text(answer: str, *, usage: tuple[int, int] | None = None) -> Reply:
    """A normal answer whose content is `answer`."""
    return Reply("text", text=answer, usage=usage)


def truncated(answer: str, *, usage: tuple[int, int] | None = None) -> Reply:
    """An answer the server cut at its token limit: finish_reason (done_reason) `length`."""
    return Reply("text", text=answer, usage=usage, finish="length")


def server_error(status: int = 500, message: str = "internal server error") -> Reply:
    return Reply("error", status=status, error=message)


def rate_limited(retry_after: float = 1, message: str = "rate limit reached") -> Reply:
    value = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
    return Reply("error", status=429, error=message, headers=(("Retry-After", value),))


def unauthorized(message: str = "invalid api key") -> Reply:
    return Reply("error", status=401, error=message, code="invalid_api_key")


def model_not_found(model: str = "") -> Reply:
    return Reply("error", status=404, error=f"model '{model or 'x'}' not found", code="model_not_found")


def context_too_long() -> Reply:
    return Reply(
        "error",
        status=400,
        error="This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
    )


def hang(seconds: float = 60) -> Reply:
    """Accept the request and send nothing for `seconds` (ended early when the server stops)."""
    return Reply("hang", seconds=seconds)


def slow(answer: str, *, pieces: int = 5, delay: float = 0.5) -> Reply:
    """A normal answer whose body trickles out in `pieces`, `delay` seconds apart."""
    return Reply("slow", text=answer, pieces=pieces, seconds=delay)


def malformed() -> Reply:
    """HTTP 200 whose body is not valid JSON."""
    return Reply("malformed")


@dataclass
class Request:
    """What the server received. `authorization` is kept apart from the other headers."""

    method: str
    path: str
    api: str  # openai | ollama | show (Ollama /api/show) | "" (unknown path)
    model: str
    headers: dict[str, str]
    authorization: str | None
    body: Any  # parsed JSON, or the raw text when it was not JSON
    raw: str
    at: float = field(default_factory=time.monotonic)


def free_port() -> int:
    """A port that nothing listens on (bound then closed): connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, fake: FakeLLM) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", fake.requested_port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.fake._track(request)
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             daemon=True, name="fake-llm-handler")
        self.fake._threads.append(t)
        t.start()


class FakeLLM:
    """The server. `script(model, *replies, api=...)` queues outcomes; an empty queue answers
    `default`. `requests` lists what arrived. Use it as a context manager or start()/stop()."""

    def __init__(self, *, port: int = 0, models: Iterable[str] = (), default: str = "ok") -> None:
        self.requested_port = port
        self.models = list(models)  # listed by /api/tags and /v1/models
        self.default = default
        self.requests: list[Request] = []
        self._queues: dict[tuple[str, str], deque[Reply]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._httpd: _Server | None = None
        self._serve_thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> FakeLLM:
        self._httpd = _Server(self)
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever,
                                              kwargs={"poll_interval": 0.05},
                                              daemon=True, name="fake-llm")
        self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, wake hung handlers, close every connection, join every thread."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for t in [*self._threads, self._serve_thread]:
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"fake LLM server: {len(alive)} handler thread(s) did not end")

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting --------------------------------------------------------------------------
    def script(self, model: str, *replies: Reply | str, api: str = ANY_MODEL) -> None:
        """Queue replies for `model` (strings are plain answers). api: openai, ollama or *."""
        with self._lock:
            q = self._queues.setdefault((api, model), deque())
            q.extend(text(r) if isinstance(r, str) else r for r in replies)

    def _next(self, api: str, model: str) -> Reply:
        with self._lock:
            for key in ((api, model), (ANY_MODEL, model), (api, ANY_MODEL), (ANY_MODEL, ANY_MODEL)):
                q = self._queues.get(key)
                if q:
                    return q.popleft()
        return text(self.default)

    def pending(self) -> int:
        """How many scripted replies were not used."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def chats(self, model: str | None = None) -> list[Request]:
        """The chat requests received (optionally for one model)."""
        return [r for r in list(self.requests)
                if r.path.endswith(("/chat/completions", "/api/chat"))
                and (model is None or r.model == model)]

    # -- internals --------------------------------------------------------------------------
    def _track(self, sock: socket.socket) -> None:
        self._sockets.append(sock)

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    @property
    def fake(self) -> FakeLLM:
        return self.server.fake

    # -- routing ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._receive()
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/api/tags"):
            self._json(200, {"models": [{"name": m, "model": m, "size": 1} for m in self.fake.models]})
        elif path.endswith("/models"):
            self._json(200, {"object": "list",
                             "data": [{"id": m, "object": "model", "owned_by": "fake"}
                                      for m in self.fake.models]})
        elif path.endswith("/api/version"):
            self._json(200, {"version": "0.0.0-fake"})
        else:
            self._json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        req = self._receive()
        if req.api == "":
            self._json(404, {"error": f"no route {self.path}"})
            return
        if not isinstance(req.body, dict) or not req.model:
            self._error(req.api, 400, "request body must be a JSON object with a model")
            return
        if req.api == "show":  # litellm asks Ollama for model details after a chat
            self._json(200, {"modelfile": "", "template": "", "details": {"format": "gguf"},
                             "model_info": {"general.context_length": 8192}})
            return
        reply = self.fake._next(req.api, req.model)
        self._answer(req, reply)

    def _receive(self) -> Request:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        path = self.path.split("?")[0]
        api = (OPENAI if path.endswith("/chat/completions") else OLLAMA if path.endswith("/api/chat")
               else "show" if path.endswith("/api/show") else "")
        model = str(body.get("model") or body.get("name") or "") if isinstance(body, dict) else ""
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        req = Request(self.command, path, api, model, headers, self.headers.get("Authorization"),
                      body, raw)
        self.fake._record(req)
        return req

    # -- answers ----------------------------------------------------------------------------
    def _answer(self, req: Request, reply: Reply) -> None:
        if reply.kind == "error":
            self._error(req.api, reply.status, reply.error, code=reply.code, headers=reply.headers)
            return
        if reply.kind == "hang":
            self.fake._stop.wait(reply.seconds)
            if not self.fake._stop.is_set():
                self._error(req.api, 504, "fake server hang ended")
            return
        if reply.kind == "malformed":
            self._send(200, b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": "trunc',
                       "application/json")
            return
        stream = isinstance(req.body, dict) and bool(req.body.get("stream"))
        if stream:
            self._stream(req, reply)
            return
        data = json.dumps(self._completion(req, reply)).encode()
        if reply.kind == "slow":
            self._send_slowly(data, reply.pieces, reply.seconds)
        else:
            self._send(200, data, "application/json")

    def _usage(self, req: Request, reply: Reply) -> tuple[int, int]:
        if reply.usage:
            return reply.usage
        prompt = sum(len(str(m.get("content", "")).split()) for m in req.body.get("messages", [])
                     if isinstance(m, dict))
        return max(prompt, 1), max(len(reply.text.split()), 1)

    def _completion(self, req: Request, reply: Reply) -> dict[str, Any]:
        p, c = self._usage(req, reply)
        if req.api == OLLAMA:
            return {"model": req.model, "created_at": "2025-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": reply.text},
                    "done": True, "done_reason": reply.finish, "total_duration": 1000000,
                    "prompt_eval_count": p, "eval_count": c, "eval_duration": 1000000}
        n = len(self.fake.requests)
        return {"id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": int(time.time()),
                "model": req.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": reply.finish}],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}

    def _stream(self, req: Request, reply: Reply) -> None:
        words = reply.text.split(" ")
        chunks = [w if i == 0 else " " + w for i, w in enumerate(words)]
        p, c = self._usage(req, reply)
        self.send_response(200)
        if req.api == OLLAMA:
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            for ch in chunks:
                self._write_line({"model": req.model, "created_at": "2025-01-01T00:00:00Z",
                                  "message": {"role": "assistant", "content": ch}, "done": False})
            self._write_line({"model": req.model, "created_at": "2025-01-01T00:00:00Z",
                              "message": {"role": "assistant", "content": ""}, "done": True,
                              "done_reason": reply.finish, "prompt_eval_count": p, "eval_count": c})
            return
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for ch in chunks:
            event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                     "model": req.model,
                     "choices": [{"index": 0, "delta": {"content": ch}, "finish_reason": None}]}
            self._write_raw(b"data: " + json.dumps(event).encode() + b"\n\n")
        last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                "model": req.model, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish}],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}
        self._write_raw(b"data: " + json.dumps(last).encode() + b"\n\n")
        self._write_raw(b"data: [DONE]\n\n")

    def _error(self, api: str, status: int, message: str, *, code: str = "",
               headers: Iterable[tuple[str, str]] = ()) -> None:
        if api == OLLAMA:
            body: dict[str, Any] = {"error": message}
        else:
            kind = {400: "invalid_request_error", 401: "invalid_request_error",
                    404: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
            body = {"error": {"message": message, "type": kind, "param": None, "code": code or None}}
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    # -- low level --------------------------------------------------------------------------
    def _send(self, status: int, data: bytes, ctype: str,
              headers: Iterable[tuple[str, str]] = ()) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client went away (a timeout on its side): nothing to do

    def _send_slowly(self, data: bytes, pieces: int, delay: float) -> None:
        size = max(1, -(-len(data) // max(1, pieces)))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            for i in range(0, len(data), size):
                if self.fake._stop.wait(delay):
                    return
                self.wfile.write(data[i:i + size])
                self.wfile.flush()
        except OSError:
            pass

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._write_raw(json.dumps(obj).encode() + b"\n")

    def _write_raw(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fake OpenAI/Ollama server on 127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", action="append", default=[], help="model to list (repeatable)")
    ap.add_argument("--answer", default="ok", help="the answer to every chat request")
    args = ap.parse_args(argv)
    fake = FakeLLM(port=args.port, models=args.model, default=args.answer).start()
    print(f"fake LLM listening on {fake.url} (OpenAI: {fake.url}/v1, Ollama: {fake.url}); Ctrl-C stops",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
