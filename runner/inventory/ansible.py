"""Ansible inventories (INI, YAML, and the JSON of dynamic ones) -> an opsrun-shaped inventory
Document whose positions point into the Ansible text. Parsing only: runs nothing, imports no transport.

Groups come out in the order Ansible merges their vars (depth from `all`, then
`ansible_group_priority`, then name), so that a child group's vars win over its parent's.
"""

from __future__ import annotations

import ast
import ipaddress
import re
import shlex
import string
from dataclasses import dataclass, field
from typing import Any

from runner.errors import Diagnostic, InvalidInput
from runner.load import Document, Mark, PathKey

MAX_HOSTS = 100_000  # hosts one inventory may expand to (ranges included)
MAX_LITERAL = 10_000  # characters of an INI value read as a Python literal, as Ansible does
SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?$")
GROUP_KEYS = ("hosts", "children", "vars")
Where = tuple[str, int, int]  # file, line, col


@dataclass
class _Group:
    hosts: dict[str, None] = field(default_factory=dict)  # direct members, in order
    children: dict[str, None] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)


class Tree:
    """Hosts, groups and vars as an Ansible inventory states them, each remembering where."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.hosts: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}
        self.at: dict[tuple[Any, ...], Where] = {}
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    # ------------------------------------------------------------ recording
    def error(self, where: Where, message: str, hint: str = "") -> None:
        self.errors.append(Diagnostic(where[0], where[1], where[2], message, hint=hint))

    def warn(self, where: Where, message: str, hint: str = "") -> None:
        self.warnings.append(Diagnostic(where[0], where[1], where[2], message, hint=hint, severity="warning"))

    def group(self, name: str, where: Where) -> _Group:
        if name not in self.groups:
            self.groups[name] = _Group()
            self.at[("group", name)] = where
        self.at.setdefault(("group", name), where)
        return self.groups[name]

    def host(self, name: str, where: Where) -> dict[str, Any]:
        if name not in self.hosts:
            if len(self.hosts) >= MAX_HOSTS:
                raise InvalidInput("the inventory is too large", [Diagnostic(
                    *where, f"more than {MAX_HOSTS:,} hosts", hint="split the inventory")])
            self.hosts[name] = {}
            self.at[("host", name)] = where
        return self.hosts[name]

    def member(self, group: str, host: str, where: Where) -> None:
        self.group(group, where).hosts.setdefault(host, None)
        self.at.setdefault(("member", group, host), where)

    def child(self, parent: str, child: str, where: Where) -> None:
        self.group(child, where)
        if parent != "all":
            self.group(parent, where).children.setdefault(child, None)
            self.at.setdefault(("child", parent, child), where)

    def host_var(self, host: str, key: str, value: Any, where: Where) -> None:
        self.hosts[host][key] = value
        self.at[("hostvar", host, key)] = where

    def group_var(self, group: str, key: str, value: Any, where: Where) -> None:
        self.groups[group].vars[key] = value
        self.at[("groupvar", group, key)] = where

    # ------------------------------------------------------------ the opsrun document
    def document(self) -> Document:
        """The opsrun-shaped inventory; InvalidInput when the Ansible text was wrong."""
        order = self._order()
        if self.errors:
            raise InvalidInput(f"{self.file}: not a valid Ansible inventory",
                               sorted(self.errors, key=lambda d: (d.file, d.line, d.col)))
        grouped = {h for g in order if g != "ungrouped" for h in self.groups[g].hosts}
        ungrouped = self.groups["ungrouped"]
        for h in [*self.groups["all"].hosts, *self.hosts]:
            if h not in grouped:
                ungrouped.hosts.setdefault(h, None)
        for h in list(ungrouped.hosts):
            if h in grouped:
                del ungrouped.hosts[h]
        values: dict[PathKey, Mark] = {(): Mark(1, 1)}
        keys: dict[PathKey, Mark] = {}
        files: dict[PathKey, str] = {}

        def put(path: PathKey, at: tuple[Any, ...]) -> None:
            where = self.at.get(at)
            if where:
                values[path] = keys[path] = Mark(where[1], where[2])
                if where[0] != self.file:
                    files[path] = where[0]

        hosts: dict[str, Any] = {}
        for h, hv in self.hosts.items():
            hosts[h] = {"vars": dict(hv)} if hv else {}
            put(("hosts", h), ("host", h))
            for k in hv:
                put(("hosts", h, "vars", k), ("hostvar", h, k))
        groups: dict[str, Any] = {}
        for g in order:
            body: dict[str, Any] = {}
            grp = self.groups[g]
            put(("groups", g), ("group", g))
            if grp.hosts:
                body["hosts"] = list(grp.hosts)
                for i, h in enumerate(grp.hosts):
                    put(("groups", g, "hosts", i), ("member", g, h))
            if grp.children:
                body["children"] = list(grp.children)
                for i, c in enumerate(grp.children):
                    put(("groups", g, "children", i), ("child", g, c))
            if grp.vars:
                body["vars"] = dict(grp.vars)
                for k in grp.vars:
                    put(("groups", g, "vars", k), ("groupvar", g, k))
            groups[g] = body
        data: dict[str, Any] = {"opsrun": 1, "hosts": hosts, "groups": groups}
        if self.groups["all"].vars:
            data["vars"] = dict(self.groups["all"].vars)
            for k in self.groups["all"].vars:
                put(("vars", k), ("groupvar", "all", k))
        doc = SourcedDocument(file=self.file, text=self.text, data=data, values=values, keys=keys)
        doc.files = files
        return doc

    def _order(self) -> list[str]:
        """Groups but `all`, parents before children (Ansible's depth), then priority and name."""
        parents: dict[str, list[str]] = {}
        for p, g in self.groups.items():
            for c in g.children:
                parents.setdefault(c, []).append(p)
        depth: dict[str, int] = {}
        for name in self.groups:
            if name != "all":
                self._depth(name, parents, depth, [])

        def priority(g: str) -> int:
            raw = self.groups[g].vars.get("ansible_group_priority", 1)
            try:
                return int(raw)
            except (TypeError, ValueError):
                self.error(self.at.get(("groupvar", g, "ansible_group_priority"), (self.file, 0, 0)),
                           f"ansible_group_priority of group '{g}' must be a whole number, not {raw!r}")
                return 1

        return sorted((g for g in self.groups if g != "all"), key=lambda g: (depth.get(g, 1), priority(g), g))

    def _depth(self, name: str, parents: dict[str, list[str]], depth: dict[str, int], trail: list[str]) -> int:
        if name in depth:
            return depth[name]
        if name in trail:
            cycle = " -> ".join([*trail[trail.index(name):], name][::-1])
            self.error(self.at.get(("child", name, trail[-1]), (self.file, 0, 0)), f"group cycle: {cycle}",
                       hint="a group cannot contain itself; remove one of these children")
            depth[name] = 1
            return 1
        d = 1 + max((self._depth(p, parents, depth, [*trail, name]) for p in parents.get(name, [])), default=0)
        depth[name] = d
        return d


class SourcedDocument(Document):
    """A Document whose values may come from several files (an inventory folder)."""

    files: dict[PathKey, str]

    def file_of(self, path: PathKey) -> str:
        p = tuple(path)
        files = getattr(self, "files", {})
        while p:
            if p in files:
                return files[p]
            if p in self.values:
                return self.file
            p = p[:-1]
        return self.file

    def diag(self, path: PathKey, message: str, *, hint: str = "", key: bool = False) -> Diagnostic:
        d = super().diag(path, message, hint=hint, key=key)
        f = self.file_of(path)
        return d if f == self.file else Diagnostic(f, d.line, d.col, d.message, d.path, d.hint, d.severity)


# ---------------------------------------------------------------- host patterns


def split_port(token: str) -> tuple[str, int | None]:
    """`host:2222` -> (host, 2222); `[::1]:22` -> (::1, 22); a bare IPv6 address keeps its colons."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", token)
    if m and _is_ipv6(m.group(1)):
        return m.group(1), int(m.group(2)) if m.group(2) else None
    outside = re.sub(r"\[[^\]]*\]", "", token)
    if outside.count(":") == 1:
        head, _, port = token.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"'{port}' after ':' in '{token}' is not a port number")
        return head, int(port)
    return token, None


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def expand(pattern: str) -> list[str]:
    """Ansible host ranges: `web[01:20]`, `db[a:c]`, `n[1:10:2]`, several in one name."""
    out: list[str] = []
    _expand(pattern, out)
    return out


def _expand(pattern: str, out: list[str]) -> None:
    m = re.search(r"\[([^\[\]]*)\]", pattern)
    if not m:
        if len(out) >= MAX_HOSTS:
            raise ValueError(f"the ranges expand to more than {MAX_HOSTS:,} hosts")
        out.append(pattern)
        return
    head, body, tail = pattern[: m.start()], m.group(1), pattern[m.end():]
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"[{body}] is not a range: write [begin:end] or [begin:end:step]")
    beg, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise ValueError(f"[{body}]: a range needs an end, e.g. [1:9]")
    if not step_text.isdigit() or int(step_text) < 1:
        raise ValueError(f"[{body}]: the step must be a whole number of at least 1")
    step = int(step_text)
    seq: list[str]
    if beg.isdigit() and end.isdigit():
        width = len(beg) if beg.startswith("0") and len(beg) > 1 else 0
        if width and len(end) != width:
            raise ValueError(f"[{body}]: with leading zeros, begin and end need the same width, e.g. [01:20]")
        b, e = int(beg), int(end)
        if b > e:
            raise ValueError(f"[{body}]: the range must go up (begin <= end)")
        if (e - b) // step + 1 > MAX_HOSTS:
            raise ValueError(f"[{body}] makes more than {MAX_HOSTS:,} hosts")
        seq = [str(i).zfill(width) for i in range(b, e + 1, step)]
    elif len(beg) == 1 and len(end) == 1 and beg in string.ascii_letters and end in string.ascii_letters:
        i, j = string.ascii_letters.index(beg), string.ascii_letters.index(end)
        if i > j:
            raise ValueError(f"[{body}]: the range must go up (begin <= end)")
        seq = list(string.ascii_letters[i: j + 1: step])
    else:
        raise ValueError(f"[{body}] is not a range of numbers or of single letters")
    for s in seq:
        _expand(head + s + tail, out)


def literal(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal (8080, True, [1, 2]) or else the text."""
    if len(text) > MAX_LITERAL:
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _plain(value, text)


def _plain(value: Any, text: str) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, str(v)) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, str(v)) for k, v in value.items()}
    return text  # bytes, complex, sets: keep the text


