"""Output formats in one table: a format's name -> how it renders a plan, an apply recap, the
list of runs, one run and the error document of a command that could not run; the CLI's
choices come from it. Imports report and ci_report only when rendering.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from runner.errors import InvalidInput, OpsrunError

if TYPE_CHECKING:
    from runner.journal import RunInfo
    from runner.model import Plan
    from runner.recap import Recap

Document = Literal["plan", "recap", "runs", "run", "merged", "error"]
Renderer = Callable[..., str]  # (runner.report, the document, color, **context) -> text; report loads late

FORMATS: dict[str, dict[Document, Renderer]] = {
    "text": {
        "plan": lambda r, plan, color: r.plan_text(plan, color=color),
        "recap": lambda r, recap, color, run_id, events: r.recap_text(recap, run_id, color=color, events=events),
        "runs": lambda r, runs, color: r.runs_table(runs),
        "run": lambda r, run, color: _do().do_timeline(run) if _do().is_do_run(run) else r.run_timeline(run),
        "merged": lambda r, doc, color: _merge().merged_text(doc),
    },
    "markdown": {
        "plan": lambda r, plan, color: r.plan_markdown(plan),
        "merged": lambda r, doc, color: _merge().merged_markdown(doc),
        "error": lambda r, exc, color, command: _ci().error_markdown(command, exc),
    },
    "json": {
        "plan": lambda r, plan, color: r.plan_json(plan),
        "recap": lambda r, recap, color, run_id, events: r.recap_json_line(recap, run_id, events=events),
        "runs": lambda r, runs, color: r.runs_json(runs),
        "run": lambda r, run, color: r.run_json(run),
        "merged": lambda r, doc, color: json.dumps(doc, indent=2, default=str) + "\n",
        "error": lambda r, exc, color, command: json.dumps(_ci().error_document(command, exc), indent=2) + "\n",
    },
}


def _ci() -> Any:
    from runner import ci_report

    return ci_report


def _do() -> Any:
    from runner import report_do

    return report_do


def _merge() -> Any:
    from runner import merge

    return merge


def names(document: Document) -> tuple[str, ...]:
    """The formats that render `document`, in the table's order (the CLI option's choices)."""
    return tuple(name for name, renderers in FORMATS.items() if document in renderers)


def choices_text(document: Document, sep: str = " | ") -> str:
    """The choices as an option's help shows them: `text | markdown | json`."""
    return sep.join(names(document))


def check(name: str, document: Document, option: str = "--format") -> str:
    """`name` when it renders `document`; else InvalidInput naming the choices."""
    if document in FORMATS.get(name, {}):
        return name
    *rest, last = names(document)
    choices = f"{', '.join(rest)} or {last}" if rest else last
    raise InvalidInput(f"{option} {name!r}: use {choices}")


def _render(name: str, document: Document, doc: Any, color: bool, **context: Any) -> str:
    from runner import report  # the renderers load only when something is rendered (fast --help)

    return FORMATS[check(name, document)][document](report, doc, color, **context)


def plan(the_plan: Plan, name: str, *, color: bool = False) -> str:
    return _render(name, "plan", the_plan, color)


def recap(the_recap: Recap, run_id: str, name: str, *, color: bool = False,
          events: list[dict[str, Any]] | None = None) -> str:
    return _render(name, "recap", the_recap, color, run_id=run_id, events=events)


def runs(infos: list[RunInfo], name: str) -> str:
    return _render(name, "runs", infos, False)


def run(info: RunInfo, name: str) -> str:
    return _render(name, "run", info, False)


def merged(doc: dict[str, Any], name: str) -> str:
    """`runs merge`: the shards' runs as one recap."""
    return _render(name, "merged", doc, False)


def error(exc: OpsrunError, command: str, name: str) -> str:
    """The document a machine format prints when `command` could not make its own ("" for
    formats without one: text, whose message goes to stderr)."""
    if "error" not in FORMATS.get(name, {}):
        return ""
    return _render(name, "error", exc, False, command=command)
