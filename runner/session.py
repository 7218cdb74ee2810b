"""One run's shared state: inventory, playbook, variables, and one open transport per host
(reused by probes and actions), each guarded by that host's safety rules.

Opens connections lazily and closes them all at the end; the only owner of transports.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner import config
from runner.errors import InvalidInput
from runner.model import Host, Inventory, Playbook
from runner.transports import transport_for
from runner.transports.base import CommandGuard, Transport

if TYPE_CHECKING:
    from runner.safety import Rules


@dataclass
class Session:
    inventory: Inventory
    playbook: Playbook
    cli_vars: dict[str, Any] = field(default_factory=dict)
    _transports: dict[str, Transport] = field(default_factory=dict)
    _guards: dict[str, CommandGuard] = field(default_factory=dict)
    _rules: dict[str, Rules] = field(default_factory=dict)
    _vars: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)  # host -> (facts, vars)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    on_spawn: Any = None  # SpawnHook handed to every transport (the journal's process notes)
    # host -> its gathered facts as variables (runner/fact_names.py), set by the planner when
    # the playbook reads facts: apply renders with the same values as the plan
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return self.inventory.hosts[name]

    def vars_for(self, name: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
        """The host's variables, with its gathered facts (or `facts`: stand-ins while planning).
        With the gathered facts they are rendered once per run and set of facts (they depend on
        nothing else: inventory, playbook, --var, facts); a fresh top-level dict each call."""
        if facts is not None:
            return config.host_vars(self.inventory, self.host(name), self.playbook, self.cli_vars, facts=facts)
        gathered = self.facts.get(name)
        found = self._vars.get(name)
        if found is None or found[0] is not gathered:  # the planner set (new) facts meanwhile
            found = (gathered, config.host_vars(self.inventory, self.host(name), self.playbook, self.cli_vars,
                                                facts=gathered))
            self._vars[name] = found
        return dict(found[1])

    def rules(self, name: str) -> Rules:
        """The host's safety rules: built-ins, inventory (global/group/host) and playbook lists.
        Also answers `check_destination` (file steps, at plan time) and `lifted()` (for the plan)."""
        with self._lock:
            if name not in self._rules:
                from runner.safety import Rules

                host = self.host(name)
                self._rules[name] = Rules(
                    forbid=[*host.forbid, *self.playbook.forbid], allow=[*host.allow, *self.playbook.allow]
                )
            return self._rules[name]

    def guard(self, name: str) -> CommandGuard:
        """The host's safety rules as the transport's command guard."""
        rules = self.rules(name)
        with self._lock:
            if name not in self._guards:
                self._guards[name] = rules.check
            return self._guards[name]

    def transport(self, name: str) -> Transport:
        """The host's transport, opened on first use and kept for the whole run."""
        t = self._transports.get(name)  # the common case, without the session-wide lock
        if t is not None and t.guard is not None and t.on_spawn is self.on_spawn:
            t.open()  # reconnects a lost connection, as below
            return t
        with self._lock:
            t = self._transports.get(name)
            if t is None:
                host = self.host(name)
                settings = config.resolved_settings(self.inventory, host)
                resolved = Host(
                    host.name,
                    host.transport,
                    settings,
                    host.vars,
                    host.group_vars,
                    host.groups,
                    host.forbid,
                    host.allow,
                    host.implicit,
                )
                t = transport_for(resolved, None)
                self._transports[name] = t
        if t.guard is None:
            t.guard = self.guard(name)
        t.on_spawn = self.on_spawn
        t.open()
        return t

    def drop(self, name: str) -> None:
        """Forget a broken connection so the next use reconnects."""
        with self._lock:
            t = self._transports.pop(name, None)
        if t is not None:
            try:
                t.close()
            except Exception:
                pass

    def stop_running(self) -> None:
        """End every command running now on any host (a second Ctrl-C or SIGTERM)."""
        for t in list(self._transports.values()):
            try:
                t.stop_running()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            ts = list(self._transports.values())
            self._transports.clear()
        for t in ts:
            try:
                t.close()
            except Exception:
                pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def select_hosts(inventory: Inventory, playbook: Playbook, limit: str | None) -> list[str]:
    config.resolve_sources(inventory, playbook.hosts)  # Proxmox guests, asked for only now
    hosts = config.match_hosts(inventory, playbook.hosts)
    if limit:
        narrowed = config.match_hosts(inventory, limit)
        hosts = [h for h in hosts if h in narrowed]
        if not hosts:
            raise InvalidInput(f"--limit {limit!r} leaves no host of the playbook's '{playbook.hosts}'")
    if not hosts:
        raise InvalidInput(
            f"the playbook's hosts '{playbook.hosts}' match no host in {inventory.file}",
            hint="add hosts to that group in the inventory, or pass -i with another inventory",
        )
    return hosts


def open_session(
    playbook: str, inventory: str | None, variables: list[str] | None, base_vars: dict[str, Any] | None = None
) -> Session:
    """A session over the files named on the command line: inventory (default: ./inventory.yaml or the
    embedded one), playbook, and variables (`base_vars`, then NAME=VALUE / @file.yaml on top)."""
    inv = config.load_inventory(inventory)
    pb = config.load_playbook(playbook, inv)
    cli_vars = dict(base_vars or {})
    cli_vars.update(config.parse_cli_vars(list(variables or [])))
    return Session(inv, pb, cli_vars)


def split_names(values: Sequence[str] | None) -> tuple[str, ...]:
    """Names given as repeated options or comma lists (`-t a,b -t c`), in order."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(out)
