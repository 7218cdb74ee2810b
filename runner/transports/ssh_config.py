"""Where and how to reach an SSH host: inventory settings merged with ~/.ssh/config, jump hosts,
and the host-key side (known_hosts, policies, fingerprints). Imports no steps, planner, apply or cli.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko

from runner.errors import HostKeyError, InvalidInput, OpsrunError
from runner.model import Host

POLICIES = ("strict", "accept-new", "off")

_known_hosts_lock = threading.Lock()  # accept-new appends from parallel hosts


@dataclass
class _Target:
    """Where and how to connect, after inventory settings and ~/.ssh/config are merged."""

    alias: str
    user: str | None
    port: int | None
    keys: list[str]
    password: str | None
    passphrase: str | None
    policy: str
    known_hosts_file: Path
    connect_timeout: float
    jump: dict[str, Any] | None
    sudo: bool
    sudo_password: str | None
    shell: str
    explicit_key: bool = False
    ssh_config: paramiko.SSHConfig = field(default_factory=paramiko.SSHConfig)


# ---------------------------------------------------------------- host key policy


class _KeyOwner(Protocol):
    """What the policy asks of the transport it guards (runner/transports/ssh.py)."""

    _target: _Target

    def _accept_new(self, hostname: str, port: int, key: paramiko.PKey) -> None: ...

    def _unknown_key(self, hostname: str, port: int, key: paramiko.PKey) -> HostKeyError: ...


class _HostKeyPolicy:
    """paramiko calls `missing_host_key` when known_hosts has no key at all for this name."""

    def __init__(self, owner: _KeyOwner, hostname: str, port: int) -> None:
        self.owner = owner
        self.hostname = hostname
        self.port = port

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        policy = self.owner._target.policy
        if policy == "off":
            return
        if policy == "accept-new":
            self.owner._accept_new(self.hostname, self.port, key)
            return
        raise self.owner._unknown_key(self.hostname, self.port, key)


def known_name(hostname: str, port: int) -> str:
    """The host's name in known_hosts: `host`, or `[host]:port` off port 22."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _scan_hint(target: _Target, hostname: str, port: int, key: paramiko.PKey) -> str:
    kt = key.get_name().removeprefix("ssh-").split("-")[0]
    p = f"-p {port} " if port != 22 else ""
    return f"ssh-keyscan {p}-t {kt} {hostname} >> {target.known_hosts_file}"


def unknown_key(host: str, target: _Target, hostname: str, port: int, key: paramiko.PKey) -> HostKeyError:
    name = known_name(hostname, port)
    return HostKeyError(
        host,
        f"unknown host key for {name}: {key.get_name()} {fingerprint(key)} is not in "
        f"{target.known_hosts_file} (known_hosts: strict)",
        hint=f"check that fingerprint with the host's owner, then add it: "
             f"{_scan_hint(target, hostname, port, key)}; or trust it on first use with "
             f"`known_hosts: accept-new` for this host",
    )


