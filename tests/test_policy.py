"""policy.py, table-driven: outcome + attempt history in, Done | RetryAfter | Escalate | Fail out."""

from __future__ import annotations

from typing import Any

import pytest

from runner.policy import (
    DEFAULT_ON,
    Decision,
    Done,
    Escalate,
    Fail,
    Outcome,
    Policy,
    Retry,
    RetryAfter,
    backoff_delay,
    decide,
    merge,
    retryable,
)

OK = Outcome("ok", 0)
RC1 = Outcome("nonzero", 1, stderr="E: Could not get lock /var/lib/dpkg/lock-frontend\n")
RC2 = Outcome("nonzero", 2, stdout="HTTP 503\n")
TIMEOUT = Outcome("timeout")
CONN = Outcome("connection", message="connection reset")
VERIFY = Outcome("verify", 1)
BLOCKED = Outcome("blocked", message="blocked by safety rule 'rm -rf /'")


def pol(**retry: Any) -> Policy:
    return Policy(retry=Retry(**retry))


def never(*_: Any) -> float:
    raise AssertionError("rand must not be called without jitter")


# ---------------------------------------------------------------- decide: done / retry / fail

DECIDE = [
    # (policy, attempt, outcome, expected)
    ("ok on the first try", pol(attempts=3), 1, OK, Done()),
    ("ok after retries", pol(attempts=3), 3, OK, Done()),
    ("no retry configured", pol(), 1, RC1, Fail("exit code 1")),
    ("first retry waits delay", pol(attempts=4, delay=2, backoff=3), 1, RC1, RetryAfter(2.0, "try 2 of 4")),
    ("second retry: delay*backoff", pol(attempts=4, delay=2, backoff=3), 2, RC1, RetryAfter(6.0, "try 3 of 4")),
    ("third retry: delay*backoff^2", pol(attempts=4, delay=2, backoff=3), 3, RC1, RetryAfter(18.0, "try 4 of 4")),
    ("tries used up", pol(attempts=4, delay=2, backoff=3), 4, RC1, Fail("exit code 1")),
    ("capped by max_delay", pol(attempts=9, delay=2, backoff=3, max_delay=10), 3, RC1, RetryAfter(10.0, "try 4 of 9")),
    ("constant delay (backoff 1)", pol(attempts=9, delay=5, backoff=1), 7, RC1, RetryAfter(5.0, "try 8 of 9")),
    ("zero delay", pol(attempts=2, delay=0), 1, TIMEOUT, RetryAfter(0.0, "try 2 of 2")),
    ("timeout retried by default", pol(attempts=2), 1, TIMEOUT, RetryAfter(1.0, "try 2 of 2")),
    ("connection retried by default", pol(attempts=2), 1, CONN, RetryAfter(1.0, "try 2 of 2")),
    ("verify counts as nonzero", pol(attempts=2), 1, VERIFY, RetryAfter(1.0, "try 2 of 2")),
    ("timeout, used up", pol(attempts=2), 2, TIMEOUT, Fail("timed out")),
    ("connection, used up", pol(attempts=1), 1, CONN, Fail("connection lost")),
    ("verify, used up", pol(attempts=1), 1, VERIFY, Fail("verify failed (rc 1)")),
    # blocked is never retried, whatever the policy
    ("blocked, tries left", pol(attempts=5), 1, BLOCKED, Fail("blocked by safety rule 'rm -rf /'")),
    ("blocked, ladder", Policy(Retry(attempts=5), escalate=("llm", "human")), 1, BLOCKED,
     Fail("blocked by safety rule 'rm -rf /'")),
    ("blocked, no message", pol(attempts=5), 1, Outcome("blocked"), Fail("blocked by a safety rule")),
    # `on` selects what is retried; the rest fails at once
    ("on timeout only: nonzero fails", pol(attempts=3, on=("timeout",)), 1, RC1, Fail("exit code 1")),
    ("on timeout only: timeout retried", pol(attempts=3, on=("timeout",)), 1, TIMEOUT, RetryAfter(1.0, "try 2 of 3")),
    ("on connection: timeout fails", pol(attempts=3, on=("connection",)), 1, TIMEOUT, Fail("timed out")),
    ("on rc list: selected", pol(attempts=3, on=({"rc": [2, 75]},)), 1, RC2, RetryAfter(1.0, "try 2 of 3")),
    ("on rc list: other rc", pol(attempts=3, on=({"rc": [2, 75]},)), 1, RC1, Fail("exit code 1")),
    ("on rc list: timeout has no rc", pol(attempts=3, on=({"rc": [2]},)), 1, TIMEOUT, Fail("timed out")),
    ("on stderr regex: match", pol(attempts=3, on=({"stderr": "Could not get lock"},)), 1, RC1,
     RetryAfter(1.0, "try 2 of 3")),
    ("on stderr regex: no match", pol(attempts=3, on=({"stderr": "Could not get lock"},)), 1, RC2,
     Fail("exit code 2")),
    ("on stdout regex: match", pol(attempts=3, on=({"stdout": r"HTTP 5\d\d"},)), 1, RC2,
     RetryAfter(1.0, "try 2 of 3")),
    ("on stdout regex: no match", pol(attempts=3, on=({"stdout": r"HTTP 5\d\d"},)), 1, RC1, Fail("exit code 1")),
    ("on several: any selects", pol(attempts=3, on=("timeout", {"rc": [1]})), 1, RC1,
     RetryAfter(1.0, "try 2 of 3")),
    ("on empty: nothing retried", pol(attempts=3, on=()), 1, TIMEOUT, Fail("timed out")),
]


