"""The plan/apply oracle: runs the real CLI (`plan --json`, `apply --yes --json`, `plan --json`) and
checks, per (host, step instance), that apply did what the plan said and that a re-plan converged.

Test helper: talks to opsrun only through its command line (a subprocess, or runner.cli.main in
this process); imports nothing else from runner.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKERS = {
    "noop": "=",
    "skip": "=",
    "create": "+",
    "update": "~",
    "delete": "-",
    "run": ">",
    "unknown": "?",
    "blocked": "!",
}
CHANGING = frozenset({"create", "update", "delete"})
Pair = tuple[str, str]  # (host, step instance)


class OracleError(AssertionError):
    """The CLI did not give the oracle something to judge (a plan that failed, no recap)."""


# ---------------------------------------------------------------- what the CLI said


@dataclass(frozen=True)
class Call:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    def show(self, limit: int = 3000) -> str:
        out = self.stdout if len(self.stdout) <= limit else "..." + self.stdout[-limit:]
        err = self.stderr if len(self.stderr) <= limit else "..." + self.stderr[-limit:]
        return f"$ opsrun {' '.join(self.argv)}  (exit {self.rc})\n--- stdout\n{out}\n--- stderr\n{err}"


@dataclass(frozen=True)
class Planned:
    """One entry of the plan's `steps[]`."""

    host: str
    instance: str
    step: str
    status: str
    summary: str
    reason: str
    actions: tuple[str, ...]
    diff: str
    conditional_on: tuple[str, ...]
    read_only: bool

    @property
    def pair(self) -> Pair:
        return (self.host, self.instance)

    @property
    def marker(self) -> str:
        return MARKERS.get(self.status, "?")

    def show(self) -> str:
        text = f"{self.marker} {self.summary}"
        if self.conditional_on:
            text += f" (only if its when holds after {', '.join(self.conditional_on)})"
        if self.reason:
            text += f" [reason: {self.reason}]"
        return text

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Planned:
        summary = str(d.get("summary") or "")
        data = d.get("data") if isinstance(d.get("data"), dict) else {}
        # the plan JSON may carry read_only itself; today only the summary says "read-only"
        read_only = bool(d.get("read_only") or (data or {}).get("read_only") or "read-only" in summary)
        return cls(
            host=str(d["host"]),
            instance=str(d["instance"]),
            step=str(d.get("step") or d["instance"]),
            status=str(d["status"]),
            summary=summary,
            reason=str(d.get("reason") or ""),
            actions=tuple(str(a.get("display", "")) for a in d.get("actions") or []),
            diff=str(d.get("diff") or ""),
            conditional_on=tuple(d.get("conditional_on") or ()),
            read_only=read_only,
        )


@dataclass
class Applied:
    """One (host, step instance) as apply reported it: its step_end and the commands it sent."""

    host: str
    instance: str
    step: str
    status: str
    message: str
    commands: list[str] = field(default_factory=list)  # the last attempt's actions

    @property
    def pair(self) -> Pair:
        return (self.host, self.instance)


@dataclass
class PlanRun:
    call: Call
    doc: dict[str, Any]
    steps: list[Planned]

    def step(self, instance: str, host: str = "local") -> Planned:
        for sp in self.steps:
            if sp.pair == (host, instance):
                return sp
        raise AssertionError(f"no step {instance!r} on {host} in the plan; it has {[s.pair for s in self.steps]}")

    def find(self, instance: str, host: str = "local") -> Planned | None:
        return next((sp for sp in self.steps if sp.pair == (host, instance)), None)


@dataclass
class ApplyRun:
    call: Call
    events: list[dict[str, Any]]
    recap: dict[str, Any]
    results: dict[Pair, Applied]

    def step(self, instance: str, host: str = "local") -> Applied:
        try:
            return self.results[(host, instance)]
        except KeyError:
            raise AssertionError(f"apply reported nothing for {instance!r} on {host}") from None


def parse_plan(call: Call) -> PlanRun:
    if call.rc not in (0, 2):
        raise OracleError(f"plan failed, so there is nothing to hold apply to:\n{call.show()}")
    try:
        doc = json.loads(call.stdout)
    except json.JSONDecodeError as exc:
        raise OracleError(f"plan --json did not print JSON ({exc}):\n{call.show()}") from None
    return PlanRun(call, doc, [Planned.from_json(s) for s in doc.get("steps") or []])


