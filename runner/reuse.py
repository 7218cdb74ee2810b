"""Includes, roles and vars files: a playbook document -> one Expanded document holding every
step (ids namespaced by their include) -> the Playbook model. Reads local files; no template, no host.

Static: every file is read when the playbook is read, relative to the file that names it and
inside the project (the nearest folder above the playbook holding .git, else the playbook's
folder); cycles, depth and count are bounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runner import load, scope
from runner.errors import Diagnostic, InvalidInput
from runner.load import Document, Expanded, Origin, PathKey
from runner.model import FLUSH, IncludeLayer, Inventory, Playbook, Step
from runner.reuse_params import check_call, check_declarations, declarations

MAX_DEPTH = 16  # includes inside includes
MAX_INCLUDES = 1_000  # include and role steps in one playbook, each use counted
MAX_STEPS = 20_000  # steps once every include is in place
MAX_VARS_FILES = 64
ROLE_FILE = "role.yaml"
# kinds whose local sources a role holds: src resolves in the role's folder (templates/, files/)
ROLE_SOURCE_KINDS = {"template": "templates", "copy": "files", "adb.push": "files", "adb.install": "files"}
INCLUDE_KEYS = ("include", "role")


def is_step_file(data: Any) -> bool:
    """A step file or role.yaml declares `params:` (a playbook never does)."""
    return isinstance(data, dict) and "params" in data and "hosts" not in data


def project_root(playbook_file: str) -> str:
    """Where includes, roles and vars files must stay: the nearest folder above the playbook
    holding .git (a repository), else the playbook's own folder. Symlinks resolved."""
    start = os.path.realpath(os.path.dirname(os.path.abspath(playbook_file)) or ".")
    here = start
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        up = os.path.dirname(here)
        if up == here:
            return start
        here = up


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def source_path(role_dir: str, kind: str, src: str) -> str:
    """A role step's `src` relative to the role folder: in templates/ (template) or files/
    (copy, adb.push, adb.install) when it is there, else as written."""
    sub = ROLE_SOURCE_KINDS.get(kind)
    if sub and not os.path.isabs(src) and os.path.isfile(os.path.join(role_dir, sub, src)):
        return os.path.join(sub, src)
    return src


@dataclass
class _Inherited:
    """What an include step gives every step inside it."""

    layers: tuple[IncludeLayer, ...] = ()
    tags: tuple[str, ...] = ()
    hosts: tuple[Any, ...] = ()
    policy: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    sensitive: bool = False
    sudo: bool | None = None
    names: frozenset[str] = frozenset()
    dir: str = ""
    via: tuple[str, ...] = ()  # "file:line:col" of each include step, outermost first
    chain: tuple[str, ...] = ()  # real paths of the files included, outermost first
    shown: tuple[str, ...] = ()  # the same paths as shown in messages

    def inside(self, raw: dict[str, Any], layer: IncludeLayer, names: set[str], role_dir: str,
               real: str, shown: str) -> _Inherited:
        tags: list[Any] = raw["tags"] if isinstance(raw.get("tags"), list) else []
        policy: dict[str, Any] = raw["policy"] if isinstance(raw.get("policy"), dict) else {}
        timeout = raw.get("timeout") if isinstance(raw.get("timeout"), int | float) else None
        return _Inherited(
            layers=(*self.layers, layer),
            tags=tuple(dict.fromkeys([*self.tags, *map(str, tags)])),
            hosts=(*self.hosts, raw["hosts"]) if raw.get("hosts") is not None else self.hosts,
            policy={**self.policy, **policy},
            timeout=timeout if timeout is not None else self.timeout,
            sensitive=self.sensitive or raw.get("sensitive") is True,
            sudo=raw["sudo"] if isinstance(raw.get("sudo"), bool) else self.sudo,
            names=self.names | names,
            dir=role_dir or self.dir,
            via=(*self.via, layer.where),
            chain=(*self.chain, real),
            shown=(*self.shown, shown),
        )


