"""The litellm adapter: the only code that imports litellm (once, lazily, inside a call),
builds its call arguments and turns its answers and exceptions into ours. Imports nothing
above runner.errors, secrets and the gateway's own config and results.
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import importlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from runner.errors import InvalidInput, MissingExtra
from runner.gateway.config import ProviderConfig
from runner.gateway.results import Failure
from runner.load import strip_fence
from runner.secrets import Secret, redact

Message = dict[str, Any]

_LOADED: dict[str, Any] = {}  # "litellm" -> the module, once imported
_IMPORT_LOCK = threading.Lock()
# Modules litellm (1.106.2) imports lazily: inside its first calls (success and error paths, the
# OpenAI and Ollama routes) and in the __del__ of its cached HTTP clients at interpreter
# shutdown. Importing them up front keeps that cost out of the first request's deadline, and
# keeps the import machinery out of request threads and out of finalization (see _settle).
# tests/test_gateway.py checks that requests import nothing beyond this list.
_WARM_MODULES = (
    "openai.resources",
    "litellm.proxy.openai_files_endpoints.common_utils",
    "litellm.llms.openai.openai",
    "litellm.llms.ollama.chat.transformation",
    "litellm.llms.openai_like.dynamic_config",
    "litellm.llms.vertex_ai.vertex_ai_partner_models.anthropic.output_params_utils",
    "litellm.llms.edenai.common_utils",
    "litellm.llms.fal_ai.chat.transformation",
    "litellm.llms.fal_ai.image_generation",
    "litellm.llms.custom_httpx.aiohttp_transport",
    "litellm._service_logger",
    "litellm.integrations.prometheus_services",
    "litellm.proxy.guardrails.exception_utils",
    "fastapi.exceptions",  # when installed (serve extra), litellm's error mapping imports it per request
    "httpcore",
    "h11",
    "h2.connection",
)
# An abandoned request (we stopped waiting) still runs in its thread until litellm's own
# timeout, the same budget, ends it. At exit we wait for such threads this long past their
# budget: a thread left running Python code (litellm imports on its error path) while the
# interpreter finalizes is frozen holding the import lock, and the next import (a litellm
# HTTP client's __del__) waits on it forever.
EXIT_GRACE_S = 2.0
EXIT_WAIT_MAX_S = 5.0
_INFLIGHT: dict[threading.Thread, float] = {}  # request thread -> when it should be over
_INFLIGHT_LOCK = threading.Lock()


def load_litellm() -> Any:
    """Import litellm once, offline (local cost map), quiet, with its lazy parts warmed up."""
    with _IMPORT_LOCK:
        if "litellm" in _LOADED:
            return _LOADED["litellm"]
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError as exc:
            raise MissingExtra("llm", "the LLM gateway (litellm)") from exc
        litellm.suppress_debug_info = True
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        for module in _WARM_MODULES:
            with contextlib.suppress(Exception):
                importlib.import_module(module)
        with contextlib.suppress(Exception):
            litellm.main._get_encoding()
        # registered after litellm's own exit handlers, so it runs before them (LIFO)
        atexit.register(_settle)
        _LOADED["litellm"] = litellm
        return litellm


def start_request(lib: Any, kwargs: dict[str, Any], budget: float, *, name: str,
                  on_end: Callable[[], None]) -> tuple[threading.Event, dict[str, Any]]:
    """Run one litellm.completion in a daemon thread; (done event, box with "response" or
    "error"). The caller may stop waiting at any time; the thread is remembered until it ends
    so that interpreter exit can wait for it (bounded, see _settle)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["response"] = lib.completion(**kwargs)
        except BaseException as exc:
            box["error"] = exc
        finally:
            try:
                on_end()
            finally:
                with _INFLIGHT_LOCK:
                    _INFLIGHT.pop(threading.current_thread(), None)
                done.set()

    thread = threading.Thread(target=run, daemon=True, name=name)
    with _INFLIGHT_LOCK:
        _INFLIGHT[thread] = time.monotonic() + budget + EXIT_GRACE_S
    thread.start()
    return done, box


def in_flight() -> int:
    """Request threads still running (answers nobody waits for any more included)."""
    with _INFLIGHT_LOCK:
        return sum(t.is_alive() for t in _INFLIGHT)


