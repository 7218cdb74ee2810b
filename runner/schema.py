"""Loads schemas/*.json, validates documents and turns every error into a located Diagnostic.

Pure checking: reads only the schema files, renders no template, contacts no host.
Bad user input never raises (it becomes Diagnostics); only a broken schema (a bug) does.
Message translation lives in runner/schema_messages.py, semantic checks in
runner/schema_semantics.py; this module keeps the entry points.
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import Diagnostic, InvalidInput
from runner.load import Document, PathKey
from runner.schema_messages import _KIND_REF, _describe, _kinds_of, _Translator
from runner.schema_semantics import (
    ALWAYS_KNOWN_HOSTS,
    EXPRESSION_KEYS,
    LATE_PARAM_KEYS,
    LATE_STEP_KEYS,
    Scope,
    Use,
    _Semantics,
)

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

# tests: every document is also checked by jsonschema, and schema_fast must agree with it
_CROSS_CHECK = os.environ.get("OPSRUN_SCHEMA_CROSSCHECK") == "1"

__all__ = [
    "ALWAYS_KNOWN_HOSTS",
    "EXPRESSION_KEYS",
    "LATE_PARAM_KEYS",
    "LATE_STEP_KEYS",
    "SCHEMA_DIRS",
    "SCHEMA_NAMES",
    "_KIND_REF",
    "Scope",
    "detect",
    "kind_names",
    "load_schema",
    "schema_file",
    "schema_text",
    "validate",
    "validate_gateway",
    "validate_inventory",
    "validate_playbook",
]

SCHEMA_NAMES = ("playbook", "inventory", "gateway", "steps")
SCHEMA_DIRS = (
    Path(__file__).resolve().parent.parent / "schemas",  # a source checkout
    Path(__file__).resolve().parent / "_schemas",  # an installed wheel
)

# ---------------------------------------------------------------- loading


def schema_file(name: str) -> Path | None:
    """The file of schema `name` (first of schemas/ and runner/_schemas/ that has it)."""
    for folder in SCHEMA_DIRS:
        path = folder / f"{name}.schema.json"
        if path.is_file():
            return path
    return None


def schema_text(name: str) -> str:
    """The JSON text of schema `name` (for `opsrun schema NAME`)."""
    if name not in SCHEMA_NAMES:
        raise InvalidInput(f"unknown schema '{name}'",
                           hint=f"use one of: {', '.join(SCHEMA_NAMES)}")
    path = schema_file(name)
    if path is None:
        raise InvalidInput(f"the {name} schema is not installed",
                           hint=f"expected {name}.schema.json in one of: "
                                + ", ".join(str(d) for d in SCHEMA_DIRS))
    return path.read_text(encoding="utf-8")


@cache
def _schema(name: str) -> dict[str, Any]:
    if name == "steps":  # schemas/steps.schema.json points into the playbook schema's $defs
        playbook = _schema("playbook")
        return {"$schema": playbook["$schema"], "$id": "https://opsrun.dev/schemas/steps.schema.json",
                "$defs": playbook["$defs"], "$ref": "#/$defs/steps_file"}
    path = schema_file(name)
    if path is None:
        raise RuntimeError(f"{name}.schema.json not found in {', '.join(map(str, SCHEMA_DIRS))}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if name == "playbook":
        _check_kind_lists(data)
    return data


def load_schema(name: str) -> dict[str, Any]:
    """A copy of schema `name` as data (e.g. for an LLM's structured output)."""
    return copy.deepcopy(_schema(name))


def _check_kind_lists(schema: dict[str, Any]) -> None:
    """The step kinds are listed in $defs/step_body: properties (with a $ref to
    $defs/kind_<name>) and oneOf ({"required": [name]}). A mismatch is a bug in the schema."""
    body = schema.get("$defs", {}).get("step_body", {})
    kinds = _kinds_of(body)
    one_of = [b.get("required", [None])[0] for b in body.get("oneOf", [])]
    problems = []
    if sorted(one_of) != sorted(kinds):
        problems.append(f"step_body.oneOf lists {sorted(one_of)} but step_body.properties has "
                        f"kinds {sorted(kinds)}")
    for kind in kinds:
        if f"kind_{kind}" not in schema["$defs"]:
            problems.append(f"$defs/kind_{kind} is missing")
    if not kinds:
        problems.append("no step kinds found in $defs/step_body/properties")
    if problems:
        raise RuntimeError("schemas/playbook.schema.json is inconsistent: " + "; ".join(problems))


def kind_names() -> list[str]:
    """The step kind names, read from the playbook schema (never a second list)."""
    return _kinds_of(_schema("playbook")["$defs"]["step_body"])


@cache
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator, FormatChecker

    schema = _schema(name)  # meta-validated by tests/test_schema.py, not at every start
    from jsonschema.validators import extend

    checker = FormatChecker(formats=())
    checker.checks("regex", raises=re.error)(_is_regex)
    cls = extend(Draft202012Validator, {"oneOf": _one_of(Draft202012Validator.VALIDATORS["oneOf"])})
    return cls(schema, format_checker=checker)


def _one_of(stock: Any) -> Any:
    """`oneOf` with a fast path for the "exactly one step kind" choice ([{"required": [kind]},
    ...]): a key count instead of one sub-validation per kind (most of validate's time on
    playbooks of thousands of steps). Other choices go to jsonschema's own `oneOf`."""
    from jsonschema.exceptions import ValidationError

    kind_choices: dict[int, bool] = {}

    def one_of(validator: Any, branches: Any, instance: Any, schema: Any) -> Any:
        simple = kind_choices.get(id(branches))
        if simple is None:
            simple = kind_choices[id(branches)] = all(
                isinstance(b, dict) and set(b) == {"required"} and len(b["required"]) == 1 for b in branches)
        if not simple or not isinstance(instance, dict):
            yield from stock(validator, branches, instance, schema)
            return
        present = sum(1 for b in branches if b["required"][0] in instance)
        if present == 0:
            yield ValidationError("is not valid under any of the given schemas")
        elif present > 1:
            yield ValidationError("is valid under more than one of the given schemas")

    return one_of


def _is_regex(value: object) -> bool:
    if isinstance(value, str) and "{{" not in value:
        re.compile(value)
    return True


def detect(doc: Document | Any) -> str | None:
    """'playbook' (has steps), 'gateway' (has providers), 'inventory' (hosts mapping), or None.
    A mapping with `name` or a string/list `hosts` but no steps counts as a playbook; so does a
    step file (params:), which validate_playbook checks as one."""
    data = doc.data if isinstance(doc, Document) else doc
    if not isinstance(data, dict):
        return None
    if "steps" in data or ("params" in data and "hosts" not in data):
        return "playbook"
    if "providers" in data:
        return "gateway"
    if isinstance(data.get("hosts"), dict) or "groups" in data:
        return "inventory"
    if "name" in data or isinstance(data.get("hosts"), str | list):
        return "playbook"  # a playbook whose steps: key is missing or misspelt
    return None


# ---------------------------------------------------------------- public validation


def validate_playbook(
    doc: Document, *, hosts: set[str] | None = None, groups: set[str] | None = None,
    scope: Scope | None = None, uses: list[Use] | None = None,
) -> list[Diagnostic]:
    """Every problem of a playbook (or step file), its includes, roles and vars files in place
    (runner/reuse.py): schema errors of every file, include and parameter errors, then ids,
    templates, step references, (when `hosts`/`groups` are given) unknown host names and (with
    `scope`, the variable names known per host) undefined variables. `uses` receives every
    template, parsed."""
    from runner import reuse

    tree = reuse.expand(doc)
    root = tree.root or tree
    diags = _schema_diagnostics(root, "steps" if tree.step_file else "playbook")
    diags += tree.problems
    semantics = _Semantics(tree)
    # a step file alone: the names its steps read may come from any caller, so none is checked
    diags += semantics.playbook(hosts, groups, None if tree.step_file else scope)
    if uses is not None:
        uses += semantics.uses
    diags += _safety_entries(root)
    return _finish(diags)


def validate_inventory(doc: Document) -> list[Diagnostic]:
    """Every problem of an inventory: schema errors, unknown group members, group cycles."""
    diags = _schema_diagnostics(doc, "inventory")
    diags += _Semantics(doc).inventory()
    diags += _safety_entries(doc)
    return _finish(diags)


def _safety_entries(doc: Document) -> list[Diagnostic]:
    """`forbid:`/`allow:` entries (top level, groups, hosts) that the safety rules cannot read."""
    from runner.safety import validate_entry

    data = doc.data if isinstance(doc.data, dict) else {}
    places: list[tuple[PathKey, Any]] = [((), data)]
    for section in ("groups", "hosts"):
        for name, body in (data.get(section) or {}).items() if isinstance(data.get(section), dict) else []:
            places.append(((section, name), body))
    out = []
    for base, body in places:
        if not isinstance(body, dict):
            continue
        for key in ("forbid", "allow"):
            entries = body.get(key)
            for i, entry in enumerate(entries if isinstance(entries, list) else []):
                problem = validate_entry(entry) if isinstance(entry, str) else None
                if problem:
                    out.append(doc.diag((*base, key, i), f"{key} entry: {problem}",
                                        hint="see docs/safety.md for rule names, globs and re: patterns"))
    return out


def validate_gateway(doc: Document) -> list[Diagnostic]:
    """Schema errors of a gateway file (no checks when gateway.schema.json is absent)."""
    if schema_file("gateway") is None:
        return []
    return _finish(_schema_diagnostics(doc, "gateway"))


def validate(
    doc: Document, *, hosts: set[str] | None = None, groups: set[str] | None = None
) -> list[Diagnostic]:
    """Detect what `doc` is and validate it; an unrecognisable document is one Diagnostic."""
    what = detect(doc)
    if what == "playbook":
        return validate_playbook(doc, hosts=hosts, groups=groups)
    if what == "inventory":
        return validate_inventory(doc)
    if what == "gateway":
        return validate_gateway(doc)
    at = 1 if doc.data is not None else 0
    return [Diagnostic(doc.file, at, at, "not a playbook, inventory or gateway file",
                       hint="a playbook has steps:, an inventory has hosts:, "
                            "a gateway has providers:")]


def _finish(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Sorted (the file validated first, then included files) and without repeats."""
    first = diags[0].file if diags else ""
    seen: set[tuple[str, int, int, str]] = set()
    out = []
    for d in sorted(diags, key=lambda d: (d.file != first, d.file if d.file != first else "", d.line, d.col)):
        if (d.file, d.line, d.col, d.message) not in seen:
            seen.add((d.file, d.line, d.col, d.message))
            out.append(d)
    return out



def schema_diagnostics(doc: Document, name: str) -> list[Diagnostic]:
    """The schema errors of one file (`name`: playbook, inventory, gateway or steps)."""
    return _schema_diagnostics(doc, name)


def _schema_diagnostics(doc: Document, name: str) -> list[Diagnostic]:
    shown = "step file" if name == "steps" else name
    if doc.data is None:
        return [Diagnostic(doc.file, 0, 0, f"the file is empty; expected a {shown}",
                           hint="start with `opsrun: 1`; see docs/playbooks.md")]
    if not isinstance(doc.data, dict):
        got = _describe(doc.data)
        return [doc.diag((), f"a {shown} must be a mapping of keys to values, got {got}",
                         hint="see docs/reuse.md for step files" if name == "steps"
                         else "see docs/playbooks.md for the format")]
    from runner import schema_cache, schema_fast

    remembered = schema_cache.key(name, _schema(name), doc.data)
    if schema_cache.known(remembered):
        return []
    fast = schema_fast.valid(_schema(name), doc.data)  # valid for sure: no jsonschema to import
    if fast and not _CROSS_CHECK:
        schema_cache.remember(remembered)
        return []
    translator = _Translator(doc, _schema(name), shown)
    for err in _validator(name).iter_errors(doc.data):
        translator.add(err)
    diags = translator.diagnostics()
    if _CROSS_CHECK and fast != (not diags):
        raise RuntimeError(f"schema_fast says {'valid' if fast else 'maybe invalid'} for {doc.file} ({name}), "
                           f"jsonschema found {len(diags)} errors: {[d.message for d in diags[:3]]}")
    if not diags:
        schema_cache.remember(remembered)
    return diags
