"""An opsrun-shaped inventory Document (+ group_vars/, host_vars/) -> the Inventory model: groups
flattened, host settings from the inventory and from Ansible connection vars. Imports no transport.

The Inventory keeps a `State` so that hosts can join later (guests of a Proxmox source,
read only when a run needs them) and so that `opsrun inventory` can show how it was built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runner import load, schema
from runner.errors import Diagnostic, InvalidInput
from runner.inventory.ansible import SourcedDocument
from runner.inventory.mapping import Conn, Mapper
from runner.inventory.vars_dirs import Layer, VarsDir, combined_digest
from runner.model import Host, Inventory

LOCAL_NAMES = ("local", "localhost")
NOT_SETTINGS = ("transport", "vars", "forbid", "allow", "description")
CONN_PREFIXES = ("ansible_", "opsrun_")
Where = tuple[str, int, int]


@dataclass
class State:
    """How an Inventory was built, for hosts that join later and for `opsrun inventory`."""

    doc: load.Document
    kind: str
    folder: Path | None
    dirs: dict[str, VarsDir] = field(default_factory=dict)  # folder -> its vars files (the inventory's first)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # group -> proxmox source not read yet
    ancestors: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> groups that contain it
    direct: dict[str, list[str]] = field(default_factory=dict)  # group -> hosts added by a source
    origins: dict[str, dict[str, tuple[str, Where]]] = field(default_factory=dict)  # host -> setting -> var
    mapper: Mapper = field(default_factory=Mapper)

    @property
    def inventory_dir(self) -> VarsDir | None:
        return self.dirs.get(str(self.folder)) if self.folder is not None else None

    def vars_dir(self, folder: str | Path) -> VarsDir:
        key = str(Path(folder))
        if key not in self.dirs:
            self.dirs[key] = VarsDir(Path(key))
        return self.dirs[key]


def build(doc: load.Document, *, kind: str = "opsrun", folder: Path | None = None,
          warnings: list[Diagnostic] | None = None) -> Inventory:
    """The Inventory of `doc`; `folder` is where its group_vars/ and host_vars/ are read."""
    data: dict[str, Any] = doc.data or {}
    raw_groups: dict[str, Any] = data.get("groups") or {}
    raw_hosts: dict[str, Any] = data.get("hosts") or {}
    flat = _flatten(doc, raw_groups, raw_hosts)
    state = State(doc=doc, kind=kind, folder=folder)
    if folder is not None:
        state.vars_dir(folder)
    state.ancestors = _ancestors(raw_groups)
    global_vars = dict(data.get("vars") or {})
    hosts: dict[str, Host] = {}
    member_of: dict[str, list[str]] = {}
    for g, hs in flat.items():
        for h in hs:
            member_of.setdefault(h, []).append(g)
    for name, raw in raw_hosts.items():
        hosts[name] = make_host(state, name, raw or {}, tuple(member_of.get(name, ())))
    for name in LOCAL_NAMES[:1]:
        if name not in hosts:
            hosts[name] = replace(make_host(state, name, {"transport": "local"}, ()), implicit=True)
    diags = _sources(state, raw_groups, hosts)
    diags += _check_settings(state, hosts)
    if state.mapper.errors or diags:
        found = sorted([*state.mapper.errors, *diags], key=lambda d: (d.file, d.line, d.col))
        raise InvalidInput("the inventory is not valid", found)
    vd = state.inventory_dir
    digest = combined_digest(doc.text, vd.digest_parts() if vd else []) if vd and vd.digest_parts() else doc.digest
    notes = [*(warnings or []), *state.mapper.warnings, *(vd.warnings if vd else [])]
    return Inventory(hosts=hosts, groups=flat, vars=global_vars, file=doc.file, digest=digest,
                     warnings=notes, state=state)


def _flatten(doc: load.Document, raw_groups: dict[str, Any], raw_hosts: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Group -> member hosts, children included; cycles and unknown names are errors."""
    diags: list[Diagnostic] = []
    flat: dict[str, tuple[str, ...]] = {}

    def members(name: str, trail: tuple[str, ...]) -> list[str]:
        if name in trail:
            diags.append(doc.diag(("groups", name), f"group cycle: {' -> '.join((*trail, name))}"))
            return []
        g = raw_groups.get(name)
        if g is None:
            diags.append(
                doc.diag(("groups", trail[-1], "children") if trail else ("groups",), f"unknown group '{name}'")
            )
            return []
        out = list(g.get("hosts") or [])
        for child in g.get("children") or []:
            out.extend(members(child, (*trail, name)))
        return out

    for gname in raw_groups:
        seen: dict[str, None] = {}
        for h in members(gname, ()):
            if h not in raw_hosts and h not in LOCAL_NAMES:
                diags.append(doc.diag(("groups", gname, "hosts"), f"group '{gname}' names unknown host '{h}'"))
            seen.setdefault(h, None)
        flat[gname] = tuple(seen)
    if diags:
        raise InvalidInput("the inventory is not valid", diags)
    return flat


