"""Builds a Plan, and decides single steps for apply with the same code: expands steps per
host, sends each host's probes as one batch (hosts in parallel; each distinct fact once,
runner/steps/facts.py), and decides every step in order against the planned state the
earlier steps leave (runner/overlay.py).

Read-only towards targets: it never sends an action. Imports no apply, cli or llm code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from runner import fact_names as N
from runner import handlers as H
from runner import render
from runner.errors import Diagnostic, InvalidInput, OpsrunError, TransportError
from runner.expand import expand, reads_step, run_scope, step_hosts, unselected_reason
from runner.fact_reads import step_reads as fact_reads_of
from runner.gc_passes import fewer_gc_passes
from runner.model import Change, CommandGuard, Plan, Probe, ProbeResult, Step, StepPlan
from runner.overlay import Overlay
from runner.session import Session
from runner.steps import facts as F
from runner.steps import host_facts as HF
from runner.steps.base import Instance, OverlayUnknown
from runner.transports import capabilities, offering

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
    not_run: dict[str, Any] = field(default_factory=dict)  # step id -> result of a step that does not run here
    overlay: Overlay = field(default_factory=Overlay)
    asked: F.HostFacts = field(default_factory=F.HostFacts)  # this pass's facts, each asked once


def probes_for(inst: Instance, guard: Any) -> tuple[list[Probe], tuple[str, str] | None]:
    """The instance's probes with keys made unique; a probe a safety rule forbids is not sent."""
    if inst.skip or inst.pending or inst.params is None:
        return [], None
    if not inst.kind.runs_on(inst.host.transport):
        return [], None
    if inst.step.sudo is not None and "sudo" not in capabilities(inst.host.transport):
        return [], None  # refused by plan_instance
    out = []
    for p in inst.kind.probes(inst.params, inst.ctx):
        if p.command is not None and guard is not None:
            rule = guard(p.command)
            if rule:
                return [], (p.command, rule)
        out.append(replace(p, key=f"{inst.key}/{p.key}", sudo=inst.step.sudo))
    return out, None


def with_step_keys(step: Step, change: Change) -> Change:
    """What a step's own `sudo:` and `until:` do to its planned change: its commands and
    uploads (and SFTP requests, which the transport refuses under sudo) carry the step's sudo
    (shown, and covered by their digests); until is said."""
    acting = ("cmd", "put", "sftp")
    if step.sudo is not None and any(a.kind in acting for a in change.actions):
        actions = tuple(replace(a, sudo=step.sudo) if a.kind in acting else a for a in change.actions)
        change = replace(change, actions=actions)
    if step.until and change.status in ("create", "update", "delete", "run", "unknown"):
        tries = step.retries + 1
        change = replace(change, summary=f"{change.summary}; until {step.until} "
                         f"(up to {tries} tr{'ies' if tries != 1 else 'y'}, {step.delay:g}s apart)")
    return change


def facts_for(instance_key: str, facts: dict[str, ProbeResult]) -> dict[str, ProbeResult]:
    """The answers of one instance's probes (keys "<instance>/<probe>"), keyed by probe."""
    prefix = instance_key + "/"
    return {k[len(prefix) :]: v for k, v in facts.items() if k.startswith(prefix)}


def by_instance(facts: dict[str, ProbeResult]) -> dict[str, dict[str, ProbeResult]]:
    """All answers grouped per instance in one pass (facts_for on each would be quadratic)."""
    out: dict[str, dict[str, ProbeResult]] = {}
    for key, value in facts.items():
        inst, _, probe = key.partition("/")
        out.setdefault(inst, {})[probe] = value
    return out


