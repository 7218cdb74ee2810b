"""The undefined-name check of validate: every name a playbook template reads must be defined
for each host (or, with no host known, somewhere). Works on parsed templates; renders nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner import scope as scopes
from runner.errors import Diagnostic
from runner.load import Document, Expanded, PathKey
from runner.schema_messages import _suggest
from runner.schema_semantics import LATE_PARAM_KEYS, LATE_STEP_KEYS, Scope, Use

# set by config.host_vars for every host
MAGIC_NAMES = frozenset({"inventory_hostname", "host", "groups", "playbook_dir"})
# Jinja2's globals and ours (render.py adds secret)
GLOBAL_NAMES = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "secret", "steps"})
# what changed_when/failed_when read besides variables (runner/steps/shell.py Run.outcome)
RESULT_NAMES = frozenset({"rc", "stdout", "stderr", "stdout_lines"})
# what `until:` reads besides variables: the result of the try (runner/apply/engine.py)
UNTIL_NAMES = RESULT_NAMES | {"changed", "failed"}
LOOP_NAMES = frozenset({"item", "loop_index"})
# filters and tests that make a missing name fine
GUARDS = frozenset({"default", "d", "defined", "undefined"})
# step keys that are never rendered, or not as templates
NOT_RENDERED = frozenset({"id", "name", "description", "hosts", "tags", "register", "policy", "sensitive",
                          "timeout"})

Position = Callable[[PathKey, int], tuple[int, int]]


def read_names(ast: Any) -> list[tuple[str, int]]:
    """(name, line) for each variable a template reads and does not set itself
    ({% set %}, {% for %} targets, macro arguments); Jinja's own `loop`, `caller` excluded."""
    from jinja2 import nodes

    stored = {"loop", "caller", "varargs", "kwargs", "self", "super"}
    for node in ast.find_all((nodes.Name, nodes.Macro, nodes.Filter, nodes.Test)):
        if isinstance(node, nodes.Name) and node.ctx in ("store", "param"):
            stored.add(node.name)
        elif isinstance(node, nodes.Macro):
            stored.add(node.name)
            stored.update(a.name for a in node.args)
        elif isinstance(node, nodes.Filter | nodes.Test) and node.name in GUARDS:
            base = node.node  # `x | default(...)`, `x.y is defined`: x may be missing
            while isinstance(base, nodes.Getattr | nodes.Getitem):
                base = base.node
            if isinstance(base, nodes.Name):
                stored.add(base.name)
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for node in ast.find_all(nodes.Name):
        if node.ctx == "load" and node.name not in stored and node.name not in seen:
            seen.add(node.name)
            out.append((node.name, node.lineno or 1))
    return out


def registered(steps: list[Any]) -> dict[str, list[tuple[int, str]]]:
    """register: name -> (index, id) of each step that registers it, in order."""
    out: dict[str, list[tuple[int, str]]] = {}
    for i, step in enumerate(steps):
        if isinstance(step, dict) and isinstance(step.get("register"), str):
            out.setdefault(step["register"], []).append((i, str(step.get("id", f"step {i + 1}"))))
    return out


def visible_register(regs: dict[str, list[tuple[int, str]]], name: str, step_id: Any) -> tuple[int, str] | None:
    """The registration of `name` a template of step `step_id` reads: registers are seen in
    their include's namespace and the ones inside it; the innermost (then the first) wins."""
    space = scopes.scope_of(step_id) if isinstance(step_id, str) else ""
    best: tuple[int, str] | None = None
    best_depth = -1
    for index, sid in regs.get(name, []):
        owner = scopes.scope_of(sid)
        if scopes.sees(space, owner) and scopes.depth(owner) > best_depth:
            best, best_depth = (index, sid), scopes.depth(owner)
    return best


def hidden_register(regs: dict[str, list[tuple[int, str]]], name: str) -> str:
    """A hint for a name registered only inside includes the template cannot see."""
    ids = [sid for _, sid in regs.get(name, [])]
    return (f"'{name}' is registered by step '{ids[0]}' inside an include; from here read it as steps.{ids[0]}"
            if ids else "")


