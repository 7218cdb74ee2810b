"""The Gateway: the router plus `opsrun gateway check` and `bench` (each provider's key,
reachability, model and latency; bench results stored for latency routing).
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
                                  0.0, 8, budget)
                    latency = self._clock() - t0
                    ok = True
                except Failure as f:
                    error = f.message
            out.append(Health(p.name, p.model, p.label, key_text, reachable, present, latency,
                              ok, redact(error)))
        return out

    def measure(self, provider: str, runs: int = 3) -> Measurement:
        """Median latency and mean output tokens/s of a short fixed request to one provider."""
        lib = load_litellm()
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
            except Failure as f:
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
                         mode=0o600, make_parents=True)
        except OSError as exc:
            raise OpsrunError(f"cannot write {self.bench_path}: {exc.strerror or exc}") from exc
        self._bench = stored
        return results

    def _selected(self, names: Sequence[str] | None) -> list[ProviderConfig]:
        if not names:
            return list(self.config.providers.values())
        return self.order(only=names)