def plan_instance(
    inst: Instance,
    facts: dict[str, ProbeResult] | None,
    guard: CommandGuard | None,
    blocked_probe: tuple[str, str] | None = None,
) -> StepPlan:
    """Decide one instance. `facts` are this instance's answers (None: not probed)."""
    step = inst.step

    def make(change: Change, fingerprint: dict[str, str] | None = None) -> StepPlan:
        return StepPlan(
            inst.host.name, step.id, inst.key, step.title, step.kind, with_step_keys(step, change), fingerprint or {},
            inst.conditional_on, step.source,
        )

    if inst.skip:
        return make(Change("skip", f"skipped ({inst.skip})", reason=inst.skip))
    if step.sudo is not None and "sudo" not in capabilities(inst.host.transport):
        return make(
            Change(
                "blocked",
                f"sudo: {str(step.sudo).lower()} cannot be used on a {inst.host.transport} host",
                reason=f"only {' and '.join(offering(frozenset({'sudo'})))} hosts run commands through sudo; "
                "remove `sudo:` from this step or narrow its hosts",
            )
        )
    if not inst.kind.runs_on(inst.host.transport):
        return make(
            Change(
                "blocked",
                f"'{step.kind}' cannot run on a {inst.host.transport} host",
                reason=f"'{step.kind}' works on: {', '.join(inst.kind.runs_where())}",
            )
        )
    fact = N.fact_of(inst.pending or "")
    if fact:
        return make(Change("unknown", f"decided with the host's facts ({fact})",
                           reason=f"its parameters read host fact {fact}, gathered only when planning against "
                                  "the host (not with --offline)"))
    if inst.pending:
        pending_change = getattr(inst.kind, "pending_change", None)
        if pending_change is not None:
            return make(pending_change(step.params, inst.pending))
        if inst.kind.read_only(inst.kind.normalize(step.params)):
            return make(
                Change(
                    "run",
                    f"will run after step '{inst.pending}' (read-only: changed_when is false)",
                    data={"read_only": True},
                )
            )
        return make(
            Change(
                "unknown",
                f"decided at apply, after step '{inst.pending}'",
                reason=f"its parameters use the result of step '{inst.pending}'",
            )
        )
    if blocked_probe:
        command, rule = blocked_probe
        return make(
            Change("blocked", f"blocked by safety rule '{rule}'", reason=f"rule '{rule}' forbids the check: {command}")
        )
    if facts is None:
        fact = next((f for f in map(N.fact_of, inst.conditional_on) if f), None)
        reason = (f"its `when` reads host fact {fact}, gathered only when planning against the host"
                  if fact else "planned without probes")
        return make(Change("unknown", "not probed (--offline)", reason=reason))
    assert inst.params is not None
    change = inst.kind.plan(inst.params, facts, inst.ctx)
    if guard is not None:
        for action in change.actions:
            # an upload or SFTP request is checked as the transport checks it (Action.checked_as)
            command = action.checked_as()
            found = guard(command) if command else None
            if found:
                change = Change(
                    "blocked",
                    f"blocked by safety rule '{found}'",
                    change.actions,
                    reason=f"rule '{found}' forbids: {action.command if action.kind == 'cmd' else action.display()}",
                )
                break
    return make(change, {k: v.fingerprint() for k, v in sorted(facts.items())})


class StepDecider:
    """Decides the steps of one host in order: plan.py's pure decision, made against the
    state the earlier steps leave. `plan` threads an overlay through the steps; apply
    (live=True) decides each step on fresh answers from the host, so it needs none."""

    def __init__(self, session: Session, host: str, overlay: Overlay | None) -> None:
        self.guard = session.guard(host)
        self.rules = session.rules(host)
        self.overlay = overlay

    def _forbidden_destination(self, inst: Instance) -> StepPlan | None:
        if inst.params is None or inst.skip or inst.pending:
            return None
        for path, remove in inst.kind.destinations(inst.params):
            rule = self.rules.check_destination(path, remove=remove)
            if rule:
                verb = "remove" if remove else "write"
                change = Change("blocked", f"blocked by safety rule '{rule}'",
                                reason=f"rule '{rule}' forbids steps to {verb} {path}")
                return StepPlan(inst.host.name, inst.step.id, inst.key, inst.step.title, inst.step.kind, change, {},
                                inst.conditional_on, inst.step.source)
        return None

    def decide(
        self, inst: Instance, facts: dict[str, ProbeResult] | None, blocked: tuple[str, str] | None = None
    ) -> StepPlan:
        forbidden = self._forbidden_destination(inst)
        if forbidden is not None:
            return forbidden
        ov = self.overlay
        viewable = (
            ov is not None
            and facts is not None
            and inst.params is not None
            and not inst.skip
            and not inst.pending
            and not blocked
            and inst.kind.runs_on(inst.host.transport)
        )
        if viewable:
            assert ov is not None and facts is not None and inst.params is not None
            try:
                facts = inst.kind.view(inst.params, facts, ov)
            except OverlayUnknown as exc:
                change = Change("unknown", f"decided at apply: {exc.reason}", reason=exc.reason)
                sp = StepPlan(
                    inst.host.name, inst.step.id, inst.key, inst.step.title, inst.step.kind, change, {},
                    inst.conditional_on, inst.step.source,
                )
                self._record(inst, sp, {})
                return sp
        sp = plan_instance(inst, facts, self.guard, blocked)
        if ov is not None:
            self._record(inst, sp, facts or {})
        return sp

    def _record(self, inst: Instance, sp: StepPlan, facts: dict[str, ProbeResult]) -> None:
        ov = self.overlay
        assert ov is not None
        if inst.skip:
            return
        if inst.pending or inst.params is None:
            if not inst.kind.read_only(inst.kind.normalize(inst.step.params)):
                ov.changes.append(inst.key)  # opaque until apply: later checks cannot be trusted
            return
        effects = inst.kind.effects(inst.params, sp.change, facts, ov)
        uncertain = ""
        if inst.conditional_on:
            uncertain = (
                f"step '{inst.key}' before it may or may not run (its `when` waits for step "
                f"'{inst.conditional_on[0]}')"
            )
        ov.record(inst.key, effects, uncertain=uncertain)
        if sp.change.changes or (uncertain and sp.change.status in ("create", "update", "delete", "run")):
            ov.changes.append(inst.key)


