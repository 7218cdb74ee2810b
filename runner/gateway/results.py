"""What the gateway hands back: answers, attempts, health and bench results, and the error
when no provider answered. Plain data; imports only runner.errors and runner.secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.errors import OpsrunError
from runner.secrets import redact


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
    answered: bool = False  # the provider answered, but not usably (not JSON, cut, off-schema)
    unfit: bool = False  # passed over: the prompt does not fit its context_tokens


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
    """No usable answer; the message names every attempt and what happened to it. Its first
    words say which case it is: a provider answered but not usably (not JSON, cut at
    max_tokens, off-schema), the prompt fits no provider's context, or nobody answered."""

    def __init__(self, attempts: Sequence[Attempt], *, task: str = "ask", why: str = "") -> None:
        self.attempts = list(attempts)
        text = why or describe(self.attempts) or "no provider configured"
        if self.answered:
            head, hint = "no usable LLM answer", "the provider works; see docs/llm.md, Structured answers"
        elif self.attempts and all(a.unfit for a in self.attempts):
            head, hint = "the prompt fits no LLM provider", "see docs/llm.md, Context sizing"
        else:
            head, hint = "no LLM provider answered", \
                "`opsrun gateway check` shows each provider's health; see docs/llm.md"
        super().__init__(redact(f"{head} ({task}): {text}"), hint=hint)

    @property
    def answered(self) -> bool:
        """Some provider answered (the answer was not usable)."""
        return any(a.answered for a in self.attempts)


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
    """`opsrun gateway bench` for one provider and model: median latency, mean tokens in and
    out per request, mean output tokens per second."""

    provider: str
    model: str
    ok: bool
    latency_ms: float | None = None
    tokens_per_s: float | None = None
    runs: int = 0
    error: str = ""
    tokens_in: float | None = None
    tokens_out: float | None = None


class Failure(Exception):
    """One failed attempt, already translated into words for a person. `answered`: the
    provider did answer, but the answer is unusable (the server works)."""

    def __init__(self, message: str, *, retryable: bool = False, trip: bool = True,
                 retry_after: float | None = None, answered: bool = False) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.retryable = retryable
        self.trip = trip and not answered
        self.retry_after = retry_after
        self.answered = answered

