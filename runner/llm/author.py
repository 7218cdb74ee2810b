"""`opsrun author`: a request in words -> a playbook written by a model, held to a human's gates:
our validator (located errors fed back, bounded repairs), the safety rules on every shell command
and an offline plan. Shared checks (YAML dump, shell commands of steps, rules) live here too.
It never applies anything, never prints, and never imports litellm (the gateway does, in a call).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runner import load
from runner.errors import Diagnostic, InvalidInput, OpsrunError
from runner.model import Inventory, Plan
from runner.secrets import redact

if TYPE_CHECKING:
    from runner.gateway import Answer, Gateway

Check = Callable[[str], str | None]  # a command -> the name of the rule forbidding it, or None
Message = dict[str, Any]

DEFAULT_MAX_REPAIRS = 3
# schema keywords for our validator's messages, not for a model
SCHEMA_NOISE = frozenset({"$comment", "errorMessage", "patternErrorMessage", "x-hint", "$id", "$schema",
                          "title"})
_EXAMPLE_DIRS = (
    Path(__file__).resolve().parent.parent.parent / "playbooks",  # a source checkout
    Path(__file__).resolve().parent.parent / "_playbooks",  # an installed wheel
)
_KEY_ORDER = ("opsrun", "name", "description", "hosts", "vars", "policy", "strategy", "serial", "forks",
              "max_fail_percentage", "on_failure", "forbid", "steps")
_STEP_ORDER = ("id", "name", "description", "hosts", "when", "loop", "register", "tags")
_STEP_LAST = ("verify", "undo", "policy", "timeout", "sensitive")
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


# ---------------------------------------------------------------- schema for a model


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in SCHEMA_NOISE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            yield ref[len("#/$defs/"):]
        for v in value.values():
            yield from _refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)


def usable_kinds(transports: set[str]) -> set[str]:
    """Step kinds that can run on at least one of these transports."""
    from runner.steps import base

    return {name for name, kind in base.load_all().items()
            if not kind.transports or kind.transports & transports}


def model_schema(schema: dict[str, Any], kinds: set[str] | None = None) -> dict[str, Any]:
    """The playbook schema for a model: without our validator's message keywords and, when
    `kinds` is given, with only those step kinds (and the $defs they still use)."""
    out: dict[str, Any] = _strip(schema)
    defs: dict[str, Any] = out.get("$defs", {})
    body = defs.get("step_body")
    if kinds is not None and isinstance(body, dict):
        props = body.get("properties", {})
        gone = {name for name, sub in props.items()
                if isinstance(sub, dict) and str(sub.get("$ref", "")).startswith("#/$defs/kind_")
                and name not in kinds}
        body["properties"] = {k: v for k, v in props.items() if k not in gone}
        body["oneOf"] = [b for b in body.get("oneOf", []) if b.get("required", [None])[0] not in gone]
        # keep only the $defs still reachable from the root
        keep: set[str] = set()
        todo = list(_refs({k: v for k, v in out.items() if k != "$defs"}))
        while todo:
            name = todo.pop()
            if name in keep or name not in defs:
                continue
            keep.add(name)
            todo.extend(_refs(defs[name]))
        out["$defs"] = {k: v for k, v in defs.items() if k in keep}
    return out


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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
        base = self.messages(request)
        messages = list(base)
        verdicts: dict[str, Verdict] = {}

        def judge(text: str, data: Any = None) -> Verdict:
            if text not in verdicts:
                if data is None:
                    try:
                        data = json.loads(text)
                    except ValueError:
                        data = None
                verdicts[text] = self.check(data)
            return verdicts[text]

        tries = 1 + self.max_repairs
        verdict = Verdict(None)
        for attempt in range(1, tries + 1):
            answer = self.gateway.complete(messages, schema=self.schema, task="author", validate_schema=False,
                                           accept=lambda text: judge(text).ok)
            verdict = judge(answer.text, answer.data)
            if verdict.ok:
                assert verdict.doc is not None
                header = self.header(request, answer, attempt)
                return Draft(header + verdict.doc.text, verdict.doc.text, verdict.doc.data, answer, attempt,
                             self.file, verdict.plan)
            if attempt < tries:
                messages = [*base, {"role": "assistant", "content": answer.text},
                            {"role": "user", "content": self.feedback(verdict, tries - attempt)}]
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
