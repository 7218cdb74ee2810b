"""validate's checks of handlers and `notify:`: every name a step notifies is a handler, a
handler notifies only handlers listed after it, and a handler nobody notifies is a warning.

Works on the expanded steps (runner/reuse.py puts handlers after them); no template, no host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from runner import scope as scopes
from runner.errors import Diagnostic
from runner.load import Document, PathKey
from runner.schema_messages import _suggest


def check_handlers(doc: Document, steps: list[Any], ids: dict[str, int],
                   is_handler: Callable[[int], bool]) -> list[Diagnostic]:
    handlers = {sid: at for sid, at in ids.items() if is_handler(at)}
    out: list[Diagnostic] = []
    notified: set[str] = set()
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("id"), str) or "notify" not in step:
            continue
        own = step["id"]
        space = scopes.scope_of(own)
        for path, name in _names(step["notify"]):
            at: PathKey = ("steps", i, *path)
            full = next((c for c in scopes.candidates(space, name) if c in handlers), None)
            if full is None:
                out.append(_unknown(doc, at, name, space, ids, handlers))
                continue
            notified.add(full)
            if is_handler(i) and handlers[full] <= i:
                shown = _short(full, space)
                which = "itself" if full == own else f"handler '{shown}', listed before it"
                out.append(doc.diag(at, f"handler '{_short(own, space)}' notifies {which}",
                                    hint="handlers run once, in the order they are listed: a handler may notify "
                                         "only handlers listed after it"))
    for sid, index in handlers.items():
        if sid not in notified:
            name = sid.rpartition(".")[2]
            d = doc.diag(("steps", index, "id"), f"handler '{name}' is never notified",
                         hint=f"add `notify: {name}` to the steps whose change it reacts to, or remove it")
            out.append(replace(d, severity="warning"))
    return out


def _names(value: Any) -> list[tuple[PathKey, str]]:
    if isinstance(value, str):
        return [(("notify",), value)]
    if isinstance(value, list):
        return [(("notify", k), v) for k, v in enumerate(value) if isinstance(v, str)]
    return []  # the schema says what is wrong


def _short(full: str, space: str) -> str:
    return full[len(space) + 1:] if space and full.startswith(space + ".") else full


def _unknown(doc: Document, at: PathKey, name: str, space: str, ids: dict[str, int],
             handlers: dict[str, int]) -> Diagnostic:
    if any(c in ids for c in scopes.candidates(space, name)):
        return doc.diag(at, f"'{name}' is a step, not a handler",
                        hint=f"notify names a handler: move '{name}' under handlers:, or read "
                             f"steps.<id>.changed in a when")
    known = sorted({_short(h, space) for h in handlers if scopes.sees(space, scopes.scope_of(h))})
    guess = _suggest(name, known)
    hint = (f"did you mean '{guess}'?" if guess else
            f"handlers here: {', '.join(known)}" if known else
            "define it under handlers: (a list of steps, beside steps:)")
    return doc.diag(at, f"no handler '{name}'", hint=hint)
