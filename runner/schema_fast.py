"""A yes-or-don't-know JSON Schema (2020-12) check for the keywords schemas/ uses: True only
when the document is valid, so a valid file needs no jsonschema (~40 ms to import); anything
else (an error, a keyword not known here) is False and jsonschema gives the located errors.

Pure: imports only re and functools; never jsonschema, a loader or a step kind.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# keywords that say nothing about validity (annotations, our own message keys)
_NOTES = frozenset({"description", "default", "title", "$schema", "$id", "$comment", "examples",
                    "errorMessage", "patternErrorMessage", "deprecated", "readOnly", "writeOnly", "$defs"})


class _Unknown(Exception):
    """A keyword or $ref this check does not do: leave the document to jsonschema."""


def valid(schema: dict[str, Any], instance: Any) -> bool:
    """True: jsonschema would find no error in `instance` (formats: only `regex` is checked, as
    runner/schema.py's FormatChecker does). False: it may find one."""
    try:
        return _Check(schema).ok(schema, instance)
    except (_Unknown, RecursionError, re.error):
        return False


@lru_cache(maxsize=256)
def _pattern(p: str) -> re.Pattern[str]:
    return re.compile(p)


def _type_ok(t: str, x: Any) -> bool:
    if t == "object":
        return isinstance(x, dict)
    if t == "array":
        return isinstance(x, list)
    if t == "string":
        return isinstance(x, str)
    if t == "boolean":
        return isinstance(x, bool)
    if t == "null":
        return x is None
    if isinstance(x, bool):
        return False
    if t == "integer":
        return isinstance(x, int) or (isinstance(x, float) and x.is_integer())
    if t == "number":
        return isinstance(x, int | float)
    raise _Unknown(t)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema has it: true and 1 differ, 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return False
    return bool(a == b)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


class _Check:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def _ref(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise _Unknown(ref)
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise _Unknown(ref)
            node = node[part]
        return node

    def ok(self, s: Any, x: Any) -> bool:
        if s is True:
            return True
        if s is False:
            return False
        if not isinstance(s, dict):
            raise _Unknown(repr(s))
        for k, v in s.items():
            if k in _NOTES or k.startswith("x-"):
                continue
            if k == "$ref":
                if not self.ok(self._ref(v), x):
                    return False
            elif k == "type":
                if not any(_type_ok(t, x) for t in (v if isinstance(v, list) else [v])):
                    return False
            elif k == "enum":
                if not any(_equal(x, e) for e in v):
                    return False
            elif k == "const":
                if not _equal(x, v):
                    return False
            elif k in ("allOf", "anyOf", "oneOf", "not", "if", "then", "else"):
                if not self._logic(k, v, s, x):
                    return False
            elif k in ("properties", "patternProperties", "additionalProperties", "required", "propertyNames",
                       "minProperties", "maxProperties", "dependentRequired"):
                if isinstance(x, dict) and not self._object(k, v, s, x):
                    return False
            elif k in ("items", "minItems", "maxItems", "uniqueItems"):
                if isinstance(x, list) and not self._array(k, v, x):
                    return False
            elif k in ("pattern", "minLength", "maxLength", "format"):
                if isinstance(x, str) and not self._string(k, v, x):
                    return False
            elif k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
                if _number(x) and not self._numeric(k, v, x):
                    return False
            else:
                raise _Unknown(k)
        return True

    def _logic(self, k: str, v: Any, s: dict[str, Any], x: Any) -> bool:
        if k == "allOf":
            return all(self.ok(b, x) for b in v)
        if k == "anyOf":
            return any(self.ok(b, x) for b in v)
        if k == "oneOf":
            return sum(1 for b in v if self.ok(b, x)) == 1
        if k == "not":
            return not self.ok(v, x)
        if k == "if":
            branch = s.get("then", True) if self.ok(v, x) else s.get("else", True)
            return self.ok(branch, x)
        return True  # then/else: with their `if`

    def _object(self, k: str, v: Any, s: dict[str, Any], x: dict[Any, Any]) -> bool:
        if not all(isinstance(key, str) for key in x):
            raise _Unknown("a key that is not a string")
        if k == "properties":
            return all(self.ok(sub, x[name]) for name, sub in v.items() if name in x)
        if k == "patternProperties":
            return all(self.ok(sub, val) for p, sub in v.items() for key, val in x.items()
                       if isinstance(key, str) and _pattern(p).search(key))
        if k == "additionalProperties":
            props = s.get("properties", {})
            pats = [_pattern(p) for p in s.get("patternProperties", {})]
            return all(self.ok(v, val) for key, val in x.items()
                       if key not in props and not any(isinstance(key, str) and p.search(key) for p in pats))
        if k == "required":
            return all(name in x for name in v)
        if k == "propertyNames":
            return all(self.ok(v, key) for key in x)
        if k == "minProperties":
            return len(x) >= v
        if k == "maxProperties":
            return len(x) <= v
        # dependentRequired
        return all(all(d in x for d in deps) for name, deps in v.items() if name in x)

    def _array(self, k: str, v: Any, x: list[Any]) -> bool:
        if k == "items":
            return all(self.ok(v, item) for item in x)
        if k == "minItems":
            return len(x) >= v
        if k == "maxItems":
            return len(x) <= v
        if not v:  # uniqueItems: false
            return True
        return not any(_equal(a, b) for i, a in enumerate(x) for b in x[i + 1:])

    @staticmethod
    def _string(k: str, v: Any, x: str) -> bool:
        if k == "pattern":
            return _pattern(v).search(x) is not None
        if k == "minLength":
            return len(x) >= v
        if k == "maxLength":
            return len(x) <= v
        if v == "regex" and "{{" not in x:  # format: only regex is checked (runner/schema.py)
            try:
                re.compile(x)
            except re.error:
                return False
        return True

    @staticmethod
    def _numeric(k: str, v: Any, x: float) -> bool:
        if k == "minimum":
            return bool(x >= v)
        if k == "maximum":
            return bool(x <= v)
        if k == "exclusiveMinimum":
            return bool(x > v)
        if k == "exclusiveMaximum":
            return bool(x < v)
        raise _Unknown(k)  # multipleOf: float subtleties, left to jsonschema