def changed_key(host: str, target: _Target, hostname: str, port: int,
                exc: paramiko.BadHostKeyException) -> HostKeyError:
    name = known_name(hostname, port)
    got, expected = exc.key, exc.expected_key
    file = target.known_hosts_file
    return HostKeyError(
        host,
        f"host key for {name} has CHANGED: it now presents {got.get_name()} "
        f"{fingerprint(got)}, {file} has {expected.get_name()} {fingerprint(expected)}",
        hint=f"someone may be intercepting the connection, or the host was reinstalled. "
             f"Only if you know why: ssh-keygen -R '{name}' -f {file}, then "
             f"{_scan_hint(target, hostname, port, got)} (accept-new never accepts a changed key)",
    )


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256:base64 (unpadded), the way ssh prints host key fingerprints."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class KnownHosts:
    """A known_hosts file parsed once: paramiko's HostKeys, and for a file without hashed
    names an index by name (paramiko's lookup compares every entry with the name: each of N
    hosts looking itself up in a file of N lines made that N x N)."""

    def __init__(self, path: Path) -> None:
        self.keys = paramiko.HostKeys(str(path))
        entries = getattr(self.keys, "_entries", None)
        self._index: dict[str, dict[str, paramiko.PKey]] | None = None
        if isinstance(entries, list) and not any(
                h.startswith("|1|") for e in entries for h in e.hostnames):
            index: dict[str, dict[str, paramiko.PKey]] = {}
            for e in entries:
                if e.key is None:
                    continue
                for h in e.hostnames:
                    index.setdefault(h, {}).setdefault(e.key.get_name(), e.key)  # the first wins
            self._index = index

    def lookup(self, name: str) -> dict[str, paramiko.PKey]:
        """key type -> key for `name` (the first of each type in the file), as paramiko's."""
        if self._index is not None:
            return dict(self._index.get(name, {}))
        found = self.keys.lookup(name)
        return {t: found[t] for t in found} if found else {}


_known_hosts_cache: dict[tuple[str, int, int], KnownHosts] = {}


def _parsed_known_hosts(path: Path) -> KnownHosts:
    """known_hosts parsed once per run and shared by every host (parsing it for each of 50
    hosts cost 108 ms of CPU); a file that changed (accept-new appended) is parsed again."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _known_hosts_lock:
        keys = _known_hosts_cache.get(key)
        if keys is None:
            keys = KnownHosts(path)
            for old in [k for k in _known_hosts_cache if k[0] == key[0]]:
                del _known_hosts_cache[old]
            _known_hosts_cache[key] = keys
        return keys


_keys_cache: dict[tuple[str, int, int, int], paramiko.PKey] = {}
_keys_lock = threading.Lock()


def loaded_key(path: str, passphrase: str | None) -> paramiko.PKey | None:
    """A private key file (and its `-cert.pub`) loaded once per run and shared by every host
    using it; paramiko given a file name reads it per connection, once for each key type it
    tries. None (any doubt: unreadable, encrypted without the passphrase, a type paramiko does
    not know): leave the file to paramiko, whose errors say what is wrong."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_mtime_ns, st.st_size, st.st_ino)
    with _keys_lock:
        found = _keys_cache.get(key)
        if found is None:
            try:
                found = paramiko.PKey.from_path(path, passphrase)  # 2nd argument: passphrase/password
            except Exception:
                return None
            _keys_cache[key] = found
        return found


# ---------------------------------------------------------------- settings

_config_cache: dict[tuple[str, int, int], paramiko.SSHConfig] = {}


def _ssh_config() -> paramiko.SSHConfig:
    """~/.ssh/config (or $OPSRUN_SSH_CONFIG), parsed once per run while it is unchanged; a
    missing file is an empty config."""
    path = Path(os.path.expanduser(os.environ.get("OPSRUN_SSH_CONFIG") or "~/.ssh/config"))
    try:
        st = path.stat()
        known = (str(path), st.st_mtime_ns, st.st_size)
        if known in _config_cache:
            return _config_cache[known]
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return paramiko.SSHConfig()
    except OSError as exc:
        raise OpsrunError(f"cannot read ssh config {path}: {exc.strerror or exc}") from exc
    try:
        parsed = paramiko.SSHConfig.from_text(text)
    except Exception as exc:  # paramiko raises bare Exception/ConfigParseError for bad lines
        raise OpsrunError(f"{path}: cannot parse ssh config: {exc}") from exc
    _config_cache.clear()
    _config_cache[known] = parsed
    return parsed


