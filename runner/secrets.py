"""Secret references (`env:NAME`, `file:PATH`, `secret('NAME')`), redaction, and the names
secrets travel under into commands.

A secret is marked the moment it is read: its value is registered here, and every output
path (plan, journal, reports, errors, LLM prompts) passes text through `redact()`. Each
value also gets a variable name (OPSRUN_SECRET_<source>) that shell commands reference it
by; transports hand the value over on stdin, never in argv.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from runner.errors import InvalidInput

MASK = "***"
REF_RE = re.compile(r"^(env|file):(.+)$")
MIN_SECRET_LEN = 3  # shorter values would mask ordinary text everywhere
#: a digest (a fingerprint, a plan or file hash): a short secret found in its hex is chance, not a
#: leak, and masking it would corrupt the hash (a saved plan's fingerprints would never match)
DIGEST_RE = re.compile(r"(?:sha256:|sha1:|md5:)?[0-9a-f]{16,128}")
MIN_IN_DIGEST = 16  # in a digest, only a secret this long (or the digest itself) is masked


class Secret(str):
    """A str whose value must never be shown; `repr` and `format` stay masked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Secret({MASK})"


class _Registry:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self._names: dict[str, str] = {}  # value -> variable name
        self._by_name: dict[str, str] = {}  # variable name -> value

    def add(self, value: str, source: str = "") -> None:
        with self._lock:
            if value not in self._names:
                self._name(value, source)
            if len(value) >= MIN_SECRET_LEN and value not in self._values:
                self._values.add(value)
                self._pattern = None

    def _name(self, value: str, source: str) -> str:
        """A stable variable name from where the value came from (not from the value)."""
        base = "OPSRUN_SECRET_" + (re.sub(r"[^A-Za-z0-9_]", "_", source).strip("_") or "VALUE")
        name, k = base, 1
        while name in self._by_name and self._by_name[name] != value:
            k += 1
            name = f"{base}_{k}"
        self._names[value] = name
        self._by_name[name] = value
        return name

    def name(self, value: str) -> str:
        with self._lock:
            return self._names.get(value) or self._name(value, "")

    def value(self, name: str) -> str:
        return self._by_name[name]

    def pattern(self) -> re.Pattern[str] | None:
        if not self._values:
            return None
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                alternatives = sorted(self._values, key=len, reverse=True)
                pattern = re.compile("|".join(re.escape(v) for v in alternatives))
                self._pattern = pattern
        return pattern

    def redact(self, text: str) -> str:
        pattern = self.pattern() if text else None
        if pattern is None:
            return text
        if DIGEST_RE.fullmatch(text):
            return pattern.sub(lambda m: MASK if m.group() == text or len(m.group()) >= MIN_IN_DIGEST
                               else m.group(), text)
        return pattern.sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None
            self._names.clear()
            self._by_name.clear()


REGISTRY = _Registry()


def mark(value: str, source: str = "") -> Secret:
    """Register `value` as secret and return it marked; `source` names its variable."""
    REGISTRY.add(value, source)
    return Secret(value)


def split(text: str) -> list[tuple[str, bool]]:
    """`text` cut at the secrets in it: (literal text, False) and (variable name, True).
    A Secret is one secret as a whole, even when too short to be redacted elsewhere."""
    if isinstance(text, Secret):
        REGISTRY.add(str(text))
        return [(REGISTRY.name(str(text)), True)]
    pattern = REGISTRY.pattern()
    if pattern is None or not text:
        return [(text, False)]
    out: list[tuple[str, bool]] = []
    at = 0
    for m in pattern.finditer(text):
        if m.start() > at:
            out.append((text[at : m.start()], False))
        out.append((REGISTRY.name(m.group()), True))
        at = m.end()
    if at < len(text) or not out:
        out.append((text[at:], False))
    return out


def value_of(name: str) -> str:
    """The value behind a variable name that split() gave."""
    return REGISTRY.value(name)


def redact(text: str) -> str:
    """Replace every known secret value in `text` with ***."""
    return REGISTRY.redact(text)


_PLAIN = (str, int, float, bool, type(None))


def redact_data(data: Any) -> Any:
    """Redact every string inside nested dicts/lists; other values become their masked text."""
    if type(data) is dict and not REGISTRY._values and all(type(v) in _PLAIN for v in data.values()):
        return dict(data)  # no secret known and only plain values (most events): nothing to mask
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(v) for v in data]
    if data is None or isinstance(data, bool | int | float):
        return data
    return redact(str(data))  # an exception, a Path, ...: its text, masked


def is_ref(value: Any) -> bool:
    return isinstance(value, str) and REF_RE.match(value) is not None


def resolve(ref: str, *, base_dir: str | Path = ".", where: str = "") -> Secret:
    """Read a secret reference; a missing variable or file is a clear InvalidInput."""
    m = REF_RE.match(ref)
    if not m:
        raise InvalidInput(f"{where}: '{ref[:10]}...' is not a secret reference", hint="write env:NAME or file:PATH")
    scheme, target = m.groups()
    label = f"{where}: " if where else ""
    if scheme == "env":
        value = os.environ.get(target)
        if value is None:
            raise InvalidInput(
                f"{label}environment variable {target} is not set", hint=f"export {target}=... before running opsrun"
            )
        return mark(value, target)
    path = Path(os.path.expanduser(target))
    if not path.is_absolute():
        path = Path(base_dir) / path
    try:
        value = path.read_text(encoding="utf-8").rstrip("\n")
    except OSError as exc:
        raise InvalidInput(f"{label}cannot read secret file {path}: {exc.strerror or exc}") from None
    return mark(value, "FILE_" + path.name)


def lookup(name: str) -> Secret:
    """`secret('NAME')` in templates: OPSRUN_SECRET_NAME, else NAME, from the environment."""
    for var in (f"OPSRUN_SECRET_{name}", name):
        if var in os.environ:
            return mark(os.environ[var], name)
    raise InvalidInput(f"secret('{name}') is not set", hint=f"export OPSRUN_SECRET_{name}=... (or {name}=...)")
