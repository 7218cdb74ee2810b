"""`opsrun author`: a request in words -> a playbook written by a model, held to a human's gates
(runner/llm/gates.py): our validator (located errors fed back, bounded repairs), the safety
rules on every shell command and an offline plan. It never applies anything, never prints,
and never imports litellm (the gateway does, in a call).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import load
from runner.errors import Diagnostic, InvalidInput, OpsrunError
from runner.llm import grammar
from runner.llm.gates import (
    Check,
    Judge,
    Message,
    NotJSON,
    compact_json,
    kind_hints,
    load_rules,
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
MIN_ANSWER_TOKENS = 256  # the shortest playbook worth asking for
# a repair round holds the prompt, the last answer, its errors with the numbered YAML of it
# (about 1.2 times the answer) and room for a new answer: 3.2 answers and FEEDBACK_TOKENS
REPAIR_FACTOR = 3.2
FEEDBACK_TOKENS = 150
MAX_HOSTS_SHOWN = 20
MAX_TARGETS_IN_SCHEMA = 64
MAX_MEMBERS_SHOWN = 8
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


ADB_EXAMPLE = {
    "opsrun": 1,
    "name": "kiosk screen stays on",
    "hosts": "kiosks",
    "steps": [
        {"id": "booted", "adb.wait": {"for": "boot_completed", "timeout": 180}},
        {"id": "stay_awake", "adb.setting": {"namespace": "global", "key": "stay_on_while_plugged_in", "value": 7}},
        {"id": "kiosk_app", "adb.app": {"package": "com.example.kiosk", "state": "started"}},
    ],
}
PROXMOX_EXAMPLE = {
    "opsrun": 1,
    "name": "a test container",
    "hosts": "pve",
    "steps": [
        {"id": "nodes", "proxmox.query": "nodes"},
        {"id": "web", "proxmox.lxc": {"vmid": 201, "hostname": "web1", "cores": 1, "memory": 512,
                                      "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                                      "state": "running"}},
    ],
}
EXAMPLES = (SMALL_EXAMPLE, ADB_EXAMPLE, PROXMOX_EXAMPLE)


class ContextTooSmall(OpsrunError):
    """The prompt leaves too little of a provider's context_tokens for an answer (and its
    repairs); the message names the numbers."""


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
                 max_repairs: int = DEFAULT_MAX_REPAIRS, now: Callable[[], datetime] | None = None,
                 command: str = "author") -> None:
        from runner.schema import load_schema

        self.gateway = gateway
        self.inventory = inventory
        self.file = file
        self.max_repairs = max(0, max_repairs)
        self.now = now or (lambda: datetime.now(UTC))
        self.command = command  # named in the header: `opsrun author`, `opsrun do`
        transports = {h.transport for h in inventory.hosts.values()}
        self.kinds = usable_kinds(transports)
        self.schema = grammar.model_schema(self.kinds, playbook=load_schema("playbook"))
        self.shape = grammar.compact(self.schema, kind_notes(self.kinds))  # before hosts become names
        targets = ["all", *inventory.groups, *inventory.hosts]
        if len(targets) <= MAX_TARGETS_IN_SCHEMA:  # the grammar then writes only names that exist
            names = {"enum": targets}
            self.schema["properties"]["hosts"] = {"anyOf": [names, {"type": "array", "minItems": 1,
                                                                     "items": names}]}
        self._checks: dict[tuple[tuple[str, ...], tuple[str, ...]], Check] = {}

    # ------------------------------------------------------------ prompt
    def messages(self, request: str, context: str = "") -> list[Message]:
        """The prompt: the compact schema of the kinds the inventory's transports can run,
        the rules, the inventory's names (never addresses, users or settings), one example;
        `context` (what an earlier playbook for the request did, for a replan) ends it."""
        shell = {"file", "line", "package", "service", "run"} <= self.kinds
        rules = ["- Every step has a unique id and exactly one kind."]
        if shell:
            rules.append('- Prefer file, line, package and service over run; give run a guard (creates, '
                         'removes, unless, only_if), or changed_when: "false" when it only reads.')
        rules += [
            "- Templates {{ x }} may use vars, inventory_hostname and earlier steps' results "
            "({{ steps.<id>.stdout }}); a secret only as {{ secret('NAME') }}.",
            "- Never destructive commands: opsrun's safety rules refuse them.",
        ]
        if {"template", "copy"} & self.kinds:
            rules.append("- template and copy need a file beside the playbook: write small files with "
                         "file and content instead.")
        system = "\n".join([
            "You write opsrun playbooks: files that bring hosts to a desired state, given here as JSON. "
            "Answer with ONE JSON object, the playbook, and nothing else.",
            "",
            "Its shape (* = required; name = letters, digits and _, not starting with a digit):",
            self.shape,
            "",
            "Rules:",
            *rules,
            "",
            *self.inventory_lines(),
            "",
            f"Example:\n{compact_json(self.example())}",
        ])
        user = f"Write a playbook for this request:\n{request.strip()}"
        if context.strip():
            user += f"\n\n{context.strip()}"
        return [{"role": "system", "content": redact(system)}, {"role": "user", "content": redact(user)}]

    def inventory_lines(self) -> list[str]:
        """The hosts (by transport) and groups a playbook may target, names only, bounded."""
        by_transport: dict[str, list[str]] = {}
        for h in self.inventory.hosts.values():
            by_transport.setdefault(h.transport, []).append(h.name)
        lines = []
        for transport, names in by_transport.items():
            more = f", ... ({len(names) - MAX_HOSTS_SHOWN} more)" if len(names) > MAX_HOSTS_SHOWN else ""
            lines.append(f"Hosts ({transport}): {', '.join(names[:MAX_HOSTS_SHOWN])}{more}")
        groups = []
        for g, members in list(self.inventory.groups.items())[:MAX_HOSTS_SHOWN]:
            shown = ", ".join(members) if len(members) <= MAX_MEMBERS_SHOWN else f"{len(members)} hosts"
            groups.append(f"{g} ({shown or 'empty'})")
        hidden = len(self.inventory.groups) - MAX_HOSTS_SHOWN
        tail = f"; ... ({hidden} more)" if hidden > 0 else ""
        lines.append(f"Groups: {'; '.join(groups) if groups else '(none)'}{tail}")
        lines.append("hosts: one of these names or groups, or all.")
        return lines

    def example(self) -> dict[str, Any]:
        """An example for the inventory's own transports (the implicit `local` host aside),
        aimed at its first group."""
        def kinds_of(pb: dict[str, Any]) -> set[str]:
            return {k for step in pb["steps"] for k in step if k not in ("id", "name")}

        own = {h.transport for h in self.inventory.hosts.values() if h.name != "local"} or {"local"}
        fitting = [e for e in EXAMPLES if kinds_of(e) <= usable_kinds(own)] or [SMALL_EXAMPLE]
        target = next(iter(self.inventory.groups), None) or next(iter(self.inventory.hosts), "all")
        return {**fitting[0], "hosts": target}

    def budget(self, base: Sequence[Message]) -> int | None:
        """max_tokens for each answer: the author task's own, lowered so that the answer and
        its repair rounds fit the smallest context_tokens of the author providers. Raises
        ContextTooSmall (naming the numbers) when not even MIN_ANSWER_TOKENS fit."""
        from runner.gateway import tokens

        configured = self.gateway.config.task("author").max_tokens
        sized = [p for p in self.gateway.order("author") if p.context_tokens]
        if not sized:
            return configured
        p = min(sized, key=lambda q: q.context_tokens or 0)
        context = p.context_tokens or 0
        prompt = tokens.message_tokens(base)
        left = tokens.room(context, prompt)
        cap = left if self.max_repairs == 0 else math.floor((left - FEEDBACK_TOKENS) / REPAIR_FACTOR)
        if cap < MIN_ANSWER_TOKENS:
            rounds = (f"an answer of {MIN_ANSWER_TOKENS} tokens" if self.max_repairs == 0 else
                      f"an answer of {MIN_ANSWER_TOKENS} tokens and its repair rounds "
                      f"(~{math.ceil(MIN_ANSWER_TOKENS * REPAIR_FACTOR) + FEEDBACK_TOKENS} tokens)")
            raise ContextTooSmall(
                f"the author prompt (~{prompt} tokens) and {rounds} do not fit context_tokens={context} "
                f"of provider '{p.name}' (5% kept free)",
                hint="raise context_tokens and the model server's context (llama.cpp -c N, "
                     "OLLAMA_CONTEXT_LENGTH=N), or pass --max-repairs 0; see docs/llm.md, Context sizing")
        return min(configured, cap) if configured else cap

    def feedback(self, verdict: Verdict, tries_left: int) -> str:
        diags = kind_hints(verdict.diagnostics, self.kinds)
        n = len(diags)
        lines = [f"Your playbook has {n} problem{'s' if n != 1 else ''} "
                 f"(positions refer to this YAML form of your JSON):"]
        lines += [d.render() for d in diags]
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

        if isinstance(data, NotJSON):
            return Verdict(None, [Diagnostic(self.file, 0, 0, f"the answer is not valid JSON ({data.error})",
                                             hint="answer with one JSON object: the whole playbook")])
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
        diags += self.kind_diagnostics(data, doc)
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

    def kind_diagnostics(self, data: dict[str, Any], doc: load.Document) -> list[Diagnostic]:
        """Steps of a kind no host of the inventory can run (a model without a grammar may
        write one)."""
        from runner import schema

        known = set(schema.kind_names())
        steps = data.get("steps")
        out = []
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            for key in step if isinstance(step, dict) else ():
                if key in known and key not in self.kinds:
                    out.append(doc.diag(("steps", i, key), f"step kind '{key}' cannot run on the hosts of "
                                        "this inventory", hint=f"step kinds here are: {', '.join(sorted(self.kinds))}",
                                        key=True))
        return out

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
    def write(self, request: str, *, context: str = "", deadline: float | None = None,
              deadline_text: str | None = None) -> Draft:
        """Ask, check, feed the problems back, up to 1 + max_repairs tries. Raises AuthorError
        (still invalid, or refused by a safety rule) or the gateway's GatewayError/MissingExtra.
        `deadline`: a caller's run deadline (Router.deadline()) shared with its other requests,
        named in messages by `deadline_text`; default routing.deadline_s from now."""
        if not request.strip():
            raise InvalidInput("the request is empty", hint='opsrun author "install nginx on the web group"')
        tries = 1 + self.max_repairs
        base = self.messages(request, context)
        max_tokens = self.budget(base)
        out = repair_loop(self.gateway, base, Judge(self.check), schema=self.schema, task="author",
                          tries=tries, feedback=self.feedback, max_tokens=max_tokens, deadline=deadline,
                          min_answer_tokens=min(MIN_ANSWER_TOKENS, max_tokens or MIN_ANSWER_TOKENS))
        verdict = out.verdict
        asked = out.tries
        if verdict.ok:
            assert verdict.doc is not None
            header = self.header(request, out.answer, out.tries)
            return Draft(header + verdict.doc.text, verdict.doc.text, verdict.doc.data, out.answer, out.tries,
                         self.file, verdict.plan)
        after = f"after {asked} tr{'ies' if asked != 1 else 'y'}"
        if out.out_of_time:
            after += " (" + (deadline_text or f"the deadline of {self.gateway.config.routing.deadline_s:g}s "
                                              "for the whole run, routing.deadline_s") + ", was reached)"
        if verdict.rules:
            rule = verdict.rules[0]
            raise AuthorError(
                f"refused: the model's playbook still runs a command forbidden by safety rule '{rule}' "
                f"{after}; nothing was written", verdict.diagnostics, tries=asked, rule=rule,
                hint="reword the request, or write this step yourself")
        raise AuthorError(
            f"the model's playbook is still not valid {after}; nothing was written",
            kind_hints(verdict.diagnostics, self.kinds), tries=asked,
            hint="try --max-repairs with a higher number, a clearer request, or a stronger model")

    def header(self, request: str, answer: Answer, tries: int) -> str:
        when = self.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"# Written by `opsrun {self.command}` on {when}.", "# Request:"]
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


def kind_notes(kinds: set[str]) -> dict[str, str]:
    """One short line per kind for the prompt: the first clause of its schema description."""
    from runner.schema import load_schema

    defs = load_schema("playbook").get("$defs", {})
    out = {}
    for kind in kinds:
        text = str(defs.get(f"kind_{kind}", {}).get("description", ""))
        text = re.split(r": |\. |, and ", text, maxsplit=1)[0].rstrip(".")
        out[kind] = text if len(text) <= 60 else text[:60].rsplit(" ", 1)[0]
    return out


def author(gateway: Gateway, request: str, inventory: Inventory, *, file: str = "playbook.yaml",
           max_repairs: int = DEFAULT_MAX_REPAIRS, now: Callable[[], datetime] | None = None) -> Draft:
    """One call: see Author.write."""
    return Author(gateway, inventory, file=file, max_repairs=max_repairs, now=now).write(request)