def expand_host(
    session: Session, name: str, steps: list[Step], known: dict[str, Any], errors: list[Diagnostic],
    run_dir: str | None = None, facts: dict[str, Any] | None = None, pending: list[Step] | None = None,
) -> list[Instance]:
    """Every instance of `steps` on host `name`, results of the steps themselves (or of
    `pending`) pending, with the instances of the handlers they may notify where those run
    (runner/handlers.py); `facts`: the host facts' stand-ins, before they are gathered."""
    host = session.host(name)
    base = session.vars_for(name, facts)
    pending_ids = {s.id for s in pending or steps}
    registers = {s.id: str(s.register) for s in pending or steps if s.register}
    pb = session.playbook
    mine = H.for_host(pb, session.inventory, name)
    out: list[Instance] = []
    for segment, at in H.segments(steps):
        for step in [*segment, *(H.copy_at(h, at) for h in H.notified_by(segment, mine))]:
            out += expand(step, host, base, known, pending_ids, pb.dir, errors, pb.file, run_dir=run_dir,
                          pending_registers=registers)
    return out


def fact_reads(session: Session, name: str, steps: list[Step]) -> dict[str, frozenset[str]]:
    """Step id -> the host facts it reads (runner/fact_reads.py), on host `name`."""
    from runner import config

    raw = config.host_resolver(session.inventory, session.host(name), session.playbook, session.cli_vars).raw
    if not any(N.chains(t) for t in _texts(raw)) and not any(_maybe_facts(s) for s in steps):
        return {}

    def render_src(src: str) -> str | None:
        try:
            return str(render.render_value(src, session.vars_for(name, N.stand_ins(session.host(name).transport))))
        except (render.RenderError, render.PendingResult):
            return None

    return fact_reads_of(steps, raw, session.playbook.dir, render_src, _template_text)


def _template_text(folder: str, src: str) -> str:
    """A template file's text as the template kind reads it (contained, regular, bounded)."""
    from runner.steps.sources import SourceError, read_source

    try:
        return read_source(folder, src, "template source").data.decode("utf-8")
    except (SourceError, UnicodeDecodeError):
        return ""  # the step says why when it is prepared


def _texts(raw: dict[str, Any]) -> list[str]:
    return [v for v in raw.values() if isinstance(v, str) and render.has_template(v)]


def _maybe_facts(step: Step) -> bool:
    """Cheap test before parsing: a fact name is written somewhere in the step (or it renders a file)."""
    text = repr((step.when, step.loop, step.params, step.verify, step.undo, step.layers))
    return step.kind == "template" or any(r in text for r in (N.ROOT, "ansible_"))


def _gather(session: Session, hp: HostPlan, steps: list[Step], errors: list[Diagnostic]) -> list[Instance]:
    """The host facts in the host's one round trip, with every check that does not wait for
    them: steps whose `when` reads a fact (planned with stand-ins that are pending), and steps
    whose parameters only insert facts (rendered with markers; a check naming a marker is left
    for later). Then the steps are expanded again with the facts: the checks that now differ
    (those decided by a fact's value) are the only ones asked afterwards."""
    name, host = hp.name, session.host(hp.name)
    guard = session.guard(name)
    ask: list[Probe] = []
    waiting: dict[str, Step] = {}
    for inst in hp.instances:
        if inst.pending and N.fact_of(inst.pending):
            waiting.setdefault(inst.step.id, inst.step)
        else:
            ask += _quiet_probes(inst, guard)
    if waiting:
        unconditional = [replace(s, when=None, layers=tuple(replace(la, when=None) for la in s.layers))
                         for s in waiting.values()]
        for inst in expand_host(session, name, unconditional, hp.not_run, [], facts=N.markers(host.transport),
                                pending=steps):
            ask += [p for p in _quiet_probes(inst, guard) if not N.has_marker(f"{p.command} {p.api!r}")]
    if any(i.kind.needs_identity for i in hp.instances):
        ask.append(F.ask_host(host, "identity"))
    hp.asked.want([*ask, *HF.probes(host)])
    answers = hp.asked.answer(session.transport(name).probe)  # the host's one round trip
    session.facts[name] = HF.values(host, answers)
    hp.asked.restart()
    return expand_host(session, name, steps, hp.not_run, errors)