def parse_apply(call: Call) -> ApplyRun:
    events: list[dict[str, Any]] = []
    for line in call.stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    recaps = [e for e in events if e.get("type") == "recap"]
    if not recaps:
        raise OracleError(f"apply --json printed no recap line:\n{call.show()}")
    results: dict[Pair, Applied] = {}
    attempts: dict[Pair, tuple[int, list[str]]] = {}
    for ev in events:
        kind = ev.get("type")
        if kind == "attempt":
            pair = (str(ev.get("host")), str(ev.get("instance")))
            number = int(ev.get("attempt") or 0)
            last, commands = attempts.get(pair, (-1, []))
            if number != last:  # a new try: only the last try's actions count
                commands = []
            commands.append(str(ev.get("command", "")))
            attempts[pair] = (number, commands)
        elif kind == "step_end":
            pair = (str(ev.get("host")), str(ev.get("instance")))
            results[pair] = Applied(
                pair[0],
                pair[1],
                str(ev.get("step") or pair[1]),
                str(ev.get("status")),
                str(ev.get("message") or ""),
                list(attempts.get(pair, (0, []))[1]),
            )
    return ApplyRun(call, events, recaps[-1], results)


# ---------------------------------------------------------------- the promise, as pure checks


def expected_statuses(sp: Planned) -> frozenset[str] | None:
    """The apply statuses the plan entry promises; None: any (the plan said `?`)."""
    if sp.status in ("noop", "skip"):
        return frozenset({"ok", "skipped"})
    if sp.status in CHANGING:
        return frozenset({"changed"})
    if sp.status == "run":
        return frozenset({"ok"}) if sp.read_only else frozenset({"changed"})
    if sp.status == "blocked":
        return frozenset({"blocked"})
    return None


def _covered_by_unknown(pair: Pair, planned: dict[Pair, Planned]) -> bool:
    """A loop the plan could not expand (`?` on `id`) covers apply's `id[0]`, `id[1]`, ..."""
    host, instance = pair
    base = instance.split("[", 1)[0]
    sp = planned.get((host, base))
    return sp is not None and sp.status == "unknown" and base != instance


def compare(plan: Sequence[Planned], applied: dict[Pair, Applied], *, known: bool = False) -> list[str]:
    """Every (host, step instance) where apply did something else than the plan said.

    known: the playbook's outcome can be decided offline, so a `?` is itself a mismatch."""
    problems: list[str] = []
    planned = {sp.pair: sp for sp in plan}
    for sp in plan:
        got = applied.get(sp.pair)
        where = f"{sp.host}/{sp.instance}"
        if sp.status == "unknown":
            if not sp.reason.strip():
                problems.append(f"{where}: plan `?` gives no reason ({sp.summary!r})")
            if known:
                problems.append(
                    f"{where}: plan `{sp.show()}` is undecided, but the steps before it decide it; "
                    f"apply: {got.status + ' ' + repr(got.message) if got else 'nothing'}"
                )
            continue
        allowed = expected_statuses(sp)
        if got is None:
            if sp.status != "skip":  # a step the plan skips may go unmentioned by apply
                problems.append(f"{where}: plan `{sp.show()}` but apply reported nothing for it")
        elif allowed is not None and got.status not in allowed:
            hint = ""
            if sp.status == "run" and got.status == "ok":
                hint = "; if the step only reads, the plan must say so (`read_only` in its plan JSON entry)"
            problems.append(
                f"{where}: plan `{sp.show()}` but apply {got.status}: {got.message!r}"
                f" (expected {' or '.join(sorted(allowed))}{hint})"
            )
    for pair, got in applied.items():
        if pair not in planned and not _covered_by_unknown(pair, planned):
            problems.append(f"{pair[0]}/{pair[1]}: not in the plan, but apply {got.status}: {got.message!r}")
    return problems


def unconverged(plan: Sequence[Planned], non_convergent: Iterable[str] = (), *, known: bool = False) -> list[str]:
    """Entries of a re-plan after apply that still change something (and are not declared so).

    non_convergent: instance keys (`id[1]`) or step ids (all their instances) allowed to change again."""
    allowed = set(non_convergent)
    problems = []
    for sp in plan:
        if sp.instance in allowed or sp.step in allowed:
            continue
        where = f"{sp.host}/{sp.instance}"
        if sp.status == "unknown" and not sp.reason.strip():
            problems.append(f"{where}: re-plan `?` gives no reason ({sp.summary!r})")
        changes = sp.status in CHANGING or (sp.status == "run" and not sp.read_only)
        if changes or (known and sp.status == "unknown" and not sp.read_only):
            problems.append(f"{where}: re-plan after apply still says `{sp.show()}`")
    return problems


def action_mismatches(plan: Sequence[Planned], applied: dict[Pair, Applied]) -> list[str]:
    """Pairs where the actions apply sent are not the actions the plan showed."""
    problems = []
    for sp in plan:
        got = applied.get(sp.pair)
        if got is None or sp.status == "unknown" or got.status in ("skipped", "blocked", "unreachable"):
            continue
        if sp.status == "run" and not sp.actions:  # "will run after step X": its command is decided then
            continue
        if list(sp.actions) != got.commands:
            problems.append(f"{sp.host}/{sp.instance}: plan showed {list(sp.actions)} but apply sent {got.commands}")
    return problems


