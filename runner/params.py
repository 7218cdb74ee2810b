"""Checks of rendered step parameters against the schema: enum fields written as templates
must render to a listed value; list fields (package names) render to a list of strings.

Pure: reads the playbook schema through runner.schema; no host, no file besides it.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from runner import schema
from runner.render import RenderError


class ParamError(RenderError):
    """A rendered parameter does not fit its field; `field` names it (e.g. "state")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


_defs_lock = threading.Lock()  # hosts planned in parallel ask at once: one copy of the schema, not one each


@cache
def _defs() -> dict[str, Any]:
    """The playbook schema's $defs, read only (the schema module's own copy: no deep copy of
    ~100 KB at every start)."""
    defs: dict[str, Any] = schema._schema("playbook")["$defs"]
    return defs


@cache
def fields(kind_name: str) -> tuple[dict[str, tuple[Any, ...]], frozenset[str]]:
    """(enum fields -> allowed values, list-of-strings fields) of a kind, from the schema."""
    with _defs_lock:
        defs = _defs()
    body = defs.get(f"kind_{kind_name}")
    enums: dict[str, tuple[Any, ...]] = {}
    lists: set[str] = set()
    bodies = [body] if isinstance(body, dict) else []
    for b in list(bodies):  # a short form and a mapping form: the mapping's properties count
        bodies += [x for x in b.get("anyOf", []) if isinstance(x, dict)]
    for b in bodies:
        for name, sub in (b.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            branches = [sub, *[x for x in sub.get("anyOf", []) if isinstance(x, dict)]]
            for br in branches:
                if "enum" in br:
                    enums[name] = tuple(br["enum"])
                items = br.get("items")
                if br.get("type") == "array" and isinstance(items, dict) and items.get("type") == "string":
                    lists.add(name)
    return enums, frozenset(lists)


def coerce_params(kind_name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` after rendering, fitted to the kind's fields: an enum field must hold one of its
    values; a list-of-names field takes a list (a template rendering to a list inside a list is
    spliced in) or one string. Raises ParamError naming the field and what is allowed."""
    enums, lists = fields(kind_name)
    out = dict(params)
    for name, allowed in enums.items():
        if name in out and out[name] is not None and out[name] not in allowed:
            options = ", ".join(str(a) for a in allowed)
            raise ParamError(name, f"{name} must be one of: {options} (got {_short(out[name])})")
    for name in lists:
        if name not in out:
            continue
        value = out[name]
        if isinstance(value, str):
            continue
        if not isinstance(value, list | tuple):
            raise ParamError(name, f"{name}: expected a name or a list of names, got {_describe(value)}")
        flat: list[str] = []
        for item in value:
            for one in item if isinstance(item, list | tuple) else [item]:
                if not isinstance(one, str) or not one:
                    got = "an empty string" if one == "" else _describe(one)
                    raise ParamError(name, f"{name}: every item must be a name, got {got}")
                flat.append(one)
        out[name] = flat
    return out