@pytest.mark.parametrize(
    ("policy", "attempt", "outcome", "expected"), [c[1:] for c in DECIDE], ids=[c[0] for c in DECIDE]
)
def test_decide(policy: Policy, attempt: int, outcome: Outcome, expected: Decision) -> None:
    assert decide(policy, attempt, outcome, rand=never) == expected


# ---------------------------------------------------------------- delays and jitter


@pytest.mark.parametrize(
    ("retry", "attempt", "rand", "expected"),
    [
        (Retry(delay=1, backoff=2), 1, never, 1.0),
        (Retry(delay=1, backoff=2), 4, never, 8.0),
        (Retry(delay=1, backoff=2, max_delay=5), 4, never, 5.0),
        (Retry(delay=10, jitter=0.2), 1, lambda: 0.0, 8.0),  # lowest: -20 %
        (Retry(delay=10, jitter=0.2), 1, lambda: 1.0, 12.0),  # highest: +20 %
        (Retry(delay=10, jitter=0.2), 1, lambda: 0.5, 10.0),
        (Retry(delay=10, jitter=0.2, max_delay=11), 1, lambda: 1.0, 11.0),  # jitter never passes the cap
        (Retry(delay=40, backoff=2, jitter=0.5, max_delay=60), 2, lambda: 0.0, 30.0),  # capped, then jittered
        (Retry(delay=1, jitter=1.0), 1, lambda: 0.0, 0.0),  # never negative
    ],
)
def test_backoff_delay(retry: Retry, attempt: int, rand: Any, expected: float) -> None:
    assert backoff_delay(retry, attempt, rand) == pytest.approx(expected)


def test_jitter_stays_within_bounds_for_any_rand() -> None:
    retry = Retry(delay=4, backoff=2, jitter=0.25, max_delay=100)
    for i in range(101):
        r = i / 100
        d = backoff_delay(retry, 2, lambda r=r: r)
        assert 6.0 <= d <= 10.0
    decision = decide(Policy(retry=Retry(attempts=3, delay=4, jitter=0.25)), 1, TIMEOUT, rand=lambda: 1.0)
    assert decision == RetryAfter(5.0, "try 2 of 3")


# ---------------------------------------------------------------- escalation ladder


LADDER = [
    # (policy, attempt, tried, expected)
    ("llm first", Policy(escalate=("llm", "human")), 1, (), Escalate("llm", "exit code 1")),
    ("human after the llm fix", Policy(escalate=("llm", "human")), 1, ("llm",), Escalate("human", "exit code 1")),
    ("ladder used up", Policy(escalate=("llm", "human")), 1, ("llm", "human"), Fail("exit code 1")),
    ("order is the playbook's", Policy(escalate=("human", "llm")), 1, (), Escalate("human", "exit code 1")),
    ("then llm", Policy(escalate=("human", "llm")), 1, ("human",), Escalate("llm", "exit code 1")),
    ("max_llm_fixes 2: second fix", Policy(escalate=("llm", "human"), max_llm_fixes=2), 1, ("llm",),
     Escalate("llm", "exit code 1")),
    ("max_llm_fixes 2: then human", Policy(escalate=("llm", "human"), max_llm_fixes=2), 1, ("llm", "llm"),
     Escalate("human", "exit code 1")),
    ("max_llm_fixes 0 skips llm", Policy(escalate=("llm", "human"), max_llm_fixes=0), 1, (),
     Escalate("human", "exit code 1")),
    ("llm only, used", Policy(escalate=("llm",)), 1, ("llm",), Fail("exit code 1")),
    ("no ladder", Policy(), 1, (), Fail("exit code 1")),
    ("retries come before the ladder", Policy(Retry(attempts=3), escalate=("llm",)), 1, (),
     RetryAfter(1.0, "try 2 of 3")),
    ("ladder once retries are used up", Policy(Retry(attempts=3), escalate=("llm",)), 3, (),
     Escalate("llm", "exit code 1")),
]


