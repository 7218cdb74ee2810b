"""The opsrun MCP server (the `mcp` SDK's MCPServer): its tools and resources, thin faces over
runner.service; who calls (name, role) comes from the transport (stdio: the terminal user).

Imports runner.service and below (never runner.serve or runner.cli); nothing but stdio/http load it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import Resource as MCPResource
from mcp.types import ToolAnnotations

from runner.approval_policy import AutoLimits
from runner.errors import OpsrunError
from runner.secrets import redact, redact_data
from runner.service.project import Project

log = logging.getLogger("opsrun.mcp")
T = TypeVar("T")

# What a role may do: read < plan < approve < apply, each implying the ones before it (as in
# opsrun serve's tokens). A role may also be given as several names ("plan,approve", a list).
# approve is no MCP tool (people approve, not agents); it ranks below apply as in serve.
ROLES = ("read", "plan", "approve", "apply")
ROLE_GRANTS: dict[str, frozenset[str]] = {r: frozenset(ROLES[: i + 1]) for i, r in enumerate(ROLES)}
CALLER_KEY = "opsrun.caller"  # the ASGI scope key runner.mcp.http puts (name, role) under
FINISHED = frozenset({"succeeded", "failed", "cancelled", "interrupted", "human"})
CHANGING = frozenset({"create", "update", "delete", "run"})
MAX_WAIT_S = 600.0
PLAYBOOK_SUFFIXES = (".yaml", ".yml")
_PLAYBOOK_RE = re.compile(rb"^[\"']?opsrun[\"']?[ \t]*:", re.MULTILINE)
_STEPS_RE = re.compile(rb"^[\"']?steps[\"']?[ \t]*:", re.MULTILINE)
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})
MAX_PLAYBOOKS = 500
MAX_READ = 1 << 20
SCHEMAS = {"playbook": "the playbook format (opsrun: 1, hosts, vars, steps, handlers)",
           "steps": "a steps file (include_tasks / reusable task lists)",
           "inventory": "the inventory format (hosts, groups, transports, vars)"}

INSTRUCTIONS = """\
opsrun runs declarative YAML playbooks on servers (SSH), Proxmox VE, Android (ADB) and the \
local machine. Work in this order: `inventory` to see the hosts, `validate` a playbook \
(text or a path in the project; read the playbook schema resource opsrun://schemas/playbook \
or use `author` to write one), `plan` it (an exact preview of every change, with a plan id), \
then `apply` the plan id. Nothing changes a target before a person approves the plan \
(`opsrun approve PLAN_ID`) unless the server's auto-approve policy allows it; `apply` says \
when approval is missing. Follow a job with `job`, past runs with `runs` and `run`."""


def grants(role: str | Iterable[str] | None) -> frozenset[str]:
    """What a role (or several: "plan,approve", or a list) may do; unknown names grant nothing."""
    if role is None:
        return frozenset()
    names = re.split(r"[,\s]+", role) if isinstance(role, str) else list(role)
    out: set[str] = set()
    for name in names:
        out |= ROLE_GRANTS.get(str(name).strip().lower(), frozenset())
    return frozenset(out)


def error_text(exc: BaseException) -> str:
    """A tool error's text: opsrun's message, located diagnostics and hint; never a traceback,
    never a secret."""
    if isinstance(exc, OpsrunError):
        return redact(exc.render())
    return redact(f"internal error ({type(exc).__name__}): {exc}")


class OpsrunMCP(MCPServer[Any]):
    """MCPServer whose resource list also holds the project's playbooks and recent runs (they
    change while the server runs, so they are listed when asked, not registered once)."""

    def __init__(self, project: Project, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project

    async def list_resources(self) -> list[MCPResource]:
        static = await super().list_resources()
        dynamic = await anyio.to_thread.run_sync(self._dynamic_resources)
        return [*static, *dynamic]

    def _dynamic_resources(self) -> list[MCPResource]:
        out = [MCPResource(uri=f"opsrun://playbooks/{rel}", name=f"playbook {rel}", mime_type="application/yaml",
                           description=f"The playbook {rel} of the project (YAML text).")
               for rel in project_playbooks(self.project)]
        try:
            from runner.service import ops

            runs = ops.runs(self.project, limit=20)
        except OpsrunError:
            runs = []
        for r in runs:
            rid = str(r.get("run_id"))
            out.append(MCPResource(uri=f"opsrun://runs/{rid}", name=f"run {rid}", mime_type="application/json",
                                   description=f"Journal of run {rid} ({r.get('playbook')}, {r.get('outcome')}): "
                                               "every event, secrets redacted."))
        return out


def project_playbooks(project: Project) -> list[str]:
    """The playbooks of the project: YAML files with `opsrun:` and `steps:` at top level (paths
    relative to its root, hidden folders and the state folder skipped, symlinks not followed)."""
    found: list[str] = []
    root = project.root
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                         and not os.path.islink(os.path.join(folder, d)))
        for name in sorted(files):
            path = Path(folder, name)
            if not name.endswith(PLAYBOOK_SUFFIXES) or path.is_symlink():
                continue
            try:
                with path.open("rb") as fh:
                    head = fh.read(1 << 16)
            except OSError:
                continue
            if _PLAYBOOK_RE.search(head) and _STEPS_RE.search(head):
                found.append(path.relative_to(root).as_posix())
                if len(found) >= MAX_PLAYBOOKS:
                    return found
    return found


