"""Host facts by name: the catalogue (facts.* per transport, Ansible's ansible_* names), their values as
variables, stand-ins while unknown, the facts a template reads. Imports render, schema_messages; no host, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from runner import render
from runner.schema_messages import _suggest

ROOT = "facts"
ANSIBLE_FACTS = "ansible_facts"  # Ansible's dict form: ansible_facts.os_family, ansible_facts['distribution']
PENDING_PREFIX = "@fact:"  # a PendingResult id naming a fact ("@": no step id can clash)
MARK = "@opsrun-fact:"  # inside a stand-in's text (marker values)

SHELL = frozenset({"local", "ssh", "adb"})
POSIX = frozenset({"local", "ssh"})
ADB = frozenset({"adb"})
PVE = frozenset({"proxmox"})
TRANSPORTS = frozenset({"local", "ssh", "adb", "proxmox"})


@dataclass(frozen=True)
class Fact:
    path: str  # under facts.: "os.family"
    kind: str  # text | int | list
    on: frozenset[str]  # the transports that gather it
    doc: str
    ansible: str = ""  # Ansible's name for it: "ansible_os_family", "ansible_default_ipv4.address"


CATALOGUE: tuple[Fact, ...] = (
    Fact("os.id", "text", SHELL, "os-release `ID`: debian, ubuntu, rhel, rocky, alpine, arch, opensuse-leap; android"),
    Fact("os.family", "text", SHELL, "Ansible's families: Debian, RedHat, Suse, Archlinux, Alpine, Gentoo, Darwin, "
                                     "Android", "ansible_os_family"),
    Fact("os.distribution", "text", SHELL, "Ansible's names: Debian, Ubuntu, CentOS, Rocky, Fedora, Alpine, "
                                           "Archlinux, openSUSE Leap, MacOSX, Android", "ansible_distribution"),
    Fact("os.name", "text", SHELL, "os-release `NAME`: Debian GNU/Linux"),
    Fact("os.version", "text", SHELL, "os-release `VERSION_ID` (Android: the release): 12, 24.04, 3.20.1",
         "ansible_distribution_version"),
    Fact("os.version_major", "text", SHELL, "its first number: 12, 24, 3", "ansible_distribution_major_version"),
    Fact("os.codename", "text", SHELL, "os-release `VERSION_CODENAME`: bookworm, noble",
         "ansible_distribution_release"),
    Fact("os.like", "list", SHELL, "os-release `ID_LIKE` as a list: [rhel, centos, fedora]"),
    Fact("system", "text", SHELL, "`uname -s`: Linux, Darwin", "ansible_system"),
    Fact("kernel", "text", SHELL, "`uname -r`", "ansible_kernel"),
    Fact("arch", "text", SHELL, "`uname -m`: x86_64, aarch64, armv7l", "ansible_architecture"),
    Fact("hostname", "text", SHELL, "the short host name", "ansible_hostname"),
    Fact("fqdn", "text", POSIX, "`hostname -f` (else the host name)", "ansible_fqdn"),
    Fact("ipv4.default", "text", SHELL, "source address of the default IPv4 route", "ansible_default_ipv4.address"),
    Fact("ipv4.interface", "text", SHELL, "its interface", "ansible_default_ipv4.interface"),
    Fact("ipv4.gateway", "text", SHELL, "its gateway", "ansible_default_ipv4.gateway"),
    Fact("ipv4.all", "list", SHELL, "every IPv4 address but loopback", "ansible_all_ipv4_addresses"),
    Fact("ipv6.default", "text", SHELL, "source address of the default IPv6 route", "ansible_default_ipv6.address"),
    Fact("ipv6.interface", "text", SHELL, "its interface", "ansible_default_ipv6.interface"),
    Fact("ipv6.gateway", "text", SHELL, "its gateway", "ansible_default_ipv6.gateway"),
    Fact("ipv6.all", "list", SHELL, "every IPv6 address but loopback", "ansible_all_ipv6_addresses"),
    Fact("cpus", "int", SHELL, "online CPUs (`nproc`)", "ansible_processor_vcpus"),
    Fact("memory_mb", "int", SHELL, "total memory in MiB (`MemTotal`)", "ansible_memtotal_mb"),
    Fact("init", "text", POSIX, "what runs as pid 1: systemd, openrc, sysvinit, runit, s6, launchd",
         "ansible_service_mgr"),
    Fact("pkg_mgr", "text", POSIX, "apt, dnf, dnf5, yum, zypper, pacman, apk, homebrew", "ansible_pkg_mgr"),
    Fact("android.model", "text", ADB, "`ro.product.model`"),
    Fact("android.manufacturer", "text", ADB, "`ro.product.manufacturer`"),
    Fact("android.brand", "text", ADB, "`ro.product.brand`"),
    Fact("android.device", "text", ADB, "`ro.product.device`"),
    Fact("android.release", "text", ADB, "`ro.build.version.release`: 11, 14"),
    Fact("android.sdk", "int", ADB, "`ro.build.version.sdk` (API level): 30, 34"),
    Fact("android.abi", "text", ADB, "`ro.product.cpu.abi`: arm64-v8a, x86_64"),
    Fact("android.abilist", "list", ADB, "`ro.product.cpu.abilist` as a list"),
    Fact("proxmox.version", "text", PVE, "the API's `version`: 8.2.4"),
    Fact("proxmox.version_major", "text", PVE, "its first number: 8"),
    Fact("proxmox.release", "text", PVE, "the API's `release`: 8.2"),
    Fact("proxmox.nodes", "list", PVE, "the cluster's node names"),
    Fact("proxmox.nodes_online", "list", PVE, "the node names whose status is online"),
)
BY_PATH = {f.path: f for f in CATALOGUE}
# more Ansible names for the same facts
EXTRA_ANSIBLE = {"ansible_machine": "arch", "ansible_nodename": "hostname", "ansible_processor_nproc": "cpus"}


def _ansible_table() -> dict[str, str | dict[str, str]]:
    out: dict[str, str | dict[str, str]] = {}
    for f in CATALOGUE:
        if f.ansible:
            name, _, key = f.ansible.partition(".")
            if key:
                sub = out.setdefault(name, {})
                assert isinstance(sub, dict)
                sub[key] = f.path
            else:
                out[name] = f.path
    out.update(EXTRA_ANSIBLE)
    return out


ANSIBLE = _ansible_table()  # ansible_* name -> a path, or key -> path (ansible_default_ipv4)


def _paths(value: str | dict[str, str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value.values())


def gathered(path: str, transport: str) -> bool:
    f = BY_PATH.get(path)
    return f is not None and transport in f.on


def roots(transport: str | None = None) -> frozenset[str]:
    """The variable names host facts take on a transport (None: on any)."""
    on = TRANSPORTS if transport is None else {transport}
    out = {ROOT}
    for name, value in ANSIBLE.items():
        if any(gathered(p, t) for p in _paths(value) for t in on):
            out.add(name)
    if on & SHELL:
        out.add(ANSIBLE_FACTS)
    return frozenset(out)


ALL_ROOTS = roots()


# ---------------------------------------------------------------- values as variables


def variables(transport: str | None, leaf: Callable[[str, str], Any]) -> dict[str, Any]:
    """Every fact name of a transport (None: all) -> its value: `leaf(written, path)` gives
    each fact's value (`written` as a template reads it: "ansible_default_ipv4.address")."""
    on = TRANSPORTS if transport is None else frozenset({transport})
    tree: dict[str, Any] = {}
    for f in CATALOGUE:
        if f.on & on:
            *heads, last = f.path.split(".")
            node = tree
            for h in heads:
                node = node.setdefault(h, {})
            node[last] = leaf(f"{ROOT}.{f.path}", f.path)
    out: dict[str, Any] = {ROOT: tree}
    short: dict[str, Any] = {}
    for name, value in ANSIBLE.items():
        if not any(BY_PATH[p].on & on for p in _paths(value)):
            continue
        out[name] = leaf(name, value) if isinstance(value, str) else {
            k: leaf(f"{name}.{k}", p) for k, p in value.items() if BY_PATH[p].on & on}
        bare = name.removeprefix("ansible_")
        short[bare] = leaf(f"{ANSIBLE_FACTS}.{bare}", value) if isinstance(value, str) else {
            k: leaf(f"{ANSIBLE_FACTS}.{bare}.{k}", p) for k, p in value.items() if BY_PATH[p].on & on}
    if on & SHELL:
        out[ANSIBLE_FACTS] = short
    return out