@pytest.mark.parametrize(
    ("policy", "attempt", "tried", "expected"), [c[1:] for c in LADDER], ids=[c[0] for c in LADDER]
)
def test_escalation(policy: Policy, attempt: int, tried: tuple[str, ...], expected: Decision) -> None:
    assert decide(policy, attempt, Outcome("nonzero", 1), tried=tried, rand=never) == expected


RUN_FAILURES = [
    # (name, policy, attempt, tried, failures earlier in the run, expected)
    ("threshold reached: jumps over llm", Policy(escalate=("llm", "human"), human_after_failures=3), 1, (), 2,
     Escalate("human", "3 failures in this run; exit code 1")),
    ("threshold not reached: the ladder", Policy(escalate=("llm", "human"), human_after_failures=3), 1, (), 1,
     Escalate("llm", "exit code 1")),
    ("whatever the ladder says", Policy(escalate=("llm",), human_after_failures=1), 1, (), 0,
     Escalate("human", "1 failures in this run; exit code 1")),
    ("a human only once per step", Policy(escalate=("llm",), human_after_failures=1), 1, ("human",), 5,
     Escalate("llm", "exit code 1")),
    ("retries first", Policy(Retry(attempts=3), human_after_failures=1), 1, (), 9, RetryAfter(1.0, "try 2 of 3")),
    ("tries of one step are not run failures", Policy(Retry(attempts=5), human_after_failures=2), 5, (), 0,
     Fail("exit code 1")),
]


@pytest.mark.parametrize(
    ("policy", "attempt", "tried", "failures", "expected"), [c[1:] for c in RUN_FAILURES],
    ids=[c[0] for c in RUN_FAILURES],
)
def test_human_after_failures_in_the_run(policy: Policy, attempt: int, tried: tuple[str, ...], failures: int,
                                         expected: Decision) -> None:
    assert decide(policy, attempt, RC1, tried=tried, run_failures=failures, rand=never) == expected


# ---------------------------------------------------------------- retryable


@pytest.mark.parametrize(
    ("outcome", "on", "expected"),
    [
        (RC1, DEFAULT_ON, True),
        (VERIFY, ("nonzero",), True),
        (VERIFY, ("timeout",), False),
        (Outcome("nonzero", None), ({"rc": [1]},), False),
        (Outcome("nonzero", 0, stderr=""), ({"stderr": "x"},), False),
        (Outcome("timeout", stderr="partial: Could not get lock"), ({"stderr": "Could not get lock"},), True),
    ],
)
def test_retryable(outcome: Outcome, on: tuple[Any, ...], expected: bool) -> None:
    assert retryable(outcome, on) is expected


# ---------------------------------------------------------------- merge


def test_merge_defaults() -> None:
    assert merge() == Policy()
    assert merge(None, {}) == Policy()
    assert merge().retry == Retry(attempts=1, delay=1.0, backoff=2.0, max_delay=60.0, jitter=0.0, on=DEFAULT_ON)


def test_merge_step_over_playbook() -> None:
    playbook = {
        "timeout": 120,
        "retry": {"attempts": 4, "delay": 2, "backoff": 2, "max_delay": 30, "jitter": 0.1,
                  "on": ["timeout", "connection", {"stderr": "Could not get lock"}]},
        "escalate": ["llm", "human"],
        "max_llm_fixes": 2,
        "notify": {"webhook": "https://hooks.example/x"},
    }
    step = {"retry": {"attempts": 2, "on": ["nonzero"]}, "escalate": ["human"], "timeout": 5}
    p = merge(playbook, step)
    assert p == Policy(
        retry=Retry(attempts=2, delay=2.0, backoff=2.0, max_delay=30.0, jitter=0.1, on=("nonzero",)),
        escalate=("human",),
        max_llm_fixes=2,
        human_after_failures=None,
        auto_fix=False,
        timeout=5,
        notify={"webhook": "https://hooks.example/x"},
    )
    # the playbook layer alone keeps its own `on`
    assert merge(playbook).retry.on == ("timeout", "connection", {"stderr": "Could not get lock"})


def test_merge_three_layers_last_wins_field_by_field() -> None:
    p = merge({"retry": {"attempts": 3}}, {"retry": {"delay": 7}}, {"retry": {"attempts": 5}, "auto_fix": True})
    assert (p.retry.attempts, p.retry.delay, p.auto_fix) == (5, 7.0, True)
