"""Proxmox values in one spelling (what PVE shows vs what a step says), disks and volumes,
and the readers of API answers the Proxmox kinds share. Pure: no kind module, transport or proxmoxer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runner.model import Action, ProbeResult
from runner.steps.shell import PrepareError  # reported at the step, file:line

PROXMOX = frozenset({"pve-api"})  # the capability Proxmox kinds need (transports.CAPABILITIES)
MASK = "***"
GiB = 1024**3
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": GiB, "T": 1024**4}
SECRET_FIELDS = frozenset({"password", "cipassword"})

NET_KEY = re.compile(r"^net\d+$")
NEW_DISK = re.compile(r"^([^:\s,]+):(\d+(?:\.\d+)?)$")  # storage:size-in-GiB
BARE_SIZE = re.compile(r"^\d+(?:\.\d+)?$")
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?$", re.I)

BOOL_KEYS = frozenset({"onboot", "protection", "template", "console", "debug", "acpi", "kvm",
                       "numa", "tablet", "localtime", "freeze", "reboot", "unprivileged"})
MIB_KEYS = frozenset({"memory", "swap", "balloon"})
INT_KEYS = frozenset({"cores", "sockets", "vcpus", "cpuunits", "tty", "shares"})
# free text or single values, never property strings (even with a "=" inside)
PLAIN_KEYS = frozenset({"description", "tags", "hostname", "name", "ostype", "nameserver",
                        "searchdomain", "ciuser", "sshkeys", "ssh-public-keys", "timezone"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
QEMU_NET_MODELS = frozenset({
    "e1000", "e1000e", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "i82551", "i82557b",
    "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"})
# the name PVE gives the bare first value of a property string
BARE_KEY = {"agent": "enabled", "cpu": "cputype", "vga": "type", "rng0": "source"}
# keys PVE fills in on its own; ignored unless the step sets them
AUTO_NET = {"lxc": frozenset({"hwaddr", "type"}), "qemu": frozenset({"macaddr"})}
# PVE's ostype, from the file name of an OS template
TEMPLATE_OSTYPE = (("debian", "debian"), ("devuan", "devuan"), ("ubuntu", "ubuntu"),
                   ("centos", "centos"), ("rockylinux", "centos"), ("almalinux", "centos"),
                   ("fedora", "fedora"), ("opensuse", "opensuse"), ("archlinux", "archlinux"),
                   ("alpine", "alpine"), ("gentoo", "gentoo"), ("nixos", "nixos"))


# ================================================================ value handling


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE_WORDS


def _bytes(text: Any, default_unit: str = "") -> int | None:
    """'8G', '512M', '10' (default_unit) -> bytes."""
    m = SIZE.match(str(text).strip())
    if not m:
        return None
    unit = (m.group(2) or default_unit).upper()
    return int(float(m.group(1)) * UNITS[unit])


def _size_text(size: int) -> str:
    """PVE's spelling of a size: the largest unit that divides it."""
    for unit in "TGMK":
        if size and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return str(size)


def _mib(value: Any) -> int | None:
    """Memory in MiB from 2048, '2048', '2G', '512M' or PVE's 'current=2048'."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.startswith("current="):
        text = text.split(",")[0].split("=", 1)[1]
    if BARE_SIZE.match(text):
        return int(float(text))
    size = _bytes(text)
    return size // UNITS["M"] if size is not None else None


def _flag(value: str) -> str:
    low = value.strip().lower()
    if low in TRUE_WORDS:
        return "1"
    if low in FALSE_WORDS:
        return "0"
    return value.strip()


def _tags(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else re.split(r"[;,\s]+", str(value))
    return [str(t).strip() for t in items if str(t).strip()]


def _props(key: str, value: Any, gtype: str) -> dict[str, str]:
    """A comma-separated property string as {key: value}; the bare first value gets
    PVE's name for it; booleans as 1/0 and MAC addresses upper-case."""
    out: dict[str, str] = {}
    for n, raw in enumerate(str(value).split(",")):
        part = raw.strip()
        if not part:
            continue
        k, eq, v = part.partition("=")
        if gtype == "qemu" and NET_KEY.match(key) and k in QEMU_NET_MODELS:
            out["model"] = k
            if v:
                out["macaddr"] = v.upper()
            continue
        if not eq:
            if n == 0:
                out[BARE_KEY.get(key, "_")] = _flag(k)
            continue
        out[k] = v.upper() if k in ("hwaddr", "macaddr") else _flag(v)
    return out


def _is_props(key: str, *values: Any) -> bool:
    if key in PLAIN_KEYS or key in BOOL_KEYS or key in MIB_KEYS or key in INT_KEYS:
        return False
    if NET_KEY.match(key) or key in ("features", "agent", "startup") or key.startswith("ipconfig"):
        return True
    return any(isinstance(v, str) and "=" in v for v in values if v is not None)