def build(
    project: Project,
    *,
    caller: Callable[[Context[Any, Any]], tuple[str, str]],
    auto_limits: AutoLimits | None = None,
) -> OpsrunMCP:
    """The server for `project`. `caller(ctx)` names who calls and their role (raising ToolError
    when no one may); `auto_limits`: plans within them are approved by policy at `apply`."""
    from runner.mcp import tools

    mcp = OpsrunMCP(project, name="opsrun", title="opsrun", instructions=INSTRUCTIONS,
                    version=_version(), log_level="WARNING")
    tools.register(mcp, project, caller=caller, auto_limits=auto_limits)
    _resources(mcp, project)
    return mcp


async def call(ctx: Context[Any, Any], caller: Callable[[Context[Any, Any]], tuple[str, str]],
               need: str, fn: Callable[[str], T]) -> T:
    """Run `fn(actor)` in a worker thread for a caller whose role grants `need`; every failure
    becomes a ToolError with clear text (the model reads it), results are redacted."""
    name, role = caller(ctx)
    if need not in grants(role):
        raise ToolError(f"permission denied: this tool needs the '{need}' role; '{name}' has '{role}'")
    try:
        result = await anyio.to_thread.run_sync(fn, name)
    except ToolError:
        raise
    except OpsrunError as exc:
        raise ToolError(error_text(exc)) from None
    except Exception as exc:  # never a traceback to the client; one line to the server's log
        log.warning("tool failed: %s", error_text(exc))
        raise ToolError(error_text(exc)) from None
    cleaned: T = redact_data(result)
    return cleaned


def wait_for(poll: Callable[[], T], done: Callable[[T], bool], seconds: float) -> T:
    """Poll until done or `seconds` pass (bounded by MAX_WAIT_S); the last value."""
    deadline = time.monotonic() + max(0.0, min(seconds, MAX_WAIT_S))
    value = poll()
    delay = 0.05
    while not done(value) and time.monotonic() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)
        value = poll()
    return value


def _resources(mcp: MCPServer[Any], project: Project) -> None:
    def schema_reader(name: str) -> Callable[[], str]:
        def read() -> str:
            from runner import schema

            try:
                return schema.schema_text(name)
            except OpsrunError as exc:
                raise ResourceError(error_text(exc)) from None
        return read

    for name, what in SCHEMAS.items():
        mcp.resource(f"opsrun://schemas/{name}", name=f"{name} schema", mime_type="application/schema+json",
                     description=f"JSON Schema of {what}. Read it before writing one.")(schema_reader(name))

    @mcp.resource("opsrun://playbooks/{+path}", name="playbook", mime_type="application/yaml",
                  description="A playbook of the project by its path relative to the project root (YAML text).")
    def playbook(path: str) -> str:
        try:
            return redact(read_playbook(project, path))
        except OpsrunError as exc:
            raise ResourceError(error_text(exc)) from None

    @mcp.resource("opsrun://runs/{run_id}", name="run journal", mime_type="application/json",
                  description="The journal of one run (its id, or 'last'): every event in order, secrets redacted.")
    def run_journal(run_id: str) -> str:
        import json

        from runner import journal

        try:
            info = journal.get_run(run_id, project.state)
        except OpsrunError as exc:
            raise ResourceError(error_text(exc)) from None
        doc = {"run_id": info.run_id, "outcome": info.outcome, "events": info.events}
        return json.dumps(redact_data(doc), indent=1, default=str)


def read_playbook(project: Project, rel: str) -> str:
    """The text of a playbook inside the project (one project_playbooks lists: no escape, no
    symlink out, no hidden folder, at most 1 MiB). Other YAML (vars files, inventories) is not
    served: it may hold values that are not marked secret."""
    from runner.errors import InvalidInput

    path = project.inside(rel)
    missing = InvalidInput(f"no playbook '{rel}' in the project",
                           hint="list the resources to see the project's playbooks")
    try:
        parts = path.relative_to(project.root).parts
    except ValueError:
        raise missing from None
    if path.suffix not in PLAYBOOK_SUFFIXES or not path.is_file() or any(p.startswith(".") for p in parts):
        raise missing
    if path.stat().st_size > MAX_READ:
        raise InvalidInput(f"'{rel}' is larger than {MAX_READ} bytes")
    data = path.read_bytes()
    if not (_PLAYBOOK_RE.search(data) and _STEPS_RE.search(data)):
        raise missing
    return data.decode("utf-8", errors="replace")


def changes(doc: Mapping[str, Any]) -> int:
    """Steps of a plan document that change or may change a target."""
    return sum(1 for s in doc.get("steps", []) if isinstance(s, Mapping)
               and (s.get("status") in CHANGING or s.get("status") == "unknown") and not s.get("read_only"))


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("opsrun")
    except Exception:
        return "0"


def read_only() -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