def settle(limit: float = EXIT_WAIT_MAX_S) -> int:
    """Wait, at most `limit` seconds and no longer than each thread's budget plus
    EXIT_GRACE_S, for the request threads still running; return how many are left."""
    end = time.monotonic() + limit
    with _INFLIGHT_LOCK:
        threads = list(_INFLIGHT.items())
    for thread, by in threads:
        thread.join(max(0.0, min(by, end) - time.monotonic()))
    return in_flight()


def _settle() -> None:
    """At exit (atexit): before the interpreter finalizes, let abandoned requests finish. A
    thread still blocked in a socket read past the bound holds no lock and is left alone."""
    with contextlib.suppress(Exception):
        settle()


def clean_messages(messages: Sequence[Message]) -> list[Message]:
    """Copies with every known secret masked (a prompt must never carry one)."""
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise InvalidInput("LLM messages must be mappings with 'role' and 'content'")
        copy = dict(m)
        content = copy.get("content")
        if isinstance(content, str):
            copy["content"] = redact(content)
        elif isinstance(content, list):
            copy["content"] = [
                {**part, "text": redact(part["text"])}
                if isinstance(part, dict) and isinstance(part.get("text"), str) else part
                for part in content
            ]
        out.append(copy)
    return out


def check_schema(schema: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"the answer schema is not a valid JSON Schema: {exc.message}") from None


def call_kwargs(p: ProviderConfig, key: Secret | None, msgs: list[Message],
                 schema: dict[str, Any] | None, temperature: float | None,
                 max_tokens: int | None, budget: float) -> dict[str, Any]:
    kw: dict[str, Any] = {"model": p.litellm_model, "messages": msgs, "timeout": budget,
                          "drop_params": True}
    base = p.api_base or (p.base_url if p.kind == "ollama" else None)
    if base:
        kw["api_base"] = base
    if key is not None:
        kw["api_key"] = str(key)
    elif p.route in ("openai", "openrouter"):
        kw["api_key"] = "no-key"  # a keyless server; litellm must not pick a key from the env
    if p.route != "huggingface":  # its handler would copy max_retries into the request body
        kw["num_retries"] = 0  # retries are ours: litellm's cost seconds and ignore the deadline
        kw["max_retries"] = 0
    if temperature is not None:
        kw["temperature"] = temperature
    if max_tokens is not None:
        kw["max_tokens"] = max_tokens
    if schema is not None:
        kw["response_format"] = {"type": "json_schema",
                                 "json_schema": {"name": "answer", "schema": schema,
                                                 "strict": False}}
    return kw


def content(response: Any, max_tokens: int | None = None, *,
            allow_cut: bool = False) -> tuple[str, dict[str, int]]:
    """The answer's text and token usage. An answer the server cut at its token limit
    (finish_reason `length`) is a failure unless allow_cut: a cut answer is never used as a
    whole one."""
    try:
        choice = response.choices[0]
        text = choice.message.content
    except (AttributeError, IndexError, TypeError):
        choice, text = None, None
    if getattr(choice, "finish_reason", None) == "length" and not allow_cut:
        raise Failure(cut_message(max_tokens), answered=True)
    if not isinstance(text, str) or not text.strip():
        raise Failure("empty answer", retryable=True, answered=True)
    usage: dict[str, int] = {}
    u = getattr(response, "usage", None)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(u, name, None)
        if isinstance(value, int):
            usage[name] = value
    return text, usage


def cut_message(max_tokens: int | None) -> str:
    if max_tokens is None:
        return ("the answer was cut at the server's output limit (finish_reason: length): "
                "set max_tokens or raise context_tokens")
    return f"the answer was cut at max_tokens={max_tokens}: raise max_tokens or context_tokens"


