"""The gates an LLM's output must pass before anyone may use it, shared by `author` and the
fixer: YAML for located messages, the shell commands a step holds, the safety rules, the kinds
a model may use, and one judge-and-repair loop under one deadline (the schema a model is
given is runner/llm/grammar.py). Prints nothing, runs nothing, and imports the gateway only
for types (and its token counter, inside the loop).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import yaml

from runner import load
from runner.errors import Diagnostic
from runner.load import strip_fence

if TYPE_CHECKING:
    from runner.gateway import Answer, Gateway

Check = Callable[[str], str | None]  # a command -> the name of the rule forbidding it, or None
Message = dict[str, Any]

_KEY_ORDER = ("opsrun", "name", "description", "hosts", "vars", "policy", "strategy", "serial", "forks",
              "max_fail_percentage", "on_failure", "forbid", "steps")
_STEP_ORDER = ("id", "name", "description", "hosts", "when", "loop", "register", "tags")
_STEP_LAST = ("verify", "undo", "policy", "timeout", "sensitive")


# ---------------------------------------------------------------- YAML


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings as `|` literals."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if any(ch in value for ch in "\x85\u2028\u2029\r"):  # YAML line breaks: escaped, or read back changed
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    if "\n" in value and all(ch == "\n" or ch.isprintable() for ch in value) and value.strip() == value.rstrip():
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def _ordered(data: Any) -> Any:
    """Playbook keys in the order people write them (unknown keys keep their place at the end)."""
    if not isinstance(data, dict):
        return data
    out = {k: data[k] for k in _KEY_ORDER if k in data}
    out.update((k, v) for k, v in data.items() if k not in out)
    steps = out.get("steps")
    if isinstance(steps, list):
        out["steps"] = [_ordered_step(s) for s in steps]
    return out


def _ordered_step(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    out = {k: step[k] for k in _STEP_ORDER if k in step}
    out.update((k, v) for k, v in step.items() if k not in out and k not in _STEP_LAST)
    out.update((k, step[k]) for k in _STEP_LAST if k in step)
    if isinstance(out.get("undo"), dict):
        out["undo"] = _ordered_step(out["undo"])
    return out


def to_yaml(data: Any) -> str:
    """JSON-shaped data -> YAML text that parses back to the same data."""
    return yaml.dump(_ordered(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100, indent=2)


def numbered(text: str) -> str:
    """`  7 | line` for every line: located errors are easy to match to the text."""
    lines = text.splitlines()
    width = len(str(len(lines)))
    return "\n".join(f"{i:>{width}} | {line}" for i, line in enumerate(lines, 1))


# ---------------------------------------------------------------- shell commands and rules


def step_commands(step: Any, path: load.PathKey) -> Iterator[tuple[load.PathKey, str]]:
    """Every shell command a step (as written) holds: its kind's shell fields (run.command,
    unless, only_if, adb.shell, ...), verify, and undo (a command or a step, recursively)."""
    if not isinstance(step, dict):
        return
    from runner.config import STEP_COMMON
    from runner.steps import base

    registry = base.load_all()
    for key, params in step.items():
        if key in STEP_COMMON or key not in registry:
            continue
        kind = registry[key]
        if not kind.shell_fields:
            continue
        if isinstance(params, str):
            yield (*path, key), params
        elif isinstance(params, dict):
            for name in sorted(kind.shell_fields):
                if isinstance(params.get(name), str):
                    yield (*path, key, name), params[name]
    verify = step.get("verify")
    if isinstance(verify, str):
        yield (*path, "verify"), verify
    elif isinstance(verify, dict) and isinstance(verify.get("command"), str):
        yield (*path, "verify", "command"), verify["command"]
    undo = step.get("undo")
    if isinstance(undo, str):
        yield (*path, "undo"), undo
    elif isinstance(undo, dict):
        yield from step_commands(undo, (*path, "undo"))


def playbook_commands(data: Any) -> list[tuple[load.PathKey, str]]:
    steps = data.get("steps") if isinstance(data, dict) else None
    out: list[tuple[load.PathKey, str]] = []
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        out.extend(step_commands(step, ("steps", i)))
    return out


def load_rules(forbid: Sequence[str] = (), allow: Sequence[str] = ()) -> Check:
    """The safety rules (built-ins plus these lists) as a check function. Raises InvalidInput
    for an entry that is not a rule name, a glob or re:REGEX."""
    from runner.safety import Rules

    check: Check = Rules(forbid=list(forbid), allow=list(allow)).check
    return check


def one_line(command: str, limit: int = 160) -> str:
    """A command for a message: newlines shown as `; `, cut at `limit` characters."""
    text = "; ".join(part.strip() for part in command.strip().splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_check(rules: Any) -> Check:
    """A rules object (with .check) or a plain function -> a function."""
    check = getattr(rules, "check", rules)
    if not callable(check):
        raise TypeError("rules must be a function or have a check(command) method")
    return check


def safety_diagnostics(doc: load.Document, checks: Sequence[Check], *, commands: Sequence[tuple[load.PathKey, str]]
                       | None = None) -> list[tuple[Diagnostic, str]]:
    """(diagnostic, rule) for every command a rule forbids."""
    out = []
    for path, command in commands if commands is not None else playbook_commands(doc.data):
        for check in checks:
            rule = check(command)
            if rule:
                out.append((doc.diag(path, f"blocked by safety rule '{rule}': {one_line(command)}",
                                     hint="do it another way; opsrun refuses this command on these hosts"),
                            rule))
                break
    return out


# ---------------------------------------------------------------- kinds for a model


def usable_kinds(transports: set[str]) -> set[str]:
    """Step kinds that can run on at least one of these transports."""
    from runner.steps import base

    return {name for name, kind in base.load_all().items()
            if any(kind.runs_on(t) for t in transports)}


def kind_hints(diags: Sequence[Diagnostic], usable: set[str]) -> list[Diagnostic]:
    """Diagnostics for a model, naming only the kinds it may use: the validator's lists of
    every step kind ("add exactly one of: ...", "step kinds are: ...") become the usable
    ones, and a "did you mean" pointing at an unusable kind lists the usable ones instead."""
    from dataclasses import replace

    from runner import schema

    every = ", ".join(sorted(schema.kind_names()))
    mine = ", ".join(sorted(usable))
    out = []
    for d in diags:
        hint, message = d.hint.replace(every, mine), d.message.replace(every, mine)
        guess = re.fullmatch(r"did you mean '([^']+)'\?", hint)
        if guess and guess.group(1) in schema.kind_names() and guess.group(1) not in usable:
            hint = f"step kinds here are: {mine}"
        out.append(replace(d, hint=hint, message=message))
    return out


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------- judge and repair


class Verdict(Protocol):
    @property
    def ok(self) -> bool: ...


V = TypeVar("V", bound=Verdict)


@dataclass(frozen=True)
class NotJSON:
    """An answer that does not parse as JSON, and what the parser said."""

    error: str


def parse_answer(text: str) -> Any:
    """The JSON value of an answer (a surrounding ``` fence removed), or NotJSON."""
    body = strip_fence(text)
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        return NotJSON(f"{exc.msg} at line {exc.lineno} column {exc.colno}")
    except ValueError as exc:
        return NotJSON(str(exc))


class Judge(Generic[V]):
    """Checks answers, once per distinct text: `check(parsed JSON, or NotJSON) -> verdict`."""

    def __init__(self, check: Callable[[Any], V]) -> None:
        self.check = check
        self._seen: dict[str, V] = {}

    def __call__(self, text: str, data: Any = None) -> V:
        if text not in self._seen:
            self._seen[text] = self.check(parse_answer(text) if data is None else data)
        return self._seen[text]


@dataclass
class Outcome(Generic[V]):
    """The last answer, its verdict, how many tries it took, the characters the repair
    rounds added to the prompt, and whether the run's deadline stopped the repairs."""

    answer: Answer
    verdict: V
    tries: int
    repair_chars: int = 0
    out_of_time: bool = False

    @property
    def ok(self) -> bool:
        return self.verdict.ok


def repair_loop(gateway: Gateway, base: list[Message], judge: Judge[V], *, schema: dict[str, Any], task: str,
                tries: int, feedback: Callable[[V, int], str], max_tokens: int | None = None,
                min_answer_tokens: int = 64, deadline: float | None = None) -> Outcome[V]:
    """Ask; judge the answer with our own gates (an answer that is not JSON is judged too:
    the parser's message goes back); feed the problems back (`feedback(verdict,
    tries_left)`) and ask again, up to `tries` in all. One deadline (default: the
    gateway's deadline_s from now) covers every request of the loop. A repair round needs
    room for an answer as long as the last one. Only answers the judge accepts are cached.
    Raises the gateway's errors when no model answered."""
    from runner.gateway.tokens import estimate

    deadline = gateway.deadline() if deadline is None else deadline
    messages = list(base)
    extra = 0
    need = min_answer_tokens
    outcome: Outcome[V] | None = None
    for attempt in range(1, tries + 1):
        if outcome is not None and gateway.out_of_time(deadline):
            outcome.out_of_time = True
            return outcome
        answer = gateway.complete(messages, schema=schema, task=task, validate_schema=False,
                                  accept_invalid_json=True, accept=lambda text: judge(text).ok,
                                  max_tokens=max_tokens, min_answer_tokens=need, deadline=deadline,
                                  answer_tokens=max_tokens)
        outcome = Outcome(answer, judge(answer.text, answer.data), attempt, extra)
        if outcome.ok or attempt == tries:
            return outcome
        messages = [*base, {"role": "assistant", "content": answer.text},
                    {"role": "user", "content": feedback(outcome.verdict, tries - attempt)}]
        extra += sum(len(m["content"]) for m in messages[len(base):])
        need = max(min_answer_tokens, min(estimate(answer.text), max_tokens or estimate(answer.text)))
    assert outcome is not None  # tries >= 1
    return outcome
