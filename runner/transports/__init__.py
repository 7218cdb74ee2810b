"""Transport registry: opens the right transport for a host, importing its library lazily.

proxmoxer, adbutils and paramiko are imported only when a host of that kind is used.
"""

from __future__ import annotations

import importlib

from runner.errors import InvalidInput
from runner.model import Host
from runner.transports.base import CommandGuard, Transport

# What each transport can do, known without importing its library; step kinds name what
# they need (StepKind.needs) and run where it is offered. "posix": a POSIX shell with the
# usual coreutils; "android": Android's shell and tools; "pve-api": the Proxmox VE API;
# "shell"/"files": any shell / file transfer at all; "sudo": a step's own `sudo:` is honoured;
# "sftp": SFTP requests (mkdir, chmod, rm).
CAPABILITIES: dict[str, frozenset[str]] = {
    "local": frozenset({"shell", "files", "posix", "sudo"}),
    "ssh": frozenset({"shell", "files", "posix", "sudo", "sftp"}),
    "proxmox": frozenset({"api", "pve-api"}),
    "adb": frozenset({"shell", "files", "android"}),
}


def capabilities(transport: str) -> frozenset[str]:
    return CAPABILITIES.get(transport, frozenset())


def offering(needs: frozenset[str]) -> list[str]:
    """The transports that offer every capability in `needs`."""
    return [t for t, caps in CAPABILITIES.items() if needs <= caps]


_MODULES = {
    "local": ("runner.transports.local", "LocalTransport"),
    "ssh": ("runner.transports.ssh", "SSHTransport"),
    "proxmox": ("runner.transports.proxmox", "ProxmoxTransport"),
    "adb": ("runner.transports.adb", "ADBTransport"),
}


def transport_for(host: Host, guard: CommandGuard | None = None) -> Transport:
    """A (not yet opened) transport for `host`."""
    try:
        module_name, class_name = _MODULES[host.transport]
    except KeyError:
        raise InvalidInput(
            f"host {host.name}: unknown transport '{host.transport}'", hint=f"use one of: {', '.join(_MODULES)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("runner."):
            raise InvalidInput(
                f"host {host.name}: transport '{host.transport}' is not available in this version"
            ) from None
        raise
    cls: type[Transport] = getattr(module, class_name)
    return cls(host, guard)
