"""The `run` step kind for any host with a POSIX shell, and what the shell kinds share: the
capability they need, PrepareError, local source files, owner/group checks.

Nothing here talks to a host; prepare() may read local files. Imports no transport, planner or apply.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any, ClassVar

from runner import render, secrets
from runner.model import Action, Change, CommandResult, Probe, ShellCommand, command_env
from runner.overlay import ABSENT, Effect, Overlay, PathState
from runner.steps import facts as F
from runner.steps import names, sources
from runner.steps.base import Facts, OverlayUnknown, StepContext, StepKind, register
from runner.steps.paths import view_path

POSIX = frozenset({"posix"})  # the capability shell kinds need (transports.CAPABILITIES)
q = shlex.quote
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PrepareError(Exception):
    """A local input of a step (template, source file) could not be read."""


def read_source(
    ctx: StepContext,
    params: dict[str, Any],
    what: str,
    default_limit: int = sources.DEFAULT_MAX_SIZE,
    contain: bool = True,
) -> sources.Source:
    """The step's `src`, contained and bounded (runner/steps/sources.py); PrepareError if not."""
    try:
        return sources.read_source(ctx.playbook_dir, str(params["src"]), what, default_limit, contain)
    except sources.SourceError as exc:
        raise PrepareError(str(exc)) from None


def check_accounts(params: dict[str, Any]) -> None:
    """owner / group are user and group names (or ids), never options to chown."""
    for key in ("owner", "group"):
        if params.get(key) is not None:
            problem = names.account(params[key], key)
            if problem:
                raise PrepareError(problem)


# ---------------------------------------------------------------- run


class Run(StepKind):
    name: ClassVar[str] = "run"
    needs = POSIX
    shell_fields = frozenset({"command", "unless", "only_if"})
    late_fields = frozenset({"changed_when", "failed_when"})

    def normalize(self, params: Any) -> dict[str, Any]:
        out = {"command": params} if isinstance(params, str) else dict(params)
        for key in ("changed_when", "failed_when"):  # `changed_when: false`, as Ansible users write it
            if isinstance(out.get(key), bool):
                out[key] = "true" if out[key] else "false"
        return out

    def read_only(self, params: dict[str, Any]) -> bool:
        flag = params.get("changed_when")
        return flag is False or (isinstance(flag, str) and flag.strip().lower() == "false")

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        out = []
        for key in ("creates", "removes"):
            if params.get(key):
                out.append(F.ask(ctx, "exists", str(params[key]), key=key))
        for key in ("unless", "only_if"):
            if params.get(key):
                out.append(F.ask(ctx, "check", self._wrap(params[key], params, stdin=False), key=key))
        return out

    @staticmethod
    def _wrap(command: str, params: dict[str, Any], stdin: bool = True) -> str:
        """`cd` and `export` ahead of the command; a secret env value is exported from the
        variable the transport fills from stdin, so it never shows in argv."""
        prefix = []
        secret_env: list[Any] = [command]
        if params.get("chdir"):
            prefix.append(f"cd -- {q(str(params['chdir']))} || exit 1")
        env = params.get("env") or {}
        if env:
            bad = [k for k in env if not _ENV_NAME.match(str(k))]
            if bad:
                raise PrepareError(f"env: {bad[0]!r} is not an environment variable name")
            words = []
            for k, v in env.items():
                value = v if isinstance(v, secrets.Secret) else "" if v is None else str(v)
                word = render.shell_word(value)
                secret_env.append(word)
                words.append(f"{k}={word}")
            prefix.append("export " + " ".join(words))
        return ShellCommand("; ".join([*prefix, command]), command_env(*secret_env))

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        command = self._wrap(params["command"], params)
        stdin = params.get("stdin")
        action = Action("cmd", command=command, stdin=stdin.encode() if isinstance(stdin, str) else None)
        if params.get("creates") and facts["creates"].rc == 0:
            return Change("noop", f"skip: {params['creates']} exists")
        if params.get("removes") and facts["removes"].rc != 0:
            return Change("noop", f"skip: {params['removes']} does not exist")
        if params.get("unless") and facts["unless"].rc == 0:
            return Change("noop", "skip: the 'unless' check succeeded")
        if params.get("only_if") and facts["only_if"].rc != 0:
            return Change("noop", f"skip: the 'only_if' check failed (rc {facts['only_if'].rc})")
        if self.read_only(params):
            return Change("run", "will run (read-only: changed_when is false)", (action,), data={"read_only": True})
        guarded = any(params.get(k) for k in ("creates", "removes", "unless", "only_if"))
        summary = "will run" if guarded else "will run (no guard: not idempotent)"
        return Change("run", summary, (action,))

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        for key in ("creates", "removes"):
            if params.get(key):
                facts = view_path(str(params[key]), facts, overlay, exists=(key,))
        checks = [k for k in ("unless", "only_if") if params.get(k)]
        if checks and overlay.changes:
            raise OverlayUnknown(
                f"its '{checks[0]}' check runs after step '{overlay.changes[-1]}' changes the host; "
                "its answer then cannot be known now"
            )
        return facts

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        if change.status != "run" or self.read_only(params):
            return []  # a command is opaque: only what it declares is known
        out = []
        if params.get("creates"):
            out.append(Effect(("path", str(params["creates"])), PathState("exists"), exact=False))
        if params.get("removes"):
            out.append(Effect(("path", str(params["removes"])), ABSENT, tree=True, exact=False))
        return out

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        r = results[-1] if results else CommandResult(0)
        names = {
            "rc": r.rc,
            "stdout": r.out.rstrip("\r\n"),
            "stderr": r.err.rstrip("\r\n"),
            "stdout_lines": r.out.splitlines(),
        }
        failed = r.rc != 0
        if params.get("failed_when") is not None:
            failed = bool(evaluate(str(params["failed_when"]), names))
        if failed:
            tail = (r.err or r.out).strip().splitlines()
            return "failed", f"rc {r.rc}" + (f": {tail[-1]}" if tail else "")
        changed = True
        if params.get("changed_when") is not None:
            changed = bool(evaluate(str(params["changed_when"]), names))
        return ("changed" if changed else "ok"), ""


register(Run())
