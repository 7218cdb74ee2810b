"""Typed parameters of step files and roles: declarations checked, call sites checked (unknown,
missing, wrong type) and, at plan and apply time, values bound for the included steps.

Checks located Diagnostics and renders `with:` values; reads no file, contacts no host.
"""

from __future__ import annotations

from typing import Any

from runner import render
from runner.errors import Diagnostic
from runner.load import Document, PathKey
from runner.model import IncludeLayer
from runner.schema_messages import _suggest

TYPES = ("string", "integer", "number", "boolean", "list", "mapping", "any")
_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "list": "a list",
    "mapping": "a mapping",
}
_ANSIBLE_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "dict": "mapping",
                  "raw": "any", "path": "string"}
# names every template already has: a parameter may not hide them
RESERVED = frozenset({"steps", "item", "loop_index", "inventory_hostname", "host", "groups", "playbook_dir",
                      "secret", "range", "dict", "lipsum", "cycler", "joiner", "namespace"})


class ParamError(Exception):
    """A parameter value that does not fit its declaration, or cannot be rendered."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def declarations(data: Any) -> dict[str, dict[str, Any]]:
    """The well-formed parameter declarations of a step file (name -> {type, default?, ...})."""
    params = data.get("params") if isinstance(data, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for name, decl in (params or {}).items() if isinstance(params, dict) else ():
        if isinstance(decl, dict):
            kind = decl.get("type", "any")
            out[str(name)] = {**decl, "type": kind if kind in TYPES else "any"}
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"'{shown}' (a string)"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    if isinstance(value, list | tuple):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def problem(decl: dict[str, Any], value: Any) -> str:
    """Why `value` does not fit `decl` ("" when it does)."""
    kind = decl.get("type", "any")
    fits = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "list": isinstance(value, list | tuple),
        "mapping": isinstance(value, dict),
    }.get(kind, True)
    if not fits:
        return f"must be {_WORDS[kind]} ({kind}), got {_describe(value)}"
    choices = decl.get("choices")
    if isinstance(choices, list) and value not in choices:
        return f"must be one of: {', '.join(map(str, choices))} (got {_describe(value)})"
    return ""


def coerce(decl: dict[str, Any], value: Any) -> Any:
    """A rendered value fitted to its type: text that renders "8080" is a number for an integer
    parameter, "true"/"false" a boolean (as Ansible's argument specs convert)."""
    kind = decl.get("type", "any")
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind == "integer" and text.lstrip("+-").isdigit():
                return int(text)
            if kind == "number":
                return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return value
        if kind == "boolean" and text.lower() in ("true", "false", "yes", "no"):
            return text.lower() in ("true", "yes")
    return value


def _declared_at(decl_doc: Document, name: str) -> str:
    m = decl_doc.mark(("params", name), key=True)
    return f"{decl_doc.file}:{m.line}"


def _about(decl: dict[str, Any]) -> str:
    text = f"type {decl.get('type', 'any')}"
    if decl.get("description"):
        text += f": {decl['description']}"
    return text


# ---------------------------------------------------------------- the step file's own declarations


def check_declarations(doc: Document) -> list[Diagnostic]:
    """Defaults that do not fit their type, names that hide built-in names, Ansible type names."""
    data = doc.data if isinstance(doc.data, dict) else {}
    params = data.get("params")
    out: list[Diagnostic] = []
    for name, decl in params.items() if isinstance(params, dict) else ():
        if name in RESERVED:
            out.append(doc.diag(("params", name), f"parameter '{name}' would hide the built-in name '{name}'",
                                hint="choose another name", key=True))
        if not isinstance(decl, dict):
            continue
        kind = decl.get("type")
        if isinstance(kind, str) and kind in _ANSIBLE_TYPES:
            continue  # the schema reports it; the hint below names the opsrun word
        if "default" in decl and decl["default"] is not None and not _templated(decl["default"]):
            why = problem({**decl, "type": kind if kind in TYPES else "any"}, decl["default"])
            if why:
                out.append(doc.diag(("params", name, "default"), f"the default of parameter '{name}' {why}",
                                    hint=f"write a default that fits type {kind}"))
    return out


def type_hint(value: Any) -> str:
    """For the schema's enum error on `type:`: Ansible's argument-spec names, mapped."""
    return f"write type: {_ANSIBLE_TYPES[value]}" if isinstance(value, str) and value in _ANSIBLE_TYPES else ""


def _templated(value: Any) -> bool:
    return bool(render.has_template(value)) if isinstance(value, str) else False


# ---------------------------------------------------------------- call sites


def check_call(
    doc: Document, at: PathKey, given: Any, decls: dict[str, dict[str, Any]], decl_doc: Document, target: str
) -> list[Diagnostic]:
    """`with:` of one include or role step against what the file declares: unknown names
    (with a guess), required ones missing, literal values of the wrong type or not a choice."""
    out: list[Diagnostic] = []
    values = given if isinstance(given, dict) else {}
    takes = ", ".join(sorted(decls)) or "none"
    for name, value in values.items():
        if name not in decls:
            guess = _suggest(str(name), sorted(decls))
            hint = f"did you mean '{guess}'?" if guess else (
                f"{target} takes: {takes}" if decls else f"{target} declares no parameters (params: {{}})")
            out.append(doc.diag((*at, "with", name), f"{target} has no parameter '{name}'", hint=hint, key=True))
            continue
        if _templated(value):
            continue  # checked after rendering, per host (validate and plan)
        why = problem(decls[name], value)
        if why:
            decl = decls[name]
            hint = f"{_declared_at(decl_doc, name)} declares {name}: {_about(decl)}"
            if isinstance(value, str) and coerce(decl, value) != value:
                hint += f"; write it without quotes: {name}: {value}"
            out.append(doc.diag((*at, "with", name), f"parameter '{name}' {why}", hint=hint))
    missing = [n for n, d in decls.items() if "default" not in d and n not in values]
    for name in missing:
        decl = decls[name]
        example = {"integer": "8080", "number": "1.5", "boolean": "true", "list": "[a, b]",
                   "mapping": "{key: value}"}.get(decl.get("type", "any"), "...")
        out.append(doc.diag(at, f"missing parameter '{name}', required by {target}",
                            hint=f"add with: {{{name}: {example}}} ({_declared_at(decl_doc, name)}: "
                                 f"{_about(decl)})", key=True))
    return out


# ---------------------------------------------------------------- binding at plan and apply time


def bind(layer: IncludeLayer, caller: dict[str, Any]) -> dict[str, Any]:
    """The variables of the steps inside `layer`: the file's defaults < what the caller sees <
    the parameters (`with:` values rendered in the caller's namespace, else declared defaults).
    Raises render.PendingResult (a value read a result not known yet) or ParamError."""
    from runner.variables import Resolver, VarError

    values: dict[str, Any] = {}
    for name, raw in layer.given.items():
        try:
            values[name] = render.render_value(raw, caller)
        except render.RenderError as exc:
            raise ParamError(name, f"parameter '{name}': {exc.message}") from None
    late = {n: d["default"] for n, d in layer.params.items() if n not in values and "default" in d}
    defaults = {k: v for k, v in layer.defaults.items() if k not in caller}  # what the caller sees wins
    if defaults or any(render.holds_template(v) for v in late.values()):
        # defaults and templated parameter defaults may read each other and the given values
        resolver = Resolver({**defaults, **caller, **late, **values}, literal=set(caller) | set(values))
        for name in [*late, *defaults]:
            try:
                got = resolver.get(name)
            except VarError as exc:
                what = "parameter" if name in late else "default"
                raise ParamError(name, f"{what} '{name}': {exc.message}") from None
            if name in late:
                values[name] = got
            else:
                defaults[name] = got
    else:
        values.update(late)
    for name, decl in layer.params.items():
        if name not in values:
            raise ParamError(name, f"missing parameter '{name}'")
        value = coerce(decl, values[name])
        if value is None and "default" in decl and decl["default"] is None:
            continue
        why = problem(decl, value)
        if why:
            raise ParamError(name, f"parameter '{name}' {why} (after rendering)")
        values[name] = value
    return {**defaults, **caller, **values}

