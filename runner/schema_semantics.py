"""Checks a schema cannot express: unique step ids, Jinja2 syntax, step order, host names,
group members and cycles. Parses templates (never renders them); contacts no host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as _field
from typing import TYPE_CHECKING, Any

from runner import scope as scopes
from runner.errors import Diagnostic
from runner.load import Document, Expanded, PathKey
from runner.schema_messages import _suggest

if TYPE_CHECKING:
    from jinja2 import Environment

ALWAYS_KNOWN_HOSTS = frozenset({"all", "local", "localhost"})
EXPRESSION_KEYS = frozenset({"when", "changed_when", "failed_when", "until"})
# step fields evaluated after the step ran: they may read the step's own result
LATE_STEP_KEYS = frozenset({"verify", "undo", "until"})
LATE_PARAM_KEYS = frozenset({"changed_when", "failed_when"})


@dataclass(frozen=True)
class Use:
    """One template of a playbook: where it is, its parsed form, the step it belongs to."""

    path: PathKey
    ast: Any  # a jinja2 node
    step: int  # index in steps, -1 outside steps
    source: str


@dataclass(frozen=True)
class Scope:
    """The variable names templates may read, for the undefined-name check. With `hosts`
    (host -> its names), each host is checked; without, `names` holds what is defined."""

    hosts: dict[str, frozenset[str]] = _field(default_factory=dict)
    names: frozenset[str] = frozenset()


class _Semantics:
    """Checks the schema cannot express: unique ids, templates, step order, host names."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.out: list[Diagnostic] = []
        self._env: Environment | None = None
        self.uses: list[Use] = []  # every template of the playbook, parsed once
        self.ids: dict[str, int] = {}
        self.ends: dict[str, int] = {}  # include id -> index of the last step inside it
        self._text_lines: dict[str, list[str]] = {}

    def _lines(self, path: PathKey) -> list[str]:
        file = self.doc.file_at(path)
        if file not in self._text_lines:
            self._text_lines[file] = self.doc.text_at(path).splitlines()
        return self._text_lines[file]

    @property
    def env(self) -> Environment:
        if self._env is None:
            try:
                from runner import render

                self._env = render.ENV_TEXT
            except (ImportError, AttributeError):  # pragma: no cover - render.py is optional here
                from jinja2.sandbox import SandboxedEnvironment

                self._env = SandboxedEnvironment()
        return self._env

    # ------------------------------------------------------------ playbook
    def playbook(self, hosts: set[str] | None, groups: set[str] | None,
                 scope: Scope | None = None) -> list[Diagnostic]:
        data = self.doc.data
        if not isinstance(data, dict):
            return []
        raw_steps = data.get("steps")
        steps: list[Any] = raw_steps if isinstance(raw_steps, list) else []
        ids: dict[str, int] = {}  # id -> index of the step that first has it
        own_ids: list[str | None] = []
        for i, step in enumerate(steps):
            sid = step.get("id") if isinstance(step, dict) else None
            if not isinstance(sid, str):
                own_ids.append(None)
                continue
            if sid in ids:
                first = self.doc.mark(("steps", ids[sid], "id")).line
                this, other = (("handler" if self._handler(k) else "step") for k in (i, ids[sid]))
                message = (f"duplicate {this} id '{sid}' (first used at line {first})" if this == other
                           else f"{this} id '{sid}' is already the id of a {other} (line {first})")
                self.out.append(self.doc.diag(
                    ("steps", i, "id"), message, hint="step and handler ids must be unique together; rename one"))
                own_ids.append(None)
                continue
            ids[sid] = i
            own_ids.append(sid)
        self.ids = ids
        for sid, at in ids.items():
            for outer in _outer_scopes(sid):
                if outer in ids and not self._handler(at):  # handlers run after every step
                    self.ends[outer] = max(self.ends.get(outer, -1), at)
        for key, value in data.items():
            if key not in ("steps", "handlers"):
                self._templates(value, (key,), None, -1)
        for i, step in enumerate(steps):
            if isinstance(step, dict):
                self._templates(step, ("steps", i), own_ids[i], i)
        from runner.schema_handlers import check_handlers

        self.out += check_handlers(self.doc, steps, ids, self._handler)
        if scope is not None:
            from runner.schema_names import undefined_names

            self.out += undefined_names(self.doc, self.uses, scope, steps, self._position)
        known = None if hosts is None and groups is None else set(hosts or ()) | set(groups or ())
        if known is not None:
            self._hosts(data.get("hosts"), ("hosts",), known)
            for i, step in enumerate(steps):
                if isinstance(step, dict) and "hosts" in step:
                    self._hosts(step["hosts"], ("steps", i, "hosts"), known)
        return self.out

    def _handler(self, index: int) -> bool:
        """Whether entry `index` of the expanded steps is a handler (they follow the steps)."""
        origin = self.doc.origin(index) if isinstance(self.doc, Expanded) else None
        return origin is not None and origin.handler

    def _templates(self, value: Any, path: PathKey, own: str | None, index: int) -> None:
        """Parse every template under `path` (of step `index`, -1 outside steps) once; check
        its step references and keep it in `self.uses` for the undefined-name check."""
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "description" and isinstance(v, str):
                    continue
                self._templates(v, (*path, k), own, index)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._templates(v, (*path, i), own, index)
        elif isinstance(value, str):
            expression = bool(path) and path[-1] in EXPRESSION_KEYS and path[0] == "steps" \
                and "vars" not in path and "env" not in path
            if expression:
                ast = self._expression(value, path)
            elif "{{" in value or "{%" in value or "{#" in value:
                ast = self._template(value, path)
                if ast is not None and _shell_field(path):
                    self._shell_insertions(value, path)
            else:
                return
            if ast is None:
                return
            self.uses.append(Use(path, ast, index, value))
            if path[:1] == ("steps",):
                late = (len(path) > 2 and path[2] in LATE_STEP_KEYS) or path[-1] in LATE_PARAM_KEYS
                self._step_refs(ast, path, own, index, late)

    def _expression(self, source: str, path: PathKey) -> Any:
        from jinja2 import TemplateError, TemplateSyntaxError
        from jinja2.parser import Parser

        label = path[-1]
        if re.match(r"^\s*\{\{.*\}\}\s*$", source, re.S):
            inner = source.strip()[2:-2].strip()
            self.out.append(self.doc.diag(
                path, f"{label} is an expression: write it without {{{{ }}}}",
                hint=f"{label}: {inner}"))
            return None
        try:  # what Environment.compile_expression checks, without compiling to Python
            parser = Parser(self.env, source, state="variable")
            expr = parser.parse_expression()
            if not parser.stream.eos:
                raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno,
                                          None, None)
            self._check_names(expr)
            return expr
        except TemplateSyntaxError as exc:
            hint = self._filter_hint(exc)
            if not hint and re.search(r"(?<![=!<>])=(?!=)", source):
                hint = "to compare, write == (a single = is not allowed in an expression)"
            self._jinja_error(path, f"{label}: invalid expression: {_jinja_message(exc)}",
                              exc.lineno, hint)
        except TemplateError as exc:
            self._jinja_error(path, f"{label}: {_jinja_message(exc)}", 1, self._filter_hint(exc))
        return None

    def _template(self, source: str, path: PathKey) -> Any:
        from jinja2 import TemplateError, TemplateSyntaxError

        try:
            ast = self.env.parse(source)
            self._check_names(ast)
            if "{%" in source:  # statements may fail assertions only the compiler makes
                self.env.compile(ast)
            return ast
        except TemplateSyntaxError as exc:
            self._jinja_error(path, f"template error: {_jinja_message(exc)}", exc.lineno,
                              self._filter_hint(exc))
        except TemplateError as exc:
            self._jinja_error(path, f"template error: {_jinja_message(exc)}", 1,
                              self._filter_hint(exc))
        return None

    def _check_names(self, ast: Any) -> None:
        """Unknown filters and tests, as Jinja's compiler reports them (compiling every
        template to Python costs ~1 ms each: too slow for playbooks of thousands of steps)."""
        from jinja2 import nodes
        from jinja2.exceptions import TemplateAssertionError

        for node in ast.find_all((nodes.Filter, nodes.Test)):
            table = self.env.filters if isinstance(node, nodes.Filter) else self.env.tests
            if node.name not in table:
                what = "filter" if isinstance(node, nodes.Filter) else "test"
                raise TemplateAssertionError(f"No {what} named {node.name!r}.", node.lineno)

    def _shell_insertions(self, source: str, path: PathKey) -> None:
        """Values that would land where no quoting makes them safe (render.shell_problems)."""
        from runner import render

        for lineno, reason, hint in render.shell_problems(source):
            line, col = self._position(path, lineno)
            self.out.append(self.doc.located(path, line, col,
                                             f"{path[-1]}: a value inserted here would land {reason}", hint))

    def _filter_hint(self, exc: Exception) -> str:
        m = re.search(r"No (filter|test) named '([^']+)'", str(exc))
        if not m:
            return ""
        names = list(self.env.filters if m.group(1) == "filter" else self.env.tests)
        guess = _suggest(m.group(2), names)
        return f"did you mean '{guess}'?" if guess else f"see the Jinja2 list of {m.group(1)}s"

    def _jinja_error(self, path: PathKey, message: str, lineno: int | None, hint: str = "") -> None:
        line, col = self._position(path, lineno or 1)
        self.out.append(self.doc.located(path, line, col, message,
                                         hint or "check the {{ }} and {% %} pairs and quotes"))

    def _position(self, path: PathKey, lineno: int) -> tuple[int, int]:
        """File position of line `lineno` of the string at `path` (block scalars start on the
        line after their | or > indicator)."""
        m = self.doc.mark(path)
        lines = self._lines(path)
        if not 0 < m.line <= len(lines):
            return m.line, m.col
        head = lines[m.line - 1][m.col - 1:m.col]
        if head in ("|", ">"):
            line = m.line + lineno
        elif lineno > 1:
            line = m.line + lineno - 1
        else:
            return m.line, m.col
        line = min(line, len(lines))
        text = lines[line - 1]
        return line, len(text) - len(text.lstrip()) + 1

    def _step_refs(self, ast: Any, path: PathKey, own: str | None, index: int,
                   late: bool) -> None:
        """`steps.<id>...` read by a template of step `index`: the id must name a step above
        it. Inside an include, ids resolve from its namespace outwards (runner/scope.py)."""
        origin = self.doc.origin(index) if isinstance(self.doc, Expanded) else None
        space = origin.scope if origin is not None else ""
        broken = self.doc.broken if isinstance(self.doc, Expanded) else frozenset()
        for parts, lineno in _chains(ast):
            found = self._resolve(parts, space)
            if found is None:
                if any(c == b or c.startswith(b + ".") for b in broken
                       for c in scopes.candidates(space, parts[0])):
                    continue  # an include that could not be read: reported there
                ref = parts[0]
                guess = _suggest(ref, [i.rpartition(".")[2] if scopes.scope_of(i) == space else i
                                       for i in self.ids])
                message = f"no step '{ref}'"
                hint = f"did you mean '{guess}'?" if guess else (
                    "steps.<id> reads the result of an earlier step with that id")
            else:
                ref, rest = found
                message, hint = self._order(ref, rest, own, index, late)
                if not message:
                    continue
            line, col = self._position(path, lineno)
            self.out.append(self.doc.located(path, line, col, message, hint))

    def _resolve(self, parts: list[str], space: str) -> tuple[str, list[str]] | None:
        """(full id, the parts after it) of `steps.<parts>` read in namespace `space`."""
        for full in scopes.candidates(space, parts[0]):
            if full not in self.ids:
                continue
            k = 1
            while full in self.ends and k < len(parts) and scopes.join(full, parts[k]) in self.ids:
                full, k = scopes.join(full, parts[k]), k + 1
            return full, parts[k:]
        return None

    def _order(self, ref: str, rest: list[str], own: str | None, index: int, late: bool) -> tuple[str, str]:
        """('', '') when step `index` may read `ref` (a step, or an include with `rest`)."""
        at = self.ids[ref]
        if self._handler(at):
            return (f"'{ref}' is a handler: no step reads a handler's result",
                    "handlers run after the steps that notify them; read the result of a step instead")
        if ref in self.ends:  # an include: its namespace
            if own is not None and own.startswith(ref + "."):
                return (f"step '{own}' reads the include '{ref}' it is part of, which has not finished",
                        f"read a step of '{ref}' above this one: steps.{ref}.<id>")
            if rest and rest[0] not in ("changed", "failed", "skipped"):
                kids = sorted({i[len(ref) + 1:].partition(".")[0] for i in self.ids if i.startswith(ref + ".")})
                guess = _suggest(rest[0], kids)
                space = scopes.scope_of(own) if own else ""
                shown = ref[len(space) + 1:] if space and ref.startswith(space + ".") else ref
                return (f"include '{shown}' has no step '{rest[0]}'",
                        f"did you mean '{guess}'?" if guess else
                        f"its steps: {', '.join(kids)}; or changed, failed, skipped (of all of them)")
            if self.ends[ref] < index:
                return "", ""
            return (f"include '{ref}' is used before its steps run",
                    f"move the include '{ref}' above this step")
        if at < index or (late and ref == own):
            return "", ""
        if ref == own:
            return (f"step '{ref}' reads its own result before it runs",
                    "a step's own result is available in verify, undo, changed_when and failed_when")
        return f"step '{ref}' is used before it runs", f"move step '{ref}' above this one, or refer to an earlier step"

    def _hosts(self, spec: Any, path: PathKey, known: set[str]) -> None:
        if isinstance(spec, list):
            for i, item in enumerate(spec):
                self._hosts(item, (*path, i), known)
            return
        if not isinstance(spec, str) or "{{" in spec or "{%" in spec:
            return
        for pattern in re.split(r"[,:]", spec):
            body = pattern.strip().lstrip("!&")
            if not body or body in known or body in ALWAYS_KNOWN_HOSTS:
                continue
            if any(c in body for c in "*?["):
                import fnmatch

                if not any(fnmatch.fnmatchcase(name, body) for name in known):
                    self.out.append(self.doc.diag(
                        path, f"host pattern '{body}' matches no host or group",
                        hint="known: " + _listing(known)))
                continue
            guess = _suggest(body, sorted(known))
            hint = f"did you mean '{guess}'?" if guess else "known: " + _listing(known)
            self.out.append(self.doc.diag(path, f"unknown host or group '{body}'", hint=hint))

    # ------------------------------------------------------------ inventory
    def inventory(self) -> list[Diagnostic]:
        data = self.doc.data
        if not isinstance(data, dict):
            return []
        hosts = _mapping(data.get("hosts"))
        groups = _mapping(data.get("groups"))
        host_names = set(hosts) | {"local", "localhost"}
        for gname, group in groups.items():
            if not isinstance(group, dict):
                continue
            for field, names, what in (("hosts", host_names, "host"),
                                       ("children", set(groups), "group")):
                members = group.get(field)
                if not isinstance(members, list):
                    continue
                for i, member in enumerate(members):
                    if not isinstance(member, str) or member in names:
                        continue
                    guess = _suggest(member, sorted(names))
                    hint = (f"did you mean '{guess}'?" if guess
                            else f"define it under {'hosts' if what == 'host' else 'groups'}:")
                    self.out.append(self.doc.diag(
                        ("groups", gname, field, i),
                        f"group '{gname}' names unknown {what} '{member}'", hint=hint))
        self._group_cycles(groups)
        return self.out

    def _group_cycles(self, groups: dict[str, Any]) -> None:
        """Depth-first search; each edge that closes a cycle is reported once."""
        done: set[str] = set()

        def children(name: str) -> list[tuple[int, str]]:
            g = groups.get(name)
            kids = g.get("children") if isinstance(g, dict) else None
            if not isinstance(kids, list):
                return []
            return [(i, k) for i, k in enumerate(kids) if isinstance(k, str) and k in groups]

        def visit(name: str, trail: list[str]) -> None:
            for i, child in children(name):
                if child in trail:
                    cycle = [*trail[trail.index(child):], child]
                    self.out.append(self.doc.diag(
                        ("groups", name, "children", i), f"group cycle: {' -> '.join(cycle)}",
                        hint="a group cannot contain itself; remove one of these children"))
                elif child not in done:
                    visit(child, [*trail, child])
            done.add(name)

        for name in groups:
            if name not in done:
                visit(name, [name])