# ---------------------------------------------------------------- running the CLI


@dataclass
class Report:
    """Everything one oracle run saw, for further assertions by the test."""

    first: PlanRun
    apply: ApplyRun
    second: PlanRun
    problems: list[str]


class Oracle:
    """Runs opsrun in `project` (its cwd, so `.opsrun/` is private to the test) with fixed options.

    in_process: call runner.cli.main in this process (same code path as the `opsrun` command,
    without the interpreter start-up; for the property tests)."""

    def __init__(
        self,
        project: Path | str,
        *,
        inventory: Path | str | None = None,
        variables: Sequence[str] = (),
        tags: Sequence[str] = (),
        skip_tags: Sequence[str] = (),
        limit: str | None = None,
        env: dict[str, str] | None = None,
        drop_env: Sequence[str] = ("OPSRUN_STATE_DIR",),
        in_process: bool = False,
        timeout: float = 120,
    ) -> None:
        self.project = Path(project)
        self.options: list[str] = []
        if inventory is not None:
            self.options += ["-i", str(inventory)]
        for v in variables:
            self.options += ["--var", v]
        for t in tags:
            self.options += ["--tags", t]
        for t in skip_tags:
            self.options += ["--skip-tags", t]
        if limit:
            self.options += ["--limit", limit]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_env))}
        self.env.update(env or {})
        self.in_process = in_process
        self.timeout = timeout

    # -- one command
    def opsrun(self, *args: str) -> Call:
        argv = tuple(args)
        if self.in_process:
            return self._in_process(argv)
        p = subprocess.run(
            [sys.executable, "-m", "runner", *argv],
            cwd=self.project,
            env=self.env,
            text=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=self.timeout,
            check=False,
        )
        return Call(argv, p.returncode, p.stdout, p.stderr)

    def _in_process(self, argv: tuple[str, ...]) -> Call:
        from runner.cli import main

        out, err = io.StringIO(), io.StringIO()
        rc = 0
        with (
            _environment(self.env),
            contextlib.chdir(self.project),
            _stdin_closed(),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                main(list(argv))
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return Call(argv, rc, out.getvalue(), err.getvalue())

    # -- the three stages
    def plan(self, playbook: Path | str) -> PlanRun:
        return parse_plan(self.opsrun("plan", str(playbook), *self.options, "--json", "--detailed-exitcode"))

    def apply(self, playbook: Path | str) -> ApplyRun:
        return parse_apply(self.opsrun("apply", str(playbook), *self.options, "--yes", "--json"))

    def run(
        self,
        playbook: Path | str,
        *,
        non_convergent: Iterable[str] = (),
        check_actions: bool = False,
        known: bool = False,
        expect_ok: bool = True,
    ) -> Report:
        """plan, apply, re-plan; the problems found (not raised: see `check`)."""
        first = self.plan(playbook)
        applied = self.apply(playbook)
        problems = [f"apply disagrees with the plan: {p}" for p in compare(first.steps, applied.results, known=known)]
        if expect_ok and applied.call.rc != 0:
            problems.append(f"apply exited {applied.call.rc}: {applied.call.stderr.strip()[-500:]}")
        if check_actions:
            problems += [f"actions differ: {p}" for p in action_mismatches(first.steps, applied.results)]
        second = self.plan(playbook)
        problems += [f"not converged: {p}" for p in unconverged(second.steps, non_convergent, known=known)]
        return Report(first, applied, second, problems)

    def check(
        self,
        playbook: Path | str,
        *,
        non_convergent: Iterable[str] = (),
        check_actions: bool = False,
        known: bool = False,
        expect_ok: bool = True,
    ) -> Report:
        """plan, apply, re-plan, and fail with every mismatching (host, step) pair listed."""
        report = self.run(
            playbook, non_convergent=non_convergent, check_actions=check_actions, known=known, expect_ok=expect_ok
        )
        if report.problems:
            raise AssertionError(explain(playbook, self.options, report))
        return report


def explain(playbook: Path | str, options: Sequence[str], report: Report) -> str:
    lines = [f"plan/apply oracle: {len(report.problems)} problem(s) for {playbook} {' '.join(options)}".rstrip()]
    lines += [f"  - {p}" for p in report.problems]
    lines.append("  first plan:")
    lines += [f"      {sp.host}/{sp.instance}: {sp.show()}" for sp in report.first.steps]
    lines.append("  apply:")
    lines += [f"      {a.host}/{a.instance}: {a.status} {a.message!r}" for a in report.apply.results.values()]
    lines.append("  re-plan:")
    lines += [f"      {sp.host}/{sp.instance}: {sp.show()}" for sp in report.second.steps]
    return "\n".join(lines)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _stdin_closed() -> Iterator[None]:
    """No terminal to confirm on, as under CI (`--yes` is passed anyway)."""
    saved = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        yield
    finally:
        sys.stdin = saved