def _resolve_settings(host: Host) -> _Target:
    s = host.settings
    ssh_config = _ssh_config()
    alias = str(s.get("address") or host.name)
    looked = ssh_config.lookup(alias)
    policy = str(s.get("known_hosts") or _policy_from_config(looked) or "strict")
    if policy not in POLICIES:
        raise InvalidInput(f"host {host.name}: known_hosts must be one of "
                           f"{', '.join(POLICIES)}, not {policy!r}")
    known_file = s.get("known_hosts_file") or _first(looked.get("userknownhostsfile")) \
        or "~/.ssh/known_hosts"
    port = s.get("port")
    jump = s.get("jump")
    target_defaults = {k: s[k] for k in ("known_hosts", "known_hosts_file", "connect_timeout")
                       if s.get(k) is not None}
    jump_settings: dict[str, Any] | None
    if isinstance(jump, str):
        parsed = _parse_jump(jump)
        for k in ("key", "key_passphrase"):
            if s.get(k) and k not in parsed:
                parsed[k] = s[k]
        jump_settings = {**target_defaults, **parsed}
    elif isinstance(jump, dict):
        jump_settings = {**target_defaults, **jump}
    elif jump in (None, False, ""):
        jump_settings = None
    else:
        raise InvalidInput(f"host {host.name}: jump must be a host's settings or "
                           f"'user@host:port', not {jump!r}")
    try:
        timeout = float(s.get("connect_timeout") or looked.get("connecttimeout") or 10)
        port_n = int(port) if port is not None else None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"host {host.name}: port and connect_timeout must be numbers") from exc
    key = s.get("key")
    return _Target(
        alias=alias,
        user=str(s["user"]) if s.get("user") else looked.get("user"),
        port=port_n if port_n is not None else int(looked.get("port", 22)),
        keys=[str(key)] if key else list(looked.get("identityfile", [])),
        explicit_key=bool(key),
        password=s.get("password") or None,
        passphrase=s.get("key_passphrase") or None,
        policy=policy,
        known_hosts_file=Path(os.path.expanduser(str(known_file))),
        connect_timeout=timeout,
        jump=jump_settings,
        sudo=bool(s.get("sudo", False)),
        sudo_password=s.get("sudo_password") or None,
        shell=str(s.get("shell") or "/bin/sh"),
        ssh_config=ssh_config,
    )


def shorthand(alias: str) -> dict[str, Any]:
    """`user@host:port` -> its parts (None where not given), as Fabric reads a host string;
    an address with more than one colon is IPv6 and has no port."""
    user, _, hostport = alias.rpartition("@")
    port: int | None = None
    host: str | None = hostport
    if hostport.count(":") <= 1:
        host, _, port_text = hostport.partition(":")
        port = int(port_text) if port_text else None
    return {"user": user or None, "host": host or None, "port": port}


def _policy_from_config(looked: dict[str, Any]) -> str | None:
    value = str(looked.get("stricthostkeychecking", "")).lower()
    if value in ("yes", "ask"):
        return "strict"
    if value in ("accept-new", "no", "off"):
        return "accept-new"  # a config line never makes us accept a *changed* key
    return None


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value).split()[0] if value else None


def _parse_jump(text: str) -> dict[str, Any]:
    """'user@host:port' (user and port optional) -> settings; 'a,b' chains hops."""
    hops = [h.strip() for h in text.split(",") if h.strip()]
    last = hops[-1] if hops else text
    out: dict[str, Any] = {}
    if "@" in last:
        out["user"], last = last.rsplit("@", 1)
    if last.startswith("["):
        addr, _, rest = last[1:].partition("]")
        out["address"] = addr
        if rest.startswith(":"):
            out["port"] = int(rest[1:])
    elif last.count(":") == 1:
        addr, port = last.split(":")
        out["address"], out["port"] = addr, int(port)
    else:
        out["address"] = last
    if len(hops) > 1:
        out["jump"] = ",".join(hops[:-1])
    return out


def _jump_from_string(value: str, t: _Target) -> dict[str, Any]:
    out = _parse_jump(value)
    out.setdefault("known_hosts", t.policy)
    out.setdefault("known_hosts_file", str(t.known_hosts_file))
    out.setdefault("connect_timeout", t.connect_timeout)
    return out
