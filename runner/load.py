"""YAML text -> plain data that remembers where every value and key came from.

Pure parsing: no schema knowledge, no templating, no secrets resolution. YAML syntax
errors and duplicate keys become located Diagnostics (InvalidInput), never tracebacks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.errors import Diagnostic, InvalidInput

try:  # the C loader is several times faster; fall back to pure Python
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

PathKey = tuple[str | int, ...]

# Bounds on what one document may cost (docs/playbooks.md, "Input limits").
MAX_BYTES = 16 * 1024 * 1024  # characters of YAML text in one file
MAX_DEPTH = 64  # mappings/lists inside each other, the document's own included
MAX_VALUES = 1_000_000  # values after alias expansion
MAX_ALIAS_VALUES = 100_000  # values that aliases (and merge keys) add by repeating an anchor
_STD = "tag:yaml.org,2002:"
SCALAR_TAGS = frozenset(_STD + t for t in ("null", "bool", "int", "float", "str", "timestamp"))


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


@dataclass
class Document:
    """Parsed YAML plus a map from JSON path to the position of the value and of its key."""

    file: str
    text: str
    data: Any
    values: dict[PathKey, Mark] = field(default_factory=dict)
    keys: dict[PathKey, Mark] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.text.encode()).hexdigest()

    def mark(self, path: PathKey, *, key: bool = False) -> Mark:
        """Best position for `path`: the key (when asked and known), else the value,
        else the nearest enclosing value."""
        if key and path in self.keys:
            return self.keys[path]
        p = tuple(path)
        while p:
            if p in self.values:
                return self.values[p]
            if p in self.keys:
                return self.keys[p]
            p = p[:-1]
        return self.values.get((), Mark(1, 1))

    def diag(self, path: PathKey, message: str, *, hint: str = "", key: bool = False) -> Diagnostic:
        m = self.mark(path, key=key)
        return Diagnostic(self.file, m.line, m.col, message, json_path(path), hint)

    # A playbook with its includes expanded (runner/reuse.py) holds steps written in other
    # files: these say which file a path is written in; here, always this one.
    def file_at(self, path: PathKey) -> str:
        return self.file

    def text_at(self, path: PathKey) -> str:
        return self.text

    def located(self, path: PathKey, line: int, col: int, message: str, hint: str = "") -> Diagnostic:
        """A Diagnostic about `path` at a position found inside its value (a template's line)."""
        return Diagnostic(self.file, line, col, message, json_path(path), hint)


@dataclass(frozen=True)
class Origin:
    """Where step `i` of an expanded playbook is written, and what its includes give it."""

    doc: Document  # the file it is written in
    path: PathKey  # ("steps", j) in that file
    scope: str = ""  # the include namespace it sits in (runner/scope.py)
    include: bool = False  # an include or role step (its steps follow it)
    via: str = ""  # the include steps that led here, innermost first ("" at the top)
    names: frozenset[str] = frozenset()  # variables its includes define (parameters, defaults)
    dir: str = ""  # a role's folder: where its local sources resolve
    extra: Any = None  # what runner/reuse.py needs to build the step (layers, inherited keys)
    handler: bool = False  # one of `handlers:` (path ("handlers", j)): they follow every step


@dataclass(eq=False)
class Expanded(Document):
    """A playbook (or step file) with its includes and roles in place (runner/reuse.py):
    `data["steps"]` holds every step, each written in the file its Origin names, then every
    handler (of the playbook and of its step files and roles; Origin.handler); `vars`
    holds the vars files too. Positions, files and JSON paths answer for where a value is
    really written, so every check made on it points into the right file."""

    root: Document | None = None
    origins: list[Origin] = field(default_factory=list)  # one per entry of data["steps"]
    var_origins: dict[str, tuple[Document, PathKey]] = field(default_factory=dict)
    files: list[Document] = field(default_factory=list)  # every other file read (once each)
    problems: list[Diagnostic] = field(default_factory=list)  # found while expanding
    broken: frozenset[str] = frozenset()  # include ids whose steps could not be read
    step_file: bool = False  # the root is a step file, not a playbook

    def _where(self, path: PathKey) -> tuple[Document, PathKey, str]:
        if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int) and 0 <= path[1] < len(self.origins):
            o = self.origins[path[1]]
            return o.doc, (*o.path, *path[2:]), o.via
        if len(path) >= 2 and path[0] == "vars" and path[1] in self.var_origins:
            doc, at = self.var_origins[str(path[1])]
            return doc, (*at, *path[2:]), ""
        return self.root or self, path, ""

    def mark(self, path: PathKey, *, key: bool = False) -> Mark:
        doc, at, _ = self._where(path)
        return Document.mark(doc, at, key=key)

    def diag(self, path: PathKey, message: str, *, hint: str = "", key: bool = False) -> Diagnostic:
        doc, at, via = self._where(path)
        m = Document.mark(doc, at, key=key)
        return Diagnostic(doc.file, m.line, m.col, message, json_path(at), hint, via=via)

    def file_at(self, path: PathKey) -> str:
        return self._where(path)[0].file

    def text_at(self, path: PathKey) -> str:
        return self._where(path)[0].text

    def located(self, path: PathKey, line: int, col: int, message: str, hint: str = "") -> Diagnostic:
        doc, at, via = self._where(path)
        return Diagnostic(doc.file, line, col, message, json_path(at), hint, via=via)

    def origin(self, index: int) -> Origin | None:
        return self.origins[index] if 0 <= index < len(self.origins) else None

    @property
    def digest(self) -> str:
        """Of the playbook and of every file it reads: a saved plan is refused when any changed."""
        root = self.root or self
        if not self.files:
            return root.digest
        h = hashlib.sha256(root.text.encode())
        for doc in self.files:
            h.update(f"\0{doc.file}\0".encode() + doc.text.encode())
        return "sha256:" + h.hexdigest()


