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
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from runner.errors import InvalidInput
from runner.gateway import tokens
from runner.gateway.adapter import (
    call_kwargs,
    check_schema,
    classify,
    clean_messages,
    content,
    load_litellm,
    parse_json,
    start_request,
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
MIN_ANSWER_TOKENS = 16  # a provider whose context leaves less room is passed over


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

    def measurements(self) -> dict[str, dict[str, Any]]:
        """Stored bench results: provider name -> model -> result ({} when never measured).
        A version 1 file (one result per provider) is read as the result of its model."""
        if self._bench is None:
            try:
                doc = json.loads(self.bench_path.read_text(encoding="utf-8"))
                stored = dict(doc.get("providers") or {})
            except (OSError, ValueError, AttributeError):
                stored = {}
            self._bench = {}
            for name, entry in stored.items():
                if not isinstance(entry, dict):
                    continue
                if isinstance(entry.get("model"), str):  # version 1
                    entry = {entry["model"]: entry}
                self._bench[str(name)] = {str(m): dict(e) for m, e in entry.items() if isinstance(e, dict)}
        return self._bench

    def measurement(self, p: ProviderConfig) -> dict[str, Any] | None:
        """The stored bench result of this provider and model, if any."""
        return self.measurements().get(p.name, {}).get(p.model)

    def predicted_ms(self, p: ProviderConfig, answer_tokens: int | None = None) -> float | None:
        """The latency the bench predicts for an answer of `answer_tokens` (its measured
        latency, plus the extra tokens at its measured tokens/s); None when not measured."""
        m = self.measurement(p)
        if not m or not m.get("ok") or m.get("latency_ms") is None:
            return None
        latency = float(m["latency_ms"])
        rate, measured = m.get("tokens_per_s"), m.get("tokens_out")
        if answer_tokens and rate and measured is not None and float(rate) > 0:
            latency += max(0.0, answer_tokens - float(measured)) * 1000.0 / float(rate)
        return latency

    # -- routing ------------------------------------------------------------------------------
    def order(self, task: str | None = "ask", only: Sequence[str] | None = None,
              answer_tokens: int | None = None) -> list[ProviderConfig]:
        """Providers to try for `task`, first to last, each with the model the task asks it
        for (tasks.T.model; task None: the providers' own models). With
        routing.max_latency_ms, providers the bench predicts slower than that for an answer
        of `answer_tokens` go last."""
        cfg, routing = self.config, self.config.routing
        if only:
            unknown = [n for n in only if n not in cfg.providers]
            if unknown:
                raise InvalidInput(f"unknown provider {unknown[0]!r}",
                                   hint=f"providers in {cfg.source}: {', '.join(cfg.providers)}")
            names = list(only)
        else:
            names = list((cfg.task(task).order if task else ()) or routing.order or cfg.providers)
        tcfg = cfg.task(task) if task in TASKS else None
        provs = []
        for n in names:
            p = cfg.providers[n]
            model = tcfg.model_for(n) if tcfg is not None else None
            provs.append(replace(p, model=model) if model else p)
        if routing.force_cloud:
            provs = [p for p in provs if not p.local]
        if routing.prefer_local:
            provs.sort(key=lambda p: not p.local)  # stable: keeps the order within each group
        if routing.max_latency_ms:
            limit = routing.max_latency_ms

            def too_slow(p: ProviderConfig) -> bool:
                predicted = self.predicted_ms(p, answer_tokens)
                return predicted is not None and predicted > limit

            provs = [p for p in provs if not too_slow(p)] + [p for p in provs if too_slow(p)]
        return provs

    def deadline(self, seconds: float | None = None) -> float:
        """A deadline `seconds` (default routing.deadline_s) from now on the router's clock:
        pass it to every complete() of one run (an author run and its repairs, a whole do
        run) so the whole run shares it."""
        return self._clock() + (self.config.routing.deadline_s if seconds is None else seconds)

    def out_of_time(self, deadline: float) -> bool:
        """Whether too little is left before `deadline` to start another request."""
        return deadline - self._clock() <= _MIN_SLICE

    def fit(self, p: ProviderConfig, msgs: Sequence[Message], max_tokens: int | None,
            min_answer: int) -> tuple[int | None, str]:
        """(max_tokens for this provider, '') or (None, why the prompt does not fit): with
        context_tokens set, the answer may use what the prompt leaves of the context."""
        if not p.context_tokens:
            return max_tokens, ""
        prompt = tokens.message_tokens(msgs)
        left = tokens.room(p.context_tokens, prompt)
        if left < min_answer:
            return None, (f"the prompt (~{prompt} tokens) and an answer of at least {min_answer} tokens "
                          f"do not fit context_tokens={p.context_tokens}")
        return (min(max_tokens, left) if max_tokens else left), ""

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
        accept_invalid_json: bool = False,
        deadline: float | None = None,
        min_answer_tokens: int = MIN_ANSWER_TOKENS,
        answer_tokens: int | None = None,
    ) -> Answer:
        """Ask the first provider that answers within the deadline.

        schema: a JSON Schema the answer must follow (sent as response_format json_schema,
        Ollama `format`); an answer that is not JSON, or (validate_schema) does not match,
        counts as a failed attempt, unless accept_invalid_json: then it comes back as it is
        (data None) for the caller's own repair loop. An answer cut at max_tokens
        (finish_reason length) is always a failed attempt, never returned or cached.
        accept: the caller's own check; only answers it accepts are cached. providers:
        restrict to these names, in this order. deadline: an absolute time on the router's
        clock (Router.deadline()) shared by several requests; default routing.deadline_s
        from now. A provider with context_tokens gets max_tokens fitted to what the prompt
        leaves, and is passed over when that is below min_answer_tokens. answer_tokens:
        about how long the answer will be, for max_latency_ms routing.
        Raises GatewayError naming every attempt when no usable answer came."""
        if task not in TASKS:
            raise InvalidInput(f"unknown task {task!r}", hint=f"tasks are: {', '.join(TASKS)}")
        if schema is not None:
            check_schema(schema)
        tcfg = self.config.task(task)
        temperature = temperature if temperature is not None else tcfg.temperature
        max_tokens = max_tokens if max_tokens is not None else tcfg.max_tokens
        order = self.order(task, providers, answer_tokens)
        if not order:
            raise GatewayError([], task=task, why="no provider left after routing "
                               "(force_cloud removed every local one)")
        # resolve every key first: that marks them secret, so the prompt is redacted of them
        resolved = {name: self._key(p) for name, p in self.config.providers.items()}
        msgs = clean_messages(messages)
        fitted = {p.name: self.fit(p, msgs, max_tokens, min_answer_tokens) for p in order}

        keys: dict[str, str] = {}
        if self.cache is not None and use_cache:
            for p in order:
                limit, why = fitted[p.name]
                if why:
                    continue
                keys[p.name] = AnswerCache.key(p.name, p.model, msgs, schema, temperature, limit)
                hit = self.cache.get(keys[p.name])
                if hit is None:
                    continue
                text = str(hit["text"])
                try:
                    data = json.loads(text) if schema is not None else None
                except ValueError:
                    continue  # not what was stored: ask again
                return Answer(text, p.name, p.model, 0.0, [], True, dict(hit.get("usage") or {}), data)

        routing = self.config.routing
        attempts: list[Attempt] = []
        unfit = [p for p in order if fitted[p.name][1]]
        for p in unfit:
            attempts.append(self._skipped(p, f"skipped: {fitted[p.name][1]}", unfit=True))
        if len(unfit) == len(order):
            raise GatewayError(attempts, task=task)
        lib = load_litellm()  # before the deadline starts: the import costs seconds once
        self.limiter.acquire()
        start = self._clock()
        if deadline is None:
            deadline = start + routing.deadline_s
        for p in order:
            if fitted[p.name][1]:
                continue
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
            limit = fitted[p.name][0]
            answer = self._try_provider(lib, p, key, msgs, schema, temperature, limit,
                                        deadline, attempts, validate_schema, start,
                                        accept_invalid_json)
            if answer is None:
                continue
            if self.cache is not None and use_cache and (accept is None or accept(answer.text)):
                self.cache.put(keys.get(p.name) or AnswerCache.key(
                    p.name, p.model, msgs, schema, temperature, limit),
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
                      start: float, accept_invalid_json: bool = False) -> Answer | None:
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
                                                  validate_schema=validate_schema,
                                                  accept_invalid_json=accept_invalid_json)
            except Failure as f:
                last = f
                wait = f.retry_after if f.retry_after is not None else min(0.25 * 2 ** i, 2.0)
                more = f.retryable and i < tries - 1
                if more and self._clock() + wait >= deadline - _MIN_SLICE:
                    more = False
                    if f.retry_after is not None:
                        f.message += " (Retry-After does not fit in the deadline)"
                attempts.append(Attempt(p.name, p.model, False, f.message, self._clock() - t0,
                                        label=p.label, answered=f.answered))
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
                 validate_schema: bool = True, accept_invalid_json: bool = False,
                 allow_cut: bool = False) -> tuple[str, dict[str, int], Any]:
        """One request in a worker thread (adapter.start_request); we stop waiting after
        `budget` seconds whatever litellm does (its own timeout is per read, so a trickling
        body could outlive it). allow_cut: an answer cut at max_tokens is fine (check, bench)."""
        slot = self._slots[p.name]
        if not slot.acquire(timeout=budget):
            raise Failure(f"busy: {p.max_concurrency} request(s) already in flight "
                          "(max_concurrency)", trip=False)
        kwargs = call_kwargs(p, key, msgs, schema, temperature, max_tokens, budget)
        done, box = start_request(lib, kwargs, budget, name=f"opsrun-llm-{p.name}",
                                  on_end=slot.release)
        if not done.wait(budget):
            if cut:
                raise Failure(f"stopped waiting at the deadline after {budget:.1f}s", trip=False)
            raise Failure(f"no answer within {budget:g}s (timeout_s)")
        if "error" in box:
            raise classify(box["error"], budget) from None
        text, usage = content(box["response"], max_tokens, allow_cut=allow_cut)
        data = None
        if schema is not None:
            try:
                text, data = parse_json(text, schema if validate_schema else None)
            except Failure:
                if not accept_invalid_json:
                    raise
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

    def _skipped(self, p: ProviderConfig, why: str, *, unfit: bool = False) -> Attempt:
        return Attempt(p.name, p.model, False, why, 0.0, skipped=True, label=p.label, unfit=unfit)

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