def parse_json(text: str, schema: dict[str, Any] | None) -> tuple[str, Any]:
    """The JSON inside the answer (a surrounding ``` fence is removed), checked against schema."""
    body = strip_fence(text)
    try:
        data = json.loads(body)
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise Failure(f"answer is not valid JSON ({msg}{where})", retryable=True,
                      answered=True) from None
    if schema is not None:
        import jsonschema

        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data),
                        key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            first = errors[0]
            at = "/".join(map(str, first.absolute_path)) or "top level"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            raise Failure(f"answer does not match the schema: {first.message[:120]} (at {at})"
                          f"{more}", retryable=True, answered=True)
    return body, data


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 20:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _detail(exc: BaseException) -> str:
    """The provider's own words, without litellm's prefixes, on one short line."""
    msg = str(getattr(exc, "message", "") or exc)
    if "Exception - " in msg:
        msg = msg.rsplit("Exception - ", 1)[1]
    msg = msg.strip()
    with contextlib.suppress(ValueError):
        body = json.loads(msg)
        if isinstance(body, dict):
            err = body.get("error", body)
            msg = str(err.get("message", err) if isinstance(err, dict) else err)
    msg = " ".join(msg.split())
    return redact(msg[:160] + ("..." if len(msg) > 160 else ""))


def _retry_after(exc: BaseException) -> float | None:
    sources = [getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
               getattr(getattr(exc, "response", None), "headers", None)]
    for headers in sources:
        if not headers:
            continue
        try:
            items = {str(k).lower(): str(v) for k, v in dict(headers).items()}
        except (TypeError, ValueError):
            continue
        if "retry-after-ms" in items:
            with contextlib.suppress(ValueError):
                return max(0.0, float(items["retry-after-ms"]) / 1000)
        value = items.get("retry-after")
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    return None


def classify(exc: BaseException, budget: float) -> Failure:
    """A litellm exception -> a short sentence and what to do next (retry here, move on)."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    status = getattr(exc, "status_code", None)
    detail = _detail(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return Failure("connection refused")
    if names & {"Timeout", "APITimeoutError", "ReadTimeout", "ConnectTimeout", "TimeoutException",
                "WriteTimeout", "PoolTimeout"} or any(isinstance(e, TimeoutError) for e in chain):
        return Failure(f"no answer within {budget:g}s (timeout_s)")
    if any(isinstance(e, json.JSONDecodeError) for e in chain):
        return Failure("malformed response from the server (not JSON)", retryable=True)
    if status == 429:
        ra = _retry_after(exc)
        extra = f" (Retry-After {ra:g}s)" if ra is not None else ""
        return Failure(f"429 rate limited{extra}: {detail}", retryable=True, retry_after=ra)
    if status == 401:
        return Failure(f"401 unauthorized ({detail})")
    if status == 403:
        return Failure(f"403 forbidden ({detail})")
    if status == 404:
        return Failure(f"404 model not found ({detail})")
    if "ContextWindowExceededError" in names:
        return Failure(f"400 context too long ({detail})", trip=False)
    if status in (400, 413, 422):
        return Failure(f"{status} request refused ({detail})", trip=False)
    if "APIConnectionError" in names or detail.startswith("Connection error"):
        return Failure(f"connection failed ({detail})", retryable=True)
    if isinstance(status, int) and status >= 500:
        return Failure(f"{status} server error ({detail})", retryable=True)
    return Failure(f"{type(exc).__name__}: {detail}")


def probe_listing(p: ProviderConfig, key: Secret | None,
                   timeout: float) -> tuple[bool | None, bool | None, str]:
    """(reachable, model listed, error) from Ollama /api/tags or OpenAI-style /models."""
    base = p.base_url
    if p.route in ("huggingface", "litellm") or not base:
        return None, None, ""  # no listing endpoint we know of
    url = base + ("/api/tags" if p.route == "ollama" else "/models")
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    # the scheme is http(s): the gateway schema only accepts such api_base values
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            body = json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return True, None, redact(f"{exc.code} {exc.reason} from {url}")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return False, None, "connection refused"
        return False, None, redact(f"cannot reach {url}: {reason}")
    except (TimeoutError, OSError) as exc:
        return False, None, redact(f"cannot reach {url}: {exc}")
    except ValueError:
        return True, None, f"{url} did not answer JSON"
    if p.route == "ollama":
        names = {str(m.get("name") or m.get("model")) for m in (body or {}).get("models", [])
                 if isinstance(m, dict)}
        wanted = {p.model, p.model + ":latest"} if ":" not in p.model else {p.model}
        present = bool(names & wanted)
        return True, present, "" if present else f"model {p.model} not pulled (ollama pull {p.model})"
    ids = {str(m.get("id")) for m in (body or {}).get("data", []) if isinstance(m, dict)}
    present = p.model in ids
    return True, present, "" if present else f"model {p.model} not listed by {url}"
