"""The proxmox.query step kind: read-only listings (nodes, guests, storage, cluster/HA
status, tasks, backup jobs) as rows and an aligned table. No transport, no proxmoxer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from runner.model import Change, Probe, ProbeResult
from runner.overlay import Overlay
from runner.steps import facts as F
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.pve_values import PROXMOX, _data, _error, _ok
from runner.steps.shell import PrepareError


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
    needs = PROXMOX

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




register(QueryKind())
