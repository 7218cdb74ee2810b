"""The LLM gateway's router: providers tried in order, each with a timeout and bounded
retries, under one wall-clock deadline, with a circuit breaker, the answer cache and the
rate limiter. It never prints or exits; every text it produces passes through redact().
litellm is reached only through runner.gateway.adapter, inside a call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from runner.errors import InvalidInput
from runner.gateway.adapter import (
    call_kwargs,
    check_schema,
    classify,
    clean_messages,
    content,
    load_litellm,
    parse_json,
)
from runner.gateway.config import TASKS, GatewayConfig, ProviderConfig, load_file
from runner.gateway.results import Answer, Attempt, Failure, GatewayError
from runner.gateway.store import AnswerCache, RateLimiter
from runner.secrets import Secret, resolve

log = logging.getLogger("opsrun.llm")
log.addHandler(logging.NullHandler())  # a library: whoever runs us decides what is shown

Message = dict[str, Any]
Clock = Callable[[], float]
Sleep = Callable[[float], None]
_MIN_SLICE = 0.05  # less time than this left: do not start another attempt


class Router:
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
    def from_file(cls, path: str | Path | None = None, **kwargs: Any) -> Self:
        """Load gateway.yaml (default: ./gateway.yaml, else the packaged one)."""
        return cls(load_file(path), **kwargs)

    @property
    def bench_path(self) -> Path:
        return self.state_dir / "gateway-bench.json"

    def measurements(self) -> dict[str, Any]:
        """Stored bench results by provider name ({} when never measured)."""
        if self._bench is None:
            try:
                doc = json.loads(self.bench_path.read_text(encoding="utf-8"))
                self._bench = dict(doc.get("providers") or {})
            except (OSError, ValueError, AttributeError):
                self._bench = {}
        return self._bench

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
            check_schema(schema)
        tcfg = self.config.task(task)
        temperature = temperature if temperature is not None else tcfg.temperature
        max_tokens = max_tokens if max_tokens is not None else tcfg.max_tokens
        order = self.order(task, providers)
        if not order:
            raise GatewayError([], task=task, why="no provider left after routing "
                               "(force_cloud removed every local one)")
        # resolve every key first: that marks them secret, so the prompt is redacted of them
        resolved = {name: self._key(p) for name, p in self.config.providers.items()}
        msgs = clean_messages(messages)

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

        lib = load_litellm()  # before the deadline starts: the import costs seconds once
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
        last: Failure | None = None
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
            except Failure as f:
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
            raise Failure(f"busy: {p.max_concurrency} request(s) already in flight "
                           "(max_concurrency)", trip=False)
        kwargs = call_kwargs(p, key, msgs, schema, temperature, max_tokens, budget)
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
                raise Failure(f"stopped waiting at the deadline after {budget:.1f}s", trip=False)
            raise Failure(f"no answer within {budget:g}s (timeout_s)")
        if "error" in box:
            raise classify(box["error"], budget) from None
        text, usage = content(box["response"])
        data = None
        if schema is not None:
            text, data = parse_json(text, schema if validate_schema else None)
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

    def _trip(self, p: ProviderConfig, f: Failure) -> None:
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
