"""Proxmox guests and snapshots through the overlay: the API answers (`guest`, `config`,
`pending`, `status`, `snapshots`, `nextid`) once the steps planned before have run, and the
planned effects of proxmox.lxc / proxmox.vm / proxmox.snapshot.

Pure; imports model, overlay, the step base and pve_values.py (the Proxmox kinds call in
from their methods, never at import time).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from runner.model import Change, ProbeResult
from runner.overlay import Effect, Overlay, Unknown
from runner.steps.base import Facts, OverlayUnknown
from runner.steps.pve_values import (
    NET_KEY,
    NEW_DISK,
    _bytes,
    _data,
    _effective,
    _is_props,
    _ok,
    _props,
    _rows,
    _size_text,
    _split_volume,
    canon,
    encode,
)

if TYPE_CHECKING:
    from runner.steps.proxmox import _GuestKind

ABSENT = "absent"
NEW_VOLUME = "(new volume)"  # the volume id PVE gives a disk it creates is known only then
_GENERATION = itertools.count(1)  # a guest created by the plan is a new incarnation


@dataclass(frozen=True)
class Guest:
    """A guest as the planned steps leave it."""

    vmid: int
    type: str  # lxc | qemu
    node: str
    name: str
    status: str  # running | stopped
    config: dict[str, Any] = field(default_factory=dict)  # what the next start gives (no digest)
    waiting: tuple[str, ...] = ()  # keys whose value in `config` waits for the next start
    digest: str = ""  # the config's digest; "" once a planned step changed the config
    gen: int = 0  # 0: the guest exists now; else made by the plan
    known: frozenset[str] | None = None  # made by the plan: the keys it set (others: PVE's defaults)
    new_volumes: frozenset[str] = frozenset()  # disks made by the plan (volume id not known)


@dataclass(frozen=True)
class Snap:
    present: bool
    description: str | None
    gen: int  # the guest incarnation it belongs to


def guest_key(vmid: Any) -> tuple[str, ...]:
    return ("pve.guest", str(vmid))


def _known(overlay: Overlay, key: tuple[str, ...]) -> Any:
    state = overlay.get(key)
    if isinstance(state, Unknown):
        by = overlay.by(key)
        raise OverlayUnknown(state.reason + (f" (step '{by}')" if by and by not in state.reason else ""))
    return state


def _missing(label: str, ref: str) -> ProbeResult:
    err = {"status": 404, "message": f"no {label} {ref} in the cluster", "fields": {}, "reason": "missing"}
    return ProbeResult(1, data={"error": err})


def _row(g: Guest) -> dict[str, Any]:
    return {"id": f"{g.type}/{g.vmid}", "type": g.type, "node": g.node, "name": g.name, "vmid": g.vmid,
            "status": g.status, "template": 0}


def _planned_rows(
    facts: Facts, key: str, overlay: Overlay, *, vmid: Any, name: str | None, types: tuple[str, ...]
) -> tuple[list[dict[str, Any]], bool]:
    """The rows of cluster/resources the probe `key` would list once the earlier steps ran,
    and whether a planned step touched any of them."""
    touched = False
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for r in _rows(facts.get(key)):
        st = _known(overlay, guest_key(r.get("vmid")))
        if st is None:
            rows.append(r)
            seen.add(int(r.get("vmid", 0)))
            continue
        touched = True
        if isinstance(st, Guest) and (name is None or st.name == name):
            rows.append(_row(st))
            seen.add(st.vmid)
    wanted: list[str] = []
    if vmid is not None:
        wanted = [str(vmid)]
    elif name is not None:
        for t in types:
            idx = _known(overlay, ("pve.name", t, name))
            if idx:
                wanted.append(str(idx))
    for w in wanted:
        st = _known(overlay, guest_key(w))
        if isinstance(st, Guest) and st.vmid not in seen and (name is None or st.name == name):
            rows.append(_row(st))
            seen.add(st.vmid)
            touched = True
    return rows, touched


def _config_answers(g: Guest) -> tuple[ProbeResult, ProbeResult, ProbeResult]:
    config = dict(g.config)
    if g.digest:
        config["digest"] = g.digest
    pending = [{"key": k, "pending": v} if k in g.waiting else {"key": k, "value": v}
               for k, v in sorted(g.config.items())]
    status = {"vmid": g.vmid, "name": g.name, "status": g.status, "type": g.type}
    return ProbeResult(0, data=config), ProbeResult(0, data=pending), ProbeResult(0, data=status)


def _real_guest(facts: Facts, row: dict[str, Any], overlay: Overlay) -> Guest | None:
    """The guest as the (real) answers describe it, for effects of a step on it."""
    cfg = _data(facts.get("config"))
    if not isinstance(cfg, dict):
        return None
    have, waiting = _effective(cfg, _data(facts.get("pending")))
    status = _data(facts.get("status"))
    current = str((status.get("status") if isinstance(status, dict) else None) or row.get("status") or "")
    changed = overlay.get(("pve.cfg", str(row.get("vmid"))))
    return Guest(int(row["vmid"]), str(row.get("type")), str(row.get("node")), str(row.get("name") or ""),
                 current, have, tuple(waiting), "" if changed else str(cfg.get("digest", "")))


# ---------------------------------------------------------------- guests: view


def view_guest(kind: _GuestKind, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
    label = "container" if kind.gtype == "lxc" else "VM"
    name = None if params.get("vmid") is not None else str(params["name"])
    out = dict(facts)
    if params.get("clone") is not None and "clone_guest" in facts:
        src_rows, src_touched = _planned_rows(facts, "clone_guest", overlay, vmid=params["clone"], name=None,
                                              types=("qemu",))
        if src_touched:
            out["clone_guest"] = ProbeResult(0, data=src_rows)
            src = _known(overlay, guest_key(params["clone"]))
            if isinstance(src, Guest):
                if src.new_volumes:
                    raise OverlayUnknown(f"clone source VM {src.vmid} is made by an earlier step: the disks a clone "
                                         "copies are known only once it exists")
                out["clone_config"] = _config_answers(src)[0]
            else:
                out["clone_config"] = _missing("VM", str(params["clone"]))
    if not _ok(facts.get("guest")):
        return out
    rows, touched = _planned_rows(facts, "guest", overlay, vmid=params.get("vmid"), name=name,
                                  types=(kind.gtype,))
    mine = [r for r in rows if r.get("type") == kind.gtype]
    if touched:
        out["guest"] = ProbeResult(0, data=rows)
        planned = _known(overlay, guest_key(mine[0]["vmid"])) if len(mine) == 1 else None
        if isinstance(planned, Guest):
            out["config"], out["pending"], out["status"] = _config_answers(planned)
        elif not mine:
            ref = kind.ref(params)
            out["config"] = out["pending"] = out["status"] = _missing(label, ref)
    if not mine and params.get("vmid") is None and _ok(facts.get("nextid")):
        _check_nextid(int(str(_data(facts["nextid"]))), overlay)
    if len(mine) == 1 and params.get("state") != "absent":
        _check_update(kind, params, out, mine[0], overlay)
    return out


def _check_nextid(nextid: int, overlay: Overlay) -> None:
    taken = _known(overlay, guest_key(nextid))
    if isinstance(taken, Guest):
        by = overlay.by(guest_key(nextid))
        raise OverlayUnknown(f"its vmid comes from cluster/nextid, which says {nextid}, but step '{by}' "
                             f"takes {nextid} first: the next free id is known only once that step ran")
    freed = overlay.get(("pve.freed",)) or frozenset()
    lower = sorted(v for v in freed if v < nextid)
    if lower:
        by = overlay.by(("pve.freed",))
        raise OverlayUnknown(f"its vmid comes from cluster/nextid, and step '{by}' frees vmid {lower[0]} "
                             "below the one it says: the next free id is known only once that step ran")


def _check_update(kind: _GuestKind, params: dict[str, Any], facts: Facts, row: dict[str, Any],
                  overlay: Overlay) -> None:
    """Raise when an earlier step leaves the guest so that this step's config change
    cannot be planned exactly: PVE's defaults of a guest not made yet, a disk's volume id,
    or the config digest the update is checked against."""
    vmid = str(row["vmid"])
    planned = _known(overlay, guest_key(vmid))
    changed_by = overlay.by(("pve.cfg", vmid)) if overlay.get(("pve.cfg", vmid)) else ""
    digest_moves = bool(changed_by) or (isinstance(planned, Guest) and not planned.digest)
    if not isinstance(planned, Guest) and not digest_moves:
        return
    want = kind.wanted(params)
    title = f"{kind.label} {vmid}"
    if isinstance(planned, Guest) and planned.known is not None:
        by = overlay.by(guest_key(vmid))
        unset = sorted(k for k in want if k not in planned.known)
        if unset:
            raise OverlayUnknown(f"{title} is made by step '{by}', which does not set {', '.join(unset)}: "
                                 "Proxmox's defaults for them are known only once the guest exists")
        for key in sorted(planned.new_volumes & set(want)):
            value = want[key]
            first = _split_volume(value)[0] if value is not None else ""
            if value is None or not NEW_DISK.match(first):
                raise OverlayUnknown(f"{title}: step '{by}' makes its disk {key}; the volume id Proxmox gives "
                                     "it is known only once it exists")
    cfg = _data(facts.get("config"))
    if not isinstance(cfg, dict):
        return
    have, _waiting = _effective(cfg, _data(facts.get("pending")))
    diff = kind._diff(params, want, have)
    if not digest_moves or diff.unsafe or not (diff.fields or diff.deletes):
        return
    by = changed_by or overlay.by(guest_key(vmid))
    raise OverlayUnknown(f"{title}: {', '.join(diff.keys)} would change, but step '{by}' changes its config "
                         "first: the config digest Proxmox checks the update against is known only once it ran")


# ---------------------------------------------------------------- guests: effects


def _new_volume(value: Any, cloned: bool) -> str:
    """A disk the plan creates ('local-lvm:8,discard=on') as PVE will show it, the volume
    id not yet known: 'local-lvm:(new volume),discard=on,size=8G'. A cloned disk is a new
    volume too; an ISO or an existing volume keeps its id."""
    first, opts = _split_volume(value)
    m = NEW_DISK.match(first)
    if not m and cloned and ":" in first and opts.get("media") != "cdrom":
        sid = first.split(":", 1)[0]  # a cloned disk: a new volume on the same storage
        return ",".join([f"{sid}:{NEW_VOLUME}", *(f"{k}={v}" for k, v in opts.items())])
    if not m:
        return str(value)
    size = _bytes(m.group(2), "G") or 0
    rest = [f"{k}={v}" for k, v in opts.items() if k != "size"]
    return ",".join([f"{m.group(1)}:{NEW_VOLUME}", *rest, f"size={_size_text(size)}"])


def _grown(value: Any, size: str) -> str:
    first, opts = _split_volume(value)
    opts["size"] = size
    return ",".join([first, *(f"{k}={v}" for k, v in opts.items())])


def _field_value(kind: _GuestKind, key: str, value: Any) -> Any:
    if value is None:
        return None
    if kind.is_volume(key):  # storage:size (a new disk) compares by storage, size and options
        first, opts = _split_volume(value)
        m = NEW_DISK.match(first)
        size = _bytes(m.group(2), "G") if m else None
        return (m.group(1) if m else first, size, tuple(sorted((k, v) for k, v in opts.items() if k != "size")))
    if _is_props(key, value):
        return tuple(sorted(_props(key, value, kind.gtype).items()))
    return canon(key, value, kind.gtype)


def _managed(kind: _GuestKind, params: dict[str, Any], vmid: int, exists: bool) -> list[Effect]:
    """What the step declares, for naming steps that fight over one guest (the keys read
    as the plan's warning says them: "guest 101 field cores")."""
    v = str(vmid)
    out = [Effect(("guest", v, "existence"), exists)]
    if not exists:
        return out
    for key, value in kind.wanted(params).items():
        out.append(Effect(("guest", v, "field", key), _field_value(kind, key, value)))
    state = params["state"]
    if state in ("running", "stopped"):
        out.append(Effect(("guest", v, "power state"), state))
    elif state == "restarted":
        out.append(Effect(("guest", v, "power state"), "running", exact=False))
    return out


def _name_of(kind: _GuestKind, config: dict[str, Any]) -> str:
    return str(config.get("hostname" if kind.gtype == "lxc" else "name") or "")


def _power_after(change: Change, before: str) -> tuple[str, bool]:
    """(status, started): the power state the actions leave, and whether it (re)started."""
    status, started = before, False
    for a in change.actions:
        if a.kind != "api":
            continue
        if a.path.endswith("/status/stop"):
            status = "stopped"
        elif a.path.endswith(("/status/start", "/status/reboot")):
            status, started = "running", True
    return status, started


def guest_effects(kind: _GuestKind, params: dict[str, Any], change: Change, facts: Facts,
                  overlay: Overlay) -> list[Effect]:
    if change.status in ("blocked", "skip"):
        return []
    rows = [r for r in _rows(facts.get("guest")) if r.get("type") == kind.gtype]
    vmid = params.get("vmid") or (rows[0].get("vmid") if len(rows) == 1 else None)
    if change.status == "unknown":
        out: list[Effect] = []
        if vmid is not None:  # what it declares still names a fight with another step
            out += [Effect(guest_key(vmid), _declared(kind, params, overlay.get(guest_key(vmid))), exact=False),
                    Effect(("pve.cfg", str(vmid)), "changed", exact=False),
                    *_managed(kind, params, int(vmid), params["state"] != "absent")]
        if params.get("name") and params.get("vmid") is None:
            out.append(Effect(("pve.name", kind.gtype, str(params["name"])), Unknown(""), exact=False))
            nextid = _data(facts.get("nextid")) if _ok(facts.get("nextid")) else None
            if nextid is not None and overlay.get(guest_key(nextid)) is None:  # it may take it at apply
                out.append(Effect(guest_key(nextid), Unknown(""), exact=False))
        return out
    data = change.data
    if change.status == "noop":
        if data.get("exists") is False:
            return _managed(kind, params, int(vmid), False) if vmid is not None else []
        return _managed(kind, params, int(data["vmid"]), True) if data.get("vmid") is not None else []
    if change.status == "create" or data.get("replace"):
        return _created(kind, params, change, facts, overlay)
    vmid = int(data["vmid"])
    if change.status == "delete":
        freed = frozenset(overlay.get(("pve.freed",)) or ()) | {vmid}
        out = [Effect(guest_key(vmid), ABSENT, exact=False), Effect(("pve.freed",), freed, exact=False),
               *_managed(kind, params, vmid, False)]
        if data.get("name"):
            out.append(Effect(("pve.name", kind.gtype, str(data["name"])), "", exact=False))
        return out
    before = _planned_or_real(kind, facts, overlay, vmid)
    if before is None:
        return [Effect(guest_key(vmid), Unknown(""), exact=False)]
    config = dict(before.config)
    put = [a for a in change.actions if a.kind == "api" and a.method == "PUT" and a.path.endswith("/config")]
    changed: list[str] = []
    for a in put:
        for key, value in a.params.items():
            if key == "digest":
                continue
            if key == "delete":
                for k in str(value).split(","):
                    config.pop(k, None)
                    changed.append(k)
                continue
            config[key] = value
            changed.append(key)
    for a in change.actions:
        if a.kind == "api" and a.path.endswith("/resize"):
            disk = str(a.params["disk"])
            config[disk] = _grown(config.get(disk, ""), str(a.params["size"]))
            changed.append(disk)
    status, started = _power_after(change, before.status)
    waiting: tuple[str, ...] = ()
    if not started:
        hot = set(kind.hot)
        later = [k for k in changed if status == "running" and before.status == "running" and k not in hot
                 and not (kind.gtype == "lxc" and NET_KEY.match(k))]
        waiting = tuple(dict.fromkeys([*before.waiting, *later]))
    after = replace(before, config=config, status=status, waiting=waiting, name=_name_of(kind, config) or before.name,
                    digest="" if changed else before.digest)
    out = [Effect(guest_key(vmid), after, exact=False), *_managed(kind, params, vmid, True)]
    if changed:
        out.append(Effect(("pve.cfg", str(vmid)), "changed", exact=False))
    if after.name != before.name:
        out.append(Effect(("pve.name", kind.gtype, before.name), "", exact=False))
        out.append(Effect(("pve.name", kind.gtype, after.name), str(vmid), exact=False))
    return out


def _declared(kind: _GuestKind, params: dict[str, Any], planned: Any) -> Any:
    """A planned guest after a step decided only at apply: what it declares (its fields and
    power state; the exact calls, e.g. the config digest, are what is not known)."""
    if not isinstance(planned, Guest) or params["state"] == "absent":
        return Unknown("")
    config = dict(planned.config)
    for key, value in kind.wanted(params).items():
        if kind.is_volume(key):
            return Unknown("")  # a disk's size and volume id follow from what it finds
        if value is None:
            config.pop(key, None)
        else:
            config[key] = encode(key, value)
    state = params["state"]
    status = {"running": "running", "restarted": "running", "stopped": "stopped"}.get(state, planned.status)
    return replace(planned, config=config, status=status, digest="", name=_name_of(kind, config) or planned.name)


def _planned_or_real(kind: _GuestKind, facts: Facts, overlay: Overlay, vmid: int) -> Guest | None:
    planned = overlay.get(guest_key(vmid))
    if isinstance(planned, Guest):
        return planned
    row = next((r for r in _rows(facts.get("guest")) if int(r.get("vmid", 0)) == vmid), None)
    return _real_guest(facts, row, overlay) if row is not None else None


def _created(kind: _GuestKind, params: dict[str, Any], change: Change, facts: Facts,
             overlay: Overlay) -> list[Effect]:
    data = change.data
    vmid, node = int(data["vmid"]), str(data["node"])
    want = kind.wanted(params)
    config: dict[str, Any] = {}
    if kind.gtype == "qemu" and params.get("clone") is not None:
        src = _data(facts.get("clone_config"))
        config = {k: v for k, v in (src if isinstance(src, dict) else {}).items() if k not in ("digest", "template")}
    for key, value in want.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = encode(key, value)
    cloned = kind.gtype == "qemu" and params.get("clone") is not None
    for key in [k for k in config if kind.is_volume(k)]:
        config[key] = _new_volume(config[key], cloned)
    volumes = frozenset(k for k, v in config.items() if kind.is_volume(k) and NEW_VOLUME in str(v))
    status = "running" if params["state"] in ("running", "restarted") else "stopped"
    guest = Guest(vmid, kind.gtype, node, _name_of(kind, config), status, config, gen=next(_GENERATION),
                  known=frozenset(config), new_volumes=volumes)
    out = [Effect(guest_key(vmid), guest, exact=False), Effect(("pve.cfg", str(vmid)), "changed", exact=False),
           *_managed(kind, params, vmid, True)]
    if guest.name:
        out.append(Effect(("pve.name", kind.gtype, guest.name), str(vmid), exact=False))
    return out


# ---------------------------------------------------------------- snapshots


def _snap_guest(params: dict[str, Any], facts: Facts, overlay: Overlay) -> tuple[list[dict[str, Any]], bool]:
    name = None if params.get("vmid") is not None else str(params["name"])
    return _planned_rows(facts, "guest", overlay, vmid=params.get("vmid"), name=name, types=("lxc", "qemu"))


def view_snapshot(params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
    if not _ok(facts.get("guest")):
        return facts
    rows, touched = _snap_guest(params, facts, overlay)
    out = dict(facts)
    if touched:
        out["guest"] = ProbeResult(0, data=rows)
    if len(rows) != 1:
        if touched and not rows:
            out["snapshots"] = _missing("guest", str(params.get("vmid") or params.get("name")))
        return out
    vmid = rows[0]["vmid"]
    snap = str(params["snapshot"])
    guest = _known(overlay, guest_key(vmid))
    gen = guest.gen if isinstance(guest, Guest) else 0
    state = _known(overlay, ("pve.snapshot", str(vmid), snap))
    if gen == 0 and (state is None or state.gen != 0):
        return out
    listing = [] if gen else [s for s in _rows(facts.get("snapshots"))]
    if gen and not listing:
        listing = [{"name": "current", "description": "You are here!"}]
    listing = [s for s in listing if s.get("name") != snap]
    if state is not None and state.gen == gen and state.present:
        listing.insert(0, {"name": snap, "description": state.description or ""})
    out["snapshots"] = ProbeResult(0, data=listing)
    return out


def snapshot_effects(params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
    if change.status in ("blocked", "skip"):
        return []
    snap = str(params["snapshot"])
    data = change.data
    vmid = data.get("vmid") if data else params.get("vmid")
    if vmid is None:
        rows = _rows(facts.get("guest"))
        vmid = rows[0].get("vmid") if len(rows) == 1 else None
    if vmid is None:
        return []
    key = ("pve.snapshot", str(vmid), snap)
    if change.status == "unknown":
        return [Effect(key, Unknown(""), exact=False)]
    guest = overlay.get(guest_key(vmid))
    gen = guest.gen if isinstance(guest, Guest) else 0
    desc = params.get("description")
    if change.status == "run":  # a rollback: config and power state become the snapshot's
        why = f"a step rolls {vmid} back to snapshot {snap}: its config and power state are then the snapshot's"
        return [Effect(guest_key(vmid), Unknown(why), exact=False),
                Effect(("pve.cfg", str(vmid)), "changed", exact=False)]
    if params["state"] == "absent":
        out = [Effect(key, Snap(False, None, gen))]
    else:
        if desc is None:
            found = next((s for s in _rows(facts.get("snapshots")) if s.get("name") == snap), None)
            desc = str(found.get("description") or "") if found else None
        out = [Effect(key, Snap(True, None if desc is None else str(desc).rstrip(), gen))]
    if change.changes:  # the snapshot list lives in the guest's config: its digest moves
        out.append(Effect(("pve.cfg", str(vmid)), "changed", exact=False))
    return out

