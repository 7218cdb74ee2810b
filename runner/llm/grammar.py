"""The playbook schema as a small model gets it: flattened for grammar-constrained decoding
(llama.cpp turns response_format into a grammar and drops what it cannot express), checked
for those constructs, and rendered compactly for the prompt. Pure data; imports nothing of
the project but runner.schema (the playbook schema), inside calls.

llama.cpp's JSON-Schema-to-grammar conversion (common/json-schema-to-grammar.cpp and its
Python port) reads one structural keyword per schema, in this order: $ref, anyOf/oneOf, a
type list, const, enum, object properties, allOf, array items, pattern, string length,
integer bounds. What sits beside a $ref or an anyOf/oneOf is dropped (so `required: [id]`
next to `allOf: [step_body]`, and "exactly one kind" as a oneOf next to properties, vanish),
`not`, if/then/else, propertyNames, uniqueItems, min/maxProperties and number bounds are
ignored, and a pattern must be anchored (^...$) and use only literal characters, classes,
groups, alternation and quantifiers. model_schema() emits none of that: one object per step
kind, each requiring `id` and its kind, no `allow`; `grammar_problems()` says what is left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

# keywords a grammar ignores (our validator checks them on the answer) or only people read
_DROP = frozenset({
    "description", "default", "format", "not", "if", "then", "else", "allOf", "propertyNames",
    "patternProperties", "minProperties", "maxProperties", "uniqueItems", "exclusiveMinimum",
    "exclusiveMaximum", "$comment", "errorMessage", "patternErrorMessage", "x-hint", "x-secret",
    "title", "$id", "$schema", "examples",
})
# what llama.cpp's conversion honours, per schema (the lint's whitelist)
_GRAMMAR_KEYWORDS = frozenset({
    "$ref", "$defs", "anyOf", "oneOf", "type", "const", "enum", "properties", "required",
    "additionalProperties", "items", "minItems", "maxItems", "pattern", "minLength", "maxLength",
    "minimum", "maximum",
})
_STRUCTURAL = frozenset({"type", "const", "enum", "properties", "required", "additionalProperties",
                         "items", "pattern", "minLength", "maxLength", "minimum", "maximum",
                         "minItems", "maxItems"})
_TEMPLATED = "#/$defs/templated"
_ESCAPES = {r"\d": "[0-9]", r"\s": "[ \t]", r"\w": "[A-Za-z0-9_]"}
_BAD_PATTERN = re.compile(r"\(\?|\\[DSWbBAZ]|\\[1-9]|[*+?}]\?")
# what a model is offered: the common step keys (policy, tags and undo steps are for people
# to add), the playbook's keys (never `allow`) and no display options
STEP_KEYS = ("id", "name", "hosts", "when", "loop", "register", "verify", "undo", "timeout", "sensitive")
PLAYBOOK_KEYS = ("opsrun", "name", "description", "hosts", "vars", "serial", "on_failure", "forbid", "steps")
PEOPLE_KEYS = frozenset({"show_diff"})


# ---------------------------------------------------------------- the flattened schema


def _pattern(pattern: str) -> str | None:
    """An anchored pattern in the subset llama.cpp converts, or None to leave it out."""
    for esc, cls in _ESCAPES.items():
        pattern = pattern.replace(esc, cls)
    if not (pattern.startswith("^") and pattern.endswith("$")) or _BAD_PATTERN.search(pattern):
        return None
    return pattern


def _simplify(node: Any) -> Any:
    """A sub-schema without what a grammar cannot express (see the module docstring)."""
    if isinstance(node, list):
        return [_simplify(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "pattern":
            anchored = _pattern(str(value))
            if anchored is not None:
                out[key] = anchored
            continue
        if key == "properties":
            out[key] = {k: _simplify(v) for k, v in value.items() if k not in PEOPLE_KEYS}
        elif key == "$defs":
            out[key] = {k: _simplify(v) for k, v in value.items()}
        else:
            out[key] = _simplify(value)
    if out.get("type") == "number":
        out.pop("minimum", None)
        out.pop("maximum", None)
    for key in ("anyOf", "oneOf"):
        if key not in out:
            continue
        # "or a template" branches go (a model writes the value itself), and so do branches
        # that only require keys (service: state or enabled): beside properties they would
        # replace the object's grammar
        branches = [b for b in out.pop(key) if b != {"$ref": _TEMPLATED} and set(b) != {"required"}]
        if len(branches) == 1:
            return _merge(out, branches[0])
        if branches:
            out[key] = branches
    if "$ref" in out and len(out) > 1:
        return {"$ref": out["$ref"]}  # a grammar reads only the $ref
    return out


def _merge(outer: dict[str, Any], inner: Any) -> Any:
    """A schema with a single anyOf branch: the branch itself (outer keys that are not
    structural, such as an enum field's type, are dropped)."""
    if not isinstance(inner, dict):
        return inner
    if not (set(outer) & _STRUCTURAL) or "$ref" in inner:
        return inner
    return {**outer, **inner}


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            yield ref[len("#/$defs/"):]
        for v in value.values():
            yield from _refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)