def values_as_variables(transport: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The gathered facts (path -> value, None when the host did not tell) as variables."""
    return variables(transport, lambda _written, path: values.get(path))


def fact_of(pending_id: str) -> str | None:
    """The fact a PendingResult id names (`facts.os.family`), or None for a step id."""
    return pending_id[len(PENDING_PREFIX):] if pending_id.startswith(PENDING_PREFIX) else None


class FactPending(render.PendingRef):
    """A fact not known yet (offline, validate): any use of it means "decided with the host's
    facts" (PendingResult), numbers and comparisons included (`| int` cannot hide it)."""

    __slots__ = ()

    def _fact(self, *_: Any) -> Any:
        raise render.PendingResult(self.step_id)

    __int__ = __float__ = __index__ = __lt__ = __le__ = __gt__ = __ge__ = __ne__ = __contains__ = _fact
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fact
    __floordiv__ = __mod__ = __neg__ = __format__ = _fact

    def __repr__(self) -> str:
        return f"<host fact {fact_of(self.step_id)}: not gathered>"


class FactMarker(str):
    """A fact not known yet that may be inserted into text (its marker stands in for it), but
    not decided on: a comparison or truth test is pending (PendingResult). The
    planner renders a step's parameters with these to find checks that do not depend on facts."""

    name: str

    def __new__(cls, name: str) -> FactMarker:
        obj = super().__new__(cls, f"{MARK}{name}@")
        obj.name = name
        return obj

    def _fact(self, *_: Any) -> Any:
        raise render.PendingResult(PENDING_PREFIX + self.name)

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _fact
    __hash__ = str.__hash__


def stand_ins(transport: str | None) -> dict[str, Any]:
    """Facts not gathered (--offline, validate): every use is pending on the fact."""
    return variables(transport, lambda written, _path: FactPending(PENDING_PREFIX + written))


def markers(transport: str | None) -> dict[str, Any]:
    return variables(transport, lambda written, _path: FactMarker(written))


def has_marker(text: str) -> bool:
    return MARK in text.lower()


# ---------------------------------------------------------------- what templates read


def _shape(transport: str | None = None) -> dict[str, Any]:
    return variables(transport, lambda _w, path: path)


SHAPE = _shape()  # root -> nested dicts whose leaves are paths


@lru_cache(maxsize=8192)
def chains(source: str, expression: bool = False) -> tuple[tuple[tuple[str, ...], int], ...]:
    """Each fact name a template (or a bare expression) reads, with the attribute chain after
    it as far as it is written as constants: (("facts", "os", "family"), line)."""
    from jinja2 import TemplateSyntaxError

    text = "{{ " + source + " }}" if expression else source
    if not expression and not render.has_template(source):
        return ()
    try:
        return chains_in(render.ENV_TEXT.parse(text))
    except TemplateSyntaxError:
        return ()


def chains_in(ast: Any) -> tuple[tuple[tuple[str, ...], int], ...]:
    """`chains` of a parsed template or expression."""
    from jinja2 import nodes

    stored = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found: dict[int, tuple[tuple[str, ...], int]] = {}
    inner: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        parts: list[str] = []
        cur: Any = node
        while isinstance(cur, nodes.Getattr | nodes.Getitem):
            if id(cur) != id(node):
                inner.add(id(cur))
            if isinstance(cur, nodes.Getattr):
                parts.append(cur.attr)
            elif isinstance(cur.arg, nodes.Const) and isinstance(cur.arg.value, str):
                parts.append(cur.arg.value)
            else:
                parts = []  # a computed key: all below it may be read
            cur = cur.node
        if isinstance(cur, nodes.Name) and cur.name in ALL_ROOTS and cur.name not in stored:
            found[id(node)] = ((cur.name, *reversed(parts)), node.lineno or 1)
            inner.add(id(cur))
    out = [v for k, v in found.items() if k not in inner]
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in ALL_ROOTS and name.name not in stored and id(name) not in inner:
            out.append(((name.name,), name.lineno or 1))
    return tuple(out)


def canonical(chain: tuple[str, ...]) -> str:
    """The part of `facts` a chain reads: a fact's path ("facts.os.family"), a subtree
    ("facts.ipv4"), or "facts" itself; as far as the chain names known facts."""
    root, *parts = chain
    node: Any = SHAPE.get(root)
    base = ROOT
    if root != ROOT:
        if root == ANSIBLE_FACTS and parts:
            node = SHAPE[ANSIBLE_FACTS].get(parts[0])
            parts = parts[1:]
        elif root == ANSIBLE_FACTS:
            return ROOT
        if isinstance(node, str):
            return f"{ROOT}.{node}"
        if not isinstance(node, dict):
            return ROOT
        if not parts or not isinstance(node.get(parts[0]), str):
            prefix = _common(_leaves(node))
            return f"{ROOT}.{prefix}" if prefix else ROOT
        return f"{ROOT}.{node[parts[0]]}"
    path: list[str] = []
    for p in parts:
        if not isinstance(node, dict) or p not in node:
            break
        path.append(p)
        node = node[p]
        if isinstance(node, str):
            break
    return ".".join([base, *path])


def _leaves(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    return [p for v in node.values() for p in _leaves(v)] if isinstance(node, dict) else []


def _common(paths: list[str]) -> str:
    """The longest path all of `paths` lie under ("" when they share none)."""
    if len(paths) == 1:
        return paths[0]
    out: list[str] = []
    for group in zip(*(p.split(".") for p in paths), strict=False):
        if len(set(group)) != 1:
            break
        out.append(group[0])
    return ".".join(out)


def value_at(tree: Mapping[str, Any], path: str) -> Any:
    """The value of `facts...` at `path` in the gathered variables."""
    node: Any = tree.get(ROOT)
    for p in path.split(".")[1:]:
        node = node.get(p) if isinstance(node, dict) else None
    return node


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def problem(chain: tuple[str, ...], transports: Iterable[str]) -> tuple[str, str] | None:
    """(message, hint) when a chain names no fact opsrun gathers, or none of `transports`
    gathers it; None when it is fine."""
    root, *parts = chain
    written = ".".join(chain)
    node: Any = SHAPE.get(root)
    trail = [root]
    for p in parts:
        if isinstance(node, str):
            break  # a fact's own value: `.lower()`, `[0]`
        if not isinstance(node, dict) or p not in node:
            known = sorted(node) if isinstance(node, dict) else []
            guess = _suggest(p, known)
            here = ".".join(trail)
            hint = (f"did you mean '{here}.{guess}'?" if guess
                    else f"{here} has: {', '.join(known)} (docs/playbooks.md#host-facts)")
            return f"unknown host fact '{written}'", hint
        trail.append(p)
        node = node[p]
    paths = _leaves(node)
    on = set(transports)
    if paths and not any(gathered(p, t) for p in paths for t in on):
        where = sorted({t for p in paths for t in BY_PATH[p].on})
        return (f"host fact '{'.'.join(trail)}' is gathered on {'/'.join(where)} hosts only",
                "read it in steps for those hosts only (hosts: ...)")
    return None
