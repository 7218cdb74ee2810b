"""The `llm.ask` step kind: send a templated prompt through the LLM gateway and register the
answer (text; parsed JSON too when a schema is given). It plans without asking (`?` with the
prompt preview), runs on the machine running opsrun (`run_local`), never through a host's
transport, and changes nothing. litellm is imported only by the gateway, inside a call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from runner.errors import OpsrunError
from runner.model import Action, Change, CommandResult
from runner.secrets import redact
from runner.steps.base import Facts, StepContext, StepKind, register

if TYPE_CHECKING:
    pass

PREVIEW_CHARS = 200



@dataclass(frozen=True)
class LocalResult(CommandResult):
    """A CommandResult with what the step registers as steps.<id>.data."""

    data: Any = None


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The prompt on one line, at most `limit` characters, secrets masked."""
    flat = " ".join(redact(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Ask(StepKind):
    """`llm.ask: "prompt"` or {prompt, system, schema, gateway, temperature}."""

    name: ClassVar[str] = "llm.ask"
    needs: ClassVar[frozenset[str]] = frozenset()  # any host: it never touches the host
    late_fields: ClassVar[frozenset[str]] = frozenset({"schema"})  # a JSON Schema, not a template

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"prompt": params} if isinstance(params, str) else dict(params)

    def read_only(self, params: dict[str, Any]) -> bool:
        return True

    def _change(self, prompt: str, params: dict[str, Any], summary: str) -> Change:
        shown = preview(prompt)
        options: dict[str, Any] = {k: params[k] for k in ("system", "schema", "gateway", "temperature") if k in params}
        action = Action("local", command=f"ask the LLM: {preview(prompt, 80)}", params={"prompt": prompt, **options})
        if params.get("schema") is not None:
            summary += " (JSON answer)"
        return Change("unknown", summary, (action,), reason=f"prompt: {shown}", data={"read_only": True})

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        """Nothing is asked at plan time: the answer is unknown until apply."""
        return self._change(str(params["prompt"]), params, "will ask the LLM")

    def pending_change(self, params: Any, pending: str) -> Change:
        """The plan when the prompt reads an earlier step's result (shown as written)."""
        raw = self.normalize(params)
        return self._change(str(raw.get("prompt", "")), raw, f"will ask the LLM after step '{pending}'")

    def run_local(self, params: dict[str, Any], ctx: StepContext) -> LocalResult:
        """Ask now. rc 0: stdout is the answer; data = {json (parsed answer when a schema was
        given, else None), provider, model, latency_s, cached}. rc 1: stderr says why (every
        provider's failure, a missing extra, a bad gateway file)."""
        start = time.monotonic()
        schema = params.get("schema")
        messages = []
        if params.get("system"):
            messages.append({"role": "system", "content": str(params["system"])})
        messages.append({"role": "user", "content": str(params["prompt"])})
        temperature = params.get("temperature")
        try:
            from runner.gateway import gateway_for

            gateway = gateway_for(params.get("gateway"), ctx.playbook_dir)
            answer = gateway.complete(messages, schema=schema, task="ask",
                                      temperature=float(temperature) if temperature is not None else None)
        except OpsrunError as exc:
            return LocalResult(1, stderr=(redact(exc.render()) + "\n").encode(),
                               duration=time.monotonic() - start)
        data = {"json": answer.data if schema is not None else None, "provider": answer.provider,
                "model": answer.model, "latency_s": round(answer.latency_s, 3), "cached": answer.cached}
        return LocalResult(0, stdout=answer.text.encode(), duration=time.monotonic() - start, data=data)

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        """ok (an answer changes nothing) or failed (no answer)."""
        r = results[-1] if results else CommandResult(1, stderr=b"not asked")
        if r.rc != 0:
            lines = r.err.strip().splitlines()
            return "failed", lines[0] if lines else f"rc {r.rc}"
        data = getattr(r, "data", None) or {}
        how = "from the cache" if data.get("cached") else f"in {float(data.get('latency_s') or 0):.2f}s"
        return "ok", f"answered by {data.get('provider')} ({data.get('model')}) {how}"


register(Ask())
