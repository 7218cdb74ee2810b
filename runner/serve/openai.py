"""The gateway's OpenAI-compatible face (/v1/chat/completions, /v1/models) over runner.gateway, one shared rate limit.
Must not import litellm (the gateway loads it) or runner.service.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from runner.errors import InvalidInput
from runner.secrets import redact
from runner.serve import models as m
from runner.serve.auth import Planner, Reader
from runner.serve.limits import TokenBucket
from runner.serve.problems import ApiProblem, responses

router = APIRouter(prefix="/v1", tags=["openai"])
DEFAULT_LLM_RPM = 60.0
AUTH = (400, 401, 403, 413, 422, 429)


STREAM_EVENT = {
    "type": "object",
    "description": "With stream: true, OpenAI's chunks: `data` a chat.completion.chunk as JSON, last `[DONE]`.",
    "properties": {"data": {"type": "string"}},
    "required": ["data"],
}


class Face:
    """The one gateway of the server, made on first use, and its shared token bucket."""

    def __init__(self, gateway_file: Path, state: Path, rpm: float | None, burst: int) -> None:
        self.file = gateway_file
        self.state = state
        self._rpm, self._burst = rpm, burst
        self._gateway: Any = None
        self._bucket: TokenBucket | None = None
        self._lock = threading.Lock()

    def gateway(self) -> Any:
        with self._lock:
            if self._gateway is None:
                from runner.gateway import Gateway

                self._gateway = Gateway.from_file(self.file, state_dir=self.state)
            return self._gateway

    def bucket(self) -> TokenBucket:
        gw = self.gateway()
        with self._lock:
            if self._bucket is None:
                rpm = self._rpm or gw.config.rate_limit.requests_per_minute or DEFAULT_LLM_RPM
                self._bucket = TokenBucket(float(rpm), self._burst)
            return self._bucket

    def models(self) -> list[str]:
        from runner.gateway.config import TASKS

        cfg = self.gateway().config
        return ["opsrun", *(f"opsrun:{t}" for t in TASKS), *cfg.providers]

    def route(self, model: str) -> tuple[str, list[str] | None]:
        """(task, providers) for a model name of /v1/models."""
        from runner.gateway.config import TASKS

        if model == "opsrun":
            return "ask", None
        if model.startswith("opsrun:") and model[7:] in TASKS:
            return model[7:], None
        if model in self.gateway().config.providers:
            return "ask", [model]
        raise ApiProblem(404, f"unknown model {model!r}", hint=f"models: {', '.join(self.models())} (GET /v1/models)")


def face_of(request: Request) -> Face:
    face: Face = request.app.state.face
    return face


@router.get("/models", operation_id="list_models", response_model=m.ModelList,
            summary="The models the gateway face offers", responses=responses(*AUTH, openai=True))
def list_models(request: Request, who: Reader) -> m.ModelList:
    """`opsrun` routes through the gateway's providers in order (task ask); `opsrun:<task>` uses a
    task's routing (author, fix, ask); a provider name asks only that provider."""
    return m.ModelList(data=[m.ModelCard(id=name) for name in face_of(request).models()])


@router.post("/chat/completions", operation_id="chat_completions", response_model=m.ChatCompletion,
             summary="Chat completion through opsrun's LLM gateway",
             responses={200: {"content": {"text/event-stream": {"schema": STREAM_EVENT}},
                              "description": "The answer (JSON, or server-sent chunks with stream: true)."},
                        **responses(404, 502, *AUTH, openai=True)})
def chat_completions(body: m.ChatRequest, request: Request, who: Planner) -> Any:
    """An OpenAI-compatible chat completion answered by the first provider of opsrun's gateway
    that answers within its deadline (routing, retries, circuit breaker, cache). One rate limit
    is shared by every client of this server: over it, 429 with Retry-After."""
    face = face_of(request)
    task, providers = face.route(body.model)
    wait = face.bucket().take()
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise ApiProblem(429, f"the gateway's shared rate limit is reached; retry after {seconds}s",
                         headers={"Retry-After": str(seconds)})
    messages = [{"role": msg.role, "content": msg.text()} for msg in body.messages]
    try:
        answer = face.gateway().complete(messages, task=task, temperature=body.temperature,
                                         max_tokens=body.max_tokens, providers=providers)
    except InvalidInput as exc:
        raise ApiProblem(400, exc.message, hint=exc.hint) from None
    usage = m.Usage(prompt_tokens=int(answer.usage.get("prompt_tokens", 0)),
                    completion_tokens=int(answer.usage.get("completion_tokens", 0)),
                    total_tokens=int(answer.usage.get("total_tokens", 0)))
    text = redact(answer.text)
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    headers = {"X-Opsrun-Provider": redact(answer.provider), "X-Opsrun-Cached": str(answer.cached).lower()}
    if body.stream:
        return StreamingResponse(_chunks(cid, created, body.model, text), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    out = m.ChatCompletion(id=cid, created=created, model=body.model, usage=usage,
                           choices=[m.ChatChoice(message=m.ChatChoiceMessage(content=text))])
    return JSONResponse(out.model_dump(), headers=headers)


def _chunks(cid: str, created: int, model: str, text: str) -> Iterator[str]:
    """The whole answer as OpenAI stream chunks (the gateway answers whole, then it is sent)."""
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop")):
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"