def _quiet_probes(inst: Instance, guard: Any) -> list[Probe]:
    """An instance's probes for the first batch, or none when it cannot say them yet."""
    try:
        probes, blocked = probes_for(inst, guard)
    except Exception:  # a stand-in decided on, or anything a speculative rendering trips on
        return []
    return [] if blocked else probes


def plan_host(
    session: Session,
    name: str,
    tags: tuple[str, ...],
    skip_tags: tuple[str, ...],
    offline: bool,
    errors: list[Diagnostic],
    answer: Callable[[Sequence[Probe]], dict[str, ProbeResult]] | None = None,
) -> HostPlan:
    """Plan one host. `answer` stands in for the host's probes (validate's blank host). Host
    facts that the steps read are gathered in the same round trip (_gather); offline and on
    the blank host they stay unknown (a step deciding on one is `?`)."""
    hp = HostPlan(name)
    steps, hp.not_run = run_scope(session.playbook, session.inventory, name, tags, skip_tags)
    reads = fact_reads(session, name, steps)
    gather = bool(reads) and not offline and answer is None
    stand_ins = N.stand_ins(session.host(name).transport) if reads else None
    hp.instances = expand_host(session, name, steps, hp.not_run, [] if gather else errors, facts=stand_ins)
    if errors:
        return hp
    if gather:
        try:
            hp.instances = _gather(session, hp, steps, errors)
        except TransportError as exc:
            hp.error = exc.detail
            session.drop(name)
            return hp
        except OpsrunError as exc:
            hp.error = exc.message
            return hp
        if errors:
            return hp
        hp.asked.want(HF.probes(session.host(name)))  # answered: kept with the plan's answers
    guard = session.guard(name)
    asked = hp.asked
    blocked: dict[str, tuple[str, str]] = {}
    for inst in hp.instances:
        ps, blk = probes_for(inst, guard)
        asked.want(ps)
        if blk:
            blocked[inst.key] = blk
    if asked and any(i.kind.needs_identity for i in hp.instances):
        asked.want([F.ask_host(session.host(name), "identity")])
    if answer is not None:
        hp.facts = asked.answer(answer)
    elif not offline and asked:
        try:  # one round trip: each distinct fact once, its answer handed to every step asking it
            hp.facts = asked.answer(session.transport(name).probe)
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
    hp.overlay.identity = F.read_identity(hp.facts.get(F.IDENTITY_KEY))
    decider = StepDecider(session, name, None if offline else hp.overlay)
    grouped = by_instance(hp.facts)
    gathered = session.facts.get(name) if gather else None
    notices: dict[str, list[H.Notice]] = {}  # handler id -> the planned steps that notify it
    handling: tuple[str, list[H.Notice]] = ("", [])  # the handler copy being decided, its notices
    for inst in hp.instances:
        facts = None if offline else grouped.get(inst.key, {})
        if inst.step.handler:
            if handling[0] != inst.step.id:
                handling = (inst.step.id, notices.pop(H.origin_of(inst.step)[0], []))
            sp = _decide_handler(decider, inst, facts, blocked.get(inst.key), handling[1])
        else:
            sp = decider.decide(inst, facts, blocked.get(inst.key))
        if gathered is not None and inst.step.id in reads:  # the facts that decide it: drift if they move
            prints = {F.HOST_PREFIX + p: N.fingerprint(N.value_at(gathered, p)) for p in sorted(reads[inst.step.id])}
            sp = replace(sp, fingerprint={**sp.fingerprint, **prints})
        hp.steps.append(sp)
        for hid in inst.step.notify:
            notices.setdefault(hid, []).append(H.notice(inst.step, sp))
    hp.steps += _dependent_skips(session, name, tags, skip_tags, {i.step.id for i in hp.instances})
    return hp


