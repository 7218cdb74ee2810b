"""The opsrun MCP tools: inventory, validate, plan, plan_show, apply, job, jobs, runs, run, ask,
author, each a thin call into runner.service, described for a model to use them well.

Imports runner.service and below (never runner.serve or runner.cli); approve is no tool here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from runner.approval_policy import AutoLimits
from runner.mcp.server import FINISHED, call, changes, read_only, wait_for
from runner.service.project import Project

Caller = Callable[[Context[Any, Any]], tuple[str, str]]

Text = Annotated[str | None, Field(description="The playbook as YAML text (give this or `path`, not both).")]
PathArg = Annotated[str | None, Field(description="A playbook file inside the project, relative to its root, "
                                                  "e.g. 'playbooks/web.yaml' (give this or `playbook`).")]
InventoryArg = Annotated[str | None, Field(description="An inventory file inside the project; omitted: the "
                                                       "project's default inventory.")]
LimitArg = Annotated[str | None, Field(description="Only these hosts: a host or group name, or a pattern "
                                                   "like 'web*:!web3' (Ansible's --limit).")]


def _one(text: str | None, path: str | None) -> None:
    if (text is None) == (path is None):
        raise ToolError("give the playbook either as `playbook` (YAML text) or as `path` (a file in the "
                        "project), exactly one of them")


def _next_step(summary: dict[str, Any], n_changes: int, plan_id: str) -> str:
    if summary.get("approved"):
        return f"Approved: call `apply` with plan_id '{plan_id}' to run it."
    if n_changes == 0:
        return "Nothing to change: the targets already match the playbook; no apply is needed."
    return (f"Show this plan to a person. Nothing runs until they approve it: `opsrun approve {plan_id}` on "
            f"a terminal (or the approvals API of opsrun serve). Then call `apply` with plan_id '{plan_id}'.")


def register(mcp: MCPServer[Any], project: Project, *, caller: Caller, auto_limits: AutoLimits | None) -> None:
    """Add every tool to `mcp`."""
    from runner.service import approvals, ops, plans

    @mcp.tool(annotations=read_only())
    async def inventory(ctx: Context[Any, Any], inventory: InventoryArg = None,
                        limit: LimitArg = None) -> dict[str, Any]:
        """List the hosts and groups of the project's inventory. Use it first, to know which host
        and group names a playbook's `hosts:` can name. Returns {"hosts": {name: {"groups",
        "transport" (ssh|local|proxmox|adb), "vars"}}, "groups": {name: {"hosts", "children"}}};
        secret values are shown as ***. Changes nothing."""
        return await call(ctx, caller, "read", lambda actor: ops.inventory(project, inventory, limit))

    @mcp.tool(annotations=read_only())
    async def validate(ctx: Context[Any, Any], playbook: Text = None, path: PathArg = None,
                       inventory: InventoryArg = None) -> dict[str, Any]:
        """Check a playbook without touching any host: JSON Schema, safety rules and the offline
        checks (undefined variables per host, missing files). Use it after writing or editing a
        playbook and before `plan`. Returns {"ok", "errors": [{"file", "line", "col", "message",
        "hint"}], "warnings"}; fix every error (the hint says how) and validate again."""
        _one(playbook, path)
        return await call(ctx, caller, "read",
                          lambda actor: ops.validate(project, text=playbook, path=path, inventory=inventory))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                          open_world_hint=True))
    async def plan(
        ctx: Context[Any, Any],
        playbook: Text = None,
        path: PathArg = None,
        inventory: InventoryArg = None,
        limit: LimitArg = None,
        tags: Annotated[list[str] | None, Field(description="Only steps with these tags.")] = None,
        skip_tags: Annotated[list[str] | None, Field(description="Leave out steps with these tags.")] = None,
        vars: Annotated[dict[str, Any] | None, Field(description="Extra variables (like --var NAME=VALUE); "
                                                                 "never put secret values here.")] = None,
    ) -> dict[str, Any]:
        """Make an exact plan of what applying a playbook would change, host by host, step by step
        (it reads the hosts, changes nothing). The playbook passes the same gates as a person's:
        schema, safety rules, offline checks. Returns {"plan_id", "digest", "summary", "markdown"
        (show it to the person), "plan" (the JSON document: steps[] with host, instance, status
        noop|create|update|delete|run|unknown|blocked), "approved", "next"}. A plan runs only via
        `apply` after a person approves it (`opsrun approve PLAN_ID`); say so, and show the markdown."""
        _one(playbook, path)

        def make(actor: str) -> dict[str, Any]:
            rec = plans.create_plan(project, text=playbook, path=path, inventory=inventory, limit=limit,
                                    tags=tuple(tags or ()), skip_tags=tuple(skip_tags or ()), vars=vars,
                                    actor=actor, origin="mcp")
            summary = rec.summary()
            n = changes(rec.doc)
            return {"plan_id": rec.id, "digest": rec.digest, "summary": summary, "changes": n,
                    "approved": bool(summary.get("approved")), "markdown": rec.markdown, "plan": rec.doc,
                    "next": _next_step(summary, n, rec.id)}

        return await call(ctx, caller, "plan", make)

    @mcp.tool(annotations=read_only())
    async def plan_show(ctx: Context[Any, Any],
                        plan_id: Annotated[str, Field(description="The id `plan` returned.")]) -> dict[str, Any]:
        """Show a stored plan: its summary, markdown and whether (and by whom) it is approved.
        Use it to check whether a person approved a plan before calling `apply`."""
        def show(actor: str) -> dict[str, Any]:
            rec = plans.get_plan(project, plan_id)
            appr = approvals.approval_of(project, plan_id)
            summary = rec.summary()
            return {"plan_id": rec.id, "digest": rec.digest, "summary": summary, "markdown": rec.markdown,
                    "approval": _approval_json(appr),
                    "next": _next_step({**summary, "approved": appr is not None}, changes(rec.doc), rec.id)}

        return await call(ctx, caller, "read", show)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                          open_world_hint=True))
    async def apply(
        ctx: Context[Any, Any],
        plan_id: Annotated[str, Field(description="The id `plan` returned.")],
        wait_seconds: Annotated[float, Field(ge=0, le=600, description="How long to wait for the job to finish "
                                                                       "(0: return at once with the job id).")] = 60,
    ) -> dict[str, Any]:
        """Run an approved plan: queues a job that applies exactly that plan (a change of the
        targets since planning is refused as drift). It runs only when a person approved the plan
        (`opsrun approve PLAN_ID`, bound to the plan's digest) or the server's auto-approve policy
        allows it (no blocked `!` step, no lifted safety rule, few changes); otherwise it changes
        nothing and answers "needs approval" -- then ask the person to approve and call again.
        Returns {"job": {"id", "state", "run_id", ...}, "run": the run's outcome per host when
        finished, "next"}. Follow an unfinished job with `job`."""
        def go(actor: str) -> dict[str, Any]:
            from runner.service.jobs import JobQueue

            rec = plans.get_plan(project, plan_id)
            appr = approvals.approval_of(project, plan_id)
            how = "person"
            if appr is None and auto_limits is not None:
                got = approvals.auto_approve(project, plan_id, auto_limits, approver="policy")
                if isinstance(got, list):
                    raise ToolError(f"needs approval: plan {plan_id} is outside the auto-approve policy ("
                                    + "; ".join(got) + f"). A person must run `opsrun approve {plan_id}`, "
                                    "then call apply again.")
                appr, how = got, "policy"
            if appr is None:
                raise ToolError(f"needs approval: nothing was run. A person must approve plan {plan_id} "
                                f"(digest {rec.digest}) first: run `opsrun approve {plan_id}` on a terminal, "
                                "or approve it through opsrun serve; then call apply again.")
            if appr.digest != rec.digest:
                raise ToolError(f"refused: the approval of plan {plan_id} is for digest {appr.digest}, "
                                f"the plan's is {rec.digest}; make a new plan and have it approved")
            queue = JobQueue(project)
            job = queue.submit(plan_id, actor=actor)
            job = wait_for(lambda: queue.get(job.id), lambda j: j.state in FINISHED, wait_seconds)
            return _outcome(project, job, {"job": job.to_json(), "approved_by": appr.approver, "approval": how})

        return await call(ctx, caller, "apply", go)

    @mcp.tool(annotations=read_only())
    async def job(
        ctx: Context[Any, Any],
        job_id: Annotated[str, Field(description="The job id `apply` returned.")],
        events_after: Annotated[int, Field(ge=0, description="Only events after this sequence number "
                                                             "(the last `seq` you saw).")] = 0,
        wait_seconds: Annotated[float, Field(ge=0, le=600, description="Wait up to this long for the job to "
                                                                       "finish before answering.")] = 0,
    ) -> dict[str, Any]:
        """The state of a job (queued, running, succeeded, failed, cancelled, interrupted, human:
        waiting for a person) and its events since `events_after` (state changes and the run's
        journal, each with a `seq`); when finished, the run's outcome per host."""
        def show(actor: str) -> dict[str, Any]:
            from runner.service.jobs import JobQueue

            queue = JobQueue(project)
            j = wait_for(lambda: queue.get(job_id), lambda x: x.state in FINISHED, wait_seconds)
            events = queue.events(job_id, after=events_after)
            return _outcome(project, j, {"job": j.to_json(), "events": events[-200:], "more_events": len(events) > 200})

        return await call(ctx, caller, "read", show)

    @mcp.tool(annotations=read_only())
    async def jobs(
        ctx: Context[Any, Any],
        state: Annotated[str | None, Field(description="Only jobs in this state.")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> dict[str, Any]:
        """The most recent jobs (newest first): id, plan id, state, run id, who submitted it."""
        def listing(actor: str) -> dict[str, Any]:
            from runner.service.jobs import JobQueue

            return {"jobs": [j.to_json() for j in JobQueue(project).list(state=state, limit=limit)]}

        return await call(ctx, caller, "read", listing)

    @mcp.tool(annotations=read_only())
    async def runs(ctx: Context[Any, Any], limit: Annotated[int, Field(ge=1, le=200)] = 20) -> dict[str, Any]:
        """Past runs of the project (applies), oldest first: run_id, started, playbook, outcome.
        Read one with `run` or the resource opsrun://runs/RUN_ID."""
        return await call(ctx, caller, "read", lambda actor: {"runs": ops.runs(project, limit)})

    @mcp.tool(annotations=read_only())
    async def run(ctx: Context[Any, Any],
                  run_id: Annotated[str, Field(description="A run id, a unique prefix of one, or 'last'.")],
                  events: Annotated[bool, Field(description="Include every event of the run.")] = False,
                  ) -> dict[str, Any]:
        """One past run: its outcome and, per host, the steps' statuses (ok, changed, failed,
        skipped, blocked), escalations, fixes and undos; with events=true every journal event."""
        def show(actor: str) -> dict[str, Any]:
            doc = ops.run(project, run_id)
            return doc if events else _run_summary(doc)

        return await call(ctx, caller, "read", show)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=False,
                                          open_world_hint=True))
    async def ask(
        ctx: Context[Any, Any],
        prompt: Annotated[str, Field(description="The question or instruction for the model.")],
        task: Annotated[str | None, Field(description="A task name of the project's gateway.yaml routing "
                                                      "(picks the model); omitted: the default route.")] = None,
    ) -> dict[str, Any]:
        """Ask the project's LLM gateway (its routing, deadline, cache, rate limit and circuit
        breaker) one question; returns the answer text and which model answered. Changes nothing."""
        return await call(ctx, caller, "plan", lambda actor: ops.ask(project, prompt, task=task))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=False,
                                          open_world_hint=True))
    async def author(
        ctx: Context[Any, Any],
        request: Annotated[str, Field(description="What the playbook must do, in plain words.")],
        inventory: InventoryArg = None,
    ) -> dict[str, Any]:
        """Write a playbook from a plain-language request with the project's LLM gateway; it is
        validated (and repaired) until it passes, nothing is written or run. Returns {"playbook"
        (YAML text), "ok", "errors", "rounds"}; then `plan` it with playbook=<that text>."""
        return await call(ctx, caller, "plan", lambda actor: ops.author(project, request, inventory=inventory))


def _outcome(project: Any, job: Any, out: dict[str, Any]) -> dict[str, Any]:
    """A job's answer completed: the run's outcome per host once it finished, and what to do next."""
    from runner.service import ops

    if job.state in FINISHED and job.run_id:
        out["run"] = _run_summary(ops.run(project, job.run_id))
    out["next"] = _job_next(job.state, job.id, job.error)
    return out


def _job_next(state: str, job_id: str, error: str | None) -> str:
    if state == "succeeded":
        return "Finished: succeeded. `run` shows what changed per host."
    if state == "human":
        return f"Stopped waiting for a person: {error or 'see the job events'}. Tell the person; do not retry."
    if state in FINISHED:
        return f"Finished: {state}" + (f" ({error})" if error else "") + ". `job` and `run` show the events."
    return f"Still {state}: call `job` with job_id '{job_id}' (and wait_seconds) to follow it."


def _approval_json(appr: Any) -> dict[str, Any] | None:
    if appr is None:
        return None
    return {"approver": appr.approver, "at": appr.at, "how": appr.how, "digest": appr.digest}


def _run_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A run without its event list (the `run` tool with events=true, or the journal resource, has it)."""
    return {k: v for k, v in doc.items() if k != "events"}
