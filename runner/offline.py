"""validate's full check of a playbook: the schema and semantic checks, then what plan finds
without a host: undefined variables per host, templated vars (cycles), copy/template sources,
syntax and names inside template files, templated enum and list fields after rendering.

Renders with each host's variables but reads no secret (secret() gives a placeholder), reads
files of the playbook's folder, contacts no host. Imports config and params; nothing above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner import config, fact_names, params, render, reuse, reuse_params, schema, secrets
from runner.errors import Diagnostic
from runner.load import Document, Expanded, PathKey
from runner.model import Inventory, Playbook
from runner.schema_names import (
    GLOBAL_NAMES,
    LOOP_NAMES,
    MAGIC_NAMES,
    NOT_RENDERED,
    _missing,
    local_names,
    read_names,
    registered,
    visible_register,
)
from runner.schema_semantics import Scope, Use
from runner.steps.sources import ROOT_ENV, SourceError, contained
from runner.variables import RUNTIME_NAMES, Resolver, VarError

SOURCE_KINDS = ("copy", "template")


def _no_secret(name: str) -> secrets.Secret:
    """validate's secret(): a marked placeholder, so that validate needs no secret set."""
    return secrets.Secret(f"<secret {name}>")


def targets(inventory: Inventory | None, spec: Any) -> list[str]:
    """The inventory hosts the playbook's `hosts:` selects ([] without an inventory)."""
    if inventory is None or not isinstance(spec, str | list):
        return []
    try:
        return config.match_hosts(inventory, spec)
    except (TypeError, IndexError, ValueError):
        return []


def validate_playbook(doc: Document, inventory: Inventory | None = None,
                      cli_vars: dict[str, Any] | None = None) -> list[Diagnostic]:
    """Every problem `opsrun validate` reports for a playbook (see the module docstring)."""
    from runner import reuse

    cli_vars = dict(cli_vars or {})
    doc = reuse.expand(doc)  # includes, roles and vars files in place: every check sees them
    data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
    raw_vars = data.get("vars")
    pb = Playbook(str(data.get("name", "")), data.get("hosts"), (),
                  vars=dict(raw_vars) if isinstance(raw_vars, dict) else {},
                  file=doc.file, dir=str(Path(doc.file).parent))
    resolvers: dict[str, Resolver] = {}
    if inventory is not None:
        for name in targets(inventory, data.get("hosts")):
            host = inventory.hosts[name]  # its facts are known names, unknown values (pending)
            resolvers[name] = config.host_resolver(inventory, host, pb, cli_vars, secret=_no_secret,
                                                   facts=fact_names.stand_ins(host.transport))
    if resolvers:
        scope = Scope(hosts={h: frozenset(r.raw) | MAGIC_NAMES for h, r in resolvers.items()})
    else:
        scope = Scope(names=frozenset({*pb.vars, *cli_vars, *(inventory.vars if inventory else {}),
                                       *fact_names.ALL_ROOTS}))
    if doc.step_file:
        return schema.validate_playbook(doc, hosts=set(inventory.hosts) if inventory else None,
                                        groups=set(inventory.groups) if inventory else None)
    uses: list[Use] = []
    diags = schema.validate_playbook(
        doc,
        hosts=set(inventory.hosts) if inventory else None,
        groups=set(inventory.groups) if inventory else None,
        scope=scope,
        uses=uses,
    )
    if not resolvers:
        stand_ins = fact_names.stand_ins(None)
        resolvers = {"": Resolver({**stand_ins, **(inventory.vars if inventory else {}), **pb.vars, **cli_vars},
                                  literal=set(cli_vars) | set(stand_ins), secret=_no_secret)}
    read = {n for u in uses if u.step >= 0 for n, _ in read_names(u.ast)}
    checker = _Checker(doc, data, pb, resolvers, scope)
    facts, reading = _fact_paths(doc, uses, checker, inventory, list(resolvers) if inventory is not None else [])
    diags += facts
    diags += checker.steps()
    diags += checker.rendered([u for u in uses if u.path not in reading])
    diags += checker.vars(read | checker.template_reads)
    diags += checker.includes()
    diags += _names(doc, data)
    diags += _sudo(doc, data, inventory)
    return _finish(doc, diags)