def canon(key: str, value: Any, gtype: str) -> Any:
    """A value in one spelling, so that 'what PVE shows' and 'what the step says' compare."""
    if value is None:
        return None
    if key in BOOL_KEYS:
        return "1" if _truthy(value) else "0"
    if key in MIB_KEYS:
        mib = _mib(value)
        return mib if mib is not None else str(value).strip()
    if key in INT_KEYS:
        try:
            return int(float(str(value)))
        except ValueError:
            return str(value).strip()
    if key == "tags":
        return tuple(sorted({t.lower() for t in _tags(value)}))
    if key == "description":
        return str(value).rstrip()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def same(key: str, want: Any, have: Any, gtype: str) -> bool:
    """True when the guest already has `want` for `key`."""
    if want is None or have is None:
        return want is None and have is None
    if _is_props(key, want, have):
        w = _props(key, want, gtype)
        h = _props(key, have, gtype)
        if NET_KEY.match(key):
            h = {k: v for k, v in h.items() if k in w or k not in AUTO_NET[gtype]}
        return w == h
    return bool(canon(key, want, gtype) == canon(key, have, gtype))


def encode(key: str, value: Any) -> Any:
    """A value as it is sent to PVE."""
    if isinstance(value, bool):
        return 1 if value else 0
    if key == "tags":
        return ";".join(_tags(value))
    if key in MIB_KEYS:
        mib = _mib(value)
        return mib if mib is not None else value
    if key in BOOL_KEYS:
        return 1 if _truthy(value) else 0
    return value


def _net_value(key: str, want: str, have: str | None, gtype: str) -> str:
    """The net value to send: the step's, keeping the MAC address the guest already has."""
    if have is None:
        return want
    w = _props(key, want, gtype)
    h = _props(key, have, gtype)
    parts = [p.strip() for p in str(want).split(",") if p.strip()]
    if gtype == "lxc" and "hwaddr" not in w and "hwaddr" in h:
        parts.append(f"hwaddr={h['hwaddr']}")
    if gtype == "qemu" and "macaddr" not in w and "macaddr" in h:
        first = parts[0] if parts else ""
        if first in QEMU_NET_MODELS:
            parts[0] = f"{first}={h['macaddr']}"
        else:
            parts.append(f"macaddr={h['macaddr']}")
    return ",".join(parts)


def _show(key: str, value: Any) -> str:
    if key in SECRET_FIELDS and value is not None:
        return MASK
    if value is None:
        return "(unset)"
    return str(value)


# ================================================================ disks and volumes


@dataclass
class VolumeDelta:
    """How one disk/mount point differs: new options (`value`), a bigger size (`grow`,
    e.g. '10G'), or a change PVE cannot make in place (`unsafe`, why)."""

    value: str | None = None
    grow: str | None = None
    unsafe: str = ""
    old_size: str = ""


def _split_volume(value: Any) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    first = parts[0] if parts and "=" not in parts[0] else ""
    opts: dict[str, str] = {}
    for p in parts[1:] if first else parts:
        k, _, v = p.partition("=")
        if k in ("file", "volume") and not first:
            first = v
            continue
        opts[k] = _flag(v)
    return first, opts


def full_volume(value: Any, storage: str | None) -> str:
    """'8' with storage 'local-lvm' -> 'local-lvm:8' (PVE's 'storage:GiB' form)."""
    first, _ = _split_volume(value)
    text = str(value).strip()
    if BARE_SIZE.match(first) and storage:
        return f"{storage}:{text}"
    return text


def volume_delta(key: str, want: Any, have: Any) -> VolumeDelta:
    """Compare a wanted disk ('local-lvm:32,discard=on' or a volume id) with the current one
    ('local-lvm:vm-101-disk-0,discard=on,size=32G')."""
    w_first, w_opts = _split_volume(want)
    h_first, h_opts = _split_volume(have)
    out = VolumeDelta(old_size=h_opts.get("size", ""))
    cdrom = "cdrom" in (w_opts.get("media"), h_opts.get("media"))
    m = NEW_DISK.match(w_first)
    want_size = _bytes(m.group(2), "G") if m else (
        _bytes(w_opts["size"]) if "size" in w_opts else None)
    have_size = _bytes(h_opts["size"]) if "size" in h_opts else None
    if cdrom or w_first.startswith("/") or h_first.startswith("/") or w_first == "none":
        if not same(key, want, have, "lxc"):
            out.value = str(want)
        return out
    h_sid = h_first.split(":")[0] if ":" in h_first else ""
    if m:
        if m.group(1) != h_sid:
            out.unsafe = f"{key}: move from storage {h_sid or h_first} to {m.group(1)}"
            return out
    elif w_first and w_first != h_first:
        out.unsafe = f"{key}: volume {h_first} -> {w_first} (a different disk)"
        return out
    if want_size is not None and have_size is not None and want_size != have_size:
        if want_size < have_size:
            out.unsafe = (f"{key}: shrink {h_opts.get('size')} -> {_size_text(want_size)} "
                          "(Proxmox cannot shrink a disk)")
            return out
        out.grow = _size_text(want_size)
    w_rest = {k: v for k, v in w_opts.items() if k != "size"}
    h_rest = {k: v for k, v in h_opts.items() if k != "size"}
    if w_rest != h_rest:
        opts = [f"{k}={v}" for k, v in w_rest.items()]
        if "size" in h_opts:
            opts.append(f"size={h_opts['size']}")
        out.value = ",".join([h_first, *opts])
    return out


