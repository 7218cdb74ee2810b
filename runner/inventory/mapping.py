"""Ansible connection variables (ansible_host, ansible_become, ...) and opsrun_<setting> vars ->
opsrun host settings, with one warning per variable that has no opsrun equivalent. No I/O, no host.

The table in docs/playbooks.md ("Ansible inventories") is the reference; keep the two in step.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner import render, variables
from runner.errors import Diagnostic

Where = tuple[str, int, int]
Conn = dict[str, tuple[Any, Where]]  # var -> (value, where it was set), the winning one

# opsrun setting <- Ansible variables, the first one set wins
SETTING_VARS: dict[str, tuple[str, ...]] = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "password": ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password"),
    "key": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "sudo": ("ansible_become", "ansible_sudo"),
    "sudo_password": ("ansible_become_password", "ansible_become_pass", "ansible_sudo_password",
                      "ansible_sudo_pass"),
    "shell": ("ansible_shell_executable",),
    "connect_timeout": ("ansible_timeout", "ansible_ssh_timeout"),
    "known_hosts": ("ansible_host_key_checking", "ansible_ssh_host_key_checking"),
}
SECRET_SETTINGS = frozenset({"password", "sudo_password", "key_passphrase"})
HANDLED = frozenset({*(v for vs in SETTING_VARS.values() for v in vs), "ansible_connection",
                     "ansible_become_user", "ansible_become_method", "ansible_ssh_common_args",
                     "ansible_ssh_extra_args", "ansible_group_priority"})
SSH_CONNECTIONS = frozenset({"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh",
                             "ansible.builtin.paramiko_ssh", "ansible.legacy.ssh"})
LOCAL_CONNECTIONS = frozenset({"local", "ansible.builtin.local", "ansible.legacy.local"})
SSH_SETTINGS = frozenset({"address", "port", "user", "key", "password", "key_passphrase", "known_hosts",
                          "known_hosts_file", "connect_timeout", "jump", "sudo", "sudo_password", "shell"})
LOCAL_SETTINGS = frozenset({"shell", "sudo"})
OPSRUN_SETTINGS = frozenset({*SSH_SETTINGS, "api", "token_id", "token_secret", "verify_ssl", "ca_file", "node",
                             "timeout", "task_timeout", "serial", "adb_server", "adb_binary"})
TRUE = frozenset({"true", "yes", "on", "1", "y", "t"})
FALSE = frozenset({"false", "no", "off", "0", "n", "f"})
LOOKUP = re.compile(r"""^\{\{\s*lookup\(\s*['"](?:ansible\.builtin\.)?(env|file)['"]\s*,"""
                    r"""\s*['"]([^'"]+)['"]\s*\)\s*\}\}$""")
HINTS = {
    "ansible_python_interpreter": "opsrun runs no Python on its hosts",
    "ansible_become_user": "opsrun's sudo runs commands as root; use `sudo -u USER` in the command",
    "ansible_become_method": "opsrun becomes root with sudo only",
    "ansible_ssh_pipelining": "opsrun sends each host's commands over one connection anyway",
    "ansible_pipelining": "opsrun sends each host's commands over one connection anyway",
}


@dataclass
class Mapped:
    """A host's transport and settings, and for each setting the variable it came from."""

    transport: str
    settings: dict[str, Any]
    origin: dict[str, tuple[str, Where]] = field(default_factory=dict)


class Mapper:
    """Maps hosts one by one; collects located errors and (once per variable) warnings."""

    def __init__(self) -> None:
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self._warned: set[str] = set()

    def warn_once(self, var: str, where: Where, message: str, hint: str = "") -> None:
        if var not in self._warned:
            self._warned.add(var)
            self.warnings.append(Diagnostic(*where, message, hint=hint, severity="warning"))

    def error(self, where: Where, var: str, message: str, hint: str = "") -> None:
        self.errors.append(Diagnostic(*where, f"host variable {var}: {message}", hint=hint))

    def host(self, name: str, transport: str | None, default: str, explicit: dict[str, Any], conn: Conn,
             context: Callable[[], dict[str, Any]]) -> Mapped:
        """`transport`/`explicit`: what the opsrun inventory states (it wins over variables);
        `default`: the transport when neither it nor a variable says. `context()`: every
        inventory-side var of the host, for templated connection vars."""
        out = Mapped(transport or "", {})
        if transport not in (None, "ssh", "local"):
            return Mapped(transport or "", dict(explicit))  # proxmox/adb hosts: Ansible vars do not apply
        values = {var: self._value(name, var, raw, where, context) for var, (raw, where) in conn.items()}
        values = {k: v for k, v in values.items() if v is not _SKIP}

        def origin(setting: str, var: str) -> None:
            out.origin[setting] = (var, conn[var][1])

        connection = values.get("ansible_connection")
        if transport is None and "opsrun_transport" in values:
            out.transport = str(values["opsrun_transport"])
            origin("transport", "opsrun_transport")
        elif transport is None and connection is not None:
            where = conn["ansible_connection"][1]
            if str(connection) in LOCAL_CONNECTIONS:
                out.transport = "local"
            elif str(connection) in SSH_CONNECTIONS:
                out.transport = "ssh"
            else:
                self.error(where, "ansible_connection", f"'{connection}' is not a way opsrun reaches hosts",
                           "use ansible_connection=ssh or local (Proxmox and Android hosts are opsrun "
                           "inventory hosts with transport: proxmox or adb)")
            origin("transport", "ansible_connection")
        for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            if var in values:
                self._ssh_args(var, str(values[var]), conn[var][1], out)
        for setting, names in SETTING_VARS.items():
            found = [n for n in names if n in values]
            if not found:
                continue
            var = found[0]
            converted = self._convert(setting, var, values[var], conn[var][1])
            if converted is not _SKIP:
                out.settings[setting] = converted
                origin(setting, var)
        self._unsupported(values, conn)
        if not out.transport:
            out.transport = default
        # Ansible's variables speak of ssh: a local host keeps shell and sudo, others nothing
        allowed = {"local": LOCAL_SETTINGS, "ssh": SSH_SETTINGS}.get(out.transport, frozenset())
        out.settings = {k: v for k, v in out.settings.items() if k in allowed}
        out.origin = {k: v for k, v in out.origin.items() if k in allowed or k == "transport"}
        for var in sorted(values):  # said in opsrun's words: taken as is, and checked by the schema
            if var.startswith("opsrun_") and var[7:] in OPSRUN_SETTINGS:
                out.settings[var[7:]] = values[var]
                origin(var[7:], var)
        out.settings.update(explicit)
        for k in explicit:
            out.origin.pop(k, None)
        return out

    # ------------------------------------------------------------ values
    def _value(self, host: str, var: str, raw: Any, where: Where, context: Callable[[], dict[str, Any]]) -> Any:
        if not isinstance(raw, str) or not render.has_template(raw):
            return raw
        m = LOOKUP.match(raw.strip())
        if m:
            return f"{m.group(1)}:{m.group(2)}"  # a secret reference, read when the host is reached
        if var in {v for s in SECRET_SETTINGS for v in SETTING_VARS.get(s, ())}:
            self.error(where, var, "a templated secret cannot be read by opsrun",
                       f"write {var}=env:NAME (or file:PATH, or {{{{ lookup('env', 'NAME') }}}})")
            return _SKIP
        ctx = dict(context())
        ctx[var] = raw
        try:
            return variables.Resolver(ctx).get(var)
        except variables.VarError as exc:
            self.error(where, var, f"cannot be rendered for host {host}: {exc.message}",
                       "connection variables are rendered with the inventory's variables only")
            return _SKIP

    def _convert(self, setting: str, var: str, value: Any, where: Where) -> Any:
        if setting in SECRET_SETTINGS:
            if isinstance(value, str) and re.match(r"^(env|file):.+$", value):
                return value
            self.error(where, var, "holds a secret written in the inventory; opsrun reads secrets only from "
                       "references", f"write {var}=env:NAME or file:PATH (or {{{{ lookup('env', 'NAME') }}}})")
            return _SKIP
        if setting in ("sudo", "known_hosts"):
            flag = _bool(value)
            if flag is None:
                self.error(where, var, f"expected true or false, got {value!r}")
                return _SKIP
            if setting == "known_hosts":
                return "strict" if flag else "off"
            return flag
        if setting == "port":
            try:
                port = int(str(value).strip())
            except ValueError:
                port = 0
            if not 1 <= port <= 65535 or isinstance(value, bool):
                self.error(where, var, f"expected a port number 1..65535, got {value!r}")
                return _SKIP
            return port
        if setting == "connect_timeout":
            try:
                seconds = float(str(value).strip())
            except ValueError:
                seconds = 0
            if seconds <= 0:
                self.error(where, var, f"expected a number of seconds, got {value!r}")
                return _SKIP
            return seconds
        if value is None or (isinstance(value, str) and not value.strip()):
            return _SKIP
        return str(value).strip()

    def _unsupported(self, values: dict[str, Any], conn: Conn) -> None:
        for var in sorted(values):
            if not var.startswith("ansible_") or var in HANDLED:
                if var == "ansible_become_user" and str(values[var]) not in ("root", ""):
                    self.warn_once(var, conn[var][1], f"{var}={values[var]} has no opsrun equivalent: "
                                   "ignored (it stays a variable)", HINTS[var])
                if var == "ansible_become_method" and str(values[var]) not in ("sudo", ""):
                    self.warn_once(var, conn[var][1], f"{var}={values[var]} has no opsrun equivalent: "
                                   "ignored (it stays a variable)", HINTS[var])
                continue
            self.warn_once(var, conn[var][1], f"{var} has no opsrun equivalent: ignored (it stays a variable)",
                           HINTS.get(var, "see docs/playbooks.md#ansible-inventories for what is read"))

    def _ssh_args(self, var: str, text: str, where: Where, out: Mapped) -> None:
        """The ssh options Ansible users put in ansible_ssh_common_args that opsrun can honour."""
        try:
            words = shlex.split(text)
        except ValueError as exc:
            self.error(where, var, f"cannot read it: {exc}")
            return
        options: list[tuple[str, str]] = []
        i = 0
        while i < len(words):
            w = words[i]
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if w == "-o" and nxt:
                key, _, val = nxt.replace(" ", "=", 1).partition("=") if "=" not in nxt else nxt.partition("=")
                options.append((key.strip().lower(), val.strip()))
                i += 2
                continue
            if w.startswith("-o") and len(w) > 2:
                key, _, val = w[2:].partition("=")
                options.append((key.strip().lower(), val.strip()))
            elif w in ("-J", "-p", "-i", "-l") and nxt:
                options.append(({"-J": "proxyjump", "-p": "port", "-i": "identityfile", "-l": "user"}[w], nxt))
                i += 1
            else:
                self.warn_once(f"{var}:{w}", where, f"{var}: ssh option {w} has no opsrun equivalent: ignored")
            i += 1
        for key, val in options:
            self._ssh_option(var, key, val, where, out)

    def _ssh_option(self, var: str, key: str, val: str, where: Where, out: Mapped) -> None:
        settings: dict[str, Any] = {}
        if key == "proxyjump":
            if "," in val:
                self.error(where, var, f"ProxyJump {val}: opsrun takes one jump host",
                           "give the jump host itself a jump setting for a chain")
                return
            settings["jump"] = val.removeprefix("ssh://")
        elif key == "proxycommand":
            m = re.search(r"\bssh\b.*?-W\s*\S+\s+(?:.*\s)?(\S+@\S+|[A-Za-z0-9_.-]+)\s*$", val)
            if not m:
                self.warn_once(f"{var}:proxycommand", where, f"{var}: ProxyCommand {val!r} is not an ssh jump; "
                               "ignored", "write -o ProxyJump=user@host instead")
                return
            settings["jump"] = m.group(1)
        elif key == "stricthostkeychecking":
            v = val.lower()
            settings["known_hosts"] = {"no": "off", "off": "off", "accept-new": "accept-new"}.get(v, "strict")
        elif key == "userknownhostsfile":
            if val != "/dev/null":
                settings["known_hosts_file"] = val
        elif key in ("port", "user", "identityfile", "connecttimeout"):
            name = {"port": "port", "user": "user", "identityfile": "key", "connecttimeout": "connect_timeout"}[key]
            converted = self._convert(name, var, val, where)
            if converted is _SKIP:
                return
            settings[name] = converted
        else:
            self.warn_once(f"{var}:{key}", where, f"{var}: ssh option {key} has no opsrun equivalent: ignored")
            return
        for setting, value in settings.items():
            out.settings[setting] = value
            out.origin[setting] = (var, where)


class _Skip:
    pass


_SKIP: Any = _Skip()


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in TRUE else False if text in FALSE else None