def undefined_names(doc: Document, uses: list[Use], scope: Scope, steps: list[Any],
                    position: Position) -> list[Diagnostic]:
    """One diagnostic per (template, undefined name); names known only while the run goes
    (steps.<id>, registered results, item, loop_index, a step's rc/stdout) count as known."""
    regs = registered(steps)
    out: list[Diagnostic] = []
    every = frozenset().union(*scope.hosts.values()) if scope.hosts else scope.names
    for use in uses:
        if use.step < 0 or len(use.path) < 3:
            continue  # top-level vars are rendered (and checked) by runner/variables.py
        field = use.path[2]
        if field in NOT_RENDERED:
            continue
        step = steps[use.step] if isinstance(steps[use.step], dict) else {}
        if str(field).startswith("llm.") and len(use.path) > 3 and use.path[3] == "schema":
            continue  # a JSON Schema, not a template
        late = field in LATE_STEP_KEYS or use.path[-1] in LATE_PARAM_KEYS
        for name, lineno in read_names(use.ast):
            if name in GLOBAL_NAMES or name in MAGIC_NAMES:
                continue
            if "loop" in step and field != "loop" and name in LOOP_NAMES:
                continue
            if use.path[-1] in LATE_PARAM_KEYS and name in RESULT_NAMES:
                continue
            if field == "until" and name in UNTIL_NAMES:
                continue
            reg = visible_register(regs, name, step.get("id"))
            if reg is not None:
                diag = _registered_use(doc, use, name, reg, late, position, lineno)
                if diag:
                    out.append(diag)
                continue
            if field == "template" and name in _template_vars(step):
                continue
            if name in local_names(doc, use.step):
                continue
            message, hint = _missing(name, scope, every)
            if message:
                hint = hidden_register(regs, name) or hint
                line, col = position(use.path, lineno)
                out.append(doc.located(use.path, line, col, message, hint))
    return out


def local_names(doc: Document, index: int) -> frozenset[str]:
    """The variables the includes around step `index` define (their parameters and defaults)."""
    origin = doc.origin(index) if isinstance(doc, Expanded) else None
    return origin.names if origin is not None else frozenset()


def _template_vars(step: dict[str, Any]) -> set[str]:
    body = step.get("template")
    tv = body.get("vars") if isinstance(body, dict) else None
    return set(tv) if isinstance(tv, dict) else set()


def _registered_use(doc: Document, use: Use, name: str, reg: tuple[int, str], late: bool,
                    position: Position, lineno: int) -> Diagnostic | None:
    index, sid = reg
    if index < use.step or (index == use.step and late):
        return None
    if index == use.step:
        message = f"'{name}' is this step's own result (register: {name}), read before it runs"
        hint = "a step's own result is available in verify, undo, changed_when and failed_when"
    else:
        message = f"'{name}' is registered by step '{sid}', which runs after this one"
        hint = f"move step '{sid}' above this one"
    line, col = position(use.path, lineno)
    return doc.located(use.path, line, col, message, hint)


def _missing(name: str, scope: Scope, every: frozenset[str]) -> tuple[str, str]:
    """('', '') when `name` is defined where it is needed, else (message, hint)."""
    fix = f"define it in vars:, in the inventory (host or group vars), or pass -e {name}=VALUE"
    if not scope.hosts:
        if name in scope.names:
            return "", ""
        guess = _suggest(name, sorted(scope.names))
        hint = f"did you mean '{guess}'?" if guess else f"pass it with -e {name}=VALUE, or define it in vars:"
        return f"'{name}' needs a value", hint
    lacking = sorted(h for h, names in scope.hosts.items() if name not in names)
    if not lacking:
        return "", ""
    if len(lacking) == len(scope.hosts):
        guess = _suggest(name, sorted(every))
        return f"undefined variable '{name}'", f"did you mean '{guess}'?" if guess else fix
    shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
    return (f"undefined variable '{name}' on host{'s' if len(lacking) > 1 else ''} {shown}",
            f"it is defined for other hosts only; {fix}")
