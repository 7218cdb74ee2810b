"""The proxmox.snapshot step kind: a named snapshot of a container or VM, present, absent
or rolled back to. Pure plan from the API's answers: no transport, no proxmoxer.
"""

from __future__ import annotations

import re
from typing import Any

from runner.model import Change, Probe
from runner.overlay import Effect, Overlay
from runner.steps import facts as F
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.pve_values import PROXMOX, GuestRow, _api, _data, _error, _ok, _rows, _truthy, _vmid
from runner.steps.shell import PrepareError


class SnapshotKind(StepKind):
    """A named snapshot of a container or VM: present, absent, or rolled back to."""

    name = "proxmox.snapshot"
    needs = PROXMOX

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


register(SnapshotKind())