def _ancestors(raw_groups: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    parents: dict[str, list[str]] = {}
    for p, g in raw_groups.items():
        for c in (g or {}).get("children") or []:
            parents.setdefault(c, []).append(p)
    out: dict[str, tuple[str, ...]] = {}
    for g in raw_groups:
        seen: dict[str, None] = {}
        todo = list(parents.get(g, []))
        while todo:
            p = todo.pop()
            if p not in seen and p != g:
                seen[p] = None
                todo += parents.get(p, [])
        out[g] = tuple(p for p in raw_groups if p in seen)
    return out


# ---------------------------------------------------------------- one host


def make_host(state: State, name: str, raw: dict[str, Any], groups: tuple[str, ...],
              extra_vars: dict[str, Any] | None = None) -> Host:
    """A Host from its inventory entry (or a guest's synthesized one) and its groups."""
    data: dict[str, Any] = state.doc.data or {}
    raw_groups: dict[str, Any] = data.get("groups") or {}
    group_vars = dict(data.get("vars") or {})
    forbid = list(data.get("forbid") or [])
    allow = list(data.get("allow") or [])
    for g in groups:  # in file order; later groups win
        graw = raw_groups.get(g) or {}
        group_vars.update(graw.get("vars") or {})
        forbid += graw.get("forbid") or []
        allow += graw.get("allow") or []
    forbid += raw.get("forbid") or []
    allow += raw.get("allow") or []
    own_vars = {**dict(raw.get("vars") or {}), **(extra_vars or {})}
    explicit = {k: v for k, v in raw.items() if k not in NOT_SETTINGS}
    default = "local" if name in LOCAL_NAMES else "ssh"
    conn = _connection_vars(state, name, groups, own_vars)
    transport = raw.get("transport")
    if conn:
        mapped = state.mapper.host(name, transport, default, explicit, conn,
                                   lambda: _context(state, name, groups, group_vars, own_vars))
        transport, settings = mapped.transport, mapped.settings
        if mapped.origin:
            state.origins[name] = mapped.origin
    else:
        transport, settings = transport or default, explicit
    return Host(name=name, transport=transport, settings=settings, vars=own_vars, group_vars=group_vars,
                groups=groups, forbid=tuple(forbid), allow=tuple(allow))


def file_layers(state: State | None, host: Host, folders: list[str]) -> tuple[list[Layer], list[Layer]]:
    """(group layers, host layers) of the group_vars/ and host_vars/ in `folders`, lowest first:
    `all`, then the host's groups in order, each from every folder in turn; then the host's own."""
    dirs = [state.vars_dir(f) if state else VarsDir(Path(f)) for f in folders]
    dirs = [d for d in dirs if d.present]
    glayers = [d.group(g) for g in dict.fromkeys(("all", *host.groups)) for d in dirs]
    names = [host.name, *(n for n in LOCAL_NAMES if host.name in LOCAL_NAMES and n != host.name)]
    hlayers = [d.host(n) for d in dirs for n in names]
    return [la for la in glayers if la.vars], [la for la in hlayers if la.vars]


def _connection_vars(state: State, name: str, groups: tuple[str, ...], own_vars: dict[str, Any]) -> Conn:
    """The ansible_*/opsrun_* vars of the inventory side, the winning value and where it was set."""
    doc = state.doc
    data: dict[str, Any] = doc.data or {}
    raw_groups: dict[str, Any] = data.get("groups") or {}
    out: Conn = {}

    def take(values: dict[str, Any], where: Any) -> None:
        for k, v in values.items():
            if k.startswith(CONN_PREFIXES):
                out[k] = (v, where(k))

    take(data.get("vars") or {}, lambda k: _where(doc, ("vars", k)))
    for g in groups:
        take((raw_groups.get(g) or {}).get("vars") or {}, lambda k, g=g: _where(doc, ("groups", g, "vars", k)))
    probe = Host(name=name, transport="", groups=groups)
    folders = [str(state.folder)] if state.folder is not None else []
    glayers, hlayers = file_layers(state, probe, folders)
    for layer in glayers:
        take(layer.vars, lambda k, la=layer: la.at[k])
    take(own_vars, lambda k: _where(doc, ("hosts", name, "vars", k)))
    for layer in hlayers:
        take(layer.vars, lambda k, la=layer: la.at[k])
    return out


def _context(state: State, name: str, groups: tuple[str, ...], group_vars: dict[str, Any],
             own_vars: dict[str, Any]) -> dict[str, Any]:
    probe = Host(name=name, transport="", groups=groups)
    folders = [str(state.folder)] if state.folder is not None else []
    glayers, hlayers = file_layers(state, probe, folders)
    out = dict(group_vars)
    for layer in glayers:
        out.update(layer.vars)
    out.update(own_vars)
    for layer in hlayers:
        out.update(layer.vars)
    out.update(inventory_hostname=name, inventory_hostname_short=name.split(".", maxsplit=1)[0],
               group_names=sorted(groups))
    return out


def _where(doc: load.Document, path: load.PathKey) -> Where:
    m = doc.mark(path, key=True)
    file = doc.file_of(path) if isinstance(doc, SourcedDocument) else doc.file
    return (file, m.line, m.col)


# ---------------------------------------------------------------- checks


def _sources(state: State, raw_groups: dict[str, Any], hosts: dict[str, Host]) -> list[Diagnostic]:
    """Groups with a `proxmox:` source: their API host must be an inventory proxmox host."""
    out: list[Diagnostic] = []
    for g, graw in raw_groups.items():
        spec = (graw or {}).get("proxmox")
        if not isinstance(spec, dict):
            continue
        api = spec.get("host")
        target = hosts.get(str(api))
        if target is None or target.transport != "proxmox":
            known = sorted(h.name for h in hosts.values() if h.transport == "proxmox")
            out.append(state.doc.diag(("groups", g, "proxmox", "host"),
                                      f"group '{g}': the proxmox source's host '{api}' is not a proxmox host "
                                      "of this inventory",
                                      hint=("proxmox hosts here: " + ", ".join(known)) if known
                                      else "add a host with transport: proxmox and its api, token_id, token_secret"))
            continue
        state.pending[g] = dict(spec)
    return out


def _check_settings(state: State, hosts: dict[str, Host]) -> list[Diagnostic]:
    """Settings that came from variables, checked against the inventory schema and reported
    at the variable that set them."""
    checked: dict[str, Host] = {}
    seen: set[str] = set()
    for n, h in hosts.items():  # hosts with the same settings (from one group's vars) are checked once
        key = json.dumps([h.transport, h.settings, state.origins.get(n, {})], sort_keys=True, default=str)
        if n in state.origins and key not in seen:
            seen.add(key)
            checked[n] = h
    if not checked:
        return []
    data = {"opsrun": 1, "hosts": {n: {"transport": h.transport, **h.settings} for n, h in checked.items()}}
    synthetic = load.Document(file="<settings>", text="", data=data)
    out: list[Diagnostic] = []
    for d in schema.validate_inventory(synthetic):
        host, setting = _split_path(d.path, checked)
        origin = state.origins.get(host, {}).get(setting) if host else None
        if origin is None:
            continue  # a setting written in the opsrun inventory: its own validation reported it
        var, (file, line, col) = origin
        message = re.sub(rf"^{re.escape(setting)}\b:?\s*", "", d.message)
        out.append(Diagnostic(file, line, col, f"host {host}: {var} (opsrun setting '{setting}'): {message}",
                              hint=d.hint))
    return out


def _split_path(path: str, hosts: dict[str, Host]) -> tuple[str | None, str]:
    if not path.startswith("hosts."):
        return None, ""
    rest = path[len("hosts."):]
    for name in sorted(hosts, key=len, reverse=True):
        if rest == name:
            return name, "transport"
        if rest.startswith(name + "."):
            return name, rest[len(name) + 1:].split(".")[0].split("[")[0]
    return None, ""


def add_guests(inventory: Inventory, group: str, guests: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """Hosts found by a group's source join it (and the groups that contain it): (name, settings, vars)."""
    state: State = inventory.state
    data: dict[str, Any] = state.doc.data or {}
    raw_hosts: dict[str, Any] = data.get("hosts") or {}
    joined = (group, *state.ancestors.get(group, ()))
    for name, settings, extra in guests:
        for g in joined:
            if name not in inventory.groups.get(g, ()):
                inventory.groups[g] = (*inventory.groups.get(g, ()), name)
        state.direct.setdefault(group, [])
        if name not in state.direct[group]:
            state.direct[group].append(name)
        groups = tuple(g for g, hs in inventory.groups.items() if name in hs)
        if name in raw_hosts:  # a host the inventory states itself keeps its own settings
            inventory.hosts[name] = make_host(state, name, raw_hosts[name] or {}, groups)
        else:
            inventory.hosts[name] = make_host(state, name, {"transport": "ssh", **settings}, groups,
                                              extra_vars=extra)
    errors = [*state.mapper.errors, *_check_settings(state, {n: inventory.hosts[n] for n, _, _ in guests})]
    inventory.warnings.extend(w for w in state.mapper.warnings if w not in inventory.warnings)
    if errors:
        state.mapper.errors = []
        raise InvalidInput(f"group '{group}': the hosts of its proxmox source are not valid", errors)

