"""The request and response bodies of `opsrun serve` (pydantic): descriptions OpenAPI tool clients and models read.
Must not import fastapi or runner.service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_TEXT = 512 * 1024
Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=MAX_TEXT,
                             description="The playbook as YAML text (`opsrun: 1`, `hosts:`, `steps:`). "
                             "Give this or `path`.")
    path: str | None = Field(None, min_length=1, max_length=1024,
                             description="A playbook file inside the project, relative to its root, "
                             "e.g. `playbooks/hello.yaml`. Give this or `text`.")
    inventory: str | None = Field(None, min_length=1, max_length=1024,
                                  description="An inventory file inside the project (default: the project's "
                                  "inventory.yaml).")

    @model_validator(mode="after")
    def _one_source(self) -> _Source:
        if (self.text is None) == (self.path is None):
            raise ValueError("give exactly one of `text` (the playbook) or `path` (a file in the project)")
        return self


class ValidateRequest(_Source):
    """A playbook to check (schema, safety rules, offline checks); nothing is run."""


class PlanRequest(_Source):
    """A playbook to plan: what would change on which host, exactly, before anything runs."""

    limit: str | None = Field(None, max_length=1024, description="Only these hosts or groups (a pattern, "
                              "like --limit).")
    tags: list[Name] = Field(default_factory=list, max_length=64, description="Only steps with these tags.")
    skip_tags: list[Name] = Field(default_factory=list, max_length=64, description="Leave out steps with these "
                                  "tags.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Extra variables (like --var NAME=VALUE).")


class Diagnostic(BaseModel):
    model_config = ConfigDict(extra="allow")

    file: str = ""
    line: int = 0
    col: int = 0
    message: str = ""
    hint: str = ""


class ValidateResult(BaseModel):
    ok: bool = Field(description="True when the playbook passes every gate.")
    errors: list[Diagnostic] = Field(default_factory=list, description="What is wrong, where, and a hint.")
    warnings: list[str] = Field(default_factory=list)


class ApprovalOut(BaseModel):
    """An approval bound to a plan's digest: a job may apply exactly that plan."""

    plan_id: str
    digest: str = Field(description="The plan digest this approval is bound to.")
    approver: str = Field(description="Who approved (a token name, a terminal user, or 'policy').")
    at: str = Field(description="When (UTC, ISO 8601).")
    how: str = Field(description="terminal | http | policy")


class PlanOut(BaseModel):
    """A stored plan: its id and digest, the plan as markdown (for a person) and as JSON."""

    id: str = Field(description="The plan id: approve it, then create a job from it.")
    digest: str = Field(description="The plan digest; send it when approving to bind the approval to what "
                        "you saw.")
    created: str
    actor: str
    origin: str
    playbook: str = Field(description="The playbook the plan was made from.")
    markdown: str = Field(description="The plan as markdown: what will change on which host.")
    plan: dict[str, Any] = Field(description="The plan as JSON (the saved-plan format `opsrun apply` accepts).")
    approval: ApprovalOut | None = Field(None, description="The approval, once there is one.")


class PlanSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    digest: str


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digest: str | None = Field(None, min_length=1, max_length=128,
                               description="The digest of the plan you reviewed. When given and the stored "
                               "plan's digest differs, the approval is refused.")


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: str = Field(pattern=ID_PATTERN, description="An approved plan's id.")
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first.")
    retries: int = Field(0, ge=0, le=5, description="How many times a failed job is tried again.")


class JobOut(BaseModel):
    """A job: one apply of an approved plan, run by the server's worker."""

    model_config = ConfigDict(extra="allow")

    id: str
    plan_id: str
    state: str = Field(description="queued | running | succeeded | failed | cancelled | interrupted | human")
    run_id: str | None = Field(None, description="The run (journal) once it started: GET /runs/{run_id}.")
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    worker: str = Field(description="running | waiting (another worker holds the project; this one "
                                    "takes over when it stops) | stopped | unavailable")
    mcp: bool = Field(description="Whether MCP (streamable HTTP) is mounted at /mcp.")


# -- the OpenAI-compatible face --------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls ...: accepted, not forwarded

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart] = Field(description="The text (or text parts; other parts are refused).")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send more than we use

    model: str = Field("opsrun", min_length=1, max_length=256,
                       description="`opsrun` (the gateway's routing), `opsrun:<task>`, or a provider name "
                       "from GET /v1/models.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=16, le=32768)
    stream: bool = False


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: str = "stop"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "opsrun"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
