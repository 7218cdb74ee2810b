"""The routes over runner.service that change nothing on a target: health, validate, plans, approvals, runs, inventory.
Must not import runner.apply or runner.cli.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse

from runner.secrets import redact, redact_data
from runner.serve import models as m
from runner.serve.auth import Approver, Planner, Reader
from runner.serve.problems import responses

router = APIRouter()
PlanId = Annotated[str, Path(pattern=m.ID_PATTERN, description="A plan id (from POST /plans).")]
RunId = Annotated[str, Path(pattern=m.ID_PATTERN, description="A run id (from GET /runs or a job's run_id).")]
AUTH = (400, 401, 403, 413, 422, 429)


def project_of(request: Request) -> Any:
    return request.app.state.project


def plan_out(project: Any, record: Any) -> m.PlanOut:
    from runner.service import approvals

    approval = approvals.approval_of(project, record.id)
    return m.PlanOut(
        id=record.id, digest=record.digest, created=record.created, actor=record.actor,
        origin=record.origin, playbook=redact(str(record.playbook)), markdown=redact(record.markdown),
        plan=redact_data(record.doc), approval=approval_out(approval) if approval is not None else None,
    )


def approval_out(a: Any) -> m.ApprovalOut:
    return m.ApprovalOut(plan_id=a.plan_id, digest=a.digest, approver=a.approver, at=a.at, how=a.how)


@router.get("/health", operation_id="health", tags=["server"], response_model=m.Health,
            summary="Is the server up")
def health(request: Request) -> m.Health:
    """Liveness: the server answers, whether its job worker runs, whether MCP is mounted. Needs no
    token and is not rate limited."""
    from runner import __version__

    return m.Health(version=__version__, worker=request.app.state.worker_state(),
                    mcp=bool(request.app.state.mcp))


@router.post("/validate", operation_id="validate_playbook", tags=["playbooks"], response_model=m.ValidateResult,
             summary="Check a playbook without running it", responses=responses(*AUTH))
def validate(body: m.ValidateRequest, request: Request, who: Planner) -> m.ValidateResult:
    """Check a playbook (YAML `text`, or a `path` inside the project) against the schema, the
    safety rules and the offline checks. Nothing is run and nothing is stored. Use it before
    POST /plans; `errors` name the line and give a hint to fix each problem."""
    from runner.service import ops

    result = ops.validate(project_of(request), text=body.text, path=body.path, inventory=body.inventory)
    return m.ValidateResult.model_validate(redact_data(result))


@router.post("/plans", operation_id="create_plan", tags=["plans"], response_model=m.PlanOut, status_code=201,
             summary="Plan a playbook: the exact changes, before anything runs",
             responses=responses(409, *AUTH))
def create_plan(body: m.PlanRequest, request: Request, who: Planner) -> m.PlanOut:
    """Make a plan from a playbook (YAML `text`, or a `path` inside the project): the same gates
    as a person's (schema, safety rules, offline checks), then the real plan, which reads the
    hosts but changes nothing. Returns the plan id, its digest, the plan as markdown (show it
    to the person) and as JSON. To apply it: POST /plans/{id}/approvals (approver role) with the
    digest, then POST /jobs with the plan id."""
    from runner.service import plans

    project = project_of(request)
    record = plans.create_plan(project, text=body.text, path=body.path, inventory=body.inventory,
                               limit=body.limit, tags=body.tags, skip_tags=body.skip_tags, vars=body.vars,
                               actor=who.name, origin="http")
    return plan_out(project, record)


@router.get("/plans", operation_id="list_plans", tags=["plans"], response_model=list[m.PlanSummary],
            summary="List recent plans", responses=responses(*AUTH))
def list_plans(request: Request, who: Reader,
               limit: Annotated[int, Query(ge=1, le=500, description="At most this many, newest first.")] = 50,
               ) -> list[m.PlanSummary]:
    """The most recent plans (id, digest, who made it, counts, whether approved)."""
    from runner.service import plans

    return [m.PlanSummary.model_validate(redact_data(r.summary()))
            for r in plans.list_plans(project_of(request), limit=limit)]


@router.get("/plans/{plan_id}", operation_id="get_plan", tags=["plans"], response_model=m.PlanOut,
            summary="Get a plan", responses=responses(404, *AUTH))
def get_plan(plan_id: PlanId, request: Request, who: Reader) -> m.PlanOut:
    """A stored plan by id: digest, markdown, JSON and its approval if any."""
    from runner.service import plans

    project = project_of(request)
    return plan_out(project, plans.get_plan(project, plan_id))


@router.get("/plans/{plan_id}/markdown", operation_id="get_plan_markdown", tags=["plans"],
            response_class=PlainTextResponse, summary="Get a plan as markdown",
            responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}},
                             "description": "The plan as markdown."}, **responses(404, *AUTH)})
def get_plan_markdown(plan_id: PlanId, request: Request, who: Reader) -> PlainTextResponse:
    """The plan as markdown only: what will change on which host, ready to show a person."""
    from runner.service import plans

    record = plans.get_plan(project_of(request), plan_id)
    return PlainTextResponse(redact(record.markdown), media_type="text/markdown")


@router.post("/plans/{plan_id}/approvals", operation_id="approve_plan", tags=["plans"],
             response_model=m.ApprovalOut, status_code=201, summary="Approve a plan (approver role)",
             responses=responses(404, 409, *AUTH))
def approve_plan(plan_id: PlanId, request: Request, who: Approver,
                 body: m.ApprovalRequest | None = None) -> m.ApprovalOut:
    """Approve a plan so a job may apply it. The approval is bound to the plan's digest: send the
    `digest` you reviewed and it is refused (409) if the plan is not the one you saw. Only a
    person (or a token holding the approve role) should call this, after reading the markdown."""
    from runner.service import approvals

    digest = body.digest if body is not None else None
    a = approvals.approve(project_of(request), plan_id, approver=who.name, how="http", digest=digest)
    return approval_out(a)


@router.get("/runs", operation_id="list_runs", tags=["runs"], response_model=list[dict[str, Any]],
            summary="List recent runs", responses=responses(*AUTH))
def list_runs(request: Request, who: Reader,
              limit: Annotated[int, Query(ge=1, le=500, description="At most this many, newest first.")] = 20,
              ) -> list[dict[str, Any]]:
    """Recent applies (runs) of this project with their outcome, like `opsrun runs list`."""
    from runner.service import ops

    return list(redact_data(ops.runs(project_of(request), limit=limit)))


@router.get("/runs/{run_id}", operation_id="get_run", tags=["runs"], response_model=dict[str, Any],
            summary="Get a run", responses=responses(404, *AUTH))
def get_run(run_id: RunId, request: Request, who: Reader) -> dict[str, Any]:
    """One run: its recap and every step's result, like `opsrun runs show`."""
    from runner.service import ops

    return dict(redact_data(ops.run(project_of(request), run_id)))


@router.get("/inventory", operation_id="get_inventory", tags=["inventory"], response_model=dict[str, Any],
            summary="List hosts and groups", responses=responses(*AUTH))
def get_inventory(request: Request, who: Reader,
                  limit: Annotated[str | None, Query(max_length=1024, description="Only hosts matching "
                                                     "this pattern.")] = None,
                  ) -> dict[str, Any]:
    """The project's hosts (groups, transport, variables with secrets masked) and groups. Use the
    names in a playbook's `hosts:`."""
    from runner.service import ops

    return dict(redact_data(ops.inventory(project_of(request), limit=limit)))
