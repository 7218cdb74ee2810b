"""Validated documents -> Inventory and Playbook models; variable layering; host patterns.

Reads files through load.py and checks them with schema.py; resolves secret references
only when a transport is about to be opened. Talks to no target.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner import load, schema, secrets, variables
from runner.errors import Diagnostic, InvalidInput
from runner.model import Host, Inventory, Playbook

LOCAL_NAMES = ("local", "localhost")
SECRET_KEYS = ("password", "key_passphrase", "sudo_password", "token_secret")
STEP_COMMON = frozenset(
    {
        "id",
        "name",
        "hosts",
        "when",
        "loop",
        "register",
        "verify",
        "undo",
        "policy",
        "timeout",
        "tags",
        "sensitive",
        "description",
    }
)
EMBEDDED_INVENTORY = """\
opsrun: 1
hosts:
  local:
    transport: local
"""


def _local_host(name: str = "local") -> Host:
    return Host(name=name, transport="local")


def load_inventory(path: str | None) -> Inventory:
    """Load the inventory: `path`, else ./inventory.yaml, else the embedded default
    (which holds `local`). `local` always exists, like Ansible's implicit localhost."""
    if path is None and Path("inventory.yaml").is_file():
        path = "inventory.yaml"
    doc = load.read(path) if path else load.parse(EMBEDDED_INVENTORY, "<embedded inventory>")
    diags = schema.validate_inventory(doc)
    if diags:
        raise InvalidInput("the inventory is not valid", diags)
    return build_inventory(doc)


def build_inventory(doc: load.Document) -> Inventory:
    data: dict[str, Any] = doc.data or {}
    raw_groups: dict[str, Any] = data.get("groups") or {}
    raw_hosts: dict[str, Any] = data.get("hosts") or {}
    diags: list[Diagnostic] = []

    # flatten groups (children included), detecting cycles
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

    global_vars = dict(data.get("vars") or {})
    hosts: dict[str, Host] = {}
    for name, raw in raw_hosts.items():
        raw = raw or {}
        groups = tuple(g for g, hs in flat.items() if name in hs)
        group_vars = dict(global_vars)
        forbid = list(data.get("forbid") or [])
        allow = list(data.get("allow") or [])
        for g in groups:  # in file order; later groups win
            graw = raw_groups.get(g) or {}
            group_vars.update(graw.get("vars") or {})
            forbid += graw.get("forbid") or []
            allow += graw.get("allow") or []
        forbid += raw.get("forbid") or []
        allow += raw.get("allow") or []
        transport = raw.get("transport") or ("local" if name in LOCAL_NAMES else "ssh")
        settings = {k: v for k, v in raw.items() if k not in ("transport", "vars", "forbid", "allow", "description")}
        hosts[name] = Host(
            name=name,
            transport=transport,
            settings=settings,
            vars=dict(raw.get("vars") or {}),
            group_vars=group_vars,
            groups=groups,
            forbid=tuple(forbid),
            allow=tuple(allow),
        )
    for name in LOCAL_NAMES[:1]:
        if name not in hosts:
            hosts[name] = Host(
                name=name,
                transport="local",
                group_vars=dict(global_vars),
                implicit=True,
                forbid=tuple(data.get("forbid") or ()),
                allow=tuple(data.get("allow") or ()),
            )
    return Inventory(hosts=hosts, groups=flat, vars=global_vars, file=doc.file, digest=doc.digest)


def load_playbook(path: str, inventory: Inventory | None = None) -> Playbook:
    """Read, validate and build a playbook, its includes, roles and vars files (runner/reuse.py)."""
    from runner import reuse

    return reuse.load_playbook(path, inventory)


def build_playbook(doc: load.Document, kinds: set[str]) -> Playbook:
    """The Playbook of a valid document, includes and roles in place (runner/reuse.py)."""
    from runner import reuse

    return reuse.build_playbook(doc, kinds)


# ---------------------------------------------------------------- host selection


def _patterns(spec: Any) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return [p.strip() for p in spec.replace(",", ":").split(":") if p.strip()]
    return [str(p) for p in spec]