def json_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Fatal(Exception):
    """A limit was hit: building stops at once with this located diagnostic."""

    def __init__(self, diag: Diagnostic) -> None:
        super().__init__(diag.message)
        self.diag = diag


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.errors: list[Diagnostic] = []
        self._constructor = _Loader("")  # used only to construct scalars
        self._built: set[int] = set()  # nodes built once: building one again is an alias
        self._active: set[int] = set()  # nodes being built: meeting one again is a cycle
        self._in_alias = 0
        self._values = 0
        self._alias_values = 0

    def _fatal(self, node: yaml.Node, path: PathKey, message: str, hint: str) -> _Fatal:
        return _Fatal(Diagnostic(self.doc.file, *_pos(node), message, json_path(path), hint))

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        key = id(node)
        if key in self._active:
            raise self._fatal(node, path, "recursive YAML alias: this anchor contains itself",
                              "an alias (*name) cannot point into the anchor it sits in")
        if len(path) >= MAX_DEPTH and isinstance(node, yaml.CollectionNode):  # the root is level 1
            raise self._fatal(node, path, f"YAML nested deeper than {MAX_DEPTH} levels",
                              "flatten the data; opsrun limits nesting")
        self._values += 1
        if self._values > MAX_VALUES:
            raise self._fatal(node, path, f"YAML document has more than {MAX_VALUES:,} values",
                              "split it into several files")
        again = key in self._built
        if again or self._in_alias:
            self._alias_values += 1
            if self._alias_values > MAX_ALIAS_VALUES:
                raise self._fatal(node, path,
                                  f"YAML aliases expand to more than {MAX_ALIAS_VALUES:,} values "
                                  "(an alias bomb?); the anchor repeated is defined here",
                                  "use fewer or smaller aliases")
        self._in_alias += again
        self._active.add(key)
        try:
            return self._build(node, path)
        finally:
            self._active.discard(key)
            self._built.add(key)
            self._in_alias -= again

    def _scalar(self, node: yaml.Node, path: PathKey) -> Any:
        if node.tag not in SCALAR_TAGS:
            raise self._fatal(node, path, f"unsupported YAML tag '{_tag_name(node.tag)}'",
                              "opsrun reads plain YAML data: remove the tag")
        try:
            return self._constructor.construct_object(node)
        except (ValueError, OverflowError) as exc:  # a date like 2026-02-30
            raise self._fatal(node, path, f"YAML: cannot read {node.value!r}: {exc}",
                              "quote the value to keep it as text") from None

    def _check_tag(self, node: yaml.Node, path: PathKey, expected: str) -> None:
        if node.tag != _STD + expected:
            raise self._fatal(node, path, f"unsupported YAML tag '{_tag_name(node.tag)}'",
                              "opsrun reads plain YAML data: remove the tag")

    def _build(self, node: yaml.Node, path: PathKey) -> Any:
        self.doc.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            self._check_tag(node, path, "map")
            out: dict[str, Any] = {}
            merged: set[str] = set()  # keys that came from `<<:`; an explicit key overrides them
            explicit = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self._merge(value_node, path, out, merged)
                else:
                    explicit.append((key_node, value_node))
            for key_node, value_node in explicit:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:bool":
                    key = key_node.value  # YAML 1.1 reads on/off/yes/no keys as booleans: keep the text
                elif isinstance(key_node, yaml.ScalarNode):
                    key = self._scalar(key_node, path)
                else:
                    key = None  # a mapping or list as a key
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.errors.append(
                        Diagnostic(
                            self.doc.file, *_pos(key_node), "mapping keys must be plain scalars", json_path(path)
                        )
                    )
                    continue
                key = str(key) if not isinstance(key, bool) else str(key).lower()
                if key in merged:
                    merged.discard(key)
                elif key in out:
                    first = self.doc.keys.get((*path, key))
                    where = f" (first at line {first.line})" if first else ""
                    self.errors.append(
                        Diagnostic(
                            self.doc.file,
                            *_pos(key_node),
                            f"duplicate key '{key}'{where}",
                            json_path((*path, key)),
                            "remove one of them",
                        )
                    )
                    continue
                self.doc.keys[(*path, key)] = _mark(key_node)
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            self._check_tag(node, path, "seq")
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _merge(self, node: yaml.Node, path: PathKey, out: dict[str, Any], merged: set[str]) -> None:
        """`<<: *anchor` or `<<: [*a, *b]`: copy keys not set yet (the first source wins)."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        here = self.doc.values[path]
        # built last to first, so the positions left are those of the source that wins
        built = [self.build(s, path) if isinstance(s, yaml.MappingNode) else None for s in reversed(sources)]
        self.doc.values[path] = here  # the mapping stays located where it is written
        for src, data in zip(sources, reversed(built), strict=True):
            if not isinstance(data, dict):
                self.errors.append(
                    Diagnostic(
                        self.doc.file,
                        *_pos(src),
                        "a merge key (<<) needs a mapping or a list of mappings",
                        json_path(path),
                        "write <<: *anchor or <<: [*a, *b]",
                    )
                )
                continue
            for k, v in data.items():
                if k not in out:
                    out[k] = v
                    merged.add(k)


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_STD):] if tag.startswith(_STD) else tag


def _pos(node: yaml.Node) -> tuple[int, int]:
    m = _mark(node)
    return m.line, m.col


def parse(text: str, file: str) -> Document:
    """Parse one YAML document; raise InvalidInput with located errors."""
    doc = Document(file=file, text=text, data=None)
    if len(text) > MAX_BYTES:
        raise InvalidInput(
            f"{file} is too large",
            [Diagnostic(file, 1, 1, f"YAML file larger than {MAX_BYTES // (1024 * 1024)} MiB",
                        "", "split it into several files")],
        )
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = exc.problem or "invalid YAML"
        ctx = f" ({exc.context})" if exc.context else ""
        raise InvalidInput(
            "YAML syntax error",
            [
                Diagnostic(
                    file,
                    line,
                    col,
                    f"YAML syntax: {problem}{ctx}",
                    "",
                    "check indentation and quoting around this position",
                )
            ],
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInput("YAML syntax error", [Diagnostic(file, 0, 0, f"YAML: {exc}")]) from None
    if node is None:
        doc.data = None
        return doc
    builder = _Builder(doc)
    try:
        doc.data = builder.build(node, ())
    except _Fatal as exc:
        raise InvalidInput("YAML error", [exc.diag]) from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise InvalidInput("YAML error", [Diagnostic(file, line, col, f"YAML: {exc.problem}")]) from None
    if builder.errors:
        raise InvalidInput("YAML structure error", builder.errors)
    return doc


def read(path: str | Path) -> Document:
    """Read and parse a YAML file; a missing or unreadable file is InvalidInput."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)  # never more: /dev/zero or a huge file stops here
        if len(raw) > MAX_BYTES:
            raise InvalidInput(
                f"{p} is too large",
                [Diagnostic(str(p), 0, 0, f"YAML file larger than {MAX_BYTES // (1024 * 1024)} MiB",
                            "", "split it into several files")],
            )
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text() would
    except FileNotFoundError:
        raise InvalidInput(f"file not found: {p}", [Diagnostic(str(p), 0, 0, "no such file")]) from None
    except IsADirectoryError:
        raise InvalidInput(
            f"{p} is a directory", [Diagnostic(str(p), 0, 0, "expected a YAML file, got a directory")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {p}", [Diagnostic(str(p), 0, 0, f"cannot read: {exc}")]) from None
    return parse(text, str(p))


def yaml_files(paths: list[str]) -> list[Path]:
    """Expand files and folders into the YAML files they hold, sorted, folders recursed."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                sorted(
                    q
                    for q in p.rglob("*")
                    if q.suffix in (".yaml", ".yml")
                    and q.is_file()
                    and not any(part.startswith(".") for part in q.relative_to(p).parts)
                )
            )
        else:
            out.append(p)
    return out


def strip_fence(text: str) -> str:
    """Text without a surrounding ``` fence (LLMs put one around JSON)."""
    body = text.strip()
    if body.startswith("```"):
        lines = body.splitlines()
        if len(lines) >= 2 and lines[-1].strip() == "```":
            body = "\n".join(lines[1:-1]).strip()
    return body