class _Expander:
    def __init__(self, root: Document) -> None:
        self.root = root
        self.project = project_root(root.file)
        self.problems: list[Diagnostic] = []
        self.steps: list[Any] = []
        self.origins: list[Origin] = []
        self.handlers: list[tuple[Any, Origin]] = []  # they follow every step
        self.files: dict[str, Document | None] = {}  # real path -> parsed (None: unreadable)
        self.read_order: list[Document] = []
        self.broken: set[str] = set()
        self.includes = 0
        self.too_many = False
        self._checked: set[str] = set()  # step files whose own problems are reported

    def _say(self, doc: Document, at: PathKey, message: str, hint: str, via: tuple[str, ...] = ()) -> None:
        d = doc.diag(at, message, hint=hint)
        self.problems.append(replace(d, via=" <- ".join(reversed(via))) if via else d)

    # ------------------------------------------------------------ files
    def _resolve(self, doc: Document, at: PathKey, written: str, what: str,
                 via: tuple[str, ...] = ()) -> tuple[str, str] | None:
        """(path as shown, real path) of `written`, relative to `doc`'s folder, inside the project."""
        shown = os.path.normpath(os.path.join(os.path.dirname(doc.file), written))
        real = os.path.realpath(shown)
        if os.path.isabs(written) or not _inside(real, self.project):
            self._say(doc, at, f"{what} '{written}' is outside the project {self.project}"
                      + (f" (it resolves to {real})" if real != os.path.abspath(shown) else ""),
                      "includes, roles and vars files must lie inside the repository holding the playbook "
                      "(the nearest folder with .git above it; without git, the playbook's folder); "
                      "write a path relative to this file", via)
            return None
        return shown, real

    def _read(self, shown: str, real: str, doc: Document, at: PathKey, what: str, written: str,
              via: tuple[str, ...] = ()) -> Document | None:
        if real in self.files:
            return self.files[real]
        if not os.path.isfile(real):
            why = "is a folder, not a file" if os.path.isdir(real) else "not found"
            self._say(doc, at, f"{what} {written} {why}", f"paths are relative to the file that names them "
                      f"(looked for {shown})", via)
            return None
        try:
            child = load.read(shown)
        except InvalidInput as exc:
            self.problems += exc.diagnostics or [doc.diag(at, f"{what} {shown}: {exc.message}")]
            child = None
        self.files[real] = child
        if child is not None:
            self.read_order.append(child)
        return child

    # ------------------------------------------------------------ steps
    def walk(self, doc: Document, inherited: _Inherited, space: str) -> None:
        data = doc.data if isinstance(doc.data, dict) else {}
        steps = data.get("steps")
        for j, raw in enumerate(steps if isinstance(steps, list) else []):
            if len(self.steps) >= MAX_STEPS:
                self.problems.append(doc.diag(("steps", j), f"more than {MAX_STEPS:,} steps once includes are "
                                              "in place", hint="split the playbook"))
                return
            entry = raw
            sid = raw.get("id") if isinstance(raw, dict) else None
            full = scope.join(space, sid) if isinstance(sid, str) else sid
            if isinstance(raw, dict) and isinstance(sid, str) and space:
                entry = {**raw, "id": full}
            include = isinstance(raw, dict) and any(k in raw for k in INCLUDE_KEYS)
            self.steps.append(entry)
            self.origins.append(Origin(doc, ("steps", j), space, include, " <- ".join(reversed(inherited.via)),
                                       inherited.names, inherited.dir, inherited))
            if include and isinstance(full, str):
                self._include(doc, j, raw, full, inherited)
        handlers = data.get("handlers")
        for j, raw in enumerate(handlers if isinstance(handlers, list) else []):
            sid = raw.get("id") if isinstance(raw, dict) else None
            entry = {**raw, "id": scope.join(space, sid)} if isinstance(sid, str) and space else raw
            via = " <- ".join(reversed(inherited.via))
            self.handlers.append((entry, Origin(doc, ("handlers", j), space, False, via, inherited.names,
                                                inherited.dir, inherited, handler=True)))

    def _include(self, doc: Document, j: int, raw: dict[str, Any], full: str, inherited: _Inherited) -> None:
        kind = "include" if "include" in raw else "role"
        at: PathKey = ("steps", j, kind)
        ref = raw[kind]
        written = ref if isinstance(ref, str) else ref.get("file" if kind == "include" else "path") \
            if isinstance(ref, dict) else None
        given: dict[str, Any] = ref["with"] if isinstance(ref, dict) and isinstance(ref.get("with"), dict) else {}
        self.broken.add(full)  # until its steps are in place
        if not isinstance(written, str) or not written or "{" in written:
            return  # the schema says what is wrong
        via = inherited.via
        if len(inherited.layers) >= MAX_DEPTH:
            self._say(doc, at, f"includes nested deeper than {MAX_DEPTH} levels",
                      "the chain: " + " -> ".join(inherited.shown), via)
            return
        self.includes += 1
        if self.includes > MAX_INCLUDES:
            if not self.too_many:
                self.too_many = True
                self._say(doc, at, f"more than {MAX_INCLUDES:,} include and role steps in one playbook "
                          "(each use counts)", "split the playbook", via)
            return
        what = "step file" if kind == "include" else "role"
        written_at: PathKey = (*at, "file" if kind == "include" else "path") if isinstance(ref, dict) else at
        resolved = self._resolve(doc, written_at, written, what, via)
        if resolved is None:
            return
        shown, real = resolved
        role_dir = ""
        if kind == "role":
            if not os.path.isdir(real):
                why = "not found" if not os.path.exists(real) else "is a file, not a folder"
                self._say(doc, at, f"role {written} {why}",
                          f"a role is a folder holding {ROLE_FILE} (params:, steps:), "
                          "templates/ and files/; the path is relative to this file", via)
                return
            role_dir, shown, real = shown, os.path.join(shown, ROLE_FILE), os.path.join(real, ROLE_FILE)
            if not os.path.isfile(real):
                wanted = os.path.join(written, ROLE_FILE)
                self._say(doc, at, f"role {written} has no {ROLE_FILE}",
                          f"write {wanted} with params: and steps:", via)
                return
        if real in inherited.chain:
            names = [*inherited.shown[inherited.chain.index(real):], shown]
            self._say(doc, at, "include cycle: " + " -> ".join(names),
                      "a step file cannot include itself, directly or through others", via)
            return
        child = self._read(shown, real, doc, at, what, written, via)
        if child is None:
            return
        if not is_step_file(child.data):
            if real not in self._checked:
                self._checked.add(real)
                hint = ("wrap the list: params: {} then steps: with the list under it"
                        if isinstance(child.data, list) else
                        "a step file has params: (params: {} when it takes none) and steps:; "
                        "a playbook cannot be included")
                self.problems.append(Diagnostic(child.file, 1, 1, f"{shown} is not a step file", hint=hint))
            self._say(doc, at, f"{what} {written} is not a step file",
                      "its first problem is reported in that file", via)
            return
        self._check_file(child, real)
        decls = declarations(child.data)
        calls = check_call(doc, at, given, decls, child, written)
        self.problems += [replace(d, via=" <- ".join(reversed(via))) for d in calls] if via else calls
        data = child.data
        defaults: dict[str, Any] = data["defaults"] if isinstance(data.get("defaults"), dict) else {}
        m = doc.mark(("steps", j))
        layer = IncludeLayer(
            id=full, file=doc.file, line=m.line, col=m.col, target=written,
            given={k: v for k, v in given.items() if k in decls}, params=decls, defaults=dict(defaults),
            when=expression(raw.get("when")),
        )
        self.broken.discard(full)
        self.walk(child, inherited.inside(raw, layer, set(decls) | set(defaults), role_dir, real, shown), full)

    def _check_file(self, child: Document, real: str) -> None:
        """The step file's schema and declarations, reported once however often it is used."""
        from runner import schema

        if real in self._checked:
            return
        self._checked.add(real)
        self.problems += schema.schema_diagnostics(child, "steps")
        self.problems += check_declarations(child)
        self.problems += template_syntax(child)

    # ------------------------------------------------------------ vars files
    def vars_files(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[Document, PathKey]]]:
        own = data.get("vars")
        merged: dict[str, Any] = dict(own) if isinstance(own, dict) else {}
        origins: dict[str, tuple[Document, PathKey]] = {}
        files = data.get("vars_files")
        for i, written in enumerate(files[:MAX_VARS_FILES] if isinstance(files, list) else []):
            if not isinstance(written, str) or not written or "{" in written:
                continue  # the schema says what is wrong
            at: PathKey = ("vars_files", i)
            resolved = self._resolve(self.root, at, written, "vars file")
            if resolved is None:
                continue
            doc = self._read(*resolved, self.root, at, "vars file", written)
            if doc is None:
                continue
            if not isinstance(doc.data, dict):
                self.problems.append(Diagnostic(doc.file, 1 if doc.data is not None else 0, 1 if doc.data else 0,
                                                "a vars file must hold a mapping of names to values",
                                                hint="write name: value lines"))
                continue
            for name, value in doc.data.items():
                if not str(name).isidentifier():
                    self.problems.append(doc.diag((name,), f"'{name}' is not a variable name",
                                                  hint="letters, digits and _, not starting with a digit", key=True))
                    continue
                merged[name] = value
                origins[name] = (doc, (name,))
        return merged, origins


