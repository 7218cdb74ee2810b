"""Proxmox step kinds: proxmox.lxc, proxmox.vm, proxmox.snapshot and proxmox.query.

Each turns its parameters and the API's answers (probes) into a Change that lists the
exact API calls, field by field; plan() is pure. Nothing here imports proxmoxer or talks
to a cluster: the proxmox transport carries the probes and runs the actions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from runner.model import Action, Change, Probe, ProbeResult
from runner.overlay import Effect, Overlay
from runner.secrets import Secret, mark
from runner.steps import facts as F
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.shell import PrepareError  # reported at the step, file:line

PROXMOX = frozenset({"proxmox"})
STATES = ("present", "absent", "running", "stopped", "restarted")
MASK = "***"
GiB = 1024**3
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": GiB, "T": 1024**4}

# parameters that steer the step rather than describe the guest's config
CONTROL = frozenset({"vmid", "name", "node", "state", "allow_restart", "allow_unsafe", "options"})
# parameters used when creating a guest; PVE does not keep them in the config
LXC_CREATE_ONLY = frozenset({"ostemplate", "password", "ssh-public-keys", "storage", "pool"})
QEMU_CREATE_ONLY = frozenset({"clone", "full", "storage", "pool"})
SECRET_FIELDS = frozenset({"password", "cipassword"})
# what a running guest takes without a restart (everything else waits for the next start)
HOT_LXC = frozenset({"description", "onboot", "startup", "protection", "hostname", "hookscript",
                     "cores", "tags", "cpulimit", "cpuunits", "memory", "swap"})
HOT_QEMU = frozenset({"name", "description", "onboot", "tags", "protection", "startup",
                      "hookscript"})

NET_KEY = re.compile(r"^net\d+$")
LXC_VOLUME = re.compile(r"^(rootfs|mp\d+)$")
QEMU_DISK = re.compile(r"^(ide\d+|sata\d+|scsi\d+|virtio\d+|efidisk0|tpmstate0)$")
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


# ================================================================ guest kinds


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


@dataclass
class _Diff:
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (old raw, new sent)
    deletes: dict[str, Any] = field(default_factory=dict)  # key -> old raw
    grow: dict[str, tuple[str, str]] = field(default_factory=dict)  # disk -> (old, new)
    unsafe: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [*self.fields, *self.deletes]


class _GuestKind(StepKind):
    """proxmox.lxc and proxmox.vm: one guest, declared field by field."""

    gtype: ClassVar[str] = ""  # lxc | qemu
    label: ClassVar[str] = ""  # CT | VM
    create_only: ClassVar[frozenset[str]] = frozenset()
    hot: ClassVar[frozenset[str]] = frozenset()
    transports = PROXMOX

    # ------------------------------------------------------------ params
    def normalize(self, params: Any) -> dict[str, Any]:
        """Short forms: `proxmox.lxc: 101` (a vmid) or `proxmox.lxc: web1` (a name)."""
        if isinstance(params, int) or (isinstance(params, str) and params.strip().isdigit()):
            return {"vmid": params}
        if isinstance(params, str) and "{{" not in params:
            return {"name": params}
        return dict(params) if isinstance(params, dict) else {"vmid": params}

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Check and tidy the rendered parameters (no target is touched)."""
        where = self.name
        p = dict(params)
        options = p.pop("options", None) or {}
        if not isinstance(options, dict):
            raise PrepareError(f"{where}: options must be a mapping of Proxmox config keys")
        for k, v in options.items():
            p.setdefault(str(k), v)
        for k, v in list(p.items()):
            if k not in CONTROL and isinstance(v, dict):  # net0: {bridge: vmbr0, ...}
                p[k] = ",".join(f"{sk}={encode(sk, sv)}" for sk, sv in v.items())
        if p.get("vmid") is not None:
            p["vmid"] = _vmid(p["vmid"], where)
        if p.get("vmid") is None and not p.get("name"):
            raise PrepareError(f"{where}: give the guest's vmid or its name (e.g. vmid: 101; "
                               "a name alone is looked up in the cluster)")
        state = str(p.get("state") or "present")
        if state not in STATES:
            raise PrepareError(f"{where}: state {state!r} is not one of {', '.join(STATES)}")
        p["state"] = state
        if self.gtype == "qemu" and p.get("clone") is not None:
            p["clone"] = _vmid(p["clone"], f"{where} clone")
        for key in ("allow_restart", "allow_unsafe"):  # "false" from a template is false
            p[key] = _truthy(p.get(key, False))
        for key in SECRET_FIELDS:  # registered now, so every output path masks them
            if p.get(key) is not None and not isinstance(p[key], Secret):
                p[key] = mark(str(p[key]))
        return p

    def wanted(self, params: dict[str, Any]) -> dict[str, Any]:
        """The config fields the step declares (None: remove the field)."""
        out = {k: v for k, v in params.items() if k not in CONTROL and k not in self.create_only}
        if self.gtype == "lxc" and "hostname" not in out and params.get("name"):
            out["hostname"] = params["name"]
        if self.gtype == "qemu" and params.get("name"):
            out["name"] = params["name"]
        storage = params.get("storage")
        for key in list(out):
            if self.is_volume(key) and out[key] is not None:
                default = "local" if self.gtype == "lxc" else None
                out[key] = full_volume(out[key], storage or default)
        return out

    def is_volume(self, key: str) -> bool:
        return bool((LXC_VOLUME if self.gtype == "lxc" else QEMU_DISK).match(key))

    def ref(self, params: dict[str, Any]) -> str:
        return str(params["vmid"]) if params.get("vmid") is not None else str(params["name"])

    # ------------------------------------------------------------ across steps (pve_overlay.py)
    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        from runner.steps import pve_overlay

        return pve_overlay.view_guest(self, params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        from runner.steps import pve_overlay

        return pve_overlay.guest_effects(self, params, change, facts, overlay)

    # ------------------------------------------------------------ probes
    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        ref = self.ref(params)
        guest = f"{{guest:{self.gtype}:{ref}}}"
        if params.get("vmid") is not None:
            lookup: tuple[tuple[str, Any], ...] = (("type", "vm"), ("vmid", params["vmid"]))
        else:
            lookup = (("type", "vm"), ("name", params["name"]), ("guest_type", self.gtype))
        out = [
            F.ask(ctx, "api", "cluster/resources", lookup, key="guest"),
            F.ask(ctx, "api", "nodes", key="nodes"),
            F.ask(ctx, "api", f"{guest}/config", key="config"),
            F.ask(ctx, "api", f"{guest}/pending", key="pending"),
            F.ask(ctx, "api", f"{guest}/status/current", key="status"),
        ]
        if params.get("vmid") is None:
            out.append(F.ask(ctx, "api", "cluster/nextid", key="nextid"))
        if self.gtype == "qemu" and params.get("clone") is not None:
            src = params["clone"]
            out.append(F.ask(ctx, "api", "cluster/resources", (("type", "vm"), ("vmid", src)), key="clone_guest"))
            out.append(F.ask(ctx, "api", f"{{guest:qemu:{src}}}/config", key="clone_config"))
        return out

    # ------------------------------------------------------------ plan
    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        label = self.label
        ref = self.ref(params)
        guest_fact = facts.get("guest")
        if not _ok(guest_fact):
            return Change("unknown", f"{label} {ref}: cannot list the cluster's guests",
                          reason=_error(guest_fact))
        rows = [GuestRow.of(r) for r in _rows(guest_fact)]
        nodes = _nodes(facts.get("nodes"))
        if params.get("vmid") is not None:
            other = [r for r in rows if r.type != self.gtype]
            if other:
                kind = "a container" if other[0].type == "lxc" else "a VM"
                return Change("blocked", f"{label} {ref}: vmid {ref} is {kind} on node "
                                         f"{other[0].node}", reason=f"vmid {ref} is already used "
                              f"by {kind} ({other[0].name}); pick another vmid")
            rows = [r for r in rows if r.type == self.gtype]
        if len(rows) > 1:
            ids = ", ".join(str(r.vmid) for r in rows)
            return Change("blocked", f"{label} {ref}: {len(rows)} guests match",
                          reason=f"several guests are named {ref} ({ids}); give the vmid")
        if not rows:
            return self._absent(params, facts, ctx, nodes)
        return self._present(params, rows[0], facts, ctx, nodes)

    def _title(self, vmid: Any, name: Any) -> str:
        return f"{self.label} {vmid}" + (f" ({name})" if name else "")

    # ------------------------------------------------------------ not there yet
    def _absent(self, params: dict[str, Any], facts: Facts, ctx: StepContext,
                nodes: dict[str, str]) -> Change:
        state = params["state"]
        ref = self.ref(params)
        if state == "absent":
            return Change("noop", f"{self.label} {ref} is absent", data={"exists": False})
        node, problem = _pick_node(params.get("node") or ctx.host.settings.get("node"), nodes)
        if node is None:
            return Change("blocked", f"create {self.label} {ref}: no node", reason=problem)
        if nodes.get(node) not in (None, "online"):
            return Change("unknown", f"create {self.label} {ref} on {node}",
                          reason=f"node {node} is {nodes.get(node)}: cannot tell whether the "
                                 "guest exists there, nor create it")
        vmid = params.get("vmid")
        if vmid is None:
            nextid = facts.get("nextid")
            if not _ok(nextid):
                return Change("unknown", f"create {self.label} {ref}",
                              reason=f"no free vmid: {_error(nextid)}")
            vmid = int(str(_data(nextid)))
        return self._create(params, facts, node, vmid, extra="")

    def _create(self, params: dict[str, Any], facts: Facts, node: str, vmid: int, *,
                extra: str, before: Sequence[Action] = ()) -> Change:
        """Create (or clone) the guest, then start it if the step wants it running."""
        want = self.wanted(params)
        title = self._title(vmid, want.get("hostname") or want.get("name"))
        base = f"nodes/{node}/{self.gtype}"
        actions: list[Action] = list(before)
        shown: dict[str, Any] = {}
        if self.gtype == "qemu" and params.get("clone") is not None:
            made = self._clone(params, facts, node, vmid, want=want, shown=shown)
            if isinstance(made, Change):
                return made
            actions += made
        else:
            body: dict[str, Any] = {"vmid": vmid}
            if self.gtype == "lxc":
                if not params.get("ostemplate"):
                    return Change("blocked", f"create {title} on {node}",
                                  reason="ostemplate is required to create a container (e.g. "
                                         "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst)")
                body["ostemplate"] = params["ostemplate"]
            for key, value in want.items():
                if value is None:
                    continue
                if self.is_volume(key) and BARE_SIZE.match(_split_volume(value)[0]):
                    return Change("blocked", f"create {title} on {node}",
                                  reason=f"{key}: give storage:size (e.g. local-lvm:32) or set "
                                         "storage on the step")
                body[key] = encode(key, value)
            for key in sorted(self.create_only - {"clone", "full"}):
                if params.get(key) is not None:
                    body[key] = encode(key, params[key])
            shown = {k: (MASK if k in SECRET_FIELDS else v) for k, v in body.items()}
            actions.append(_api("POST", base, body, task=True))
        then = ""
        if params["state"] in ("running", "restarted"):
            actions.append(_api("POST", f"{base}/{vmid}/status/start", task=True))
            then = ", then start it"
        diff = "\n".join([f"+ {title} on {node}"] +
                         [f"  {k}: {_show(k, v)}" for k, v in shown.items() if k != "vmid"])
        return Change("create", f"{extra}create {title} on {node}{then}", actions=tuple(actions),
                      diff=diff, data={"exists": False, "vmid": vmid, "node": node,
                                       "type": self.gtype, "create": shown,
                                       "state": params["state"]})

    def _clone(self, params: dict[str, Any], facts: Facts, node: str, vmid: int, *,
               want: dict[str, Any], shown: dict[str, Any]) -> list[Action] | Change:
        src = params["clone"]
        src_rows = facts.get("clone_guest")
        src_cfg = facts.get("clone_config")
        rows = [GuestRow.of(r) for r in _rows(src_rows)]
        src_data = _data(src_cfg)
        if not rows or not isinstance(src_data, dict):
            why = _error(src_cfg) if rows else f"no VM {src} in the cluster"
            return Change("blocked", f"clone VM {src} -> {vmid}", reason=f"clone source: {why}")
        source = rows[0]
        body: dict[str, Any] = {"newid": vmid, "full": encode("full", params.get("full", True))}
        if want.get("name"):
            body["name"] = want["name"]
        for key in ("storage", "pool"):
            if params.get(key) is not None:
                body[key] = params[key]
        if source.node != node:
            body["target"] = node
        shown.update({"clone": src, **body})
        actions = [_api("POST", f"nodes/{source.node}/qemu/{src}/clone", body, task=True)]
        config = {k: v for k, v in src_data.items() if k not in ("digest", "template")}
        config["name"] = want.get("name", config.get("name"))
        diff = self._diff(params, want, config)
        if diff.unsafe:
            return Change("blocked", f"clone VM {src} -> {vmid}",
                          reason="after cloning: " + "; ".join(diff.unsafe))
        put = {k: new for k, (_, new) in diff.fields.items()}
        if diff.deletes:
            put["delete"] = ",".join(diff.deletes)
        if put:
            actions.append(_api("PUT", f"nodes/{node}/qemu/{vmid}/config", put))
            shown.update({k: v for k, v in put.items()})
        for disk, (_, new) in diff.grow.items():
            actions.append(_api("PUT", f"nodes/{node}/qemu/{vmid}/resize",
                                {"disk": disk, "size": new}, task=True))
            shown[f"{disk} size"] = new
        return actions

    # ------------------------------------------------------------ already there
    def _diff(self, params: dict[str, Any], want: dict[str, Any],
              have: dict[str, Any]) -> _Diff:
        d = _Diff()
        for key, value in want.items():
            old = have.get(key)
            if value is None:
                if old is not None:
                    d.deletes[key] = old
                continue
            if self.is_volume(key) and old is not None:
                delta = volume_delta(key, value, old)
                if delta.unsafe:
                    d.unsafe.append(delta.unsafe)
                    continue
                if delta.grow:
                    d.grow[key] = (delta.old_size, delta.grow)
                if delta.value is not None:
                    d.fields[key] = (old, delta.value)
                continue
            if key == "unprivileged" and not same(key, value, old, self.gtype):
                d.unsafe.append(f"unprivileged: {old} -> {encode(key, value)} (fixed at creation)")
                continue
            if same(key, value, old, self.gtype):
                continue
            new = _net_value(key, str(value), old, self.gtype) if NET_KEY.match(key) \
                else encode(key, value)
            d.fields[key] = (old, new)
        if self.gtype == "lxc" and params.get("ostemplate"):
            wanted_os = _ostype_of(str(params["ostemplate"]))
            if wanted_os and have.get("ostype") and wanted_os != have.get("ostype"):
                d.unsafe.append(f"ostemplate: {params['ostemplate']} is {wanted_os}, but the "
                                f"container runs {have.get('ostype')}")
        return d

    def _present(self, params: dict[str, Any], row: GuestRow, facts: Facts, ctx: StepContext,
                 nodes: dict[str, str]) -> Change:
        state = params["state"]
        title = self._title(row.vmid, row.name)
        node = row.node
        base = f"nodes/{node}/{self.gtype}/{row.vmid}"
        wanted_node = params.get("node")
        if wanted_node and wanted_node != node:
            return Change("blocked", f"{title} is on node {node}",
                          reason=f"{title} lives on node {node}, not {wanted_node}; this step "
                                 "does not migrate guests (change node, or migrate it first)")
        if row.status == "unknown" or nodes.get(node) not in (None, "online"):
            return Change("unknown", f"{title} on {node}",
                          reason=f"node {node} is offline: the guest's state cannot be read")
        cfg = facts.get("config")
        cfg_data = _data(cfg)
        if not isinstance(cfg_data, dict):
            return Change("unknown", f"{title} on {node}",
                          reason=f"cannot read its config: {_error(cfg)}")
        config: dict[str, Any] = dict(cfg_data)
        digest = str(config.get("digest", ""))
        have, waiting = _effective(config, _data(facts.get("pending")))
        status = _data(facts.get("status"))
        status = status if isinstance(status, dict) else {}
        current = str(status.get("status") or row.status)
        running = current == "running"
        lock = str(config.get("lock") or status.get("lock") or row.lock or "")
        data: dict[str, Any] = {"exists": True, "vmid": row.vmid, "node": node,
                                "type": self.gtype, "name": row.name, "status": current,
                                "state": state, "digest": digest}
        if lock:
            data["lock"] = lock
        locked = f"{title} is locked ({lock}): wait for the task holding it to finish, or " \
                 f"clear a stale lock with `{'pct' if self.gtype == 'lxc' else 'qm'} unlock " \
                 f"{row.vmid}`"

        if state == "absent":
            if lock:
                return Change("blocked", f"delete {title} on {node}", reason=locked, data=data)
            removal: list[Action] = []
            if running:
                removal.append(_api("POST", f"{base}/status/stop", task=True))
            purge: dict[str, Any] = {"purge": 1}
            if self.gtype == "qemu":
                purge["destroy-unreferenced-disks"] = 1
            removal.append(_api("DELETE", base, purge, task=True))
            first = "stop and " if running else ""
            return Change("delete", f"{first}delete {title} on {node}", actions=tuple(removal),
                          diff=f"- {title} on {node}", data=data)

        want = self.wanted(params)
        diff = self._diff(params, want, have)
        if diff.unsafe:
            if not params.get("allow_unsafe"):
                return Change("blocked", f"{title}: unsafe change", data=data | {
                    "unsafe": diff.unsafe},
                    reason="; ".join(diff.unsafe) + f" — not possible in place on existing "
                    f"{title}; set allow_unsafe: true to destroy and re-create it (its data "
                    "is lost)")
            if lock:
                return Change("blocked", f"replace {title}", reason=locked, data=data)
            before = ([_api("POST", f"{base}/status/stop", task=True)] if running else []) + \
                [_api("DELETE", base, {"purge": 1}, task=True)]
            made = self._create(params, facts, node, row.vmid, extra="", before=before)
            if made.status != "create":
                return made
            return Change("update", f"REPLACE {title} on {node}: destroy and re-create it "
                                    f"({'; '.join(diff.unsafe)})",
                          actions=made.actions, diff=made.diff.replace("+ ", "-/+ ", 1),
                          data=made.data | {"replace": True, "unsafe": diff.unsafe})

        changed = diff.keys
        restart = [k for k in changed if k not in self.hot and not
                   (self.gtype == "lxc" and NET_KEY.match(k))]
        data.update(fields={k: {"old": _show(k, o), "new": _show(k, n)}
                            for k, (o, n) in diff.fields.items()},
                    deletes=list(diff.deletes),
                    resize={k: {"old": o, "new": n} for k, (o, n) in diff.grow.items()},
                    restart=restart, pending=waiting)
        keeps_running = running and state in ("present", "running")
        if keeps_running and restart and not params.get("allow_restart"):
            return Change("blocked", f"{title}: {', '.join(restart)} need a restart",
                          reason=f"running {title} takes {', '.join(restart)} only at its next "
                                 "start; set allow_restart: true (it is rebooted), or stop it "
                                 "first (state: stopped)", data=data)

        actions: list[Action] = []
        steps: list[str] = []
        if state == "stopped" and running:
            actions.append(_api("POST", f"{base}/status/stop", task=True))
            steps.append("stop")
        if diff.fields or diff.deletes:
            put = {k: new for k, (_, new) in diff.fields.items()}
            if diff.deletes:
                put["delete"] = ",".join(diff.deletes)
            if digest:
                put["digest"] = digest
            actions.append(_api("PUT", f"{base}/config", put))
        for disk, (_, new) in diff.grow.items():
            actions.append(_api("PUT", f"{base}/resize", {"disk": disk, "size": new}, task=True))
        reboot_for = restart or (waiting if keeps_running and params.get("allow_restart") else [])
        if state == "restarted":
            actions.append(_api("POST", f"{base}/status/{'reboot' if running else 'start'}",
                                task=True))
            steps.append("reboot" if running else "start")
        elif state == "running" and not running:
            actions.append(_api("POST", f"{base}/status/start", task=True))
            steps.append("start")
        elif keeps_running and reboot_for and params.get("allow_restart"):
            actions.append(_api("POST", f"{base}/status/reboot", task=True))
            steps.append(f"reboot (to apply {', '.join(reboot_for)})")

        if not actions:
            note = f"; pending until its next start: {', '.join(waiting)}" if waiting else ""
            return Change("noop", f"{title} on {node}: as declared ({current}){note}", data=data)
        if lock:
            return Change("blocked", f"{title}: would change, but it is locked ({lock})",
                          reason=locked, data=data)
        parts = [f"{k} {_show(k, o)} -> {_show(k, n)}" for k, (o, n) in diff.fields.items()]
        parts += [f"{k} {_show(k, o)} -> (unset)" for k, o in diff.deletes.items()]
        parts += [f"{k} size {o} -> {n}" for k, (o, n) in diff.grow.items()]
        summary = f"update {title} on {node}"
        if parts:
            summary += ": " + ", ".join(parts)
        if steps:
            summary += ("; " if parts else ": ") + ", ".join(steps)
        lines = [f"~ {title} on {node}"]
        lines += [f"  {k}: {_show(k, o)} -> {_show(k, n)}" for k, (o, n) in diff.fields.items()]
        lines += [f"  {k}: {_show(k, o)} -> (unset)" for k, o in diff.deletes.items()]
        lines += [f"  {k} size: {o} -> {n}" for k, (o, n) in diff.grow.items()]
        lines += [f"  {s}" for s in steps]
        only_restart = not (parts or set(steps) - {"reboot", "start"}) and state == "restarted"
        return Change("run" if only_restart else "update", summary, actions=tuple(actions),
                      diff="\n".join(lines), data=data)


class LxcKind(_GuestKind):
    name = "proxmox.lxc"
    gtype = "lxc"
    label = "CT"
    create_only = LXC_CREATE_ONLY
    hot = HOT_LXC


class VmKind(_GuestKind):
    name = "proxmox.vm"
    gtype = "qemu"
    label = "VM"
    create_only = QEMU_CREATE_ONLY
    hot = HOT_QEMU


# ================================================================ snapshots


class SnapshotKind(StepKind):
    """A named snapshot of a container or VM: present, absent, or rolled back to."""

    name = "proxmox.snapshot"
    transports = PROXMOX

    def normalize(self, params: Any) -> dict[str, Any]:
        return dict(params) if isinstance(params, dict) else {"snapshot": params}

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        p = dict(params)
        if p.get("vmid") is not None:
            p["vmid"] = _vmid(p["vmid"], self.name)
        if p.get("vmid") is None and not p.get("name"):
            raise PrepareError(f"{self.name}: give the guest's vmid or its name")
        snap = str(p.get("snapshot") or "")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]{1,39}", snap):
            raise PrepareError(f"{self.name}: snapshot name {snap!r} is not valid (2-40 "
                               "characters: a letter, then letters, digits, - or _)")
        state = str(p.get("state") or "present")
        if state not in ("present", "absent", "rollback"):
            raise PrepareError(f"{self.name}: state {state!r} is not present, absent or rollback")
        p["state"] = state
        for key in ("start", "vmstate"):
            p[key] = _truthy(p.get(key, False))
        return p

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        ref = str(params["vmid"]) if params.get("vmid") is not None else str(params["name"])
        lookup: tuple[tuple[str, Any], ...] = (("type", "vm"), ("vmid", params["vmid"])) \
            if params.get("vmid") is not None else (("type", "vm"), ("name", ref))
        return [F.ask(ctx, "api", "cluster/resources", lookup, key="guest"),
                F.ask(ctx, "api", f"{{guest:{ref}}}/snapshot", key="snapshots")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        from runner.steps import pve_overlay

        return pve_overlay.view_snapshot(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        from runner.steps import pve_overlay

        return pve_overlay.snapshot_effects(params, change, facts, overlay)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        ref = str(params["vmid"]) if params.get("vmid") is not None else str(params["name"])
        snap = str(params["snapshot"])
        state = params["state"]
        guest = facts.get("guest")
        if not _ok(guest):
            return Change("unknown", f"snapshot {snap} of {ref}", reason=_error(guest))
        rows = [GuestRow.of(r) for r in _rows(guest)]
        if not rows:
            if state == "absent":
                return Change("noop", f"snapshot {snap} of {ref}: the guest does not exist")
            return Change("unknown", f"snapshot {snap} of {ref}",
                          reason=f"guest {ref} does not exist yet (an earlier step may create it)")
        if len(rows) > 1:
            return Change("blocked", f"snapshot {snap} of {ref}",
                          reason=f"several guests are named {ref}; give the vmid")
        row = rows[0]
        label = "CT" if row.type == "lxc" else "VM"
        title = f"{label} {row.vmid}" + (f" ({row.name})" if row.name else "")
        base = f"nodes/{row.node}/{row.type}/{row.vmid}"
        if params.get("node") and params["node"] != row.node:
            return Change("blocked", f"snapshot {snap} of {title}",
                          reason=f"{title} is on node {row.node}, not {params['node']}")
        listing = facts.get("snapshots")
        if not isinstance(_data(listing), list):
            return Change("unknown", f"snapshot {snap} of {title}",
                          reason=f"cannot list its snapshots: {_error(listing)}")
        snaps = {str(s.get("name")): s for s in _rows(listing) if s.get("name") != "current"}
        data = {"vmid": row.vmid, "node": row.node, "type": row.type, "snapshot": snap,
                "snapshots": sorted(snaps)}
        found = snaps.get(snap)
        locked = f"{title} is locked ({row.lock}): wait for the task holding it to finish"
        if state == "absent":
            if found is None:
                return Change("noop", f"{title}: no snapshot {snap}", data=data)
            if row.lock:
                return Change("blocked", f"delete snapshot {snap} of {title}", reason=locked)
            return Change("delete", f"delete snapshot {snap} of {title}",
                          actions=(_api("DELETE", f"{base}/snapshot/{snap}", task=True),),
                          diff=f"- snapshot {snap} of {title}", data=data)
        if state == "rollback":
            if found is None:
                return Change("blocked", f"roll back {title} to {snap}",
                              reason=f"{title} has no snapshot {snap} "
                                     f"(it has: {', '.join(sorted(snaps)) or 'none'})", data=data)
            if row.lock:
                return Change("blocked", f"roll back {title} to {snap}", reason=locked)
            opts: dict[str, Any] = {"start": 1} if params.get("start") else {}
            return Change("run", f"roll back {title} to snapshot {snap} (always runs: the disk "
                                 "state since the snapshot cannot be compared)",
                          actions=(_api("POST", f"{base}/snapshot/{snap}/rollback", opts,
                                        task=True),),
                          diff=f"> {title}: roll back to {snap}", data=data)
        desc = params.get("description")
        if found is not None:
            if desc is not None and str(found.get("description") or "").rstrip() != \
                    str(desc).rstrip():
                return Change("update", f"snapshot {snap} of {title}: description "
                                        f"{found.get('description')!r} -> {desc!r}",
                              actions=(_api("PUT", f"{base}/snapshot/{snap}/config",
                                            {"description": desc}),), data=data)
            return Change("noop", f"{title} has snapshot {snap}", data=data)
        if row.lock:
            return Change("blocked", f"snapshot {snap} of {title}", reason=locked)
        body: dict[str, Any] = {"snapname": snap}
        if desc is not None:
            body["description"] = str(desc)
        if params.get("vmstate") and row.type == "qemu":
            body["vmstate"] = 1
        return Change("create", f"take snapshot {snap} of {title}",
                      actions=(_api("POST", f"{base}/snapshot", body, task=True),),
                      diff=f"+ snapshot {snap} of {title}", data=data)


# ================================================================ queries


@dataclass(frozen=True)
class QuerySpec:
    path: str
    params: tuple[tuple[str, Any], ...]
    columns: tuple[str, ...]
    node_path: str = ""  # used instead of `path` when the step names a node


QUERIES: dict[str, QuerySpec] = {
    "nodes": QuerySpec("nodes", (), ("node", "status", "maxcpu", "maxmem", "cpu", "mem",
                                     "uptime")),
    "vms": QuerySpec("cluster/resources", (("type", "vm"), ("guest_type", "qemu")),
                     ("vmid", "name", "node", "status", "maxcpu", "maxmem", "maxdisk", "tags",
                      "lock", "template")),
    "containers": QuerySpec("cluster/resources", (("type", "vm"), ("guest_type", "lxc")),
                            ("vmid", "name", "node", "status", "maxcpu", "maxmem", "maxdisk",
                             "tags", "lock", "template")),
    "storage": QuerySpec("cluster/resources", (("type", "storage"),),
                         ("storage", "node", "plugintype", "status", "content", "shared", "disk",
                          "maxdisk")),
    "cluster_status": QuerySpec("cluster/status", (),
                                ("type", "name", "nodeid", "ip", "online", "local", "quorate",
                                 "nodes")),
    "ha_status": QuerySpec("cluster/ha/status/current", (),
                           ("id", "type", "node", "status", "state", "quorate")),
    "tasks": QuerySpec("cluster/tasks", (),
                       ("starttime", "node", "type", "id", "user", "status"),
                       node_path="nodes/{node}/tasks"),
    "backup_jobs": QuerySpec("cluster/backup", (),
                             ("id", "schedule", "storage", "vmid", "all", "mode", "enabled",
                              "comment")),
}
AFTER = "overlay:after"  # set by view(): the last planned step that changes the cluster first
BYTE_COLUMNS = frozenset({"mem", "maxmem", "disk", "maxdisk", "total", "used", "avail"})
TIME_COLUMNS = frozenset({"starttime", "endtime", "next-run"})


class QueryKind(StepKind):
    """Read-only: list nodes, guests, storage, cluster/HA status, tasks or backup jobs."""

    name = "proxmox.query"
    transports = PROXMOX

    def read_only(self, params: dict[str, Any]) -> bool:
        """Never changes anything. Its rows hold live figures (uptime, usage) that move all
        the time, so they must not count as drift against a saved plan."""
        return True

    def normalize(self, params: Any) -> dict[str, Any]:
        """Short form: `proxmox.query: nodes`."""
        return {"what": params} if isinstance(params, str) else dict(params or {})

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        p = dict(params)
        what = str(p.get("what") or "")
        if what not in QUERIES:
            raise PrepareError(f"{self.name}: what {what!r} is not one of {', '.join(QUERIES)}")
        cols = p.get("columns")
        if cols is not None and (not isinstance(cols, list) or not all(
                isinstance(c, str) for c in cols)):
            raise PrepareError(f"{self.name}: columns must be a list of field names")
        if p.get("limit") is not None:
            try:
                p["limit"] = int(p["limit"])
            except (TypeError, ValueError):
                raise PrepareError(f"{self.name}: limit must be a number") from None
        return p

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        spec = QUERIES[params["what"]]
        path = spec.path
        if params.get("node") and spec.node_path:
            path = spec.node_path.format(node=params["node"])
        return [F.ask(ctx, "api_live", path, spec.params, key="live:rows")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        """Its rows are read now, before the planned steps run: the plan says so (apply
        reads them again when it runs the query)."""
        if not overlay.changes:
            return facts
        return {**facts, AFTER: ProbeResult(0, overlay.changes[-1].encode())}

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        what = params["what"]
        fact = facts.get("live:rows")
        if not _ok(fact):
            return Change("unknown", f"query {what} (read-only)", reason=_error(fact))
        raw = _data(fact)
        rows = [r for r in (raw if isinstance(raw, list) else [raw]) if isinstance(r, dict)]
        node = params.get("node")
        if node and not QUERIES[what].node_path:
            rows = [r for r in rows if r.get("node") in (None, node)]
        rows.sort(key=lambda r: tuple(str(r.get(k, "")).zfill(12) if isinstance(r.get(k), int)
                                      else str(r.get(k, "")) for k in ("node", "vmid", "id",
                                                                       "storage", "name")))
        if what == "tasks":
            rows.sort(key=lambda r: -int(r.get("starttime") or 0))
        limit = params.get("limit")
        if isinstance(limit, int) and limit > 0:
            rows = rows[:limit]
        columns = list(params.get("columns") or QUERIES[what].columns)
        n = len(rows)
        after = facts.get(AFTER)
        note = f", as now: before step '{after.text}' changes the cluster (apply reads them again)" if after else ""
        return Change("noop", f"query {what} (read-only): {n} row{'s' if n != 1 else ''}{note}",
                      data={"what": what, "rows": rows, "columns": columns,
                            "table": table(rows, columns), "read_only": True})


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in BYTE_COLUMNS and isinstance(value, int | float) and not isinstance(value, bool):
        size = float(value)
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if size < 1024 or unit == "TiB":
                return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
            size /= 1024
    if column in TIME_COLUMNS and isinstance(value, int | float) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(value)))
    if column == "uptime" and isinstance(value, int | float):
        secs = int(value)
        return f"{secs // 86400}d {secs % 86400 // 3600:02d}h" if secs >= 86400 else \
            f"{secs // 3600}h {secs % 3600 // 60:02d}m"
    if column == "cpu" and isinstance(value, float):
        return f"{value * 100:.0f}%"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as an aligned text table: the given columns (those some row has), else every key."""
    rows = list(rows)
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(r))
        columns = list(seen)
    cols = [c for c in columns if any(c in r for r in rows)] or list(columns)
    if not rows:
        return "(no rows)"
    cells = [[_cell(c, r.get(c)).replace("\n", " ") for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


register(LxcKind())
register(VmKind())
register(SnapshotKind())
register(QueryKind())
