"""Playbook steps -> step instances for one host: tags, host patterns, `when`, `loop`,
rendered and prepared parameters. Reads local template/source files; never a target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runner import config, render
from runner.errors import Diagnostic
from runner.model import Host, Inventory, Playbook, Step
from runner.params import coerce_params
from runner.steps import base as steps_base
from runner.steps.base import StepContext, StepKind
from runner.steps.shell import PrepareError


@dataclass
class Instance:
    """One step (or one loop item of it) for one host, ready to probe and plan."""

    host: Host
    step: Step
    key: str  # "id" or "id[2]"
    kind: StepKind
    ctx: StepContext
    params: dict[str, Any] | None = None
    skip: str | None = None  # reason the step does not apply (when false, ...)
    pending: str | None = None  # id of an earlier step whose result decides the params
    conditional_on: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)


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
    """True when `step`'s templates or `when` read the result of `other`."""
    text = repr((step.when, step.loop, step.params, step.verify))
    pattern = rf"\bsteps\s*(?:\.\s*{re.escape(other.id)}\b|\[\s*['\"]{re.escape(other.id)}['\"]\s*\])"
    if re.search(pattern, text):
        return True
    return bool(other.register) and re.search(rf"(?<![\w.]){re.escape(str(other.register))}\b", text) is not None


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
    if step.hosts is None:
        return playbook_hosts
    narrowed = config.match_hosts(inventory, step.hosts)
    return [h for h in playbook_hosts if h in narrowed]


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
    `register:` names (name -> step id)."""
    kind = steps_base.get(step.kind)
    later = {name: render.PendingRef(sid) for name, sid in (pending_registers or {}).items()}
    variables = {**base_vars, **later, **_registered(known), "steps": render.StepResults(known, pending)}
    ctx = StepContext(
        host=host,
        playbook_dir=playbook_dir,
        vars=variables,
        render=lambda text, v: render.render_text(text, v),
        run_dir=run_dir,
    )

    def fail(message: str) -> list[Instance]:
        errors.append(
            Diagnostic(file, step.line, 0, f"step '{step.id}' on host '{host.name}': {message}", f"steps[{step.index}]")
        )
        return []

    items: list[Any] = [None]
    if step.loop is not None:
        try:
            loop = render.render_value(step.loop, variables)
        except render.PendingResult as exc:
            return [Instance(host, step, step.id, kind, ctx, pending=exc.step_id)]
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
        inst_ctx = StepContext(host=host, playbook_dir=playbook_dir, vars=v, render=ctx.render, run_dir=run_dir)
        inst = Instance(host, step, key, kind, inst_ctx, vars=v)
        if step.when is not None:
            try:
                if not render.truthy(render.evaluate(step.when, v)):
                    inst.skip = f"when: {step.when} is false" + _not_run_note(step.when, known)
                    out.append(inst)
                    continue
            except render.PendingResult as exc:
                inst.conditional_on = (exc.step_id,)
            except render.RenderError as exc:
                fail(f"when: {exc.message}")
                continue
        try:
            params = kind.normalize(step.params)
            params = render.render_params(params, v, kind.shell_fields, kind.late_fields)
            params = coerce_params(step.kind, params)  # enum values and lists, checked after rendering
            inst.params = kind.prepare(params, inst_ctx)
        except render.PendingResult as exc:
            inst.pending = exc.step_id
        except render.RenderError as exc:
            fail(exc.message)
            continue
        except PrepareError as exc:
            fail(str(exc))
            continue
        out.append(inst)
    return out


def _not_run_note(expression: str, known: dict[str, Any]) -> str:
    notes = []
    for sid, result in known.items():
        if isinstance(result, dict) and result.get("_not_run"):
            names = [sid] + ([str(result["_register"])] if result.get("_register") else [])
            if any(re.search(rf"\b{re.escape(n)}\b", expression) for n in names):
                notes.append(f"step '{sid}' does not run: {result['_not_run']}")
    return f" ({'; '.join(notes)})" if notes else ""


def _registered(known: dict[str, Any]) -> dict[str, Any]:
    """`register: name` exposes a step's result under that name too."""
    return {v["_register"]: v for v in known.values() if isinstance(v, dict) and v.get("_register")}
