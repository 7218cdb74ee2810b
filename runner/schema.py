"""Loads schemas/*.json, validates documents and turns every error into a located Diagnostic.

Pure checking: reads only the schema files, renders no template, contacts no host.
Bad user input never raises (it becomes Diagnostics); only a broken schema (a bug) does.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import Diagnostic, InvalidInput
from runner.load import Document, PathKey, json_path

if TYPE_CHECKING:
    from jinja2 import Environment
    from jsonschema import Draft202012Validator, ValidationError

SCHEMA_NAMES = ("playbook", "inventory", "gateway")
SCHEMA_DIRS = (
    Path(__file__).resolve().parent.parent / "schemas",  # a source checkout
    Path(__file__).resolve().parent / "_schemas",  # an installed wheel
)
ALWAYS_KNOWN_HOSTS = frozenset({"all", "local", "localhost"})
EXPRESSION_KEYS = frozenset({"when", "changed_when", "failed_when"})
# step fields evaluated after the step ran: they may read the step's own result
LATE_STEP_KEYS = frozenset({"verify", "undo"})
LATE_PARAM_KEYS = frozenset({"changed_when", "failed_when"})
_KIND_REF = "#/$defs/kind_"
_TYPE_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}

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


def _kinds_of(step_body: dict[str, Any]) -> list[str]:
    return [name for name, sub in step_body.get("properties", {}).items()
            if isinstance(sub, dict) and str(sub.get("$ref", "")).startswith(_KIND_REF)]


def kind_names() -> list[str]:
    """The step kind names, read from the playbook schema (never a second list)."""
    return _kinds_of(_schema("playbook")["$defs"]["step_body"])


@cache
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator, FormatChecker

    schema = _schema(name)  # meta-validated by tests/test_schema.py, not at every start
    checker = FormatChecker(formats=())
    checker.checks("regex", raises=re.error)(_is_regex)
    return Draft202012Validator(schema, format_checker=checker)


def _is_regex(value: object) -> bool:
    if isinstance(value, str) and "{{" not in value:
        re.compile(value)
    return True


def detect(doc: Document | Any) -> str | None:
    """'playbook' (has steps), 'gateway' (has providers), 'inventory' (hosts mapping), or None.
    A mapping with `name` or a string/list `hosts` but no steps counts as a playbook."""
    data = doc.data if isinstance(doc, Document) else doc
    if not isinstance(data, dict):
        return None
    if "steps" in data:
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
    doc: Document, *, hosts: set[str] | None = None, groups: set[str] | None = None
) -> list[Diagnostic]:
    """Every problem of a playbook: schema errors, then ids, templates, step references and
    (when `hosts`/`groups` are given) unknown host names."""
    diags = _schema_diagnostics(doc, "playbook")
    diags += _Semantics(doc).playbook(hosts, groups)
    diags += _safety_entries(doc)
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
    seen: set[tuple[int, int, str]] = set()
    out = []
    for d in sorted(diags, key=lambda d: (d.line, d.col)):
        if (d.line, d.col, d.message) not in seen:
            seen.add((d.line, d.col, d.message))
            out.append(d)
    return out


# ---------------------------------------------------------------- schema errors -> issues


@dataclass
class _Issue:
    path: PathKey  # where to point
    message: str
    hint: str = ""
    key: bool = False  # point at the key of `path` rather than its value
    tag: tuple[Any, ...] = ()  # what the issue is about, for collapsing duplicates


def _schema_diagnostics(doc: Document, name: str) -> list[Diagnostic]:
    if doc.data is None:
        return [Diagnostic(doc.file, 0, 0, f"the file is empty; expected a {name}",
                           hint="start with `opsrun: 1`; see docs/playbooks.md")]
    if not isinstance(doc.data, dict):
        got = _describe(doc.data)
        return [doc.diag((), f"a {name} must be a mapping of keys to values, got {got}",
                         hint="see docs/playbooks.md for the format")]
    translator = _Translator(doc, _schema(name), name)
    for err in _validator(name).iter_errors(doc.data):
        translator.add(err)
    return translator.diagnostics()


class _Translator:
    """Turns jsonschema errors into plain, located issues, one per mistake."""

    def __init__(self, doc: Document, root: dict[str, Any], what: str) -> None:
        self.doc = doc
        self.root = root
        self.what = what
        self.issues: list[_Issue] = []
        self.kinds = set(_kinds_of(root.get("$defs", {}).get("step_body", {})))

    # ------------------------------------------------------------ dispatch
    def add(self, err: ValidationError) -> None:
        v = err.validator
        path: PathKey = tuple(err.absolute_path)
        schema: Any = err.schema
        handler = getattr(self, f"_on_{v}", None)
        if v in ("anyOf", "oneOf") and self._is_kind_choice(schema):
            self._on_kind_choice(err, path)
        elif isinstance(schema, dict) and schema.get("errorMessage") and (
                v in ("anyOf", "oneOf", "not", "const", "minProperties", "maxProperties")
                or _from_branch(err)):
            self._custom(err, path, schema)
        elif handler is not None:
            handler(err, path)
        else:
            self._emit(path, f"{self._label(path)}: {self._raw_message(err)}")

    def _emit(self, path: PathKey, message: str, hint: str = "", *, key: bool = False,
              tag: tuple[Any, ...] = ()) -> None:
        self.issues.append(_Issue(path, message, hint, key, tag))

    def _custom(self, err: ValidationError, path: PathKey, schema: dict[str, Any]) -> None:
        msg = str(schema["errorMessage"])
        key = False
        forbidden_key = err.validator == "not" and err.validator_value == {}
        if path and isinstance(path[-1], str) and (_is_mapping(err.instance) or forbidden_key):
            key = True  # a rule about an object or a forbidden key: point at the key
        self._emit(path, self._sentence(path, msg), str(schema.get("x-hint", "")), key=key)

    # ------------------------------------------------------------ keys
    def _on_additionalProperties(self, err: ValidationError, path: PathKey) -> None:
        inst = err.instance
        schema = err.schema
        if not isinstance(inst, dict) or not isinstance(schema, dict):
            return
        props = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = [k for k in inst if k not in props and not any(re.search(p, k) for p in patterns)]
        allowed = [k for k, sub in props.items()
                   if not (isinstance(sub, dict) and sub.get("not") == {})]
        is_step = schema is self.root.get("$defs", {}).get("step_body")
        present_kinds = [k for k in inst if k in self.kinds] if is_step else []
        for extra in extras:
            suggestion = _suggest(extra, allowed)
            where = (*path, extra)
            written = self._source(where, key=True)
            if extra in ("true", "false") and written.lower() != extra:
                # YAML 1.1 reads unquoted on/off/yes/no keys as booleans
                self._emit(where, f"YAML reads the unquoted key '{written}' as {extra}",
                           f'quote it: "{written}":', key=True,
                           tag=("unknown", path, extra, written, False))
                continue
            if is_step and not present_kinds:
                kind_guess = _suggest(extra, sorted(self.kinds))
                if kind_guess or len(extras) == 1:
                    hint = (f"did you mean '{kind_guess}'?" if kind_guess
                            else f"step kinds are: {', '.join(sorted(self.kinds))}")
                    self._emit(where, f"unknown step kind '{extra}'", hint, key=True,
                               tag=("unknown", path, extra, kind_guess, True))
                    continue
            if suggestion:
                hint = f"did you mean '{suggestion}'?"
            else:
                shown = [k for k in allowed if k not in self.kinds]
                hint = "allowed keys here: " + ", ".join(shown)
                if is_step:
                    hint += ", and one step kind (" + ", ".join(sorted(self.kinds)) + ")"
            self._emit(where, f"unknown key '{extra}'" + self._in(path), hint, key=True,
                       tag=("unknown", path, extra, suggestion, False))

    def _on_required(self, err: ValidationError, path: PathKey) -> None:
        inst = err.instance
        if not isinstance(inst, dict):
            return
        for name in err.validator_value:
            if name in inst:
                continue
            desc = self._property_description(err.schema, name)
            hint = f"{name}: {desc}" if desc else ""
            if name == "id" and path[:1] == ("steps",):
                hint = "add `id: <name>`; other steps read its result as steps.<id>"
            self._emit(path, f"missing required key '{name}'" + self._in(path), hint,
                       key=bool(path) and isinstance(path[-1], str),
                       tag=("missing", path, name))

    def _property_name(self, err: ValidationError, path: PathKey) -> None:
        name = err.instance
        if not isinstance(name, str):
            return
        schema_path = list(err.relative_schema_path)
        owner = _get(self.doc.data, path)
        if self.what == "inventory" and "then" in schema_path and isinstance(owner, dict):
            transport = owner.get("transport", "ssh")
            users = [t for t, keys in self._transport_keys().items() if name in keys]
            allowed = self._transport_keys().get(str(transport), [])
            hint = (f"'{name}' is for {', '.join(users)} hosts; " if users else "") + \
                f"{transport} hosts take: {', '.join(allowed)}"
            self._emit((*path, name), f"'{name}' is not a setting of {transport} hosts", hint,
                       key=True, tag=("transport_key", path, name))
            return
        schema = err.schema if isinstance(err.schema, dict) else {}
        msg = schema.get("patternErrorMessage") or f"is not an allowed name ({err.message})"
        self._emit((*path, name), f"'{name}' {msg}", key=True)

    def _on_pattern(self, err: ValidationError, path: PathKey) -> None:
        if _under_property_names(err):
            self._property_name(err, path)
            return
        schema: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}
        msg = schema.get("patternErrorMessage")
        got = "" if _secret(path, schema) else f" (got {_short(err.instance)})"
        if msg:
            text = self._sentence(path, str(msg)) + got
        else:
            text = f"{self._label(path)} does not have the expected form{got}"
        self._emit(path, text, str(schema.get("x-hint", "")))

    def _on_enum(self, err: ValidationError, path: PathKey) -> None:
        if _under_property_names(err):
            self._property_name(err, path)
            return
        options = [str(o) for o in err.validator_value]
        inst = err.instance
        hint = ""
        if _secret(path, err.schema):
            self._emit(path, f"{self._label(path)} must be one of: {', '.join(options)}")
            return
        if isinstance(inst, str):
            guess = _suggest(inst, options)
            hint = f"did you mean '{guess}'?" if guess else ""
        self._emit(path, f"{self._label(path)} must be one of: {', '.join(options)} "
                         f"(got {_short(inst)})", hint)

    def _on_const(self, err: ValidationError, path: PathKey) -> None:
        self._emit(path, f"{self._label(path)} must be {json.dumps(err.validator_value)} "
                         f"(got {_short(err.instance)})")

    def _on_not(self, err: ValidationError, path: PathKey) -> None:
        if err.validator_value == {}:
            key = path[-1] if path else "this key"
            self._emit(path, f"'{key}' is not allowed here", key=True)
        else:
            self._emit(path, f"{self._label(path)}: this combination of keys is not allowed")

    def _on_dependentRequired(self, err: ValidationError, path: PathKey) -> None:
        inst = err.instance
        if not isinstance(inst, dict):
            return
        for name, needs in err.validator_value.items():
            if name not in inst:
                continue
            for need in needs:
                if need not in inst:
                    self._emit((*path, name), f"'{name}' needs '{need}' too",
                               key=True, tag=("missing", path, need))

    # ------------------------------------------------------------ values
    def _on_type(self, err: ValidationError, path: PathKey) -> None:
        expected = err.validator_value
        types = [expected] if isinstance(expected, str) else list(expected)
        schema: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}
        self._type_issue(path, types, err.instance, schema)

    def _type_issue(
        self, path: PathKey, types: list[str], inst: Any, schema: dict[str, Any]
    ) -> None:
        secret = _secret(path, schema)
        got = _describe(inst, secret=secret, source=self._source(path))
        want = " or ".join(dict.fromkeys(_TYPE_WORDS.get(t, t) for t in types))
        hint = str(schema.get("x-hint", ""))
        label = self._label(path)
        name = path[-1] if path and isinstance(path[-1], str) else None
        if not hint and "string" in types and name and (
                isinstance(inst, int | float) or _json_type(inst) == "other"):
            hint = f'quote it: {name}: "{self._source(path) or inst}"'
        elif not hint and types == ["array"] and isinstance(inst, str | int | float) and name:
            hint = f"write a list: {name}: [{inst}]"
        elif not hint and types == ["boolean"]:
            hint = "write true or false, without quotes"
        elif not hint and schema.get("description"):
            hint = _first_sentence(str(schema["description"]))
        if path == ():
            label = f"a {self.what}"
        self._emit(path, f"{label}: expected {want}, got {got}", hint)

    def _on_minLength(self, err: ValidationError, path: PathKey) -> None:
        self._emit(path, f"{self._label(path)} must not be empty")

    def _on_minItems(self, err: ValidationError, path: PathKey) -> None:
        n = err.validator_value
        msg = "must not be empty" if n == 1 else f"must have at least {n} items"
        self._emit(path, f"{self._label(path)} {msg}")

    def _on_uniqueItems(self, err: ValidationError, path: PathKey) -> None:
        seen: list[Any] = []
        for i, item in enumerate(err.instance if isinstance(err.instance, list) else []):
            if item in seen:
                self._emit((*path, i), f"duplicate item {_short(item)} in {self._label(path)}",
                           "remove the repeated entry")
                return
            seen.append(item)

    def _bound(self, err: ValidationError, path: PathKey, words: str) -> None:
        self._emit(path, f"{self._label(path)} must be {words} {err.validator_value} "
                         f"(got {_short(err.instance)})")

    def _on_minimum(self, err: ValidationError, path: PathKey) -> None:
        self._bound(err, path, "at least")

    def _on_maximum(self, err: ValidationError, path: PathKey) -> None:
        self._bound(err, path, "at most")

    def _on_exclusiveMinimum(self, err: ValidationError, path: PathKey) -> None:
        self._bound(err, path, "greater than")

    def _on_exclusiveMaximum(self, err: ValidationError, path: PathKey) -> None:
        self._bound(err, path, "less than")

    def _on_format(self, err: ValidationError, path: PathKey) -> None:
        if err.validator_value == "regex":
            cause = f": {err.cause}" if err.cause else ""
            self._emit(path, f"{self._label(path)} is not a valid regular expression{cause}",
                       "check brackets and escape special characters with \\")
        else:
            self._emit(path, f"{self._label(path)} is not a valid {err.validator_value}")

    # ------------------------------------------------------------ choices
    def _is_kind_choice(self, schema: Any) -> bool:
        branches = schema.get("oneOf") if isinstance(schema, dict) else None
        if not isinstance(branches, list) or not branches:
            return False
        return all(
            isinstance(b, dict) and set(b) == {"required"} and len(b["required"]) == 1
            and b["required"][0] in self.kinds for b in branches)

    def _on_kind_choice(self, err: ValidationError, path: PathKey) -> None:
        inst = err.instance
        if not isinstance(inst, dict):
            return
        present = [k for k in inst if k in self.kinds]
        owner = "undo" if path and path[-1] == "undo" else "a step"
        if len(present) > 1:
            found = ", ".join(f"'{k}'" for k in present[:-1]) + f" and '{present[-1]}'"
            hint = ("an undo does one thing: keep one kind, or write a shell command"
                    if owner == "undo" else "split it into one step per kind")
            self._emit((*path, present[1]), f"{owner} has exactly one step kind; found {found}",
                       hint, key=True)
        elif not present:
            self._emit(path, f"{self._step_label(path)} has no step kind",
                       f"add exactly one of: {', '.join(sorted(self.kinds))}",
                       key=bool(path) and isinstance(path[-1], str), tag=("nokind", path))

    def _on_anyOf(self, err: ValidationError, path: PathKey) -> None:
        self._choice(err, path)

    def _on_oneOf(self, err: ValidationError, path: PathKey) -> None:
        self._choice(err, path)

    def _choice(self, err: ValidationError, path: PathKey) -> None:
        """Report the errors of the branch the value was meant for (picked by type), or one
        'expected X or Y' when no branch takes that type."""
        branches: list[Any] = list(err.validator_value)
        inst = err.instance
        fitting = [i for i, b in enumerate(branches) if _type_fits(self._types(b), inst)]
        by_branch: dict[int, list[ValidationError]] = {}
        for sub in err.context:
            by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        if not fitting:
            types: list[str] = []
            for b in branches:
                types += sorted(self._types(b) or {"value"})
            schema: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}
            self._type_issue(path, types, inst, schema)
            return
        if len(fitting) > 1:
            from jsonschema.exceptions import best_match

            subs = [e for i in fitting for e in by_branch.get(i, [])]
            best = best_match(subs)
            chosen = int(best.relative_schema_path[0]) if best is not None else fitting[0]
        else:
            chosen = fitting[0]
        for sub in by_branch.get(chosen, []):
            self.add(sub)

    def _types(self, schema: Any, depth: int = 0) -> set[str] | None:
        """JSON types a schema accepts (None: any), following local $refs and allOf."""
        if not isinstance(schema, dict) or depth > 10:
            return None
        if "type" in schema:
            t = schema["type"]
            return {t} if isinstance(t, str) else set(t)
        if "$ref" in schema:
            return self._types(self._resolve(schema["$ref"]), depth + 1)
        if "enum" in schema or "const" in schema:
            values = schema.get("enum", [schema.get("const")])
            return {_json_type(v) for v in values}
        for sub in schema.get("allOf", []):
            found = self._types(sub, depth + 1)
            if found is not None:
                return found
        return None

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            return None
        node: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(node, dict):
                return None
            node = node.get(part.replace("~1", "/").replace("~0", "~"))
        return node

    # ------------------------------------------------------------ wording
    def _label(self, path: PathKey) -> str:
        if not path:
            return self.what
        last = path[-1]
        if isinstance(last, int):
            parent = path[-2] if len(path) > 1 else ""
            if parent == "steps" and len(path) == 2:
                return self._step_label(path)
            return f"{parent}[{last}]"
        return str(last)

    def _step_label(self, path: PathKey) -> str:
        if len(path) == 2 and path[0] == "steps":
            item = _get(self.doc.data, path)
            sid = item.get("id") if isinstance(item, dict) else None
            return f"step '{sid}'" if isinstance(sid, str) else f"step {int(path[1]) + 1}"
        return self._label(path)

    def _in(self, path: PathKey) -> str:
        if not path:
            return ""
        if len(path) >= 2 and path[-2] in ("hosts", "groups") and isinstance(path[-1], str) \
                and self.what == "inventory" and len(path) == 2:
            return f" in {'host' if path[0] == 'hosts' else 'group'} '{path[-1]}'"
        return f" in {self._step_label(path) if len(path) == 2 else self._label(path)}"

    def _sentence(self, path: PathKey, msg: str) -> str:
        return f"{self._label(path)} {msg}" if msg.startswith(("must", "is ", "cannot")) else msg

    def _raw_message(self, err: ValidationError) -> str:
        schema = err.schema if isinstance(err.schema, dict) else {}
        return "invalid value" if _secret(tuple(err.absolute_path), schema) else str(err.message)

    def _property_description(self, schema: Any, name: str) -> str:
        if not isinstance(schema, dict):
            return ""
        sub = schema.get("properties", {}).get(name)
        if isinstance(sub, dict):
            desc = sub.get("description") or (self._resolve(sub["$ref"]) or {}).get("description") \
                if "$ref" in sub else sub.get("description")
            return _first_sentence(str(desc or ""))
        return ""

    def _source(self, path: PathKey, *, key: bool = False) -> str:
        """The value's (or key's) text as written in the file (0644 next to YAML's 420)."""
        m = self.doc.mark(path, key=key)
        lines = self.doc.text.splitlines()
        if not 0 < m.line <= len(lines):
            return ""
        token = re.match(r"[^\s,\]}#:]+", lines[m.line - 1][m.col - 1:])
        return token.group(0) if token else ""

    def _transport_keys(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        host = self.root.get("$defs", {}).get("host", {})
        for rule in host.get("allOf", []):
            t = rule.get("if", {}).get("properties", {}).get("transport", {}).get("const")
            keys = rule.get("then", {}).get("propertyNames", {}).get("enum")
            if t and keys:
                out[t] = [k for k in keys if k not in ("transport", "vars", "forbid", "allow",
                                                        "description")]
        return out

    # ------------------------------------------------------------ result
    def diagnostics(self) -> list[Diagnostic]:
        unknown: dict[tuple[PathKey, str], tuple[str | None, bool]] = {}
        for issue in self.issues:
            if issue.tag[:1] == ("unknown",):
                unknown[(issue.tag[1], issue.tag[2])] = (issue.tag[3], issue.tag[4])
        guessed_kind = {obj for (obj, _), (_, is_kind) in unknown.items() if is_kind}
        suggested = {(obj, s) for (obj, _), (s, _) in unknown.items() if s}
        out = []
        for issue in self.issues:
            tag = issue.tag
            if tag[:1] == ("missing",) and (tag[1], tag[2]) in suggested:
                continue  # "unknown key 'comand'; did you mean 'command'?" says it all
            if tag[:1] == ("nokind",) and tag[1] in guessed_kind:
                continue
            if tag[:1] == ("transport_key",) and (tag[1], tag[2]) in unknown:
                continue
            m = self.doc.mark(issue.path, key=issue.key)
            out.append(Diagnostic(self.doc.file, m.line, m.col, issue.message,
                                  json_path(issue.path), issue.hint))
        return out


_SECRET_NAME = re.compile(r"pass|secret|token(?!_id)|api_?key|credential|private", re.I)


SHELL_KINDS = frozenset({"run", "adb.shell"})
SHELL_PARAMS = frozenset({"command", "unless", "only_if"})


def _shell_field(path: PathKey) -> bool:
    """A playbook string rendered as shell code: a run/adb.shell command or guard, verify, undo."""
    if len(path) < 3 or path[0] != "steps":
        return False
    rest = path[2:]
    if rest[0] == "verify":
        return rest in (("verify",), ("verify", "command"))
    if rest[0] == "undo":
        rest = rest[1:] or ("run",)
    if not rest or rest[0] not in SHELL_KINDS:
        return False
    return len(rest) == 1 or (len(rest) == 2 and rest[1] in SHELL_PARAMS)


def _secret(path: PathKey, schema: Any) -> bool:
    """Whether a value must never be echoed: the schema says so (x-secret), or the key's
    name or the pattern looks like a secret (a schema written without x-secret)."""
    if isinstance(schema, dict):
        if schema.get("x-secret"):
            return True
        if "env:" in str(schema.get("pattern", "")) or "env|" in str(schema.get("pattern", "")):
            return True
    name = next((p for p in reversed(path) if isinstance(p, str)), "")
    return bool(_SECRET_NAME.search(name))


def _from_branch(err: ValidationError) -> bool:
    rel = list(err.relative_schema_path)
    return len(rel) >= 2 and rel[-2] in ("then", "else")


def _under_property_names(err: ValidationError) -> bool:
    return "propertyNames" in list(err.relative_schema_path)


# ---------------------------------------------------------------- semantic checks


class _Semantics:
    """Checks the schema cannot express: unique ids, templates, step order, host names."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.out: list[Diagnostic] = []
        self._env: Environment | None = None

    @property
    def env(self) -> Environment:
        if self._env is None:
            try:
                from runner import render

                self._env = render.ENV_TEXT
            except (ImportError, AttributeError):  # pragma: no cover - render.py is optional here
                from jinja2.sandbox import SandboxedEnvironment

                self._env = SandboxedEnvironment()
        return self._env

    # ------------------------------------------------------------ playbook
    def playbook(self, hosts: set[str] | None, groups: set[str] | None) -> list[Diagnostic]:
        data = self.doc.data
        if not isinstance(data, dict):
            return []
        raw_steps = data.get("steps")
        steps: list[Any] = raw_steps if isinstance(raw_steps, list) else []
        ids: dict[str, int] = {}
        order: list[str | None] = []
        for i, step in enumerate(steps):
            sid = step.get("id") if isinstance(step, dict) else None
            if not isinstance(sid, str):
                order.append(None)
                continue
            if sid in ids:
                first = self.doc.mark(("steps", ids[sid], "id")).line
                self.out.append(self.doc.diag(
                    ("steps", i, "id"), f"duplicate step id '{sid}' (first used at line {first})",
                    hint="step ids must be unique; rename one of them"))
                order.append(None)
                continue
            ids[sid] = i
            order.append(sid)
        for key, value in data.items():
            if key != "steps":
                self._templates(value, (key,), None, set(), set(ids))
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            earlier = {s for s in order[:i] if s}
            own = order[i]
            self._templates(step, ("steps", i), own, earlier, set(ids))
        known = None if hosts is None and groups is None else set(hosts or ()) | set(groups or ())
        if known is not None:
            self._hosts(data.get("hosts"), ("hosts",), known)
            for i, step in enumerate(steps):
                if isinstance(step, dict) and "hosts" in step:
                    self._hosts(step["hosts"], ("steps", i, "hosts"), known)
        return self.out

    def _templates(self, value: Any, path: PathKey, own: str | None, earlier: set[str],
                   all_ids: set[str]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "description" and isinstance(v, str):
                    continue
                self._templates(v, (*path, k), own, earlier, all_ids)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._templates(v, (*path, i), own, earlier, all_ids)
        elif isinstance(value, str):
            expression = bool(path) and path[-1] in EXPRESSION_KEYS and path[0] == "steps" \
                and "vars" not in path and "env" not in path
            if expression:
                ast = self._expression(value, path)
            elif "{{" in value or "{%" in value or "{#" in value:
                ast = self._template(value, path)
                if ast is not None and _shell_field(path):
                    self._shell_insertions(value, path)
            else:
                return
            if ast is not None and path[:1] == ("steps",):
                late = (len(path) > 2 and path[2] in LATE_STEP_KEYS) or path[-1] in LATE_PARAM_KEYS
                allowed = earlier | ({own} if own and late else set())
                self._step_refs(ast, path, own, allowed, all_ids)

    def _expression(self, source: str, path: PathKey) -> Any:
        from jinja2 import TemplateError, TemplateSyntaxError

        label = path[-1]
        if re.match(r"^\s*\{\{.*\}\}\s*$", source, re.S):
            inner = source.strip()[2:-2].strip()
            self.out.append(self.doc.diag(
                path, f"{label} is an expression: write it without {{{{ }}}}",
                hint=f"{label}: {inner}"))
            return None
        try:
            self.env.compile_expression(source)
            return self.env.parse("{{ " + source + " }}")
        except TemplateSyntaxError as exc:
            hint = self._filter_hint(exc)
            if not hint and re.search(r"(?<![=!<>])=(?!=)", source):
                hint = "to compare, write == (a single = is not allowed in an expression)"
            self._jinja_error(path, f"{label}: invalid expression: {_jinja_message(exc)}",
                              exc.lineno, hint)
        except TemplateError as exc:
            self._jinja_error(path, f"{label}: {_jinja_message(exc)}", 1, self._filter_hint(exc))
        return None

    def _template(self, source: str, path: PathKey) -> Any:
        from jinja2 import TemplateError, TemplateSyntaxError

        try:
            ast = self.env.parse(source)
            self.env.compile(source)
            return ast
        except TemplateSyntaxError as exc:
            self._jinja_error(path, f"template error: {_jinja_message(exc)}", exc.lineno,
                              self._filter_hint(exc))
        except TemplateError as exc:
            self._jinja_error(path, f"template error: {_jinja_message(exc)}", 1,
                              self._filter_hint(exc))
        return None

    def _shell_insertions(self, source: str, path: PathKey) -> None:
        """Values that would land where no quoting makes them safe (render.shell_problems)."""
        try:
            from runner import render
        except ImportError:  # pragma: no cover - render.py is optional here
            return
        for lineno, reason, hint in render.shell_problems(source):
            line, col = self._position(path, lineno)
            self.out.append(Diagnostic(self.doc.file, line, col,
                                       f"{path[-1]}: a value inserted here would land {reason}",
                                       json_path(path), hint))

    def _filter_hint(self, exc: Exception) -> str:
        m = re.search(r"No (filter|test) named '([^']+)'", str(exc))
        if not m:
            return ""
        names = list(self.env.filters if m.group(1) == "filter" else self.env.tests)
        guess = _suggest(m.group(2), names)
        return f"did you mean '{guess}'?" if guess else f"see the Jinja2 list of {m.group(1)}s"

    def _jinja_error(self, path: PathKey, message: str, lineno: int | None, hint: str = "") -> None:
        line, col = self._position(path, lineno or 1)
        self.out.append(Diagnostic(self.doc.file, line, col, message, json_path(path),
                                   hint or "check the {{ }} and {% %} pairs and quotes"))

    def _position(self, path: PathKey, lineno: int) -> tuple[int, int]:
        """File position of line `lineno` of the string at `path` (block scalars start on the
        line after their | or > indicator)."""
        m = self.doc.mark(path)
        lines = self.doc.text.splitlines()
        if not 0 < m.line <= len(lines):
            return m.line, m.col
        head = lines[m.line - 1][m.col - 1:m.col]
        if head in ("|", ">"):
            line = m.line + lineno
        elif lineno > 1:
            line = m.line + lineno - 1
        else:
            return m.line, m.col
        line = min(line, len(lines))
        text = lines[line - 1]
        return line, len(text) - len(text.lstrip()) + 1

    def _step_refs(self, ast: Any, path: PathKey, own: str | None, allowed: set[str],
                   all_ids: set[str]) -> None:
        from jinja2 import nodes

        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            base = node.node
            if not (isinstance(base, nodes.Name) and base.name == "steps"):
                continue
            if isinstance(node, nodes.Getattr):
                ref = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                ref = node.arg.value
            else:
                continue
            if ref in allowed:
                continue
            if ref == own:
                message = f"step '{ref}' reads its own result before it runs"
                hint = ("a step's own result is available in verify, undo, changed_when "
                        "and failed_when")
            elif ref in all_ids:
                message = f"step '{ref}' is used before it runs"
                hint = f"move step '{ref}' above this one, or refer to an earlier step"
            else:
                message = f"no step '{ref}'"
                guess = _suggest(ref, sorted(all_ids))
                hint = f"did you mean '{guess}'?" if guess else (
                    "steps.<id> reads the result of an earlier step with that id")
            line, col = self._position(path, node.lineno or 1)
            self.out.append(Diagnostic(self.doc.file, line, col, message, json_path(path), hint))

    def _hosts(self, spec: Any, path: PathKey, known: set[str]) -> None:
        if isinstance(spec, list):
            for i, item in enumerate(spec):
                self._hosts(item, (*path, i), known)
            return
        if not isinstance(spec, str) or "{{" in spec or "{%" in spec:
            return
        for pattern in re.split(r"[,:]", spec):
            body = pattern.strip().lstrip("!&")
            if not body or body in known or body in ALWAYS_KNOWN_HOSTS:
                continue
            if any(c in body for c in "*?["):
                import fnmatch

                if not any(fnmatch.fnmatchcase(name, body) for name in known):
                    self.out.append(self.doc.diag(
                        path, f"host pattern '{body}' matches no host or group",
                        hint="known: " + _listing(known)))
                continue
            guess = _suggest(body, sorted(known))
            hint = f"did you mean '{guess}'?" if guess else "known: " + _listing(known)
            self.out.append(self.doc.diag(path, f"unknown host or group '{body}'", hint=hint))

    # ------------------------------------------------------------ inventory
    def inventory(self) -> list[Diagnostic]:
        data = self.doc.data
        if not isinstance(data, dict):
            return []
        hosts = _mapping(data.get("hosts"))
        groups = _mapping(data.get("groups"))
        host_names = set(hosts) | {"local", "localhost"}
        for gname, group in groups.items():
            if not isinstance(group, dict):
                continue
            for field, names, what in (("hosts", host_names, "host"),
                                       ("children", set(groups), "group")):
                members = group.get(field)
                if not isinstance(members, list):
                    continue
                for i, member in enumerate(members):
                    if not isinstance(member, str) or member in names:
                        continue
                    guess = _suggest(member, sorted(names))
                    hint = (f"did you mean '{guess}'?" if guess
                            else f"define it under {'hosts' if what == 'host' else 'groups'}:")
                    self.out.append(self.doc.diag(
                        ("groups", gname, field, i),
                        f"group '{gname}' names unknown {what} '{member}'", hint=hint))
        self._group_cycles(groups)
        return self.out

    def _group_cycles(self, groups: dict[str, Any]) -> None:
        """Depth-first search; each edge that closes a cycle is reported once."""
        done: set[str] = set()

        def children(name: str) -> list[tuple[int, str]]:
            g = groups.get(name)
            kids = g.get("children") if isinstance(g, dict) else None
            if not isinstance(kids, list):
                return []
            return [(i, k) for i, k in enumerate(kids) if isinstance(k, str) and k in groups]

        def visit(name: str, trail: list[str]) -> None:
            for i, child in children(name):
                if child in trail:
                    cycle = [*trail[trail.index(child):], child]
                    self.out.append(self.doc.diag(
                        ("groups", name, "children", i), f"group cycle: {' -> '.join(cycle)}",
                        hint="a group cannot contain itself; remove one of these children"))
                elif child not in done:
                    visit(child, [*trail, child])
            done.add(name)

        for name in groups:
            if name not in done:
                visit(name, [name])


# ---------------------------------------------------------------- helpers


def _suggest(word: str, candidates: list[str]) -> str | None:
    if not candidates:
        return None
    lower = {c.lower(): c for c in candidates}
    if word.lower() in lower and lower[word.lower()] != word:
        return lower[word.lower()]
    import difflib

    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def _get(data: Any, path: PathKey) -> Any:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "other"  # YAML dates, timestamps, binary


def _type_fits(types: set[str] | None, value: Any) -> bool:
    if types is None:
        return True
    t = _json_type(value)
    if t == "integer" and "number" in types:
        return True
    if t == "number" and "integer" in types and float(value).is_integer():
        return True
    return t in types


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _describe(value: Any, *, secret: bool = False, source: str = "") -> str:
    t = _json_type(value)
    if t == "null":
        return "nothing (null)"
    if t == "array":
        return "a list"
    if t == "object":
        return "a mapping"
    if secret:
        return {"boolean": "true/false", "string": "a string"}.get(t, "a number")
    if t == "other":
        return f"a {type(value).__name__} ({value})"
    if t == "boolean":
        return f"a boolean ({'true' if value else 'false'})"
    if t in ("integer", "number"):
        written = f", written {source}" if source and source != str(value) else ""
        return f"a number ({value}{written})"
    return f"a string ({_short(value)})"


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?\.)(\s|$)", text)
    return m.group(1) if m else text


def _listing(names: set[str]) -> str:
    shown = sorted(names)[:12]
    return ", ".join(shown) + (", ..." if len(names) > 12 else "")


def _jinja_message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc).rstrip(".")