def _ostype_of(template: str) -> str | None:
    base = str(template).rsplit("/", 1)[-1].lower()
    return next((kind for prefix, kind in TEMPLATE_OSTYPE if base.startswith(prefix)), None)


# ================================================================ facts


@dataclass(frozen=True)
class GuestRow:
    """One guest as /cluster/resources lists it."""

    vmid: int
    node: str
    type: str
    name: str
    status: str
    lock: str
    template: bool

    @classmethod
    def of(cls, row: dict[str, Any]) -> GuestRow:
        return cls(vmid=int(row.get("vmid", 0)), node=str(row.get("node", "")),
                   type=str(row.get("type", "")), name=str(row.get("name", "")),
                   status=str(row.get("status", "")), lock=str(row.get("lock") or ""),
                   template=bool(row.get("template")))


def _error(fact: ProbeResult | None) -> str:
    if fact is None:
        return "no answer"
    if isinstance(fact.data, dict) and isinstance(fact.data.get("error"), dict):
        return str(fact.data["error"].get("message", "")).strip()
    return fact.stderr.decode("utf-8", "replace").strip() or f"rc {fact.rc}"


def _reason(fact: ProbeResult | None) -> str:
    if fact is None or not isinstance(fact.data, dict):
        return ""
    err = fact.data.get("error")
    return str(err.get("reason", "")) if isinstance(err, dict) else ""


def _ok(fact: ProbeResult | None) -> bool:
    return fact is not None and fact.rc == 0


def _data(fact: ProbeResult | None) -> Any:
    """The answer of a probe that succeeded, else None."""
    return fact.data if fact is not None and fact.rc == 0 else None


def _rows(fact: ProbeResult | None) -> list[dict[str, Any]]:
    data = _data(fact)
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def _nodes(fact: ProbeResult | None) -> dict[str, str]:
    return {str(r.get("node")): str(r.get("status", "")) for r in _rows(fact)}


def _pick_node(wanted: str | None, nodes: dict[str, str]) -> tuple[str | None, str]:
    """(node, problem) for a guest that does not exist yet."""
    if wanted:
        if nodes and wanted not in nodes:
            return None, f"no node {wanted} in the cluster (nodes: {', '.join(sorted(nodes))})"
        return wanted, ""
    if len(nodes) == 1:
        return next(iter(nodes)), ""
    listing = ", ".join(sorted(nodes)) or "none listed"
    return None, f"no node given and the cluster has several ({listing}): set node on the step " \
                 "or the host"


def _effective(config: dict[str, Any], pending: Any) -> tuple[dict[str, Any], list[str]]:
    """The config with pending changes applied (what the next start gives) and the keys
    still pending. PVE's /pending lists every key with value, pending and delete."""
    if not isinstance(pending, list):
        return {k: v for k, v in config.items() if k != "digest"}, []
    eff: dict[str, Any] = {}
    waiting: list[str] = []
    for item in pending:
        if not isinstance(item, dict) or "key" not in item:
            continue
        key = str(item["key"])
        if item.get("delete"):
            waiting.append(key)
            continue
        if "pending" in item:
            eff[key] = item["pending"]
            waiting.append(key)
        elif "value" in item:
            eff[key] = item["value"]
    return eff, waiting



# ================================================================ actions


def _api(method: str, path: str, params: dict[str, Any] | None = None, *,
         task: bool = False) -> Action:
    return Action(kind="api", method=method, path=path, params=dict(params or {}), wait_task=task)


def _vmid(value: Any, where: str) -> int:
    try:
        vmid = int(str(value).strip())
    except ValueError:
        raise PrepareError(f"{where}: vmid {value!r} is not a number (a Proxmox guest id is an "
                           "integer from 100 upwards)") from None
    if vmid < 100:
        raise PrepareError(f"{where}: vmid {vmid} is below 100 (Proxmox ids start at 100)")
    return vmid

