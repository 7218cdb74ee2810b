"""The step-kind contract and registry.

A step kind owns its parameters (a `$defs` entry in schemas/playbook.schema.json), the
read-only probes it needs, and a pure function (params, probe answers) -> Change. It never
talks to a host itself: probes and actions go through a transport, chosen by apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from runner.model import Change, CommandResult, Host, Probe, ProbeResult, Step
from runner.overlay import Effect, Overlay
from runner.transports import capabilities, offering

Facts = dict[str, ProbeResult]


class OverlayUnknown(Exception):
    """The state a step would find cannot be known offline (an earlier step decides it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StepContext:
    """What a step kind may know about where it runs."""

    host: Host
    playbook_dir: str = "."
    run_dir: str | None = None  # the run folder (artifacts), only at apply time
    render: Callable[[str, dict[str, Any]], str] | None = None  # sandboxed text renderer
    vars: dict[str, Any] = field(default_factory=dict)
    sudo: bool | None = None  # the step's own `sudo:` (None: as the host says)


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


class StepKind:
    """Base class; subclasses set `name`, `needs` and override what they need."""

    name: ClassVar[str] = ""
    # capabilities a host's transport must offer (runner.transports.CAPABILITIES); empty: any
    needs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def runs_on(cls, transport: str) -> bool:
        """Whether this kind can run on a host of `transport`."""
        return cls.needs <= capabilities(transport)

    @classmethod
    def runs_where(cls) -> list[str]:
        """The transports this kind runs on (for messages)."""
        return offering(cls.needs)
    # params rendered as shell text: template values in them are shell-quoted
    shell_fields: ClassVar[frozenset[str]] = frozenset()
    # params that are Jinja expressions evaluated after the step ran (not rendered up front)
    late_fields: ClassVar[frozenset[str]] = frozenset()

    def normalize(self, params: Any) -> dict[str, Any]:
        """Short forms -> the full dict (e.g. `run: "cmd"` -> {"command": "cmd"})."""
        return dict(params) if isinstance(params, dict) else {"value": params}

    def read_only(self, params: dict[str, Any]) -> bool:
        """True when the step declares it never changes anything (e.g. changed_when: false)."""
        return False

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Local-side work before planning (read a template source, a local file). May do
        local I/O; never touches the target."""
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        """Read-only questions for the host, asked as named facts (runner/steps/facts.py:
        `facts.ask(ctx, "stat", path)`). Keys are local to this step; the planner sends a fact
        that several steps on one host ask only once."""
        return []

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        """Pure: decide what would change and the exact actions."""
        raise NotImplementedError

    # The planned state carried across steps (runner/overlay.py). A kind that manages
    # state says what its change leaves (`effects`) and reads its probe answers as the
    # earlier steps will have left them (`view`). A kind without them is opaque.
    needs_identity: ClassVar[bool] = False  # wants the host's user/group/umask for new files

    def destinations(self, params: dict[str, Any]) -> list[tuple[str, bool]]:
        """Paths this step writes (path, True when it removes it): checked against the
        safety rules at plan time, so a forbidden destination shows `!` in the plan."""
        return []

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        """`facts` as they will be when this step runs; raise OverlayUnknown when unknowable."""
        return facts

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        """What `change` leaves on the host (facts: as viewed). Default: nothing known."""
        return []

    def run_local(self, params: dict[str, Any], ctx: StepContext) -> CommandResult:
        """Carry out an Action(kind="local") on the machine running opsrun (e.g. ask an LLM)."""
        raise NotImplementedError(f"step kind '{self.name}' has no local actions")

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        """After the actions ran: (status, message), status in changed|ok|failed.
        Default: failed at the first non-zero rc, else changed."""
        for r in results:
            if r.rc != 0:
                detail = (r.err or r.out).strip().splitlines()
                return "failed", f"rc {r.rc}" + (f": {detail[-1]}" if detail else "")
        return "changed", ""


REGISTRY: dict[str, StepKind] = {}


def register(kind: StepKind) -> StepKind:
    REGISTRY[kind.name] = kind
    return kind


def get(name: str) -> StepKind:
    if name not in REGISTRY:
        load_all()
    return REGISTRY[name]


def load_all() -> dict[str, StepKind]:
    """Import every step-kind module of runner/steps/ (they are light: no target libraries);
    each registers its kinds. A new module there is found without being listed anywhere."""
    import importlib
    import pkgutil

    import runner.steps

    for info in pkgutil.iter_modules(runner.steps.__path__):
        if info.name not in _NOT_KINDS:
            importlib.import_module(f"runner.steps.{info.name}")
    return REGISTRY


# helpers, not step kinds
_NOT_KINDS = frozenset({"base", "facts", "host_facts", "paths", "names", "sources", "adb_overlay", "pve_overlay",
                        "pve_values", "shell_content"})
