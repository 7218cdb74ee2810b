"""Pure retry-and-escalate decisions: attempt history in, Done | Retry | Escalate | Fail out.

No I/O, no clock, no transport: the caller sleeps, escalates and journals. Randomness
(jitter) comes in as a function so tests pin it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

OutcomeKind = Literal["ok", "nonzero", "timeout", "connection", "blocked", "verify", "until"]
DEFAULT_ON = ("nonzero", "timeout", "connection")


@dataclass(frozen=True)
class Retry:
    attempts: int = 1  # total tries, first included
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.0  # fraction: 0.2 -> each delay within +-20 %
    on: tuple[Any, ...] = DEFAULT_ON


@dataclass(frozen=True)
class Policy:
    retry: Retry = field(default_factory=Retry)
    escalate: tuple[str, ...] = ()  # ladder: "llm", "human"
    max_llm_fixes: int = 1
    human_after_failures: int | None = None
    auto_fix: bool = False
    timeout: float | None = None
    notify: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    message: str = ""


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class RetryAfter:
    delay: float
    reason: str = ""


@dataclass(frozen=True)
class Escalate:
    to: str  # "llm" | "human"
    reason: str = ""


@dataclass(frozen=True)
class Fail:
    reason: str


Decision = Done | RetryAfter | Escalate | Fail


def merge(*layers: dict[str, Any] | None) -> Policy:
    """Later layers override earlier ones key by key (`retry` merged field by field)."""
    flat: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        for key, value in layer.items():
            if key == "retry" and isinstance(value, dict):
                retry.update(value)
            else:
                flat[key] = value
    r = Retry(
        attempts=int(retry.get("attempts", 1)),
        delay=float(retry.get("delay", 1.0)),
        backoff=float(retry.get("backoff", 2.0)),
        max_delay=float(retry.get("max_delay", 60.0)),
        jitter=float(retry.get("jitter", 0.0)),
        on=tuple(retry.get("on", DEFAULT_ON)),
    )
    return Policy(
        retry=r,
        escalate=tuple(flat.get("escalate", ())),
        max_llm_fixes=int(flat.get("max_llm_fixes", 1)),
        human_after_failures=flat.get("human_after_failures"),
        auto_fix=bool(flat.get("auto_fix", False)),
        timeout=flat.get("timeout"),
        notify=dict(flat.get("notify") or {}),
    )


def retryable(outcome: Outcome, on: tuple[Any, ...]) -> bool:
    """Does any `on` condition select this failure for a retry?"""
    for cond in on:
        if isinstance(cond, str):
            if cond == outcome.kind or (cond == "nonzero" and outcome.kind == "verify"):
                return True
        elif isinstance(cond, dict):
            if "rc" in cond and outcome.rc is not None and outcome.rc in cond["rc"]:
                return True
            if "stderr" in cond and re.search(cond["stderr"], outcome.stderr or ""):
                return True
            if "stdout" in cond and re.search(cond["stdout"], outcome.stdout or ""):
                return True
    return False


def backoff_delay(retry: Retry, attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before try number attempt+1 (attempt = tries made so far, >= 1)."""
    base = retry.delay * (retry.backoff ** max(0, attempt - 1))
    base = min(base, retry.max_delay)
    if retry.jitter:
        base *= 1 + retry.jitter * (2 * rand() - 1)
    return max(0.0, min(base, retry.max_delay))


def decide(
    policy: Policy,
    attempt: int,
    outcome: Outcome,
    *,
    tried: tuple[str, ...] = (),
    run_failures: int = 0,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What to do after try number `attempt` ended with `outcome`.

    `attempt` counts the tries of this step so far; `tried` lists escalation rungs already
    used for this step (in order); `run_failures` counts the steps that already failed in
    this run. Once retries are used up, `human_after_failures` sends the step to a human,
    whatever the ladder says, when this failure makes that many in the run."""
    if outcome.kind == "ok":
        return Done()
    if outcome.kind == "blocked":
        return Fail(outcome.message or "blocked by a safety rule")
    if attempt < policy.retry.attempts and retryable(outcome, policy.retry.on):
        return RetryAfter(backoff_delay(policy.retry, attempt, rand), f"try {attempt + 1} of {policy.retry.attempts}")
    why = _describe(outcome)
    if (
        policy.human_after_failures is not None
        and run_failures + 1 >= policy.human_after_failures
        and "human" not in tried
    ):
        return Escalate("human", f"{run_failures + 1} failures in this run; {why}")
    for rung in policy.escalate:
        used = tried.count(rung)
        if rung == "llm" and used < max(0, policy.max_llm_fixes):
            return Escalate("llm", why)
        if rung == "human" and used == 0:
            return Escalate("human", why)
    return Fail(why)


def _describe(outcome: Outcome) -> str:
    if outcome.kind == "nonzero":
        return f"exit code {outcome.rc}"
    if outcome.kind == "timeout":
        return "timed out"
    if outcome.kind == "connection":
        return "connection lost"
    if outcome.kind == "verify":
        return "verify failed" + (f" (rc {outcome.rc})" if outcome.rc is not None else "")
    if outcome.kind == "until":
        return outcome.message or "until not met"
    return outcome.message or outcome.kind