# ---------------------------------------------------------------- INI


def parse_ini(text: str, file: str, tree: Tree | None = None) -> Tree:
    """Ansible's INI format: [group], [group:vars], [group:children], `host k=v ...`."""
    t = tree or Tree(file, text)
    group, state = "ungrouped", "hosts"
    declared = {"all", "ungrouped"}
    pending: dict[str, tuple[str, Where, str]] = {}  # group -> (how it was named, where, parent)
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where: Where = (file, n, len(raw) - len(raw.lstrip()) + 1)
        m = SECTION.match(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in GROUP_KEYS:
                t.error(where, f"section [{group}:{state}] has an unknown type '{state}'",
                        "write [NAME], [NAME:vars] or [NAME:children]")
                state = "skip"
                continue
            if state == "vars" and group not in declared:
                pending.setdefault(group, ("vars", where, group))
            elif state != "vars":
                declared.add(group)
                pending.pop(group, None)
            t.group(group, where)
            continue
        if line.startswith("["):
            t.error(where, f"not a section header: {line}", "a section is [NAME], [NAME:vars] or [NAME:children]")
            state = "skip"
            continue
        if state == "hosts":
            _ini_host(t, raw, line, where, group)
        elif state == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                t.error(where, f"expected key=value in [{group}:vars], got: {line}", "e.g. http_port=8080")
                continue
            t.group_var(group, key.strip(), literal(value.strip()), where)
        elif state == "children":
            child, _, rest = line.partition(" ")
            child = child.split("\t")[0]
            if rest.strip() and rest.strip()[0] not in "#;":
                t.error(where, f"expected one group name per line in [{group}:children], got: {line}")
                continue
            if child not in declared:
                pending.setdefault(child, ("children", where, group))
            t.child(group, child, where)
    for name, (how, where, parent) in pending.items():
        if how == "vars":
            t.error(where, f"[{name}:vars] sets vars of group '{name}', which is not defined",
                    f"add a [{name}] section (it may be empty), or fix the name")
        else:
            t.error(where, f"[{parent}:children] names group '{name}', which is not defined",
                    f"add a [{name}] section (it may be empty), or fix the name")
    return t


def _ini_host(t: Tree, raw: str, line: str, where: Where, group: str) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        t.error(where, f"cannot read this host line: {exc}", "close the quotes around the value")
        return
    if not tokens:
        return
    pattern, assignments = tokens[0], tokens[1:]
    names = _host_names(t, pattern, where)
    values: list[tuple[str, Any, Where]] = []
    cursor = raw.find(pattern) + len(pattern)
    for tok in assignments:
        key, eq, value = tok.partition("=")
        pos = raw.find(key, cursor) if key else -1
        cursor = max(cursor, pos + 1)
        at: Where = (where[0], where[1], pos + 1 if pos >= 0 else where[2])
        if not eq or not key:
            t.error(at, f"expected key=value after the host name, got '{tok}'",
                    'write key=value; quote values with spaces: key="a b"')
            continue
        values.append((key, literal(value), at))
    for name, port in names:
        t.host(name, where)
        t.member(group, name, where)
        if port is not None:
            t.host_var(name, "ansible_port", port, where)
        for key, value, at in values:
            t.host_var(name, key, value, at)


def _host_names(t: Tree, pattern: str, where: Where) -> list[tuple[str, int | None]]:
    try:
        base, port = split_port(pattern)
        return [(h, port) for h in (expand(base) if not _is_ipv6(base) else [base])]
    except ValueError as exc:
        t.error(where, f"host '{pattern}': {exc}")
        return []


# ---------------------------------------------------------------- YAML (and --list JSON)


def from_yaml(doc: Document, tree: Tree | None = None) -> Tree:
    """Ansible's YAML format: `all:` (or top-level groups) with hosts, children and vars."""
    t = tree or Tree(doc.file, doc.text)
    for name, body in (doc.data or {}).items():
        _yaml_group(t, doc, str(name), body, (name,), "all")
    return t


def _at(doc: Document, path: PathKey) -> Where:
    m = doc.mark(path, key=True)
    return (doc.file, m.line, m.col)


def _yaml_group(t: Tree, doc: Document, name: str, body: Any, path: PathKey, parent: str) -> None:
    where = _at(doc, path)
    t.child(parent, name, where)
    if body is None:
        return
    if not isinstance(body, dict):
        t.error(where, f"group '{name}' must be a mapping with hosts, children or vars",
                f"write `{name}:` and under it `hosts:`, `children:` or `vars:`")
        return
    for key, value in body.items():
        kpath = (*path, key)
        if key not in GROUP_KEYS:
            t.warn(_at(doc, kpath), f"unexpected key '{key}' in group '{name}': skipped",
                   "a group holds only hosts, children and vars (as Ansible reads it)")
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            t.error(_at(doc, kpath), f"'{key}' of group '{name}' must be a mapping, got {type(value).__name__}",
                    "write each name on its own line, ending with ':'" if key != "vars" else "write name: value lines")
            continue
        if key == "vars":
            for k, v in value.items():
                t.group(name, where)
                t.group_var(name, str(k), v, _at(doc, (*kpath, k)))
        elif key == "children":
            for child, cbody in value.items():
                _yaml_group(t, doc, str(child), cbody, (*kpath, child), name)
        else:
            for pattern, hvars in value.items():
                _yaml_hosts(t, doc, name, str(pattern), hvars, (*kpath, pattern))


def _yaml_hosts(t: Tree, doc: Document, group: str, pattern: str, hvars: Any, path: PathKey) -> None:
    where = _at(doc, path)
    names = _host_names(t, pattern, where)
    if hvars is not None and not isinstance(hvars, dict):
        t.error(where, f"the vars of host '{pattern}' must be a mapping, got {type(hvars).__name__}",
                f"write `{pattern}:` and under it name: value lines")
        hvars = None
    for name, port in names:
        t.host(name, where)
        t.member(group, name, where)
        if port is not None:
            t.host_var(name, "ansible_port", port, where)
        for k, v in (hvars or {}).items():
            t.host_var(name, str(k), v, _at(doc, (*path, k)))


def from_list_json(doc: Document, tree: Tree | None = None) -> tuple[Tree, bool]:
    """The JSON a dynamic inventory prints for --list. Returns the tree and whether it held
    `_meta.hostvars` (without it, Ansible asks the script `--host NAME` for each host)."""
    t = tree or Tree(doc.file, doc.text)
    data = doc.data
    if not isinstance(data, dict):
        t.error(_at(doc, ()), "the --list output must be a JSON object of groups",
                'e.g. {"web": {"hosts": ["web1"]}, "_meta": {"hostvars": {}}}')
        return t, False
    for name, body in data.items():
        if name == "_meta":
            continue
        path: PathKey = (name,)
        if isinstance(body, list):
            body = {"hosts": body}
        elif isinstance(body, dict) and not any(k in body for k in GROUP_KEYS):
            body = {"hosts": [name], "vars": body}  # Ansible's short form: a host with vars
        if not isinstance(body, dict):
            t.error(_at(doc, path), f"group '{name}' must be a list of hosts or an object")
            continue
        where = _at(doc, path)
        t.child("all", str(name), where)
        hosts = body.get("hosts") or []
        if not isinstance(hosts, list):
            t.error(_at(doc, (*path, "hosts")), f"'hosts' of group '{name}' must be a list of names")
            hosts = []
        for i, h in enumerate(hosts):
            for hn, port in _host_names(t, str(h), _at(doc, (*path, "hosts", i))):
                t.host(hn, _at(doc, (*path, "hosts", i)))
                t.member(str(name), hn, _at(doc, (*path, "hosts", i)))
                if port is not None:
                    t.host_var(hn, "ansible_port", port, _at(doc, (*path, "hosts", i)))
        children = body.get("children") or []
        for i, c in enumerate(children if isinstance(children, list) else []):
            t.child(str(name), str(c), _at(doc, (*path, "children", i)))
        gvars = body.get("vars") or {}
        if not isinstance(gvars, dict):
            t.error(_at(doc, (*path, "vars")), f"'vars' of group '{name}' must be an object")
            gvars = {}
        for k, v in gvars.items():
            t.group_var(str(name), str(k), v, _at(doc, (*path, "vars", k)))
    meta = data.get("_meta")
    hostvars = meta.get("hostvars") if isinstance(meta, dict) else None
    if isinstance(hostvars, dict):
        for h, hv in hostvars.items():
            if not isinstance(hv, dict):
                t.error(_at(doc, ("_meta", "hostvars", h)), f"_meta.hostvars of '{h}' must be an object")
                continue
            t.host(str(h), _at(doc, ("_meta", "hostvars", h)))
            for k, v in hv.items():
                t.host_var(str(h), str(k), v, _at(doc, ("_meta", "hostvars", h, k)))
    return t, isinstance(hostvars, dict)


def looks_like_ansible_yaml(data: Any) -> bool:
    """An Ansible YAML inventory: `all:` at the top, or only groups of hosts/children/vars."""
    if not isinstance(data, dict) or not data or "opsrun" in data:
        return False
    if "all" in data and isinstance(data["all"], dict | None):
        return True
    if {"hosts", "groups", "vars"} & set(data):
        return False
    bodies = [v for v in data.values() if v is not None]
    return bool(bodies) and all(isinstance(v, dict) and v and set(v) <= set(GROUP_KEYS) for v in bodies)
