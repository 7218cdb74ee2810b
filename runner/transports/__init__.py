"""Transport registry: opens the right transport for a host, importing its library lazily.

proxmoxer, adbutils and fabric are imported only when a host of that kind is used.
"""

from __future__ import annotations

import importlib

from runner.errors import InvalidInput
from runner.model import Host
from runner.transports.base import CommandGuard, Transport

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
