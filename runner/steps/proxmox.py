"""The Proxmox guest kinds proxmox.lxc and proxmox.vm: a guest declared field by field, planned
as the exact API calls from the API's answers. Pure plan: no transport, no proxmoxer.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from runner.model import Action, Change, Probe
from runner.overlay import Effect, Overlay
from runner.secrets import Secret, mark
from runner.steps import facts as F
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.pve_values import (
    BARE_SIZE,
    MASK,
    NET_KEY,
    PROXMOX,
    SECRET_FIELDS,
    GuestRow,
    _api,
    _data,
    _effective,
    _error,
    _net_value,
    _nodes,
    _ok,
    _ostype_of,
    _pick_node,
    _rows,
    _show,
    _split_volume,
    _truthy,
    _vmid,
    encode,
    full_volume,
    same,
    volume_delta,
)
from runner.steps.shell import PrepareError  # reported at the step, file:line

STATES = ("present", "absent", "running", "stopped", "restarted")
# parameters that steer the step rather than describe the guest's config
CONTROL = frozenset({"vmid", "name", "node", "state", "allow_restart", "allow_unsafe", "options"})
# parameters used when creating a guest; PVE does not keep them in the config
LXC_CREATE_ONLY = frozenset({"ostemplate", "password", "ssh-public-keys", "storage", "pool"})
QEMU_CREATE_ONLY = frozenset({"clone", "full", "storage", "pool"})
# what a running guest takes without a restart (everything else waits for the next start)
HOT_LXC = frozenset({"description", "onboot", "startup", "protection", "hostname", "hookscript",
                     "cores", "tags", "cpulimit", "cpuunits", "memory", "swap"})
HOT_QEMU = frozenset({"name", "description", "onboot", "tags", "protection", "startup",
                      "hookscript"})

LXC_VOLUME = re.compile(r"^(rootfs|mp\d+)$")
QEMU_DISK = re.compile(r"^(ide\d+|sata\d+|scsi\d+|virtio\d+|efidisk0|tpmstate0)$")


# ================================================================ guest kinds


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
    needs = PROXMOX

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



register(LxcKind())
register(VmKind())
