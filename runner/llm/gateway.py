"""The LLM gateway: providers tried in order, each with a timeout and bounded retries, under one
wall-clock deadline, with a circuit breaker, an on-disk answer cache and a waiting rate limiter.
It is the only module that imports litellm, and only inside a call (never at import time).
It never prints or exits; every text it produces passes through runner.secrets.redact().
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import importlib
import json
import logging
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import InvalidInput, MissingExtra, OpsrunError
from runner.files import write_atomic
from runner.llm.config import TASKS, GatewayConfig, ProviderConfig, load_file
from runner.secrets import Secret, redact, resolve

log = logging.getLogger("opsrun.llm")
log.addHandler(logging.NullHandler())  # a library: whoever runs us decides what is shown

Message = dict[str, Any]
Clock = Callable[[], float]
Sleep = Callable[[float], None]

_LOADED: dict[str, Any] = {}  # "litellm" -> the module, once imported
_IMPORT_LOCK = threading.Lock()
# modules litellm imports lazily inside its first call; importing them up front keeps that
# cost (about a second) out of the first request's deadline
_WARM_MODULES = (
    "openai.resources",
    "litellm.proxy.openai_files_endpoints.common_utils",
    "litellm.llms.openai.openai",
    "litellm.llms.ollama.chat.transformation",
)
_MIN_SLICE = 0.05  # less time than this left: do not start another attempt
CHECK_PROMPT = "Reply with the single word: ok"
BENCH_PROMPT = "Count from 1 to 30, separated by spaces. Output only the numbers."


def _litellm() -> Any:
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
        _LOADED["litellm"] = litellm
        return litellm


# -- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    """One try of one provider (or a provider passed over: skipped=True, with the reason)."""

    provider: str
    model: str
    ok: bool
    error: str = ""
    latency_s: float = 0.0
    skipped: bool = False
    label: str = ""  # e.g. "ollama (127.0.0.1:11434)"


@dataclass(frozen=True)
class Answer:
    """What came back and who said it. `data` is the parsed JSON when a schema was given."""

    text: str
    provider: str
    model: str
    latency_s: float
    attempts: list[Attempt] = field(default_factory=list)
    cached: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    data: Any = None


class GatewayError(OpsrunError):
    """No provider answered; the message names every attempt and why it failed."""

    def __init__(self, attempts: Sequence[Attempt], *, task: str = "ask", why: str = "") -> None:
        self.attempts = list(attempts)
        text = why or describe(self.attempts) or "no provider configured"
        super().__init__(
            redact(f"no LLM provider answered ({task}): {text}"),
            hint="`opsrun gateway check` shows each provider's health; see docs/llm.md",
        )


def describe(attempts: Sequence[Attempt]) -> str:
    """`a (host:port): connection refused; b: key not set (B_KEY); c: 500 ... (2 tries)`."""
    groups: dict[str, list[Attempt]] = {}
    for a in attempts:
        groups.setdefault(a.label or a.provider, []).append(a)
    parts = []
    for label, group in groups.items():
        errors = [a.error if not a.ok else "answered" for a in group]
        if len(set(errors)) == 1:
            text = errors[0] + (f" ({len(errors)} tries)" if len(errors) > 1 else "")
        else:
            text = ", then ".join(errors)
        parts.append(f"{label}: {text}")
    return redact("; ".join(parts))


@dataclass(frozen=True)
class Health:
    """`opsrun gateway check` for one provider."""

    provider: str
    model: str
    label: str
    key: str  # "not needed" | "set (NAME)" | "not set (NAME)"
    reachable: bool | None  # None: the API has no listing endpoint we know
    model_present: bool | None
    latency_s: float | None
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class Measurement:
    """`opsrun gateway bench` for one provider: median latency, mean output tokens per second."""

    provider: str
    model: str
    ok: bool
    latency_ms: float | None = None
    tokens_per_s: float | None = None
    runs: int = 0
    error: str = ""


class _Failure(Exception):
    """One failed attempt, already translated into words for a person."""

    def __init__(self, message: str, *, retryable: bool = False, trip: bool = True,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.retryable = retryable
        self.trip = trip
        self.retry_after = retry_after


# -- rate limit and cache --------------------------------------------------------------------
class RateLimiter:
    """Token bucket: up to `per_minute` requests at once, refilled at per_minute/60 a second.
    `acquire()` waits for a token (with the injected sleep) and never fails."""

    def __init__(self, per_minute: float | None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._capacity = max(1.0, float(per_minute or 1))
        self._tokens = self._capacity
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token; return how long it waited (seconds)."""
        if not self.per_minute:
            return 0.0
        rate = self.per_minute / 60.0
        waited = 0.0
        with self._lock:  # waiters queue on the lock: first come, first served
            while True:
                now = self._clock()
                self._tokens = min(self._capacity, self._tokens + (now - self._last) * rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                wait = (1.0 - self._tokens) / rate
                self._sleep(wait)
                waited += wait


class AnswerCache:
    """One JSON file per answer under `directory`; entries older than ttl_s are misses; beyond
    max_entries the oldest go. It stores the answer text, never the prompt."""

    def __init__(self, directory: str | Path, *, ttl_s: float, max_entries: int,
                 now: Clock = time.time) -> None:
        self.dir = Path(directory)
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._now = now
        self._lock = threading.Lock()

    @staticmethod
    def key(provider: str, model: str, messages: list[Message], schema: dict[str, Any] | None,
            temperature: float | None, max_tokens: int | None) -> str:
        blob = json.dumps([provider, model, messages, schema, temperature, max_tokens],
                          sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            created = float(entry["created"])
            str(entry["text"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()  # unreadable entry: drop it
            return None
        if self._now() - created > self.ttl_s:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return dict(entry)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        created = self._now()
        data = json.dumps({**entry, "created": created, "version": 1}, sort_keys=True)
        with self._lock:
            try:
                # private; its mtime is the cache's clock, which orders eviction
                write_atomic(self._path(key), redact(data).encode(), mode=0o600, mtime=created,
                             fsync=False, make_parents=True)
                self._evict()
            except OSError as exc:  # a cache that cannot write is not worth failing the call
                log.warning("LLM cache %s not written: %s", self.dir, exc)

    def _evict(self) -> None:
        files = [p for p in self.dir.glob("*.json") if p.is_file()]
        if len(files) <= self.max_entries:
            return
        files.sort(key=lambda p: p.stat().st_mtime)
        for p in files[: len(files) - self.max_entries]:
            with contextlib.suppress(OSError):
                p.unlink()

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*.json")) if self.dir.is_dir() else 0


# -- the gateway -----------------------------------------------------------------------------
class Gateway:
    """Ask models through the providers of a GatewayConfig. One instance per run: the circuit
    breaker and the rate limiter live in it. Thread-safe."""

    def __init__(self, config: GatewayConfig, *, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep, now: Clock = time.time,
                 limiter: RateLimiter | None = None, cache: AnswerCache | None = None,
                 state_dir: str | Path = ".opsrun") -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._now = now
        self.limiter = limiter or RateLimiter(config.rate_limit.requests_per_minute,
                                              clock=clock, sleep=sleep)
        c = config.cache
        self.cache: AnswerCache | None = cache
        if cache is None and c.enabled:
            self.cache = AnswerCache(Path(c.dir).expanduser().absolute(), ttl_s=c.ttl_s,
                                     max_entries=c.max_entries, now=now)
        self.state_dir = Path(state_dir).absolute()
        self._breaker: dict[str, tuple[float, float, str]] = {}  # name -> (since, until, why)
        self._lock = threading.Lock()
        self._slots = {name: threading.BoundedSemaphore(p.max_concurrency)
                       for name, p in config.providers.items()}
        self._bench: dict[str, Any] | None = None

    @classmethod
    def from_file(cls, path: str | Path | None = None, **kwargs: Any) -> Gateway:
        """Load gateway.yaml (default: ./gateway.yaml, else the packaged one)."""
        return cls(load_file(path), **kwargs)

    @property
    def bench_path(self) -> Path:
        return self.state_dir / "gateway-bench.json"

    # -- routing ------------------------------------------------------------------------------
    def order(self, task: str = "ask", only: Sequence[str] | None = None) -> list[ProviderConfig]:
        """Providers to try for `task`, first to last."""
        cfg, routing = self.config, self.config.routing
        if only:
            unknown = [n for n in only if n not in cfg.providers]
            if unknown:
                raise InvalidInput(f"unknown provider {unknown[0]!r}",
                                   hint=f"providers in {cfg.source}: {', '.join(cfg.providers)}")
            names = list(only)
        else:
            names = list(cfg.task(task).order or routing.order or cfg.providers)
        provs = [cfg.providers[n] for n in names]
        if routing.force_cloud:
            provs = [p for p in provs if not p.local]
        if routing.prefer_local:
            provs.sort(key=lambda p: not p.local)  # stable: keeps the order within each group
        if routing.max_latency_ms:
            bench = self.measurements()
            limit = routing.max_latency_ms

            def too_slow(p: ProviderConfig) -> bool:
                m = bench.get(p.name) or {}
                lat = m.get("latency_ms")
                return bool(m.get("ok")) and m.get("model") == p.model and lat is not None \
                    and float(lat) > limit

            provs = [p for p in provs if not too_slow(p)] + [p for p in provs if too_slow(p)]
        return provs

    # -- the call -----------------------------------------------------------------------------
    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        task: str = "ask",
        temperature: float | None = None,
        max_tokens: int | None = None,
        accept: Callable[[str], bool] | None = None,
        use_cache: bool = True,
        providers: Sequence[str] | None = None,
        validate_schema: bool = True,
    ) -> Answer:
        """Ask the first provider that answers within the deadline.

        schema: a JSON Schema the answer must follow (sent as response_format json_schema,
        Ollama `format`); an answer that is not JSON, or (validate_schema) does not match,
        counts as a failed attempt. accept: the caller's own check; only answers it accepts
        are cached. providers: restrict to these names, in this order.
        Raises GatewayError naming every attempt when nobody answered."""
        if task not in TASKS:
            raise InvalidInput(f"unknown task {task!r}", hint=f"tasks are: {', '.join(TASKS)}")
        if schema is not None:
            _check_schema(schema)
        tcfg = self.config.task(task)
        temperature = temperature if temperature is not None else tcfg.temperature
        max_tokens = max_tokens if max_tokens is not None else tcfg.max_tokens
        order = self.order(task, providers)
        if not order:
            raise GatewayError([], task=task, why="no provider left after routing "
                               "(force_cloud removed every local one)")
        # resolve every key first: that marks them secret, so the prompt is redacted of them
        resolved = {name: self._key(p) for name, p in self.config.providers.items()}
        msgs = _clean_messages(messages)

        keys: dict[str, str] = {}
        if self.cache is not None and use_cache:
            for p in order:
                keys[p.name] = AnswerCache.key(p.name, p.model, msgs, schema, temperature, max_tokens)
                hit = self.cache.get(keys[p.name])
                if hit is None:
                    continue
                text = str(hit["text"])
                try:
                    data = json.loads(text) if schema is not None else None
                except ValueError:
                    continue  # not what was stored: ask again
                return Answer(text, p.name, p.model, 0.0, [], True, dict(hit.get("usage") or {}), data)

        lib = _litellm()  # before the deadline starts: the import costs seconds once
        self.limiter.acquire()
        routing = self.config.routing
        start = self._clock()
        deadline = start + routing.deadline_s
        attempts: list[Attempt] = []
        for p in order:
            remaining = deadline - self._clock()
            if remaining <= _MIN_SLICE:
                attempts.append(self._skipped(p, f"not tried: deadline of {routing.deadline_s:g}s "
                                                 "reached"))
                continue
            key, why = resolved[p.name]
            if why:
                attempts.append(self._skipped(p, why))
                continue
            why = self._breaker_open(p)
            if why:
                attempts.append(self._skipped(p, why))
                continue
            answer = self._try_provider(lib, p, key, msgs, schema, temperature, max_tokens,
                                        deadline, attempts, validate_schema, start)
            if answer is None:
                continue
            if self.cache is not None and use_cache and (accept is None or accept(answer.text)):
                self.cache.put(keys.get(p.name) or AnswerCache.key(
                    p.name, p.model, msgs, schema, temperature, max_tokens),
                    {"provider": p.name, "model": p.model, "text": answer.text,
                     "usage": answer.usage})
            return answer
        err = GatewayError(attempts, task=task)
        log.info("%s", err.message)
        raise err

    def _try_provider(self, lib: Any, p: ProviderConfig, key: Secret | None,
                      msgs: list[Message], schema: dict[str, Any] | None,
                      temperature: float | None, max_tokens: int | None, deadline: float,
                      attempts: list[Attempt], validate_schema: bool,
                      start: float) -> Answer | None:
        """Up to 1 + retries_per_provider tries of one provider; None when it gave nothing."""
        tries = 1 + self.config.routing.retries_per_provider
        last: _Failure | None = None
        for i in range(tries):
            remaining = deadline - self._clock()
            if remaining <= _MIN_SLICE:
                break
            budget = min(p.timeout_s, remaining)
            t0 = self._clock()
            try:
                text, usage, data = self._attempt(lib, p, key, msgs, schema, temperature,
                                                  max_tokens, budget, cut=budget < p.timeout_s,
                                                  validate_schema=validate_schema)
            except _Failure as f:
                last = f
                wait = f.retry_after if f.retry_after is not None else min(0.25 * 2 ** i, 2.0)
                more = f.retryable and i < tries - 1
                if more and self._clock() + wait >= deadline - _MIN_SLICE:
                    more = False
                    if f.retry_after is not None:
                        f.message += " (Retry-After does not fit in the deadline)"
                attempts.append(Attempt(p.name, p.model, False, f.message, self._clock() - t0,
                                        label=p.label))
                log.info("LLM %s: %s", p.label, f.message)
                if not more:
                    break
                self._sleep(wait)
                continue
            latency = self._clock() - t0
            attempts.append(Attempt(p.name, p.model, True, "", latency, label=p.label))
            with self._lock:
                self._breaker.pop(p.name, None)
            return Answer(text, p.name, p.model, self._clock() - start, list(attempts), False,
                          usage, data)
        if last is not None and last.trip:
            self._trip(p, last)
        return None

    def _attempt(self, lib: Any, p: ProviderConfig, key: Secret | None, msgs: list[Message],
                 schema: dict[str, Any] | None, temperature: float | None,
                 max_tokens: int | None, budget: float, *, cut: bool = False,
                 validate_schema: bool = True) -> tuple[str, dict[str, int], Any]:
        """One request in a worker thread; we stop waiting after `budget` seconds whatever
        litellm does (its own timeout is per read, so a trickling body could outlive it)."""
        slot = self._slots[p.name]
        if not slot.acquire(timeout=budget):
            raise _Failure(f"busy: {p.max_concurrency} request(s) already in flight "
                           "(max_concurrency)", trip=False)
        kwargs = _call_kwargs(p, key, msgs, schema, temperature, max_tokens, budget)
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["response"] = lib.completion(**kwargs)
            except BaseException as exc:
                box["error"] = exc
            finally:
                slot.release()
                done.set()

        threading.Thread(target=run, daemon=True, name=f"opsrun-llm-{p.name}").start()
        if not done.wait(budget):
            if cut:
                raise _Failure(f"stopped waiting at the deadline after {budget:.1f}s", trip=False)
            raise _Failure(f"no answer within {budget:g}s (timeout_s)")
        if "error" in box:
            raise _classify(box["error"], budget) from None
        text, usage = _content(box["response"])
        data = None
        if schema is not None:
            text, data = _parse_json(text, schema if validate_schema else None)
        return text, usage, data

    # -- keys, breaker ------------------------------------------------------------------------
    def _key(self, p: ProviderConfig) -> tuple[Secret | None, str]:
        """(the key, '') or (None, why it is unusable). No key configured: (None, '')."""
        if not p.api_key:
            return None, ""
        what = "key not set" if p.api_key.startswith("env:") else "key file not readable"
        try:
            value = resolve(p.api_key, base_dir=self.config.base_dir, where=p.name)
        except InvalidInput:
            return None, f"{what} ({p.key_source})"
        if not value.strip():
            return None, f"key not set ({p.key_source} is empty)"
        return value, ""

    def _skipped(self, p: ProviderConfig, why: str) -> Attempt:
        return Attempt(p.name, p.model, False, why, 0.0, skipped=True, label=p.label)

    def _trip(self, p: ProviderConfig, f: _Failure) -> None:
        now = self._clock()
        hold = max(self.config.routing.cooldown_s, f.retry_after or 0.0)
        with self._lock:
            self._breaker[p.name] = (now, now + hold, f.message)

    def _breaker_open(self, p: ProviderConfig) -> str:
        with self._lock:
            entry = self._breaker.get(p.name)
        if entry is None:
            return ""
        since, until, why = entry
        now = self._clock()
        if now >= until:
            return ""
        return (f"skipped: failed {now - since:.0f}s ago ({why}); cooling down "
                f"{until - now:.0f}s more")

    def reset_breaker(self) -> None:
        """Forget every failure (the breaker trusts every provider again)."""
        with self._lock:
            self._breaker.clear()

    # -- health and measurements --------------------------------------------------------------
    def check(self, providers: Sequence[str] | None = None) -> list[Health]:
        """Each provider: key, reachable, model listed, latency of a tiny request."""
        lib = _litellm()
        out = []
        for p in self._selected(providers):
            key, why = self._key(p)
            key_text = "not needed" if not p.api_key else why or f"set ({p.key_source})"
            reachable, present, error = _probe_listing(p, key, min(p.timeout_s, 10.0))
            latency: float | None = None
            ok = False
            if why:
                error = why
            elif reachable is False:
                pass
            else:
                budget = min(p.timeout_s, self.config.routing.deadline_s)
                t0 = self._clock()
                try:
                    self._attempt(lib, p, key, [{"role": "user", "content": CHECK_PROMPT}], None,
                                  0.0, 8, budget)
                    latency = self._clock() - t0
                    ok = True
                except _Failure as f:
                    error = f.message
            out.append(Health(p.name, p.model, p.label, key_text, reachable, present, latency,
                              ok, redact(error)))
        return out

    def measure(self, provider: str, runs: int = 3) -> Measurement:
        """Median latency and mean output tokens/s of a short fixed request to one provider."""
        lib = _litellm()
        p = self.config.providers[provider]
        key, why = self._key(p)
        if why:
            return Measurement(p.name, p.model, False, error=why)
        latencies: list[float] = []
        rates: list[float] = []
        for _ in range(max(1, runs)):
            t0 = self._clock()
            try:
                _, usage, _ = self._attempt(lib, p, key,
                                            [{"role": "user", "content": BENCH_PROMPT}], None,
                                            0.0, 128, p.timeout_s)
            except _Failure as f:
                return Measurement(p.name, p.model, False, runs=len(latencies), error=f.message)
            dt = max(self._clock() - t0, 1e-6)
            latencies.append(dt * 1000)
            if usage.get("completion_tokens"):
                rates.append(usage["completion_tokens"] / dt)
        return Measurement(p.name, p.model, True, round(statistics.median(latencies), 1),
                           round(statistics.mean(rates), 1) if rates else None, len(latencies))

    def bench(self, providers: Sequence[str] | None = None, runs: int = 3) -> list[Measurement]:
        """Measure providers and store the results in .opsrun/gateway-bench.json."""
        results = [self.measure(p.name, runs) for p in self._selected(providers)]
        stored = dict(self.measurements())
        stamp = datetime.fromtimestamp(self._now(), UTC).isoformat(timespec="seconds")
        for m in results:
            stored[m.provider] = {"model": m.model, "ok": m.ok, "latency_ms": m.latency_ms,
                                  "tokens_per_s": m.tokens_per_s, "runs": m.runs,
                                  "error": redact(m.error), "measured_at": stamp}
        doc = {"version": 1, "updated": stamp, "providers": stored}
        try:
            write_atomic(self.bench_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(),
                         make_parents=True)
        except OSError as exc:
            raise OpsrunError(f"cannot write {self.bench_path}: {exc.strerror or exc}") from exc
        self._bench = stored
        return results

    def measurements(self) -> dict[str, Any]:
        """Stored bench results by provider name ({} when never measured)."""
        if self._bench is None:
            try:
                doc = json.loads(self.bench_path.read_text(encoding="utf-8"))
                self._bench = dict(doc.get("providers") or {})
            except (OSError, ValueError, AttributeError):
                self._bench = {}
        return self._bench

    def _selected(self, names: Sequence[str] | None) -> list[ProviderConfig]:
        if not names:
            return list(self.config.providers.values())
        return self.order(only=names)


# -- helpers ---------------------------------------------------------------------------------
def _clean_messages(messages: Sequence[Message]) -> list[Message]:
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


def _check_schema(schema: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"the answer schema is not a valid JSON Schema: {exc.message}") from None


def _call_kwargs(p: ProviderConfig, key: Secret | None, msgs: list[Message],
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


def _content(response: Any) -> tuple[str, dict[str, int]]:
    try:
        text = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        text = None
    if not isinstance(text, str) or not text.strip():
        raise _Failure("empty answer", retryable=True, trip=False)
    usage: dict[str, int] = {}
    u = getattr(response, "usage", None)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(u, name, None)
        if isinstance(value, int):
            usage[name] = value
    return text, usage


def _parse_json(text: str, schema: dict[str, Any] | None) -> tuple[str, Any]:
    """The JSON inside the answer (a surrounding ``` fence is removed), checked against schema."""
    body = text.strip()
    if body.startswith("```"):
        lines = body.splitlines()
        if len(lines) >= 2 and lines[-1].strip() == "```":
            body = "\n".join(lines[1:-1]).strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise _Failure(f"answer is not valid JSON ({msg}{where})", retryable=True,
                       trip=False) from None
    if schema is not None:
        import jsonschema

        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data),
                        key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            first = errors[0]
            at = "/".join(map(str, first.absolute_path)) or "top level"
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            raise _Failure(f"answer does not match the schema: {first.message[:120]} (at {at})"
                           f"{more}", retryable=True, trip=False)
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


def _classify(exc: BaseException, budget: float) -> _Failure:
    """A litellm exception -> a short sentence and what to do next (retry here, move on)."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    status = getattr(exc, "status_code", None)
    detail = _detail(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return _Failure("connection refused")
    if names & {"Timeout", "APITimeoutError", "ReadTimeout", "ConnectTimeout", "TimeoutException",
                "WriteTimeout", "PoolTimeout"} or any(isinstance(e, TimeoutError) for e in chain):
        return _Failure(f"no answer within {budget:g}s (timeout_s)")
    if any(isinstance(e, json.JSONDecodeError) for e in chain):
        return _Failure("malformed response from the server (not JSON)", retryable=True)
    if status == 429:
        ra = _retry_after(exc)
        extra = f" (Retry-After {ra:g}s)" if ra is not None else ""
        return _Failure(f"429 rate limited{extra}: {detail}", retryable=True, retry_after=ra)
    if status == 401:
        return _Failure(f"401 unauthorized ({detail})")
    if status == 403:
        return _Failure(f"403 forbidden ({detail})")
    if status == 404:
        return _Failure(f"404 model not found ({detail})")
    if "ContextWindowExceededError" in names:
        return _Failure(f"400 context too long ({detail})", trip=False)
    if status in (400, 413, 422):
        return _Failure(f"{status} request refused ({detail})", trip=False)
    if "APIConnectionError" in names or detail.startswith("Connection error"):
        return _Failure(f"connection failed ({detail})", retryable=True)
    if isinstance(status, int) and status >= 500:
        return _Failure(f"{status} server error ({detail})", retryable=True)
    return _Failure(f"{type(exc).__name__}: {detail}")


def _probe_listing(p: ProviderConfig, key: Secret | None,
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
