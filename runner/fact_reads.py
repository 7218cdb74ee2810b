"""Which host facts a host's steps read, from parsed templates (when, loop, params, includes, template
files, the vars they read). No host, no file (the caller reads). Imports fact_names, render, reuse, variables."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from runner import fact_names as N
from runner import render, reuse
from runner.model import Step
from runner.variables import template_names


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


@lru_cache(maxsize=8192)
def _expression_names(source: str) -> frozenset[str]:
    return frozenset(template_names("{{ " + source + " }}"))


def _reads(value: Any, live: frozenset[str], expression: bool = False) -> tuple[set[str], set[str]]:
    """(fact paths, names) that the templates in `value` read; facts through the `live` names."""
    paths: set[str] = set()
    names: set[str] = set()
    for text in _strings(value):
        if expression:
            names |= _expression_names(text)
        elif render.has_template(text):
            names |= template_names(text)
        for chain, _line in N.chains(text, expression):
            if chain[0] in live:
                paths.add(N.canonical(chain))
    return paths, names


def _template_source(step: Step, playbook_dir: str, render_src: Callable[[str], str | None],
                     read: Callable[[str, str], str]) -> str:
    params = step.params if isinstance(step.params, dict) else {}
    src = params.get("src") if step.kind == "template" else None
    if not isinstance(src, str) or not src:
        return ""
    if render.has_template(src):
        src = render_src(src) or ""
        if not src:
            return ""
    base = step.dir or playbook_dir
    return read(base, reuse.source_path(step.dir, step.kind, src) if step.dir else src)


def step_reads(
    steps: Sequence[Step],
    raw_vars: Mapping[str, Any],
    playbook_dir: str,
    render_src: Callable[[str], str | None] = lambda _s: None,
    read: Callable[[str, str], str] = lambda _base, _src: "",
) -> dict[str, frozenset[str]]:
    """Step id -> the facts it reads (fact_names.canonical paths: "facts.os.family"), through
    the variables it reads too; steps that read none are left out. `raw_vars`: the host's
    variables as written (a name defined there is the playbook's own, not a fact);
    `render_src`: renders a templated template `src:` (None when it cannot); `read(folder,
    src)`: a template file's text, as the step would read it ("" when it cannot)."""
    own = set(raw_vars)
    live = N.ALL_ROOTS - own
    memo: dict[str, set[str]] = {}

    def through(names: set[str], seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for name in names & own:
            if name in seen:
                continue
            if name not in memo:
                paths, inner = _reads(raw_vars[name], live)
                memo[name] = paths | through(inner, seen | {name})
            out |= memo[name]
        return out

    result: dict[str, frozenset[str]] = {}
    for step in steps:
        parts: list[tuple[Any, bool]] = [(step.when, True), (step.loop, False), (step.params, False),
                                         (step.verify, False), (step.undo, False)]
        for layer in step.layers:
            parts += [(layer.when, True), (layer.given, False), (layer.defaults, False),
                      ([d.get("default") for d in layer.params.values() if isinstance(d, dict)], False)]
        text = _template_source(step, playbook_dir, render_src, read)
        if text:
            parts.append((text, False))
        paths: set[str] = set()
        names: set[str] = set()
        for value, expression in parts:
            if value is None:
                continue
            p, n = _reads(value, live, expression)
            paths |= p
            names |= n
        found = paths | through(names)
        if found:
            result[step.id] = frozenset(found)
    return result
