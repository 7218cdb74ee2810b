"""Playbook steps -> step instances for one host: tags, host patterns, `when`, `loop`,
rendered and prepared parameters. Reads local template/source files; never a target.
"""

from __future__ import annotations

import re
from typing import Any

from runner import config, render, reuse, reuse_params
from runner import scope as scopes
from runner.errors import Diagnostic
from runner.model import Host, IncludeLayer, Inventory, Playbook, Step
from runner.params import coerce_params
from runner.steps import base as steps_base
from runner.steps.base import Instance, StepContext
from runner.steps.shell import PrepareError


def select_steps(playbook: Playbook, tags: tuple[str, ...], skip_tags: tuple[str, ...]) -> list[Step]:
    return [s for s in playbook.steps if not unselected_reason(s, tags, skip_tags)]


def unselected_reason(step: Step, tags: tuple[str, ...], skip_tags: tuple[str, ...]) -> str:
    """Why --tags/--skip-tags leave `step` out ("" when it is selected)."""
    st = set(step.tags)
    if tags and not (st & set(tags)) and "always" not in st:
        return f"not selected by --tags {','.join(tags)}"
    if skip_tags and st & set(skip_tags):
        return f"left out by --skip-tags {','.join(sorted(st & set(skip_tags)))}"
    return ""


def not_run_result(step: Step, reason: str) -> dict[str, Any]:
    """`steps.<id>` of a step that does not run on a host (not selected, not for the host):
    a skipped result, the same at plan and at apply."""
    return {
        "changed": False,
        "failed": False,
        "skipped": True,
        "status": "skipped",
        "rc": None,
        "stdout": "",
        "stderr": "",
        "stdout_lines": [],
        "data": None,
        "msg": reason,
        "_register": step.register,
        "_not_run": reason,
    }


def reads_step(step: Step, other: Step) -> bool:
    """True when `step`'s templates or `when` (or those of the includes it sits in) read the
    result of `other`, by its full id or by a name its namespace resolves to it."""
    layers = [(layer.when, layer.given) for layer in step.layers]
    text = repr((step.when, step.loop, step.params, step.verify, layers))
    for name in scopes.relative_names(other.id, scopes.scope_of(step.id)):
        pattern = rf"\bsteps\s*(?:\.\s*{re.escape(name)}\b|\[\s*['\"]{re.escape(name)}['\"]\s*\])"
        if re.search(pattern, text):
            return True
    if not other.register or not scopes.sees(scopes.scope_of(step.id), scopes.scope_of(other.id)):
        return False
    return re.search(rf"(?<![\w.]){re.escape(str(other.register))}\b", text) is not None


def run_scope(
    playbook: Playbook,
    inventory: Inventory,
    host: str,
    tags: tuple[str, ...],
    skip_tags: tuple[str, ...],
) -> tuple[list[Step], dict[str, Any]]:
    """The steps that run on `host`, and the not-run results of those that do not."""
    steps: list[Step] = []
    not_run: dict[str, Any] = {}
    for step in playbook.steps:
        why = unselected_reason(step, tags, skip_tags)
        if not why and host not in step_hosts(inventory, [host], step):
            why = f"not for host {host} (hosts: {step.hosts})"
        if why:
            not_run[step.id] = not_run_result(step, why)
        else:
            steps.append(step)
    return steps, not_run


def step_hosts(inventory: Inventory, playbook_hosts: list[str], step: Step) -> list[str]:
    """The playbook's hosts that `step` runs on: its own `hosts:` and those of its includes narrow them."""
    out = playbook_hosts
    for spec in (*step.host_filters, step.hosts):
        if spec is not None:
            narrowed = set(config.match_hosts(inventory, spec))
            out = [h for h in out if h in narrowed]
    return out