def _sudo(doc: Document, data: dict[str, Any], inventory: Inventory | None) -> list[Diagnostic]:
    """A step's own `sudo:` on hosts whose transport has no sudo (a Proxmox API host), which
    plan would block: said once per step, naming those hosts."""
    from runner.transports import capabilities, offering

    hosts = targets(inventory, data.get("hosts"))
    steps = data.get("steps")
    out = []
    for i, step in enumerate(steps if isinstance(steps, list) and inventory is not None else []):
        if not isinstance(step, dict) or not isinstance(step.get("sudo"), bool) or inventory is None:
            continue
        mine = hosts if step.get("hosts") is None else [h for h in targets(inventory, step["hosts"]) if h in hosts]
        bad = [h for h in mine if "sudo" not in capabilities(inventory.hosts[h].transport)]
        if bad:
            shown = ", ".join(f"{h} ({inventory.hosts[h].transport})" for h in bad[:5])
            out.append(doc.diag(("steps", i, "sudo"), f"sudo: cannot be used on host{'s' if len(bad) > 1 else ''} "
                                f"{shown}: plan blocks this step there", key=True,
                                hint=f"only {' and '.join(offering(frozenset({'sudo'})))} hosts run commands through "
                                     "sudo; remove `sudo:` or narrow the step's hosts"))
    return out


def _fact_paths(doc: Document, uses: list[Use], checker: _Checker, inventory: Inventory | None,
                hosts: list[str]) -> tuple[list[Diagnostic], set[PathKey]]:
    """Host facts read under a name opsrun does not gather (`facts.os.famly`), or on hosts
    whose transport does not gather them (`facts.android.model` on an ssh host, the step's
    `hosts:` heeded); and the templates reading facts (rendered with stand-ins, they are only pending)."""
    out: list[Diagnostic] = []
    seen: set[PathKey] = set()
    any_host = next(iter(checker.resolvers.values())).raw
    shadowed = {n for n in fact_names.ALL_ROOTS if n in any_host and not _stand_in(any_host[n])}
    for use in uses:
        if use.step >= 0 and (len(use.path) < 3 or use.path[2] in NOT_RENDERED):
            continue
        if fact_names.ROOT not in use.source and "ansible_" not in use.source:
            continue  # cheap: most templates name no fact
        on = hosts
        step = checker.raw_steps[use.step] if use.step >= 0 else None
        if inventory is not None and isinstance(step, dict) and step.get("hosts") is not None:
            on = [h for h in hosts if h in targets(inventory, step["hosts"])]
        for chain, _line in fact_names.chains_in(use.ast):
            if chain[0] in shadowed:
                continue
            seen.add(use.path)  # reads a fact: rendering it here could only be pending
            found = fact_names.problem(chain, fact_names.TRANSPORTS)
            if not found and inventory is not None:
                lacking = [h for h in on if fact_names.problem(chain, {inventory.hosts[h].transport})]
                if lacking:
                    message, hint = fact_names.problem(chain, {inventory.hosts[lacking[0]].transport}) or ("", "")
                    shown = ", ".join(f"{h} ({inventory.hosts[h].transport})" for h in lacking[:5])
                    found = (f"{message}, not on host{'s' if len(lacking) > 1 else ''} {shown}", hint)
            if found:
                out.append(doc.diag(use.path, found[0], hint=found[1]))
    return out, seen


def _stand_in(value: Any) -> bool:
    """A host fact's stand-in (or a tree of them), not a variable of the playbook's own."""
    if isinstance(value, dict):
        return bool(value) and all(_stand_in(v) for v in value.values())
    return isinstance(value, fact_names.FactPending)


def _names(doc: Document, data: dict[str, Any]) -> list[Diagnostic]:
    """Names handed to tools (packages, services, owners, Android packages...) that do not
    fit their tool's grammar: the same check prepare() makes at plan time, before any probe."""
    from runner.steps import base, names

    kinds = base.load_all()
    out = []
    steps = data.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict):
            continue
        for kind in (k for k in step if k in kinds):
            for path, message in names.static_problems(kind, step[kind]):
                out.append(doc.diag(("steps", i, kind, *path), message))
    return out


def _finish(doc: Document, diags: list[Diagnostic]) -> list[Diagnostic]:
    """Sorted (the playbook first, then included and template files) and without repeats."""
    seen: set[tuple[str, int, int, str]] = set()
    out = []
    for d in sorted(diags, key=lambda d: (d.file != doc.file, d.file, d.line, d.col)):
        if (d.file, d.line, d.col, d.message) not in seen:
            seen.add((d.file, d.line, d.col, d.message))
            out.append(d)
    return out


