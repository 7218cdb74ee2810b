"""The job routes of `opsrun serve`: create (apply role), list, get, cancel, server-sent events (Last-Event-ID).
Must not import runner.apply or the worker: jobs go through runner.service's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from runner.errors import InvalidInput
from runner.secrets import redact, redact_data
from runner.serve import models as m
from runner.serve.auth import Operator, Reader
from runner.serve.problems import ApiProblem, not_found, responses
from runner.serve.routes import AUTH

router = APIRouter(tags=["jobs"])
JobId = Annotated[str, Path(pattern=m.ID_PATTERN, description="A job id (from POST /jobs).")]
DONE = frozenset({"succeeded", "failed", "cancelled", "interrupted", "human"})
KEEPALIVE_S = 15.0
STATES = "queued|running|succeeded|failed|cancelled|interrupted|human"


SSE_EVENT = {  # one server-sent event, as OpenAPI tools read a text/event-stream
    "type": "object",
    "description": "One event: `id` its seq, `event` its type, `data` the event as JSON.",
    "properties": {
        "id": {"type": "string", "description": "The seq: send it back as Last-Event-ID to resume."},
        "event": {"type": "string", "description": "job, run_start, step_start, attempt, step_end, "
                  "run_end, ... and last `end`."},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "The event as JSON (with `seq`, `type`, `source`: job or run)."},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}


def queue_of(request: Request) -> Any:
    return request.app.state.queue()


def job_out(job: Any) -> m.JobOut:
    return m.JobOut.model_validate(redact_data(job.to_json()))


@router.post("/jobs", operation_id="create_job", response_model=m.JobOut, status_code=201,
             summary="Apply an approved plan (apply role)", responses=responses(404, 409, 503, *AUTH))
def create_job(body: m.JobRequest, request: Request, who: Operator) -> m.JobOut:
    """Queue a job that applies an approved plan; the server's worker runs it (highest priority
    first, one at a time per project). Refused unless an approval bound to the plan's current
    digest exists. Follow it with GET /jobs/{id}/events or poll GET /jobs/{id}."""
    with refused_as_conflict():
        job = queue_of(request).submit(body.plan_id, actor=who.name, priority=body.priority, retries=body.retries)
    return job_out(job)


@router.get("/jobs", operation_id="list_jobs", response_model=list[m.JobOut], summary="List jobs",
            responses=responses(503, *AUTH))
def list_jobs(request: Request, who: Reader,
              state: Annotated[str | None, Query(pattern=f"^({STATES})$", description="Only jobs in this "
                                                 "state.")] = None,
              limit: Annotated[int, Query(ge=1, le=500, description="At most this many, newest first.")] = 50,
              ) -> list[m.JobOut]:
    """Jobs of this project, newest first, optionally only those in one state."""
    return [job_out(j) for j in queue_of(request).list(state=state, limit=limit)]


@router.get("/jobs/{job_id}", operation_id="get_job", response_model=m.JobOut, summary="Get a job",
            responses=responses(404, 503, *AUTH))
def get_job(job_id: JobId, request: Request, who: Reader) -> m.JobOut:
    """A job's state (queued, running, succeeded, failed, cancelled, interrupted, human), its run
    id once started, and the error if it failed."""
    return job_out(queue_of(request).get(job_id))


@router.post("/jobs/{job_id}/cancel", operation_id="cancel_job", response_model=m.JobOut,
             summary="Cancel a job (apply role)", responses=responses(404, 409, 503, *AUTH))
def cancel_job(job_id: JobId, request: Request, who: Operator) -> m.JobOut:
    """Cancel a job: a queued one never starts; a running one stops at the next safe point
    (between steps) and ends as cancelled."""
    with refused_as_conflict():
        return job_out(queue_of(request).cancel(job_id, actor=who.name))


@contextlib.contextmanager
def refused_as_conflict() -> Iterator[None]:
    """The queue refuses a plan that is not approved, a job that already ended: 409, not 400
    (the request is well formed; the state of the object does not allow it)."""
    try:
        yield
    except InvalidInput as exc:
        if not_found(exc) or exc.diagnostics:
            raise
        raise ApiProblem(409, exc.message, hint=exc.hint) from None


def sse(event: dict[str, Any]) -> str:
    """One event: `id` is its seq, `event` its type, `data` the event as JSON (redacted)."""
    data = json.dumps(redact_data(event), separators=(",", ":"), default=str)
    kind = redact(str(event.get("type") or "message")).replace("\n", " ")
    return f"id: {event.get('seq', '')}\nevent: {kind}\ndata: {redact(data)}\n\n"


@router.get("/jobs/{job_id}/events", operation_id="job_events",
            summary="Follow a job: its events as server-sent events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                             "description": "Server-sent events until the job ends: `id` = seq, `event` = "
                             "type, `data` = the event as JSON; last an `end` event with the job."},
                       **responses(404, 503, *AUTH)})
async def job_events(job_id: JobId, request: Request, who: Reader,
                     after: Annotated[int, Query(ge=0, le=2**31, description="Only events after this seq.")] = 0,
                     follow: Annotated[bool, Query(description="false: send the events so far, then end "
                                                   "(no waiting for the job to end).")] = True,
                     last_event_id: Annotated[str | None, Header(max_length=32, description="Resume after "
                                                                 "this seq (sent by EventSource on reconnect).")
                                              ] = None,
                     ) -> StreamingResponse:
    """The job's state changes and its run's journal events (step starts and ends, attempts,
    the recap), in order, as they happen, ending when the job ends. Reconnect with the header
    Last-Event-ID (or ?after=) set to the last `id` seen to get only what came after it."""
    queue = queue_of(request)
    await run_in_threadpool(queue.get, job_id)  # 404 before the stream starts
    start = after
    if last_event_id is not None and last_event_id.strip().isdigit():
        start = max(start, int(last_event_id.strip()))
    poll = request.app.state.serve_config.limits.sse_poll_s
    return StreamingResponse(_stream(queue, job_id, start, poll, request, follow), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(queue: Any, job_id: str, seq: int, poll: float, request: Request,
                  follow: bool = True) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    yield "retry: 1000\n\n"
    while True:
        events = await run_in_threadpool(queue.events, job_id, seq)
        for event in events:
            seq = max(seq, int(event.get("seq", seq)))
            yield sse(event)
        if events:
            quiet_since = loop.time()
        job = await run_in_threadpool(queue.get, job_id)
        if not follow:
            return
        if job.state in DONE:
            tail = await run_in_threadpool(queue.events, job_id, seq)
            for event in tail:
                seq = max(seq, int(event.get("seq", seq)))
                yield sse(event)
            yield sse({"seq": seq, "type": "end", "job": job.to_json()})
            return
        if await request.is_disconnected():
            return
        if loop.time() - quiet_since > KEEPALIVE_S:
            quiet_since = loop.time()
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll)