def _decide_handler(decider: StepDecider, inst: Instance, facts: dict[str, ProbeResult] | None,
                    blocked: tuple[str, str] | None, notices: list[H.Notice]) -> StepPlan:
    """A handler's run, decided from the planned markers of the steps that notify it: run when
    one surely changes something, `?` when that is decided at apply, skipped when none does."""
    at = H.origin_of(inst.step)[1]
    who = H.notifier_ids(notices)
    verdict = H.verdict(notices)
    if verdict == "no":
        step = inst.step
        return StepPlan(inst.host.name, step.id, inst.key, step.title, step.kind, H.not_notified(notices),
                        source=step.source, handler=at, notified_by=who)
    if verdict == "maybe":
        inst.conditional_on = inst.conditional_on or who  # what it leaves is uncertain for later steps
    sp = decider.decide(inst, facts, blocked)
    change = H.maybe(sp.change, notices) if verdict == "maybe" else sp.change
    return replace(sp, change=change, handler=at, notified_by=who)


def _dependent_skips(
    session: Session, host: str, tags: tuple[str, ...], skip_tags: tuple[str, ...], running: set[str]
) -> list[StepPlan]:
    """Steps left out by --tags/--skip-tags that read a step that runs: said, not dropped silently."""
    out = []
    by_id = {s.id: s for s in session.playbook.steps}
    running &= set(by_id)  # handlers' results are read by no step
    for step in session.playbook.steps:
        why = unselected_reason(step, tags, skip_tags)
        if not why or step.id in running:
            continue
        if host not in step_hosts(session.inventory, [host], step):
            continue
        readers = [sid for sid in running if reads_step(step, by_id[sid])]
        if readers:
            summary = f"skipped ({why}; it reads step '{readers[0]}', which runs: select it too to run it)"
            out.append(StepPlan(host, step.id, step.id, step.title, step.kind, Change("skip", summary, reason=why),
                                source=step.source))
    return out


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
    errors_by_host: dict[str, list[Diagnostic]] = {h: [] for h in hosts}
    with fewer_gc_passes(), ThreadPoolExecutor(max_workers=forks or default_forks(len(hosts))) as pool:
        futures = {
            h: pool.submit(plan_host, session, h, tags, skip_tags, offline, errors_by_host[h]) for h in hosts
        }
        results = {h: f.result() for h, f in futures.items()}
    # an include's parameter that fails fails for each of its steps: said once
    errors = list(dict.fromkeys(d for h in hosts for d in errors_by_host[h]))
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
    # order: step by step, host by host (reads like the run will go); handlers where they run
    order = plan_order(session.playbook)
    collected = [sp for h in hosts for sp in results[h].steps]
    collected.sort(key=lambda sp: (*order(sp), hosts.index(sp.host)))
    plan.steps = collected
    plan.unreachable = {h: r.error for h, r in results.items() if r.error}
    plan.warnings = conflict_warnings({h: results[h].overlay for h in hosts}) + lifted_rules(session, hosts)
    return plan, results


def plan_order(playbook: Any) -> Callable[[StepPlan], tuple[int, int]]:
    """The sort key of a step plan: its step's place, a handler's after the flush step (or the
    last step) it runs at, in the order the handlers are listed."""
    steps = {s.id: 2 * i for i, s in enumerate(playbook.steps)}
    listed = {h.id: i for i, h in enumerate(playbook.handlers)}
    end = 2 * len(playbook.steps)

    def key(sp: StepPlan) -> tuple[int, int]:
        if not sp.handler:
            return steps.get(sp.step_id, end), 0
        hid = sp.step_id.partition("@")[0]
        return (end if sp.handler == H.END else steps.get(sp.handler, end) + 1), listed.get(hid, 0)

    return key


def lifted_rules(session: Session, hosts: list[str]) -> list[str]:
    """Built-in safety rules that `allow:` entries lift, said in the plan, once with their hosts."""
    seen: dict[str, list[str]] = {}
    for h in hosts:
        for lift in session.rules(h).lifted():
            if lift.rules or lift.wide:
                seen.setdefault(f"safety: {lift}", []).append(h)
    return [f"{text} (on {', '.join(on)})" for text, on in seen.items()]


def conflict_warnings(overlays: dict[str, Overlay]) -> list[str]:
    """Pairs of steps that fight over one thing, named once with the hosts where they do."""
    seen: dict[tuple[str, str, str], list[str]] = {}
    for host, ov in overlays.items():
        for c in ov.conflicts:
            seen.setdefault((c.first, c.second, c.what), []).append(host)
    out = []
    for (first, second, what), on in seen.items():
        out.append(
            f"steps '{first}' and '{second}' both manage {what}: '{second}' changes what '{first}' sets, "
            f"so every run changes it again (on {', '.join(on)})"
        )
    return out