# ---------------------------------------------------------------- helpers


def _chains(ast: Any) -> list[tuple[list[str], int]]:
    """Every `steps.a.b.c` (or steps['a'].b) in a template, longest form only, with its line."""
    from jinja2 import nodes

    longest: dict[int, tuple[list[str], int]] = {}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        parts: list[str] = []
        cur = node
        while isinstance(cur, nodes.Getattr | nodes.Getitem):
            if isinstance(cur, nodes.Getattr):
                parts.append(cur.attr)
            elif isinstance(cur.arg, nodes.Const) and isinstance(cur.arg.value, str):
                parts.append(cur.arg.value)
            else:
                parts = []  # steps[x] with x computed: cannot be checked
                if isinstance(cur.node, nodes.Name):
                    break
            inner = cur
            cur = cur.node
        if not (isinstance(cur, nodes.Name) and cur.name == "steps") or not parts:
            continue
        parts.reverse()
        key = id(inner)
        if key not in longest or len(parts) > len(longest[key][0]):
            longest[key] = (parts, node.lineno or 1)
    return list(longest.values())


def _outer_scopes(step_id: str) -> list[str]:
    out = []
    space = scopes.scope_of(step_id)
    while space:
        out.append(space)
        space = scopes.scope_of(space)
    return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _listing(names: set[str]) -> str:
    shown = sorted(names)[:12]
    return ", ".join(shown) + (", ..." if len(names) > 12 else "")


def _jinja_message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc).rstrip(".")


SHELL_KINDS = frozenset({"run", "adb.shell"})
SHELL_PARAMS = frozenset({"command", "unless", "only_if"})


def _shell_field(path: PathKey) -> bool:
    """A playbook string rendered as shell code: a run/adb.shell command or guard, verify, undo."""
    if len(path) < 3 or path[0] != "steps":
        return False
    rest = path[2:]
    if rest[0] == "verify":
        return rest in (("verify",), ("verify", "command"))
    if rest[0] == "undo":
        rest = rest[1:] or ("run",)
    if not rest or rest[0] not in SHELL_KINDS:
        return False
    return len(rest) == 1 or (len(rest) == 2 and rest[1] in SHELL_PARAMS)
