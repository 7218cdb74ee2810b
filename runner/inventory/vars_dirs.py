"""`group_vars/` and `host_vars/` folders (the Ansible layout) beside an inventory or a playbook:
files read on first use, each var remembering file:line. Reads YAML files only; no template, no host.

For a name, the first of NAME.yml, NAME.yaml, NAME.json and NAME (a file, or a folder whose
files are read in name order, folders included) is read, as Ansible does.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import load
from runner.errors import Diagnostic, InvalidInput

EXTENSIONS = (".yml", ".yaml", ".json")
MAX_FILES = 1000  # files read from one NAME/ folder
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Where = tuple[str, int, int]


@dataclass(frozen=True)
class Layer:
    """The vars one group (or host) gets from one folder, and where each was set."""

    vars: dict[str, Any] = field(default_factory=dict)
    at: dict[str, Where] = field(default_factory=dict)
    files: tuple[str, ...] = ()


EMPTY = Layer()


class VarsDir:
    """The group_vars/ and host_vars/ of one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[str, str], Layer] = {}
        self._texts: dict[str, str] = {}
        self.warnings: list[Diagnostic] = []
        self.present = (root / "group_vars").is_dir() or (root / "host_vars").is_dir()

    def group(self, name: str) -> Layer:
        return self._layer("group_vars", name)

    def host(self, name: str) -> Layer:
        return self._layer("host_vars", name)

    def digest_parts(self) -> list[tuple[str, str]]:
        """(file, text) of every file read so far, in a stable order."""
        return sorted(self._texts.items())

    def _layer(self, kind: str, name: str) -> Layer:
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = self._read(kind, name)
        return self._cache[key]

    def _read(self, kind: str, name: str) -> Layer:
        folder = self.root / kind
        if not name or "/" in name or name in (".", "..") or not folder.is_dir():
            return EMPTY
        candidates = [folder / f"{name}{ext}" for ext in EXTENSIONS] + [folder / name]
        found = [c for c in candidates if c.exists()]
        if not found:
            return EMPTY
        chosen, others = found[0], found[1:]
        for other in others:
            self.warnings.append(Diagnostic(
                str(other), 0, 0, f"not read: {chosen} is read for {kind[:-5]} '{name}' (the first of "
                f"{name}.yml, {name}.yaml, {name}.json, {name})", hint="merge the two into one", severity="warning"))
        files = _folder_files(chosen) if chosen.is_dir() else [chosen]
        out: dict[str, Any] = {}
        at: dict[str, Where] = {}
        for f in files:
            data, marks = self._file(f)
            out.update(data)
            at.update(marks)
        return Layer(out, at, tuple(str(f) for f in files))

    def _file(self, path: Path) -> tuple[dict[str, Any], dict[str, Where]]:
        doc = load.read(path)
        if doc.text.lstrip().startswith("$ANSIBLE_VAULT"):
            raise InvalidInput(f"{path} is encrypted with ansible-vault", [Diagnostic(
                str(path), 1, 1, "an ansible-vault file: opsrun does not read vault encryption",
                hint="keep secrets out of vars files: read them with {{ secret('NAME') }} "
                     "(docs/playbooks.md#secrets)")])
        self._texts[str(path.relative_to(self.root))] = doc.text
        if doc.data is None:
            return {}, {}
        if not isinstance(doc.data, dict):
            raise InvalidInput(f"{path}: not a mapping of variables", [doc.diag(
                (), f"a vars file must hold a mapping of names to values, got {type(doc.data).__name__}",
                hint="write one `name: value` per line")])
        bad = [doc.diag((k,), f"'{k}' is not a variable name", key=True,
                        hint="letters, digits and _, not starting with a digit")
               for k in doc.data if not VAR_NAME.match(str(k))]
        if bad:
            raise InvalidInput(f"{path}: invalid variable names", bad)
        marks: dict[str, Where] = {}
        for k in doc.data:
            m = doc.mark((k,), key=True)
            marks[k] = (str(path), m.line, m.col)
        return dict(doc.data), marks


def _folder_files(folder: Path) -> list[Path]:
    out: list[Path] = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") or part.endswith("~") for part in rel) or not p.is_file():
            continue
        if p.suffix and p.suffix not in EXTENSIONS:
            continue
        out.append(p)
        if len(out) > MAX_FILES:
            raise InvalidInput(f"{folder} holds more than {MAX_FILES} vars files",
                               [Diagnostic(str(folder), 0, 0, f"more than {MAX_FILES} vars files",
                                           hint="merge them into fewer files")])
    return out


def combined_digest(text: str, parts: list[tuple[str, str]]) -> str:
    """The digest of an inventory and the vars files read with it (plain when there are none)."""
    h = hashlib.sha256(text.encode())
    if not parts:
        return "sha256:" + h.hexdigest()
    for name, body in parts:
        h.update(b"\0" + name.encode() + b"\0" + body.encode())
    return "sha256:" + h.hexdigest()