def step_defs(schema: dict[str, Any], kinds: Iterable[str],
              keys: Iterable[str] = STEP_KEYS) -> dict[str, Any]:
    """$defs for steps: `step_<kind>` per kind (an object requiring `id` and that kind, with
    the common `keys`), `step` = anyOf of them, and every $defs entry they refer to."""
    defs = schema.get("$defs", {})
    body = defs.get("step_body", {}).get("properties", {})
    common: dict[str, Any] = {}
    for key in keys:
        if key == "undo":
            common[key] = {"type": "string", "minLength": 1}  # a shell command; undo steps are for people
        elif key in body:
            common[key] = _simplify(body[key])
    out: dict[str, Any] = {}
    names = [k for k in sorted(kinds) if k in body]
    for kind in names:
        props = {"id": common["id"], kind: _simplify(body[kind])}
        props.update((k, v) for k, v in common.items() if k != "id")
        out[f"step_{kind}"] = {"type": "object", "additionalProperties": False, "required": ["id", kind],
                               "properties": props}
    out["step"] = {"anyOf": [{"$ref": f"#/$defs/step_{k}"} for k in names]}
    todo = list(_refs(out))
    while todo:
        name = todo.pop()
        if name in out or name not in defs:
            continue
        out[name] = _simplify(defs[name])
        todo.extend(_refs(out[name]))
    return out


def model_schema(kinds: Iterable[str], *, playbook: dict[str, Any] | None = None) -> dict[str, Any]:
    """The playbook schema for a model: the top-level keys of PLAYBOOK_KEYS (never `allow`:
    a model cannot widen the safety rules), steps of these kinds only, flattened."""
    from runner.schema import load_schema

    schema = playbook or load_schema("playbook")
    props = schema["properties"]
    top = {k: _simplify(props[k]) for k in PLAYBOOK_KEYS if k in props and k != "steps"}
    steps = _simplify({k: v for k, v in props["steps"].items() if k != "items"})
    top["steps"] = {**steps, "type": "array", "items": {"$ref": "#/$defs/step"}}
    out = {"type": "object", "additionalProperties": False,
           "required": [k for k in schema.get("required", []) if k in top], "properties": top}
    defs = step_defs(schema, kinds)
    todo = list(_refs(out))
    while todo:
        name = todo.pop()
        if name in defs or name not in schema.get("$defs", {}):
            continue
        defs[name] = _simplify(schema["$defs"][name])
        todo.extend(_refs(defs[name]))
    out["$defs"] = defs
    return out


# ---------------------------------------------------------------- the lint


