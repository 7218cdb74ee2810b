"""The Gateway: the router plus `opsrun gateway check` and `bench` (each provider's key,
reachability, model and latency; bench results, tokens in and out and tokens per second,
stored per provider and model for latency routing).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime

from runner.errors import OpsrunError
from runner.files import write_atomic
from runner.gateway.adapter import load_litellm, probe_listing
from runner.gateway.config import ProviderConfig
from runner.gateway.results import Failure, Health, Measurement
from runner.gateway.router import Router
from runner.secrets import redact

CHECK_PROMPT = "Reply with the single word: ok"
BENCH_PROMPT = "Count from 1 to 30, separated by spaces. Output only the numbers."
BENCH_MAX_TOKENS = 128


class Gateway(Router):
    """The gateway: the router, plus check / measure / bench / measurements."""

    def check(self, providers: Sequence[str] | None = None) -> list[Health]:
        """Each provider: key, reachable, model listed, latency of a tiny request."""
        lib = load_litellm()
        out = []
        for p in self._selected(providers):
            key, why = self._key(p)
            key_text = "not needed" if not p.api_key else why or f"set ({p.key_source})"
            reachable, present, error = probe_listing(p, key, min(p.timeout_s, 10.0))
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
                                  0.0, 8, budget, allow_cut=True)
                    latency = self._clock() - t0
                    ok = True
                except Failure as f:
                    error = f.message
            out.append(Health(p.name, p.model, p.label, key_text, reachable, present, latency,
                              ok, redact(error)))
        return out

    def measure(self, provider: str | ProviderConfig, runs: int = 3) -> Measurement:
        """One provider and model: median latency, mean tokens in and out and mean output
        tokens per second of a short fixed request."""
        lib = load_litellm()
        p = provider if isinstance(provider, ProviderConfig) else self.config.providers[provider]
        key, why = self._key(p)
        if why:
            return Measurement(p.name, p.model, False, error=why)
        latencies: list[float] = []
        rates: list[float] = []
        tokens_in: list[int] = []
        tokens_out: list[int] = []
        for _ in range(max(1, runs)):
            t0 = self._clock()
            try:
                _, usage, _ = self._attempt(lib, p, key,
                                            [{"role": "user", "content": BENCH_PROMPT}], None,
                                            0.0, BENCH_MAX_TOKENS, p.timeout_s, allow_cut=True)
            except Failure as f:
                return Measurement(p.name, p.model, False, runs=len(latencies), error=f.message)
            dt = max(self._clock() - t0, 1e-6)
            latencies.append(dt * 1000)
            if usage.get("prompt_tokens"):
                tokens_in.append(usage["prompt_tokens"])
            if usage.get("completion_tokens"):
                tokens_out.append(usage["completion_tokens"])
                rates.append(usage["completion_tokens"] / dt)

        def mean(values: Sequence[float]) -> float | None:
            return round(statistics.mean(values), 1) if values else None

        return Measurement(p.name, p.model, True, round(statistics.median(latencies), 1),
                           mean(rates), len(latencies), tokens_in=mean(tokens_in),
                           tokens_out=mean(tokens_out))

    def bench(self, providers: Sequence[str] | None = None, runs: int = 3,
              task: str | None = None) -> list[Measurement]:
        """Measure providers (with task: the providers and models that task uses) and store
        the results per provider and model in .opsrun/gateway-bench.json."""
        selected = self.order(task) if task is not None and not providers else self._selected(providers)
        results = [self.measure(p, runs) for p in selected]
        stored = {name: dict(models) for name, models in self.measurements().items()}
        stamp = datetime.fromtimestamp(self._now(), UTC).isoformat(timespec="seconds")
        for m in results:
            stored.setdefault(m.provider, {})[m.model] = {
                "ok": m.ok, "latency_ms": m.latency_ms, "tokens_per_s": m.tokens_per_s,
                "tokens_in": m.tokens_in, "tokens_out": m.tokens_out, "runs": m.runs,
                "error": redact(m.error), "measured_at": stamp}
        doc = {"version": 2, "updated": stamp, "providers": stored}
        try:
            write_atomic(self.bench_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(),
                         mode=0o600, make_parents=True)
        except OSError as exc:
            raise OpsrunError(f"cannot write {self.bench_path}: {exc.strerror or exc}") from exc
        self._bench = stored
        return results

    def _selected(self, names: Sequence[str] | None) -> list[ProviderConfig]:
        if not names:
            return list(self.config.providers.values())
        return self.order(None, only=names)  # each provider's own model

