"""Schema errors -> plain, located Diagnostics: one message per mistake, with a hint.

Wording only: imports jsonschema types for checking, no rendering, no host, no runner.schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner import ansible_hints
from runner.errors import Diagnostic
from runner.load import Document, PathKey, json_path

if TYPE_CHECKING:
    from jsonschema import ValidationError

_KIND_REF = "#/$defs/kind_"
_TEMPLATED = "#/$defs/templated"  # "or a template" branch of enum fields
_TYPE_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}


# Ansible's ways of reusing tasks, and the opsrun way to write each (docs/reuse.md)
REUSE_KEYS: dict[str, tuple[str, str]] = {  # opsrun's own mix-ups; Ansible's keys: runner.ansible_hints
    "params": ("params: belongs in a step file or role.yaml, not in a playbook",
               "a playbook has vars:; a step file has params: and steps: and no hosts:"),
}


def _kinds_of(step_body: dict[str, Any]) -> list[str]:
    return [name for name, sub in step_body.get("properties", {}).items()
            if isinstance(sub, dict) and str(sub.get("$ref", "")).startswith(_KIND_REF)]


# ---------------------------------------------------------------- schema errors -> issues


@dataclass
class _Issue:
    path: PathKey  # where to point
    message: str
    hint: str = ""
    key: bool = False  # point at the key of `path` rather than its value
    tag: tuple[Any, ...] = ()  # what the issue is about, for collapsing duplicates


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
            reuse = REUSE_KEYS.get(extra) if is_step or (path == () and self.what != "inventory") else None
            if reuse:
                message, hint = reuse
                self._emit(where, message, hint, key=True, tag=("unknown", path, extra, None, True))
                continue
            at_top = schema is self.root and "steps" in props
            habit = ansible_hints.hint(extra, step=is_step) if is_step or at_top else None
            if habit:
                module = extra.removeprefix("ansible.builtin.") in ansible_hints.STEP_KINDS
                what = "step kind" if is_step and not present_kinds and module else "key"
                self._emit(where, f"unknown {what} '{extra}'" + self._in(path), habit, key=True,
                           tag=("unknown", path, extra, None, what == "step kind"))
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
                    habit = ansible_hints.with_until(name) if need == "until" else ""
                    self._emit((*path, name), f"'{name}' needs '{need}' too", habit or "",
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
        if not (isinstance(inst, str) and ("{{" in inst or "{%" in inst)):
            # a plain value is meant for the listed values, not for the "or a template" branch
            plain = [i for i in fitting if branches[i] != {"$ref": _TEMPLATED}]
            fitting = plain or fitting
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