def match_hosts(inventory: Inventory, spec: Any) -> list[str]:
    """Resolve host patterns: names, groups, `all`, globs, `!exclude`, `&intersect`."""
    order = list(inventory.hosts)
    selected: list[str] = []
    for pat in _patterns(spec):
        op = pat[0] if pat[0] in "!&" else ""
        body = pat[1:] if op else pat
        if body == "all":
            names = [h for h in order if not inventory.hosts[h].implicit]
        elif body in inventory.groups:
            names = list(inventory.groups[body])
        elif body in inventory.hosts:
            names = [body]
        elif body == "localhost":
            names = ["local"]
        else:
            names = [h for h in order if fnmatch.fnmatchcase(h, body)]
        if op == "!":
            selected = [h for h in selected if h not in names]
        elif op == "&":
            selected = [h for h in selected if h in names]
        else:
            selected += [h for h in names if h not in selected]
    return selected


# ---------------------------------------------------------------- variables


def host_vars(inventory: Inventory, host: Host, playbook: Playbook, cli_vars: dict[str, Any]) -> dict[str, Any]:
    """inventory vars < group vars < playbook vars < host vars < --var, plus magic names.
    Templated values are rendered (runner/variables.py); one that cannot be fails where used."""
    return host_resolver(inventory, host, playbook, cli_vars).resolve_all()


def host_resolver(
    inventory: Inventory,
    host: Host,
    playbook: Playbook,
    cli_vars: dict[str, Any],
    secret: Callable[[str], Any] | None = None,
) -> variables.Resolver:
    """The host's variables, rendered on demand (validate reads them one by one)."""
    merged: dict[str, Any] = {}
    merged.update(host.group_vars)
    merged.update(playbook.vars)
    merged.update(host.vars)
    merged.update(cli_vars)
    magic = magic_vars(inventory, host, playbook)
    merged.update(magic)
    return variables.Resolver(merged, literal=set(cli_vars) | set(magic), secret=secret)


def magic_vars(inventory: Inventory, host: Host, playbook: Playbook) -> dict[str, Any]:
    return {
        "inventory_hostname": host.name,
        "host": {
            "name": host.name,
            "transport": host.transport,
            "groups": list(host.groups),
            "address": host.settings.get("address", host.name),
        },
        "groups": {g: list(hs) for g, hs in inventory.groups.items()},
        "playbook_dir": str(Path(playbook.dir).resolve()),
    }


def parse_cli_vars(pairs: list[str]) -> dict[str, Any]:
    """`--var k=v` (v parsed as YAML scalar: numbers, booleans) and `--var @file.yaml`."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if pair.startswith("@"):
            doc = load.read(pair[1:])
            if not isinstance(doc.data, dict):
                raise InvalidInput(f"--var {pair}: the file must hold a mapping of names to values")
            out.update(doc.data)
            continue
        if "=" not in pair:
            raise InvalidInput(f"--var {pair!r}: expected NAME=VALUE", hint="e.g. --var env=prod")
        key, value = pair.split("=", 1)
        if not key.isidentifier():
            raise InvalidInput(f"--var {pair!r}: '{key}' is not a valid variable name")
        try:
            parsed = load.parse(value, "<--var>").data if value else ""
        except InvalidInput:
            parsed = value
        out[key] = parsed if isinstance(parsed, str | int | float | bool) else value
    return out


def resolved_settings(inventory: Inventory, host: Host) -> dict[str, Any]:
    """Transport settings with secret references read (and marked) and jump hosts expanded."""
    base = Path(inventory.file).parent if not inventory.file.startswith("<") else Path.cwd()
    out: dict[str, Any] = {}
    for key, value in host.settings.items():
        if key in SECRET_KEYS and isinstance(value, str):
            out[key] = secrets.resolve(value, base_dir=base, where=f"host {host.name}: {key}")
        elif key == "jump" and isinstance(value, str) and value in inventory.hosts:
            out[key] = resolved_settings(inventory, inventory.hosts[value])
        elif key in ("key", "known_hosts_file", "ca_file") and isinstance(value, str):
            p = Path(os.path.expanduser(value))
            out[key] = str(p if p.is_absolute() else base / p)
        else:
            out[key] = value
    return out
