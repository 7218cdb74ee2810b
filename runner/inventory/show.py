"""`opsrun inventory --list / --graph / --host NAME`: what opsrun sees, as ansible-inventory shows
it (the --list JSON is the Ansible dynamic-inventory format). Returns text; prints nothing.

Host variables are the inventory side only (inventory, group_vars/, host_vars/, and those
beside --playbook-dir), not yet rendered; opsrun's settings appear as the Ansible variables
that state them (ansible_host, ansible_become, ...) or as opsrun_<setting>.
"""

from __future__ import annotations

import json
from typing import Any

from runner import config
from runner.errors import InvalidInput
from runner.inventory.build import State
from runner.model import Host, Inventory

# opsrun setting -> the Ansible variable that says the same
AS_ANSIBLE = {"address": "ansible_host", "port": "ansible_port", "user": "ansible_user",
              "key": "ansible_ssh_private_key_file", "sudo": "ansible_become",
              "shell": "ansible_shell_executable", "connect_timeout": "ansible_timeout"}
SECRET_AS_ANSIBLE = {"password": "ansible_password", "sudo_password": "ansible_become_password"}


def render(inventory: Inventory, *, list_: bool = False, graph: bool = False, host: str | None = None,
           group: str | None = None, playbook_dir: str | None = None) -> str:
    """The text of one `opsrun inventory` mode (exactly one of list_, graph, host)."""
    if sum((list_, graph, host is not None)) != 1:
        raise InvalidInput("give one of --list, --graph or --host NAME",
                           hint="e.g. opsrun inventory -i hosts.ini --graph")
    config.resolve_sources(inventory, "all")  # every source, as ansible-inventory runs every plugin
    if host is not None:
        return host_json(inventory, host, playbook_dir)
    if graph:
        return graph_text(inventory, group)
    return list_json(inventory, playbook_dir)


def list_json(inventory: Inventory, playbook_dir: str | None = None) -> str:
    """The Ansible --list JSON: groups with their own hosts and children, all vars in _meta."""
    doc: dict[str, Any] = {"_meta": {"hostvars": {h.name: host_vars(inventory, h, playbook_dir)
                                                  for h in _visible(inventory)}}}
    children, hosts = _tree(inventory)
    doc["all"] = {"children": _top(inventory, children)}
    for g in [*inventory.groups, *(["ungrouped"] if "ungrouped" not in inventory.groups else [])]:
        body: dict[str, Any] = {}
        if hosts.get(g):
            body["hosts"] = hosts[g]
        if children.get(g):
            body["children"] = children[g]
        doc[g] = body
    return json.dumps(doc, indent=4, sort_keys=True, default=str) + "\n"


def graph_text(inventory: Inventory, group: str | None = None) -> str:
    """`@all:` and its groups as a tree (ansible-inventory --graph)."""
    children, hosts = _tree(inventory)
    start = group or "all"
    if start != "all" and start not in inventory.groups and start != "ungrouped":
        raise InvalidInput(f"no group '{start}' in {inventory.file}",
                           hint="groups: " + ", ".join(sorted(inventory.groups)) if inventory.groups else "")
    lines: list[str] = []

    def walk(name: str, depth: int, trail: tuple[str, ...]) -> None:
        lines.append(_graph_name(f"@{name}:", depth))
        kids = _top(inventory, children) if name == "all" else sorted(children.get(name, []))
        for kid in kids:
            if kid not in trail:
                walk(kid, depth + 1, (*trail, kid))
        if name != "all":
            for h in sorted(hosts.get(name, [])):
                lines.append(_graph_name(h, depth + 1))

    walk(start, 0, (start,))
    return "\n".join(lines) + "\n"


def host_json(inventory: Inventory, name: str, playbook_dir: str | None = None) -> str:
    """The vars of one host (ansible-inventory --host NAME)."""
    target = inventory.hosts.get(name) or (inventory.hosts.get("local") if name == "localhost" else None)
    if target is None:
        raise InvalidInput(f"no host '{name}' in {inventory.file}",
                           hint="see them all with: opsrun inventory --graph")
    return json.dumps(host_vars(inventory, target, playbook_dir), indent=4, sort_keys=True, default=str) + "\n"


def host_vars(inventory: Inventory, host: Host, playbook_dir: str | None = None) -> dict[str, Any]:
    """The host's inventory-side vars (by precedence) plus its settings stated as variables."""
    group_files, host_files = config.vars_files(inventory, host, playbook_dir)
    out: dict[str, Any] = dict(host.group_vars)
    for layer in group_files:
        out.update(layer)
    out.update(host.vars)
    for layer in host_files:
        out.update(layer)
    for key, value in _as_vars(host).items():
        out.setdefault(key, value)
    return out


def _as_vars(host: Host) -> dict[str, Any]:
    """opsrun's transport and settings as the variables that would give them back."""
    out: dict[str, Any] = {}
    if host.transport == "local":
        out["ansible_connection"] = "local"
    elif host.transport != "ssh":
        out["opsrun_transport"] = host.transport
    for key, value in host.settings.items():
        if host.transport in ("ssh", "local") and key in AS_ANSIBLE:
            out[AS_ANSIBLE[key]] = value
        elif host.transport in ("ssh", "local") and key in SECRET_AS_ANSIBLE and isinstance(value, str):
            kind, _, ref = value.partition(":")
            out[SECRET_AS_ANSIBLE[key]] = f"{{{{ lookup('{kind}', '{ref}') }}}}"
        else:
            out[f"opsrun_{key}"] = value
    return out


def _visible(inventory: Inventory) -> list[Host]:
    return [h for h in inventory.hosts.values() if not h.implicit]


def _tree(inventory: Inventory) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(group -> child groups, group -> its own hosts), from the inventory as written."""
    state = inventory.state if isinstance(inventory.state, State) else None
    groups_raw: dict[str, Any] = ((state.doc.data or {}).get("groups") or {}) if state else {}
    children: dict[str, list[str]] = {}
    hosts: dict[str, list[str]] = {}
    for g, members in inventory.groups.items():
        raw = groups_raw.get(g) or {}
        kids = [c for c in raw.get("children") or [] if c in inventory.groups]
        children[g] = kids
        if state is not None:
            own = [*(raw.get("hosts") or []), *state.direct.get(g, [])]
        else:
            below = {h for c in kids for h in inventory.groups.get(c, ())}
            own = [h for h in members if h not in below]
        hosts[g] = list(dict.fromkeys(h for h in own if h in inventory.hosts))
    if "ungrouped" not in inventory.groups:
        grouped = {h for hs in inventory.groups.values() for h in hs}
        hosts["ungrouped"] = [h.name for h in _visible(inventory) if h.name not in grouped]
    return children, hosts


def _top(inventory: Inventory, children: dict[str, list[str]]) -> list[str]:
    inner = {c for kids in children.values() for c in kids}
    names = [g for g in inventory.groups if g not in inner]
    if "ungrouped" not in names:
        names.append("ungrouped")
    return sorted(names)


def _graph_name(name: str, depth: int) -> str:
    return "  |" * depth + "--" + name if depth else name