def grammar_problems(schema: Any, path: str = "#") -> list[str]:
    """What llama.cpp's schema-to-grammar conversion would drop or refuse in `schema`, one
    line each ('' when a grammar enforces all of it)."""
    out: list[str] = []
    if isinstance(schema, list):
        for i, v in enumerate(schema):
            out += grammar_problems(v, f"{path}/{i}")
        return out
    if not isinstance(schema, dict):
        return out
    unknown = sorted(set(schema) - _GRAMMAR_KEYWORDS)
    if unknown:
        out.append(f"{path}: ignored by the grammar: {', '.join(unknown)}")
    if "$ref" in schema and len(schema) > 1:
        out.append(f"{path}: dropped beside $ref: {', '.join(sorted(set(schema) - {'$ref'}))}")
    for key in ("anyOf", "oneOf"):
        if key in schema and set(schema) & _STRUCTURAL:
            out.append(f"{path}: dropped beside {key}: {', '.join(sorted(set(schema) & _STRUCTURAL))}")
    if "pattern" in schema and _pattern(str(schema["pattern"])) != schema["pattern"]:
        out.append(f"{path}: pattern {schema['pattern']!r} is not anchored or not convertible")
    if schema.get("type") == "number" and ({"minimum", "maximum"} & set(schema)):
        out.append(f"{path}: number bounds are ignored (only integer ones are kept)")
    required = schema.get("required", [])
    props = schema.get("properties", {})
    if required and not all(r in props for r in required):
        out.append(f"{path}: required keys without a property: "
                   f"{', '.join(r for r in required if r not in props)}")
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            for name, sub in value.items():
                out += grammar_problems(sub, f"{path}/{key}/{name}")
        elif key in ("anyOf", "oneOf", "items", "additionalProperties"):
            out += grammar_problems(value, f"{path}/{key}")
    return out


# ---------------------------------------------------------------- the compact rendering


def render_type(node: Any, defs: dict[str, Any], depth: int = 0) -> str:
    """A sub-schema as a short type: `str`, `a|b`, `[str]`, `{path*: str, mode: "0644"}`."""
    if not isinstance(node, dict) or depth > 6:
        return "any"
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name == "identifier":
            return "name"
        if name == "mode":
            return '"0644"'
        return render_type(defs.get(name, {}), defs, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " | ".join(render_type(b, defs, depth + 1) for b in node[key])
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return "|".join(str(v) for v in node["enum"])
    kind = node.get("type")
    if isinstance(kind, list):
        return "|".join(render_type({**node, "type": k}, defs, depth + 1) for k in kind)
    if kind == "array" or "items" in node:
        return f"[{render_type(node.get('items', {}), defs, depth + 1)}]"
    if kind == "object" or "properties" in node:
        props = node.get("properties")
        if not props:
            return "{...}"
        required = set(node.get("required", []))
        fields = [f"{k}{'*' if k in required else ''}: {render_type(v, defs, depth + 1)}"
                  for k, v in props.items()]
        return "{" + ", ".join(fields) + "}"
    return {"string": "str", "integer": "int", "number": "num", "boolean": "bool",
            "null": "null"}.get(str(kind), "any")


def compact(schema: dict[str, Any], descriptions: dict[str, str] | None = None, *,
            label: str = "Playbook") -> str:
    """A flattened schema (model_schema, or an answer holding `steps`) as a few lines a small
    model can read: its keys, the common step keys, one line per kind (`*` marks required
    keys). descriptions: one line shown after each kind."""
    defs = schema.get("$defs", {})
    top = schema.get("properties", {})
    required = set(schema.get("required", []))
    lines = [f"{label}: {{" + ", ".join(
        f"{k}{'*' if k in required else ''}: {'[step]' if k == 'steps' else render_type(v, defs)}"
        for k, v in top.items()) + "}"]
    variants = [r["$ref"].rsplit("/", 1)[-1] for r in defs.get("step", {}).get("anyOf", [])]
    if variants:
        first = defs[variants[0]]["properties"]
        kind0 = variants[0][len("step_"):]
        common = {k: v for k, v in first.items() if k not in ("id", kind0)}
        lines.append("step: {id*: name, <one kind>*: ..., "
                     + ", ".join(f"{k}: {render_type(v, defs)}" for k, v in common.items()) + "}")
        lines.append("Kinds (exactly one per step):")
        for variant in variants:
            kind = variant[len("step_"):]
            about = (descriptions or {}).get(kind, "")
            text = render_type(defs[variant]["properties"][kind], defs)
            lines.append(f"- {kind}: {text}" + (f"  # {about}" if about else ""))
    return "\n".join(lines)