def expand(
    step: Step,
    host: Host,
    base_vars: dict[str, Any],
    known: dict[str, Any],
    pending: set[str],
    playbook_dir: str,
    errors: list[Diagnostic],
    file: str,
    run_dir: str | None = None,
    pending_registers: dict[str, str] | None = None,
) -> list[Instance]:
    """Instances of `step` on `host`. Template errors go to `errors` (located at the step).
    `known`: results so far (step id -> result); `pending`: ids that run before this step
    but whose results are not known yet (plan time); `pending_registers`: their
    `register:` names (step id -> name). A step inside includes (runner/reuse.py) first gets
    each include's `when` and parameters, evaluated in the includer's namespace."""
    kind = steps_base.get(step.kind)
    regs = pending_registers or {}

    def scoped(values: dict[str, Any], space: str) -> dict[str, Any]:
        return {**values, **_pending_refs(regs, space), **_registered(known, space),
                "steps": render.StepResults(known, pending, space)}

    def fail(message: str) -> list[Instance]:
        errors.append(Diagnostic(step.file or file, step.line, step.col, f"step '{step.id}' on host '{host.name}': "
                                 f"{message}", f"steps[{step.index}]", via=_via(step.layers)))
        return []

    in_role = bool(step.dir) and step.kind in reuse.ROLE_SOURCE_KINDS  # its src lies in the role's folder
    sources = step.dir if in_role else playbook_dir
    values, space = base_vars, ""
    skip: str | None = None
    conditional: tuple[str, ...] = ()
    for n, layer in enumerate(step.layers):
        context = scoped(values, space)
        try:
            if layer.when is not None and not render.truthy(render.evaluate(layer.when, context)):
                skip = f"when: {layer.when} is false (include '{layer.id}' at {layer.where})"
                break
        except render.PendingResult as exc:
            conditional = conditional or (exc.step_id,)
        except render.RenderError as exc:
            return _layer_fail(errors, step, n, host, f"when: {exc.message}")
        try:
            values = reuse_params.bind(layer, context)
        except render.PendingResult as exc:
            ctx = StepContext(host=host, playbook_dir=sources, vars=context, render=_render_text, run_dir=run_dir,
                      sudo=step.sudo)
            return [Instance(host, step, step.id, kind, ctx, pending=exc.step_id, conditional_on=conditional)]
        except reuse_params.ParamError as exc:
            return _layer_fail(errors, step, n, host, exc.message)
        space = layer.id
    variables = scoped(values, space)
    ctx = StepContext(host=host, playbook_dir=sources, vars=variables, render=_render_text, run_dir=run_dir,
                      sudo=step.sudo)
    if skip is not None:
        return [Instance(host, step, step.id, kind, ctx, skip=skip, vars=variables)]

    items: list[Any] = [None]
    if step.loop is not None:
        try:
            loop = render.render_value(step.loop, variables)
        except render.PendingResult as exc:
            return [Instance(host, step, step.id, kind, ctx, pending=exc.step_id, conditional_on=conditional)]
        except render.RenderError as exc:
            return fail(f"loop: {exc.message}")
        if isinstance(loop, str | bytes) or not hasattr(loop, "__iter__"):
            return fail(f"loop must be a list, got {type(loop).__name__}")
        items = list(loop)
    out: list[Instance] = []
    for i, item in enumerate(items):
        key = step.id if step.loop is None else f"{step.id}[{i}]"
        v = dict(variables)
        if step.loop is not None:
            v.update(item=item, loop_index=i)
        inst_ctx = StepContext(host=host, playbook_dir=sources, vars=v, render=ctx.render, run_dir=run_dir,
                               sudo=step.sudo)
        inst = Instance(host, step, key, kind, inst_ctx, vars=v, conditional_on=conditional)
        if step.when is not None:
            try:
                if not render.truthy(render.evaluate(step.when, v)):
                    inst.skip = f"when: {step.when} is false" + _not_run_note(step.when, known, space)
                    out.append(inst)
                    continue
            except render.PendingResult as exc:
                inst.conditional_on = inst.conditional_on or (exc.step_id,)
            except render.RenderError as exc:
                fail(f"when: {exc.message}")
                continue
        try:
            params = kind.normalize(step.params)
            params = render.render_params(params, v, kind.shell_fields, kind.late_fields)
            params = coerce_params(step.kind, params)  # enum values and lists, checked after rendering
            if in_role and isinstance(params.get("src"), str):
                params = {**params, "src": reuse.source_path(step.dir, step.kind, params["src"])}
            inst.params = kind.prepare(params, inst_ctx)
        except render.PendingResult as exc:
            inst.pending = exc.step_id
        except render.RenderError as exc:
            fail(exc.message)
            continue
        except PrepareError as exc:
            # a role's sources are contained in its folder (its "playbook folder" for the kind)
            fail(str(exc).replace("the playbook's folder", "the role's folder") if in_role else str(exc))
            continue
        out.append(inst)
    return out


def _render_text(text: str, v: dict[str, Any]) -> str:
    return render.render_text(text, v)


def _via(layers: tuple[IncludeLayer, ...]) -> str:
    return " <- ".join(layer.where for layer in reversed(layers))


def _layer_fail(errors: list[Diagnostic], step: Step, n: int, host: Host, message: str) -> list[Instance]:
    """An include's `when` or parameter that fails: said once at the include, for all its steps."""
    layer = step.layers[n]
    errors.append(Diagnostic(layer.file, layer.line, layer.col,
                             f"include '{layer.id}' ({layer.target}) on host '{host.name}': {message}",
                             via=_via(step.layers[:n])))
    return []


def _not_run_note(expression: str, known: dict[str, Any], space: str = "") -> str:
    notes = []
    for sid, result in known.items():
        if isinstance(result, dict) and result.get("_not_run"):
            names = scopes.relative_names(sid, space) + ([str(result["_register"])] if result.get("_register") else [])
            if any(re.search(rf"\b{re.escape(n)}\b", expression) for n in names):
                notes.append(f"step '{sid}' does not run: {result['_not_run']}")
    return f" ({'; '.join(notes)})" if notes else ""


def _registered(known: dict[str, Any], space: str = "") -> dict[str, Any]:
    """`register: name` exposes a step's result under that name too, in the step's include
    namespace and those inside it; the innermost wins (runner/scope.py)."""
    out: dict[str, Any] = {}
    depth: dict[str, int] = {}
    for sid, v in known.items():
        if not (isinstance(v, dict) and v.get("_register")):
            continue
        owner = scopes.scope_of(sid)
        if scopes.sees(space, owner) and scopes.depth(owner) >= depth.get(v["_register"], -1):
            out[v["_register"]] = v
            depth[v["_register"]] = scopes.depth(owner)
    return out


def _pending_refs(registers: dict[str, str], space: str) -> dict[str, Any]:
    """The registered names of steps not run yet (step id -> name) visible in `space`."""
    out: dict[str, Any] = {}
    depth: dict[str, int] = {}
    for sid, name in registers.items():
        owner = scopes.scope_of(sid)
        if scopes.sees(space, owner) and scopes.depth(owner) >= depth.get(name, -1):
            out[name] = render.PendingRef(sid)
            depth[name] = scopes.depth(owner)
    return out
