"""Validated documents -> Inventory and Playbook models; variable layering; host patterns.

Reads files through load.py and checks them with schema.py; resolves secret references
only when a transport is about to be opened. Talks to no target.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
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
        "notify",
        "until",
        "retries",
        "delay",
        "sudo",
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


EMBEDDED_INVENTORY_NAME = "<embedded inventory>"  # the file name a plan records for it: naming it loads it


def load_inventory(path: str | None) -> Inventory:
    """Load the inventory: `path`, else ./inventory.yaml, else the embedded default
    (which holds `local`; `path` EMBEDDED_INVENTORY_NAME asks for it whatever the folder).
    `local` always exists, like Ansible's implicit localhost.
    `path` may be an opsrun inventory, an Ansible INI or YAML inventory, an executable
    (dynamic) inventory, an inventory folder or `host1,host2,` (runner/inventory/)."""
    if path is None and Path("inventory.yaml").is_file():
        path = "inventory.yaml"
    if not path or path == EMBEDDED_INVENTORY_NAME:
        return build_inventory(load.parse(EMBEDDED_INVENTORY, EMBEDDED_INVENTORY_NAME))
    from runner import inventory as formats
    from runner.inventory import build

    read = formats.read(path)
    diags = formats.relocate(schema.validate_inventory(read.doc), read.doc)
    if diags:
        raise InvalidInput("the inventory is not valid", diags)
    return build.build(read.doc, kind=read.kind, folder=read.folder, warnings=read.warnings)


def check_inventory(path: str) -> list[Diagnostic]:
    """What `validate` reports for an inventory file of any format: its errors, else its
    warnings (Ansible variables with no opsrun equivalent, ...)."""
    try:
        inv = load_inventory(path)
    except InvalidInput as exc:
        return exc.diagnostics or [Diagnostic(path, 0, 0, exc.message, hint=exc.hint)]
    return list(inv.warnings)


def build_inventory(doc: load.Document) -> Inventory:
    """The Inventory of an opsrun inventory document (no group_vars/ folder beside it)."""
    from runner.inventory import build

    return build.build(doc)


def resolve_sources(inventory: Inventory, spec: Any = "all") -> None:
    """Read the Proxmox sources of the groups that host pattern `spec` can reach (every one
    for "all" or a glob), adding their guests to the inventory. Talks to the Proxmox API."""
    from runner.inventory import build

    state = inventory.state
    if not isinstance(state, build.State) or not state.pending:
        return
    wanted = {g for pat in _patterns(spec) for g in state.pending if _reaches(inventory, state, pat.lstrip("!&"), g)}
    for group in [g for g in state.pending if g in wanted]:
        from runner.inventory import proxmox

        source = state.pending[group]
        api_host = inventory.hosts[source["host"]]
        resolved = Host(api_host.name, api_host.transport, resolved_settings(inventory, api_host))
        build.add_guests(inventory, group, proxmox.guests(resolved, source, group, inventory.warnings))
        del state.pending[group]


def _reaches(inventory: Inventory, state: Any, pattern: str, group: str) -> bool:
    """Whether host pattern `pattern` can select hosts of source group `group`."""
    if pattern in ("all", group) or pattern in state.ancestors.get(group, ()):
        return True
    known = pattern in inventory.groups or pattern in inventory.hosts or pattern in LOCAL_NAMES
    return not known and any(c in pattern for c in "*?[")  # a glob may match a guest's name


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


def host_vars(inventory: Inventory, host: Host, playbook: Playbook, cli_vars: dict[str, Any],
              facts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """host facts < inventory vars < group vars < group_vars/ files < playbook vars < host vars <
    host_vars/ files < --var, plus magic names (docs/playbooks.md#variables-and-precedence).
    Templated values are rendered (runner/variables.py); one that cannot be fails where used."""
    return host_resolver(inventory, host, playbook, cli_vars, facts=facts).resolve_all()


def host_resolver(
    inventory: Inventory,
    host: Host,
    playbook: Playbook,
    cli_vars: dict[str, Any],
    secret: Callable[[str], Any] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> variables.Resolver:
    """The host's variables, rendered on demand (validate reads them one by one). `facts`
    (runner/fact_names.py: gathered values or stand-ins) are taken as they are, below all."""
    group_files, host_files = vars_files(inventory, host, playbook.dir)
    merged: dict[str, Any] = dict(facts or {})
    merged.update(host.group_vars)
    for layer in group_files:
        merged.update(layer)
    merged.update(playbook.vars)
    merged.update(host.vars)
    for layer in host_files:
        merged.update(layer)
    merged.update(cli_vars)
    magic = magic_vars(inventory, host, playbook)
    merged.update(magic)
    given = {k for k in facts or {} if merged[k] is facts[k]} if facts else set()  # facts no var overrides
    return variables.Resolver(merged, literal=set(cli_vars) | set(magic) | given, secret=secret)


def vars_files(
    inventory: Inventory, host: Host, playbook_dir: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The vars the host gets from group_vars/ and host_vars/ beside the inventory and beside
    the playbook: (group layers: `all`, then its groups; host layers), lowest first."""
    from runner.inventory import build

    state = inventory.state if isinstance(inventory.state, build.State) else None
    folders: list[str] = []
    if state is not None and state.folder is not None:
        folders.append(str(state.folder))
    if playbook_dir is not None and not any(_same_dir(playbook_dir, f) for f in folders):
        folders.append(playbook_dir)
    glayers, hlayers = build.file_layers(state, host, folders)
    return [la.vars for la in glayers], [la.vars for la in hlayers]


def _same_dir(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


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
