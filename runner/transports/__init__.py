"""Transport registry: opens the right transport for a host, importing its library lazily.

proxmoxer, adbutils and paramiko are imported only when a host of that kind is used; paramiko
then starts without importing invoke or importlib.metadata (stand-ins, below).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from typing import Any

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


class _Deferred(types.ModuleType):
    """A module imported when one of its names is first read (then it is the real module)."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def _defer_invoke() -> None:
    """paramiko imports `invoke` (when installed) at start, only to run `Match exec` lines of an
    ssh_config: ~25 ms of every start. It gets a stand-in that imports invoke on first use."""
    if "invoke" in sys.modules or "paramiko" in sys.modules:
        return
    spec = importlib.util.find_spec("invoke")
    if spec is None:
        return  # not installed: paramiko's own ImportError handling
    stand_in = _Deferred("invoke")
    stand_in.__spec__ = spec
    sys.modules["invoke"] = stand_in


class _ParamikoVersion(_Deferred):
    """A stand-in for importlib.metadata while paramiko starts: paramiko asks it only
    `version("paramiko")` (~20 ms for the real module, which imports email.*). Answered from
    paramiko's dist-info; the stand-in leaves sys.modules at that first call, and anything
    else is the real module's."""

    def version(self, name: str) -> str:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        found = _dist_version(name) if name == "paramiko" else None
        return found or str(importlib.import_module(self.__name__).version(name))


def _dist_version(name: str) -> str | None:
    """The Version: of the one `<name>-*.dist-info` beside the package (None: not so simple)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        return None
    site = os.path.dirname(os.path.dirname(spec.origin))
    try:
        infos = [d for d in os.listdir(site) if d.startswith(f"{name}-") and d.endswith(".dist-info")]
        if len(infos) != 1:
            return None
        with open(os.path.join(site, infos[0], "METADATA"), encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip() or None
                if not line.strip():
                    return None  # the headers ended
    except OSError:
        return None
    return None


class _QuickParamiko:
    """A meta path finder that, the first time paramiko is imported (and importlib.metadata
    is not yet), puts the _ParamikoVersion stand-in in place; the normal finders load it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name != "paramiko":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        if "importlib.metadata" not in sys.modules:
            sys.modules["importlib.metadata"] = _ParamikoVersion("importlib.metadata")
        return None


_defer_invoke()
if "paramiko" not in sys.modules:
    sys.meta_path.insert(0, _QuickParamiko())


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
