"""Builds a Plan: expands steps per host, sends each host's probes as one batch (hosts in
parallel), and decides every step with plan.py. Read-only towards targets: it never
sends an action.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.errors import Diagnostic, InvalidInput, OpsrunError, TransportError
from runner.expand import Instance, expand, select_steps, step_hosts
from runner.model import Plan, Probe, ProbeResult, StepPlan
from runner.plan import facts_for, plan_instance
from runner.session import Session

MAX_FORKS = 64


def default_forks(n_hosts: int) -> int:
    return max(1, min(n_hosts, MAX_FORKS))


@dataclass
class HostPlan:
    """The planner's working set for one host."""

    name: str
    instances: list[Instance] = field(default_factory=list)
    facts: dict[str, ProbeResult] = field(default_factory=dict)
    steps: list[StepPlan] = field(default_factory=list)
    error: str | None = None


def probes_for(inst: Instance, guard: Any) -> tuple[list[Probe], tuple[str, str] | None]:
    """The instance's probes with keys made unique; a probe a safety rule forbids is not sent."""
    if inst.skip or inst.pending or inst.params is None:
        return [], None
    if inst.kind.transports and inst.host.transport not in inst.kind.transports:
        return [], None
    out = []
    for p in inst.kind.probes(inst.params, inst.ctx):
        if p.command is not None and guard is not None:
            rule = guard(p.command)
            if rule:
                return [], (p.command, rule)
        out.append(Probe(f"{inst.key}/{p.key}", p.command, p.api))
    return out, None


def plan_host(session: Session, name: str, steps: list[Any], offline: bool, errors: list[Diagnostic]) -> HostPlan:
    hp = HostPlan(name)
    host = session.host(name)
    base = session.vars_for(name)
    pending = {s.id for s in session.playbook.steps}
    for step in steps:
        if name not in step_hosts(session.inventory, [name], step):
            continue
        hp.instances += expand(step, host, base, {}, pending, session.playbook.dir, errors, session.playbook.file)
    if errors:
        return hp
    guard = session.guard(name)
    probes: list[Probe] = []
    blocked: dict[str, tuple[str, str]] = {}
    for inst in hp.instances:
        ps, blk = probes_for(inst, guard)
        probes += ps
        if blk:
            blocked[inst.key] = blk
    if not offline and probes:
        try:
            hp.facts = session.transport(name).probe(probes)
        except TransportError as exc:
            hp.error = exc.detail
            session.drop(name)
            return hp
        except OpsrunError as exc:
            hp.error = exc.message
            return hp
    elif not offline:
        try:  # no probes, but an apply still needs the host: connect now to find out
            session.transport(name)
        except TransportError as exc:
            hp.error = exc.detail
            return hp
    for inst in hp.instances:
        facts = None if offline else facts_for(inst.key, hp.facts)
        hp.steps.append(plan_instance(inst, facts, guard, blocked.get(inst.key)))
    return hp


def make_plan(
    session: Session,
    hosts: list[str],
    *,
    tags: tuple[str, ...] = (),
    skip_tags: tuple[str, ...] = (),
    offline: bool = False,
    forks: int | None = None,
    limit: str | None = None,
) -> tuple[Plan, dict[str, HostPlan]]:
    """Probe every host (in parallel, one batch each) and plan every step."""
    steps = select_steps(session.playbook, tags, skip_tags)
    errors_by_host: dict[str, list[Diagnostic]] = {h: [] for h in hosts}
    with ThreadPoolExecutor(max_workers=forks or default_forks(len(hosts))) as pool:
        futures = {h: pool.submit(plan_host, session, h, steps, offline, errors_by_host[h]) for h in hosts}
        results = {h: f.result() for h, f in futures.items()}
    errors = [d for h in hosts for d in errors_by_host[h]]
    if errors:
        raise InvalidInput("the playbook cannot be rendered", errors)
    plan = Plan(
        session.playbook,
        session.inventory,
        session.cli_vars,
        hosts,
        offline=offline,
        limit=limit,
        tags=tags,
        skip_tags=skip_tags,
    )
    # order: step by step, host by host (reads like the run will go)
    order = {s.id: i for i, s in enumerate(session.playbook.steps)}
    collected = [sp for h in hosts for sp in results[h].steps]
    collected.sort(key=lambda sp: (order[sp.step_id], hosts.index(sp.host)))
    plan.steps = collected
    plan.unreachable = {h: r.error for h, r in results.items() if r.error}
    return plan, results