class _Checker:
    def __init__(self, doc: Document, data: dict[str, Any], pb: Playbook,
                 resolvers: dict[str, Resolver], scope: Scope) -> None:
        self.doc = doc
        self.data = data
        self.pb = pb
        self.resolvers = resolvers
        self.scope = scope
        raw_steps = data.get("steps")
        self.raw_steps: list[Any] = raw_steps if isinstance(raw_steps, list) else []
        self.regs = registered(self.raw_steps)
        self.kinds = set(schema.kind_names())
        self.out: list[Diagnostic] = []
        self.template_reads: set[str] = set()  # names template files read

    # ------------------------------------------------------------ playbook vars
    def vars(self, read: set[str]) -> list[Diagnostic]:
        """The playbook vars that templates read (directly or through other vars), rendered
        for each host, as plan renders them; a cycle is reported even when nothing reads it.
        Each problem is reported once, at the var."""
        needed: set[str] = set()
        todo = [n for n in read if n in self.pb.vars]
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo += [n for n in _names_in(self.pb.vars[name]) if n in self.pb.vars]
        reported: set[str] = set()
        no_host = not self.scope.hosts
        for name, value in self.pb.vars.items():
            if not _names_in(value):
                continue
            if no_host and name in needed:
                missing = sorted(n for n in _names_in(value) if n not in self.scope.names
                                 and n not in GLOBAL_NAMES and n not in MAGIC_NAMES and n not in RUNTIME_NAMES)
                for n in missing:
                    message, hint = _missing(n, self.scope, self.scope.names)
                    self.out.append(self.doc.diag(("vars", name), f"vars.{name}: {message}", hint=hint))
                if missing:
                    reported.add(name)
                    continue
            for resolver in self.resolvers.values():
                try:
                    resolver.get(name)
                except VarError as exc:
                    where = exc.chain[0] if exc.chain else exc.name
                    if where in reported or not (exc.chain or where in needed):
                        continue
                    reported.add(where)
                    path: PathKey = ("vars", where) if where in self.pb.vars else ("vars", name)
                    hint = ("a variable cannot read itself, directly or through others; "
                            "break the chain" if exc.chain else
                            "define the names it reads (vars:, inventory, -e NAME=VALUE)")
                    self.out.append(self.doc.diag(path, f"vars.{where}: {exc.message}", hint=hint))
        return self.out

    # ------------------------------------------------------------ steps
    def steps(self) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        for i, step in enumerate(self.raw_steps):
            if not isinstance(step, dict):
                continue
            kind = next((k for k in step if k in self.kinds), None)
            body = step.get(kind) if kind else None
            if not isinstance(body, dict) or kind is None:
                continue
            if kind in SOURCE_KINDS:
                out += self._source(i, step, kind, body)
            out += self._fields(i, step, kind, body)
        return out

    def rendered(self, uses: list[Use]) -> list[Diagnostic]:
        """Step templates that do more than insert a name (`host.adress`, `port | int`,
        `users[0]`) rendered with each host's values, when they read nothing known only while
        the run goes: errors plan would stop on. Plain `{{ name }}` is covered by the name check."""
        from jinja2 import nodes

        out: list[Diagnostic] = []
        for use in uses:
            if use.step < 0 or len(use.path) < 3 or use.path[2] not in self.kinds | {"when", "loop"}:
                continue
            if not any(True for _ in use.ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter,
                                                       nodes.Call, nodes.BinExpr))):
                continue
            step = self.raw_steps[use.step]
            names = {n for n, _ in read_names(use.ast)}
            if self._runtime(names, use.step, step) or names - {"secret"} <= GLOBAL_NAMES:
                continue
            failed: dict[str, str] = {}
            for host, resolver in self.resolvers.items():
                if any(n not in resolver.raw and n not in GLOBAL_NAMES for n in names):
                    continue  # the undefined-name check reports it
                context: dict[str, Any] = {"secret": _no_secret}
                try:
                    context.update({n: resolver.get(n) for n in names if n in resolver.raw})
                except VarError:
                    continue  # reported at the var
                try:
                    if use.path[2] == "when":
                        render.evaluate(use.source, context)
                    else:
                        render.render_value(use.source, context)
                except render.RenderError as exc:
                    failed[host] = exc.message
                except render.PendingResult:
                    break
            if failed:
                host, message = next(iter(failed.items()))
                on = f" (host {', '.join(list(failed)[:5])})" if len(failed) < len(self.resolvers) else ""
                out.append(self.doc.diag(use.path, f"{message}{on}",
                                         hint="plan renders this with the host's variables and stops here"))
        return out

    def _runtime(self, names: set[str], index: int, step: dict[str, Any]) -> bool:
        """Whether a template reads something known only while the run goes."""
        loop = LOOP_NAMES if "loop" in step else frozenset()
        local = self.local(index)
        return any(n in RUNTIME_NAMES or n in loop or n in self.regs or n in local for n in names)

    def local(self, index: int) -> frozenset[str]:
        """Parameters and defaults of the includes around step `index`: known only per call."""
        return local_names(self.doc, index)

    def _render(self, value: Any, resolver: Resolver) -> tuple[bool, Any]:
        """(True, rendered) with the host's values, or (False, None) when a name it reads is
        missing or broken (the undefined-name check reports that)."""
        context: dict[str, Any] = {"secret": _no_secret}
        for n in _names_in(value):
            if n in resolver.raw:
                try:
                    context[n] = resolver.get(n)
                except VarError:
                    return False, None
        try:
            return True, render.render_value(value, context)
        except (render.RenderError, render.PendingResult):
            return False, None

    def _per_host(self, value: Any, index: int, step: dict[str, Any]) -> dict[str, Any] | None:
        """host -> rendered value, or None when it cannot be known before the run."""
        if not render.has_template(value) if isinstance(value, str) else not _names_in(value):
            return {h: value for h in self.resolvers}
        if self._runtime(_names_in(value), index, step):
            return None
        out: dict[str, Any] = {}
        for host, resolver in self.resolvers.items():
            ok, rendered = self._render(value, resolver)
            if ok:
                out[host] = rendered
        return out

    def _source(self, i: int, step: dict[str, Any], kind: str, body: dict[str, Any]) -> list[Diagnostic]:
        src = body.get("src")
        if not isinstance(src, str) or not src:
            return []
        per_host = self._per_host(src, i, step)
        if per_host is None:
            return []
        missing: dict[str, list[str]] = {}
        found: dict[str, str] = {}
        origin = self.doc.origin(i) if isinstance(self.doc, Expanded) else None
        role = origin.dir if origin is not None else ""
        base = role or self.pb.dir
        out: list[Diagnostic] = []
        for host, value in per_host.items():
            written = reuse.source_path(role, kind, str(value)) if role else str(value)
            path = Path(base) / written
            try:
                contained(str(base), written, f"{kind} source")
            except SourceError as exc:
                inside = "the role's folder" if role else "the playbook's folder"
                message = str(exc).replace("the playbook's folder", "the role's folder") if role else str(exc)
                out.append(self.doc.diag(("steps", i, kind, "src"), message,
                                         hint=f"keep sources inside {inside}, or name an extra root in {ROOT_ENV}"))
                break
            if path.is_file():
                found.setdefault(str(path), host)
            else:
                missing.setdefault(str(value), []).append(host)
        for value, hosts in missing.items():
            where = Path(base) / value
            what = "is a folder, not a file" if where.is_dir() else "not found"
            on = ""
            if len(self.resolvers) > 1 and len(hosts) < len(self.resolvers):
                on = " (host " + ", ".join(hosts[:5]) + ")"
            sub = reuse.ROLE_SOURCE_KINDS.get(kind, "")
            hint = (f"in a role, src is relative to its {sub}/ folder, else to the role's folder ({role})"
                    if role else f"src is relative to the playbook's folder ({self.pb.dir})")
            out.append(self.doc.diag(("steps", i, kind, "src"), f"{kind} source '{value}' {what}{on}", hint=hint))
        if kind == "template":
            for found_path in found:
                out += self._template_file(Path(found_path), i, step, body)
        return out

    def _template_file(self, path: Path, i: int, step: dict[str, Any], body: dict[str, Any]) -> list[Diagnostic]:
        from jinja2 import TemplateSyntaxError

        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            return [self.doc.diag(("steps", i, "template", "src"), f"template source {path}: cannot read it ({why})")]
        sid = step.get("id", f"step {i + 1}")
        used_by = f"used by step '{sid}' at {self.doc.file_at(('steps', i))}:{self.doc.mark(('steps', i)).line}"
        try:
            ast = render.ENV_TEXT.parse(source)
            for node in _unknown_filters(ast):
                raise node
        except TemplateSyntaxError as exc:
            message = str(getattr(exc, "message", None) or exc).rstrip(".")
            return [Diagnostic(str(path), exc.lineno or 1, 0, f"template error: {message}", "",
                               f"{used_by}; check the {{{{ }}}} and {{% %}} pairs")]
        own_vars = body.get("vars")
        own: dict[str, Any] = own_vars if isinstance(own_vars, dict) else {}
        loop = LOOP_NAMES if "loop" in step else frozenset()
        out = []
        names = read_names(ast)
        self.template_reads.update(n for n, _ in names)
        local = self.local(i)
        for name, lineno in names:
            if name in GLOBAL_NAMES or name in MAGIC_NAMES or name in own or name in loop or name in local:
                continue
            reg = visible_register(self.regs, name, sid)
            if reg is not None and reg[0] < i:
                continue
            message, hint = _missing(name, self.scope, frozenset().union(*self.scope.hosts.values())
                                     if self.scope.hosts else self.scope.names)
            if message:
                out.append(Diagnostic(str(path), lineno, 0, message, "", f"{hint} ({used_by})"))
        for chain, lineno in fact_names.chains_in(ast):  # a host fact opsrun does not gather
            found = fact_names.problem(chain, fact_names.TRANSPORTS) if chain[0] not in own else None
            if found:
                out.append(Diagnostic(str(path), lineno, 0, found[0], "", f"{found[1]} ({used_by})"))
        return out

    def _fields(self, i: int, step: dict[str, Any], kind: str, body: dict[str, Any]) -> list[Diagnostic]:
        """Templated enum and list fields, rendered per host and fitted like the planner does."""
        enums, lists = params.fields(kind)
        out: list[Diagnostic] = []
        for name, value in body.items():
            if (name not in enums and name not in lists) or not _names_in(value):
                continue
            per_host = self._per_host(value, i, step)
            for host, rendered in (per_host or {}).items():
                try:
                    params.coerce_params(kind, {name: rendered})
                except params.ParamError as exc:
                    on = f" (host {host})" if host and len(self.resolvers) > 1 else ""
                    out.append(self.doc.diag(("steps", i, kind, name), f"{exc.message} after rendering{on}",
                                             hint="the template must render to one of these values"
                                             if name in enums else "write a list, or a template that renders to one"))
                    break
        return out


    # ------------------------------------------------------------ include parameters
    def includes(self) -> list[Diagnostic]:
        """Templated `with:` values rendered per host and checked against the parameter's type,
        as plan checks them (literal values are checked at the call site already)."""
        out: list[Diagnostic] = []
        if not isinstance(self.doc, Expanded):
            return out
        for i, step in enumerate(self.raw_steps):
            origin = self.doc.origin(i)
            child = self.doc.origin(i + 1)
            if origin is None or not origin.include or child is None or not isinstance(step, dict):
                continue
            layers = getattr(child.extra, "layers", ())
            layer = layers[-1] if layers and layers[-1].id == step.get("id") else None
            if layer is None:
                continue
            for name, value in layer.given.items():
                decl = layer.params.get(name)
                if decl is None or not _names_in(value):
                    continue
                for host, rendered in (self._per_host(value, i, step) or {}).items():
                    why = reuse_params.problem(decl, reuse_params.coerce(decl, rendered))
                    if why:
                        kind = "include" if "include" in step else "role"
                        on = f" (host {host})" if host and len(self.resolvers) > 1 else ""
                        declared = f"{layer.target} declares {name}: type {decl.get('type', 'any')}"
                        out.append(self.doc.diag(("steps", i, kind, "with", name),
                                                 f"parameter '{name}' {why} after rendering{on}", hint=declared))
                        break
        return out


def _names_in(value: Any) -> set[str]:
    from runner.variables import template_names

    return template_names(value)


def _unknown_filters(ast: Any) -> list[Exception]:
    from jinja2 import nodes
    from jinja2.exceptions import TemplateAssertionError

    env = render.ENV_TEXT
    out: list[Exception] = []
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        table = env.filters if isinstance(node, nodes.Filter) else env.tests
        if node.name not in table:
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            out.append(TemplateAssertionError(f"No {what} named {node.name!r}.", node.lineno))
    return out
