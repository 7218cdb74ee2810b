"""`opsrun author`: a request in words -> a playbook written by a model, held to a human's gates
(runner/llm/gates.py): our validator (located errors fed back, bounded repairs), the safety
rules on every shell command and an offline plan. It never applies anything, never prints,
and never imports litellm (the gateway does, in a call).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import load
from runner.errors import Diagnostic, InvalidInput, OpsrunError
from runner.llm.gates import (
    Check,
    Judge,
    Message,
    compact_json,
    load_rules,
    model_schema,
    numbered,
    repair_loop,
    safety_diagnostics,
    to_yaml,
    usable_kinds,
)
from runner.model import Inventory, Plan
from runner.secrets import redact

if TYPE_CHECKING:
    from runner.gateway import Answer, Gateway

DEFAULT_MAX_REPAIRS = 3
_EXAMPLE_DIRS = (
    Path(__file__).resolve().parent.parent.parent / "playbooks",  # a source checkout
    Path(__file__).resolve().parent.parent / "_playbooks",  # an installed wheel
)
SMALL_EXAMPLE = {
    "opsrun": 1,
    "name": "nginx on the web servers",
    "hosts": "web",
    "steps": [
        {"id": "nginx_pkg", "name": "Install nginx", "package": {"name": ["nginx"], "state": "present"}},
        {"id": "index", "name": "Home page", "file": {"path": "/var/www/html/index.html",
                                                       "content": "<h1>{{ inventory_hostname }}</h1>\n",
                                                       "mode": "0644"}},
        {"id": "nginx_svc", "name": "nginx running at boot",
         "service": {"name": "nginx", "state": "started", "enabled": True}},
        {"id": "probe", "name": "Answers on port 80",
         "run": {"command": "curl -fsS http://127.0.0.1/ >/dev/null", "changed_when": "false"}},
    ],
}


# ---------------------------------------------------------------- the author


class AuthorError(OpsrunError):
    """The model's playbook still fails a gate after every repair; `rule` is set when a
    safety rule refused it."""

    def __init__(self, message: str, diagnostics: Sequence[Diagnostic], *, tries: int,
                 rule: str | None = None, hint: str = "") -> None:
        super().__init__(redact(message), hint=hint)
        self.diagnostics = list(diagnostics)
        self.tries = tries
        self.rule = rule

    def render(self) -> str:
        lines = [redact(d.render()) for d in self.diagnostics]
        return "\n".join([*lines, super().render()])


@dataclass
class Verdict:
    """One answer checked: the document, what is wrong with it, and (when clean) its plan."""

    doc: load.Document | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # safety rules that fired
    plan: Plan | None = None

    @property
    def ok(self) -> bool:
        return not self.diagnostics


@dataclass(frozen=True)
class Draft:
    """A playbook that passed every gate. `text` is the file to write (header included)."""

    text: str
    body: str
    data: dict[str, Any]
    answer: Answer
    tries: int
    file: str
    plan: Plan | None


class Author:
    """Writes one playbook for `inventory`. `file` is where it will be written (diagnostics and
    template sources are relative to it)."""

    def __init__(self, gateway: Gateway, inventory: Inventory, *, file: str = "playbook.yaml",
                 max_repairs: int = DEFAULT_MAX_REPAIRS, now: Callable[[], datetime] | None = None) -> None:
        from runner.schema import load_schema

        self.gateway = gateway
        self.inventory = inventory
        self.file = file
        self.max_repairs = max(0, max_repairs)
        self.now = now or (lambda: datetime.now(UTC))
        transports = {h.transport for h in inventory.hosts.values()}
        self.schema = model_schema(load_schema("playbook"), usable_kinds(transports))
        self._checks: dict[tuple[tuple[str, ...], tuple[str, ...]], Check] = {}

    # ------------------------------------------------------------ prompt
    def messages(self, request: str) -> list[Message]:
        hosts = "\n".join(f"- {h.name} (transport {h.transport})" for h in self.inventory.hosts.values())
        groups = "\n".join(f"- {g}: {', '.join(members) or '(empty)'}"
                           for g, members in self.inventory.groups.items()) or "(none)"
        shown = "\n\n".join(f"Example ({name}):\n{compact_json(data)}" for name, data in examples())
        system = (
            "You write opsrun playbooks: declarative YAML files that bring hosts to a desired state. "
            "Answer with ONE JSON object, the playbook, and nothing else. It must follow this JSON Schema:\n"
            f"{compact_json(self.schema)}\n\n"
            "Rules:\n"
            "- `opsrun: 1`, a short `name`, `hosts` (only the hosts and groups listed below, or all), `steps`.\n"
            "- Every step has a unique `id` (lowercase letters, digits, _) and exactly one step kind.\n"
            "- Prefer the declarative kinds (file, line, template, package, service, ...) over `run`; give "
            "`run` a guard (creates, removes, unless, only_if) or changed_when: \"false\" when it only reads.\n"
            "- Use templates like {{ var }} only for variables defined in `vars`, inventory_hostname, or "
            "earlier steps' results (steps.<id>.stdout).\n"
            "- Secrets are never written out: use secret('NAME') in templates.\n"
            "- Never add `allow:` and never run destructive commands: opsrun's safety rules refuse them.\n\n"
            f"Hosts in the inventory:\n{hosts}\n\nGroups:\n{groups}\n\n{shown}"
        )
        user = f"Write a playbook for this request:\n{request.strip()}"
        return [{"role": "system", "content": redact(system)}, {"role": "user", "content": redact(user)}]

    def feedback(self, verdict: Verdict, tries_left: int) -> str:
        n = len(verdict.diagnostics)
        lines = [f"Your playbook has {n} problem{'s' if n != 1 else ''} "
                 f"(positions refer to this YAML form of your JSON):"]
        lines += [d.render() for d in verdict.diagnostics]
        if verdict.doc is not None:
            lines += ["", numbered(verdict.doc.text)]
        lines += ["", f"Fix every problem and answer with the whole corrected playbook as one JSON object "
                      f"({tries_left} tr{'ies' if tries_left != 1 else 'y'} left)."]
        return redact("\n".join(lines))

    # ------------------------------------------------------------ checks
    def _check_for(self, forbid: Sequence[str], allow: Sequence[str]) -> Check:
        key = (tuple(forbid), tuple(allow))
        if key not in self._checks:
            self._checks[key] = load_rules(forbid, allow)
        return self._checks[key]

    def checks(self, data: Any, doc: load.Document) -> tuple[list[Check], list[Diagnostic]]:
        """The safety rules of every host the playbook targets: the inventory's lists plus the
        playbook's own forbid list (never an allow list a model wrote); bad own entries reported."""
        from runner.config import match_hosts
        from runner.safety import validate_entry

        own_forbid: list[str] = []
        diags: list[Diagnostic] = []
        raw = data.get("forbid")
        for i, entry in enumerate(raw if isinstance(raw, list) else []):
            why = validate_entry(entry)
            if why:
                diags.append(doc.diag(("forbid", i), f"forbid entry: {why}"))
            else:
                own_forbid.append(entry)
        try:
            targets = match_hosts(self.inventory, data.get("hosts"))
        except (TypeError, AttributeError, IndexError):
            targets = []
        hosts = [self.inventory.hosts[h] for h in targets] or list(self.inventory.hosts.values())
        seen: dict[tuple[tuple[str, ...], tuple[str, ...]], Check] = {}
        for h in hosts:
            key = (tuple([*h.forbid, *own_forbid]), tuple(h.allow))
            seen.setdefault(key, self._check_for(*key))
        return list(seen.values()), diags

    def check(self, data: Any) -> Verdict:
        """Schema and semantics, safety rules, then an offline plan (renders every template)."""
        from runner import schema

        if not isinstance(data, dict):
            got = type(data).__name__ if data is not None else "nothing"
            return Verdict(None, [Diagnostic(self.file, 0, 0, f"the answer must be one JSON object "
                                                              f"(a playbook), got {got}")])
        text = to_yaml(data)
        doc = load.parse(text, self.file)
        diags = schema.validate_playbook(doc, hosts=set(self.inventory.hosts), groups=set(self.inventory.groups))
        if "allow" in data:
            diags.append(doc.diag(("allow",), "an authored playbook cannot add exceptions to the safety rules",
                                  hint="remove `allow:`; a person may add one after review", key=True))
        checks, bad_rules = self.checks(data, doc)
        blocked = safety_diagnostics(doc, checks)
        diags += bad_rules + [d for d, _ in blocked]
        verdict = Verdict(doc, diags, [r for _, r in blocked])
        if not diags:
            try:
                verdict.plan = self.offline_plan(doc)
            except InvalidInput as exc:
                verdict.diagnostics += exc.diagnostics or [Diagnostic(self.file, 0, 0, exc.message, hint=exc.hint)]
        unique: dict[tuple[int, int, str], Diagnostic] = {}
        for d in verdict.diagnostics:  # the validator may report a bad forbid entry too: keep its hint
            unique.setdefault((d.line, d.col, d.message), d)
        verdict.diagnostics = sorted(unique.values(), key=lambda d: (d.line, d.col))
        return verdict

    def offline_plan(self, doc: load.Document) -> Plan:
        """`opsrun plan FILE --offline`: renders every step, probes nothing, sends nothing."""
        from runner import config, schema
        from runner.planner import make_plan
        from runner.session import Session, select_hosts

        playbook = config.build_playbook(doc, set(schema.kind_names()))
        with Session(self.inventory, playbook, {}) as session:
            hosts = select_hosts(self.inventory, playbook, None)
            plan, _ = make_plan(session, hosts, offline=True)
        return plan

    # ------------------------------------------------------------ the loop
    def write(self, request: str) -> Draft:
        """Ask, check, feed the problems back, up to 1 + max_repairs tries. Raises AuthorError
        (still invalid, or refused by a safety rule) or the gateway's GatewayError/MissingExtra."""
        if not request.strip():
            raise InvalidInput("the request is empty", hint='opsrun author "install nginx on the web group"')
        tries = 1 + self.max_repairs
        out = repair_loop(self.gateway, self.messages(request), Judge(self.check), schema=self.schema,
                          task="author", tries=tries, feedback=self.feedback)
        verdict = out.verdict
        if verdict.ok:
            assert verdict.doc is not None
            header = self.header(request, out.answer, out.tries)
            return Draft(header + verdict.doc.text, verdict.doc.text, verdict.doc.data, out.answer, out.tries,
                         self.file, verdict.plan)
        if verdict.rules:
            rule = verdict.rules[0]
            raise AuthorError(
                f"refused: the model's playbook still runs a command forbidden by safety rule '{rule}' "
                f"after {tries} tr{'ies' if tries != 1 else 'y'}; nothing was written",
                verdict.diagnostics, tries=tries, rule=rule,
                hint="reword the request, or write this step yourself")
        raise AuthorError(
            f"the model's playbook is still not valid after {tries} tr{'ies' if tries != 1 else 'y'}; "
            "nothing was written", verdict.diagnostics, tries=tries,
            hint="try --max-repairs with a higher number, a clearer request, or a stronger model")

    def header(self, request: str, answer: Answer, tries: int) -> str:
        when = self.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"# Written by `opsrun author` on {when}.", "# Request:"]
        lines += [f"#   {line}".rstrip() for line in redact(request.strip()).splitlines()]
        how = f"{tries} tries" if tries != 1 else "first try"
        lines.append(f"# Model: {answer.model} (provider {answer.provider}, {how}). "
                     "Review it, then: opsrun plan this file.")
        lines.append(f"# yaml-language-server: $schema={schema_ref(self.file)}")
        return "\n".join(lines) + "\n"


def schema_ref(file: str) -> str:
    """Where editors find the playbook schema, relative to `file` (else its $id URL)."""
    from runner.schema import load_schema, schema_file

    path = schema_file("playbook")
    if path is None:
        return str(load_schema("playbook").get("$id", "playbook.schema.json"))
    folder = Path(file).resolve().parent
    try:
        return Path(os.path.relpath(path.resolve(), folder)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.resolve().as_uri()


def examples() -> list[tuple[str, Any]]:
    """Short example playbooks for the prompt: hello.yaml when installed, plus a small one."""
    out: list[tuple[str, Any]] = []
    for folder in _EXAMPLE_DIRS:
        path = folder / "hello.yaml"
        if path.is_file():
            with contextlib.suppress(OSError, InvalidInput):
                out.append(("playbooks/hello.yaml", load.read(path).data))
            break
    out.append(("a web group", SMALL_EXAMPLE))
    return out


def author(gateway: Gateway, request: str, inventory: Inventory, *, file: str = "playbook.yaml",
           max_repairs: int = DEFAULT_MAX_REPAIRS, now: Callable[[], datetime] | None = None) -> Draft:
    """One call: see Author.write."""
    return Author(gateway, inventory, file=file, max_repairs=max_repairs, now=now).write(request)