def template_syntax(doc: Document) -> list[Diagnostic]:
    """Templates in a step file's parameter defaults and defaults: (its steps are checked where
    they are included) that Jinja cannot parse."""
    from jinja2 import TemplateSyntaxError

    from runner import render

    data = doc.data if isinstance(doc.data, dict) else {}
    found: list[tuple[PathKey, str]] = []
    params = data.get("params")
    for name, decl in params.items() if isinstance(params, dict) else ():
        if isinstance(decl, dict) and isinstance(decl.get("default"), str):
            found.append((("params", name, "default"), decl["default"]))
    defaults = data.get("defaults")
    for name, value in defaults.items() if isinstance(defaults, dict) else ():
        if isinstance(value, str):
            found.append((("defaults", name), value))
    out = []
    for at, text in found:
        if render.has_template(text):
            try:
                render.ENV_TEXT.parse(text)
            except TemplateSyntaxError as exc:
                out.append(doc.diag(at, f"template error: {exc.message or exc}",
                                    hint="check the {{ }} and {% %} pairs and quotes"))
    return out


def expression(value: Any) -> Any:
    """`when: false` (a YAML boolean, as Ansible users write it) as the expression "false"."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def expand(doc: Document) -> Expanded:
    """`doc` with every include and role in place and its vars files merged (see Expanded)."""
    if isinstance(doc, Expanded):
        return doc
    ex = _Expander(doc)
    data = doc.data if isinstance(doc.data, dict) else None
    step_file = is_step_file(data)
    names: frozenset[str] = frozenset()
    role_dir = ""
    if step_file and data is not None:
        ex.problems += check_declarations(doc)
        defaults = data.get("defaults")
        names = frozenset(declarations(data)) | frozenset(defaults if isinstance(defaults, dict) else ())
        if os.path.basename(doc.file) == ROLE_FILE:
            role_dir = os.path.dirname(doc.file) or "."
    ex.walk(doc, _Inherited(names=names, dir=role_dir, chain=(os.path.realpath(doc.file),), shown=(doc.file,)), "")
    if ex.handlers:
        ex.steps += [entry for entry, _ in ex.handlers]
        ex.origins += [origin for _, origin in ex.handlers]
    out_data: Any = data
    var_origins: dict[str, tuple[Document, PathKey]] = {}
    if data is not None:
        out_data = dict(data)
        if isinstance(data.get("steps"), list):
            out_data["steps"] = ex.steps
        if not step_file and ("vars_files" in data):
            out_data["vars"], var_origins = ex.vars_files(data)
    return Expanded(file=doc.file, text=doc.text, data=out_data, values=doc.values, keys=doc.keys, root=doc,
                    origins=ex.origins, var_origins=var_origins, files=ex.read_order, problems=ex.problems,
                    broken=frozenset(ex.broken), step_file=step_file)


# ---------------------------------------------------------------- the model


def build_playbook(doc: Document, kinds: set[str]) -> Playbook:
    """The Playbook of a valid document: every step of every include in place, in order, and
    every handler (`notify:` names resolved to the handlers' full ids)."""
    tree = expand(doc)
    data: dict[str, Any] = tree.data
    steps: list[Step] = []
    handlers: list[Step] = []
    for i, raw in enumerate(data.get("steps") or []):
        origin = tree.origins[i]
        if not origin.include:
            (handlers if origin.handler else steps).append(_step(tree, i, raw, origin, kinds))
    known = {h.id for h in handlers}
    steps = [_notifying(s, known) for s in steps]
    handlers = [_notifying(h, known) for h in handlers]
    settings: dict[str, Any] = {
        k: data[k] for k in ("strategy", "serial", "forks", "max_fail_percentage", "on_failure", "force_handlers")
        if k in data
    }
    return Playbook(
        name=data["name"],
        hosts=data["hosts"],
        steps=tuple(steps),
        vars=dict(data.get("vars") or {}),
        policy=dict(data.get("policy") or {}),
        settings=settings,
        forbid=tuple(data.get("forbid") or ()),
        allow=tuple(data.get("allow") or ()),
        file=tree.file,
        dir=str(Path(tree.file).parent),
        digest=tree.digest,
        handlers=tuple(handlers),
    )


def _step(tree: Expanded, i: int, raw: dict[str, Any], origin: Origin, kinds: set[str]) -> Step:
    from runner.config import STEP_COMMON

    inh: _Inherited = origin.extra
    flush = raw.get("flush_handlers") is True
    kind = FLUSH if flush else next(k for k in raw if k not in STEP_COMMON and k in kinds)
    m = tree.mark(("steps", i))
    own_policy = dict(raw.get("policy") or {})
    notify = raw.get("notify") or ()
    return Step(
        id=raw["id"],
        kind=kind,
        params=True if flush else raw[kind],
        name=raw.get("name", ""),
        hosts=raw.get("hosts"),
        when=expression(raw.get("when")),
        loop=raw.get("loop"),
        register=raw.get("register"),
        verify=raw.get("verify"),
        undo=raw.get("undo"),
        policy={**inh.policy, **own_policy} if inh.policy else own_policy,
        timeout=raw.get("timeout", inh.timeout),
        tags=tuple(dict.fromkeys([*inh.tags, *(raw.get("tags") or ())])),
        sensitive=bool(raw.get("sensitive", False)) or inh.sensitive,
        index=int(origin.path[1]),
        line=m.line,
        col=m.col if inh.layers else 0,
        file=origin.doc.file if inh.layers else "",
        dir=inh.dir,
        layers=inh.layers,
        host_filters=inh.hosts,
        notify=(notify,) if isinstance(notify, str) else tuple(notify),
        until=expression(raw.get("until")),
        retries=int(raw.get("retries", 3)),
        delay=float(raw.get("delay", 5)),
        sudo=raw["sudo"] if isinstance(raw.get("sudo"), bool) else inh.sudo,
        handler=origin.handler,
    )


def resolve_handler(name: str, space: str, known: set[str] | frozenset[str]) -> str | None:
    """The full id of the handler `notify: name` means in namespace `space`: the innermost
    (a step file's own handler first, then those of the files around it, then the playbook's)."""
    return next((full for full in scope.candidates(space, name) if full in known), None)


def _notifying(step: Step, known: set[str]) -> Step:
    if not step.notify:
        return step
    space = scope.scope_of(step.id)
    return replace(step, notify=tuple(dict.fromkeys(resolve_handler(n, space, known) or n for n in step.notify)))


def load_playbook(path: str, inventory: Inventory | None = None) -> Playbook:
    """Read, expand, validate (schema and semantics, every file) and build a playbook."""
    from runner import schema

    tree = expand(load.read(path))
    if tree.step_file:
        raise InvalidInput(f"{path} is a step file, not a playbook", [Diagnostic(
            path, 1, 1, "a step file (params: and steps:) runs where a playbook includes it",
            hint="include it from a playbook: - id: web, include: {file: " + os.path.basename(path) + "}")])
    diags = schema.validate_playbook(
        tree,
        hosts=set(inventory.hosts) if inventory else None,
        groups=set(inventory.groups) if inventory else None,
    )
    if any(d.severity == "error" for d in diags):  # warnings (a handler nobody notifies) are validate's
        raise InvalidInput("the playbook is not valid", diags)
    return build_playbook(tree, set(schema.kind_names()))
