"""`opsrun runs merge DIR...`: the journals of a sharded run's workers as one recap (the shape of
`apply --json`'s recap), with the checks that make the merge honest. Reads journals; no transports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.errors import InvalidInput
from runner.journal import RunInfo, read_events
from runner.tally import EXTRA_COUNTS, STATUSES, event_counts


def find_run(path: Path) -> RunInfo:
    """A run from a run folder (holding events.jsonl), a state folder (`.opsrun`: its last
    run) or a project folder holding `.opsrun/`."""
    for candidate in (path, path / ".opsrun"):
        if (candidate / "events.jsonl").is_file():
            return RunInfo(candidate.name, candidate, read_events(candidate / "events.jsonl"))
        runs = candidate / "runs"
        if runs.is_dir() and not runs.is_symlink():
            dirs = sorted(d for d in runs.iterdir() if d.is_dir() and not d.is_symlink())
            if dirs:
                return RunInfo(dirs[-1].name, dirs[-1], read_events(dirs[-1] / "events.jsonl"))
    raise InvalidInput(f"{path}: no opsrun run here",
                       hint="give a run folder (.opsrun/runs/ID), a .opsrun folder or a project folder")


def recap_from_events(run_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's recap rebuilt from its journal: the last result of every (host, step instance)
    over all its parts (a resumed run counts what its last attempt did)."""
    hosts: dict[str, dict[str, Any]] = {}
    for name in run_hosts(events):
        hosts[name] = {"steps": {}, "unreachable": False}
    for ev in events:
        host = ev.get("host")
        if not isinstance(host, str):
            continue
        h = hosts.setdefault(host, {"steps": {}, "unreachable": False})
        if ev.get("type") == "host_unreachable":
            h["unreachable"] = True
        elif ev.get("type") == "step_end":
            h["steps"][str(ev.get("instance"))] = {
                "step": ev.get("step"), "instance": ev.get("instance"), "status": ev.get("status"),
                "rc": ev.get("rc"), "attempts": ev.get("attempts"), "duration": ev.get("duration"),
                "message": ev.get("message", ""),
            }
    extra = event_counts(events)
    out_hosts: dict[str, Any] = {}
    for name, h in hosts.items():
        counts = dict.fromkeys(STATUSES, 0)
        for s in h["steps"].values():
            counts[str(s["status"])] = counts.get(str(s["status"]), 0) + 1
        counts["unreachable"] += h["unreachable"] and not any(
            s["status"] == "unreachable" for s in h["steps"].values())
        counts.update(extra.get(name, dict.fromkeys(EXTRA_COUNTS, 0)))
        out_hosts[name] = {"counts": counts, "unreachable": h["unreachable"],
                           "rolled_back": bool(counts.get("rolled_back")), "steps": list(h["steps"].values())}
    end = next((e for e in reversed(events) if e.get("type") == "run_end"), None)
    totals: dict[str, int] = {}
    for h in out_hosts.values():
        for k, v in h["counts"].items():
            totals[k] = totals.get(k, 0) + int(v)
    failed = any(h["counts"]["failed"] or h["counts"]["blocked"] or h["unreachable"] for h in out_hosts.values())
    return {
        "run_id": run_id,
        "ok": end is not None and end.get("outcome") == "ok" and not failed,
        "aborted": "" if end is not None else "the run has no end: it was killed or is still running",
        "totals": totals,
        "hosts": out_hosts,
    }


def run_hosts(events: list[dict[str, Any]]) -> list[str]:
    start = next((e for e in events if e.get("type") == "run_start"), {})
    return [str(h) for h in start.get("hosts") or []]


def merge(runs: list[RunInfo]) -> dict[str, Any]:
    """One recap over the shards' runs. Refused: runs of different playbooks, a host in two
    runs, two runs claiming the same shard. Missing shards are reported in `missing_shards`."""
    if not runs:
        raise InvalidInput("nothing to merge", hint="give the run folders of every shard")
    seen: dict[Path, str] = {}
    for r in runs:
        where = r.dir.resolve()
        if where in seen:
            raise InvalidInput(f"run {r.run_id} is given twice", hint="give each shard's run once")
        seen[where] = r.run_id
    starts = [next((e for e in r.events if e.get("type") == "run_start"), None) for r in runs]
    for r, s in zip(runs, starts, strict=True):
        if s is None:
            raise InvalidInput(f"{r.dir}: the journal has no run_start", hint="is this an opsrun run folder?")
    digests = {str(s.get("playbook_digest")) for s in starts if s}
    if len(digests) > 1:
        raise InvalidInput("the runs applied different playbooks",
                           hint="merge the shards of one run: " + ", ".join(
                               f"{r.run_id}: {s.get('playbook')}" for r, s in zip(runs, starts, strict=True) if s))
    owner: dict[str, str] = {}
    shards: dict[str, str] = {}
    totals_seen: set[int] = set()
    all_ok = True
    doc_hosts: dict[str, Any] = {}
    for r, s in zip(runs, starts, strict=True):
        assert s is not None
        shard = s.get("shard")
        if shard:
            total = str(shard).partition("/")[2]
            totals_seen.add(int(total))
            if str(shard) in shards:
                raise InvalidInput(f"shard {shard} appears twice: {shards[str(shard)]} and {r.run_id}",
                                   hint="merge one run per shard")
            shards[str(shard)] = r.run_id
        recap = recap_from_events(r.run_id, r.events)
        all_ok = all_ok and recap["ok"]
        for host, h in recap["hosts"].items():
            if host in owner:
                raise InvalidInput(f"host {host} was applied by two runs: {owner[host]} and {r.run_id}",
                                   hint="shards must not overlap: use the same --shard N and inventory on every worker")
            owner[host] = r.run_id
            doc_hosts[host] = {**h, "run_id": r.run_id, "shard": shard}
    groups = {s.get("group") for s in starts if s}
    if len(groups) > 1:
        raise InvalidInput(
            "the runs belong to different runs: " + ", ".join(
                f"{r.run_id}: {s.get('group') or 'no run id'}" for r, s in zip(runs, starts, strict=True) if s),
            hint="merge the shards of one run (apply --run-id, or the CI pipeline id, names it)")
    if len(totals_seen) > 1:
        raise InvalidInput("the runs were cut into different numbers of shards: "
                           + ", ".join(sorted(shards)), hint="merge the shards of one run")
    missing: list[str] = []
    if totals_seen:
        n = totals_seen.pop()
        missing = [f"{i}/{n}" for i in range(1, n + 1) if f"{i}/{n}" not in shards]
    totals: dict[str, int] = {}
    for h in doc_hosts.values():
        for k, v in h["counts"].items():
            totals[k] = totals.get(k, 0) + int(v)
    return {
        "run_id": next(iter(groups)) if groups else None,
        "runs": [{"run_id": r.run_id, "dir": str(r.dir), "shard": s.get("shard") if s else None,
                  "outcome": r.outcome} for r, s in zip(runs, starts, strict=True)],
        "missing_shards": missing,
        "ok": all_ok and not missing,
        "totals": totals,
        "hosts": doc_hosts,
    }


def planned(runs: list[RunInfo]) -> list[tuple[str, str]]:
    """(host, step instance) of what every run planned (its plan.json): the JUnit report's
    cases for steps that never ran. A run without a readable plan adds none."""
    import json

    out: list[tuple[str, str]] = []
    for r in runs:
        try:
            plan = json.loads((r.dir / "plan.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        steps = plan.get("steps") if isinstance(plan, dict) else None
        out += [(str(s.get("host")), str(s.get("instance"))) for s in steps or [] if isinstance(s, dict)]
    return out


def merged_markdown(doc: dict[str, Any]) -> str:
    """The merged recap as a pull-request or job-summary comment."""
    n = len(doc["runs"])
    verdict = "ok" if doc["ok"] else "NOT OK"
    return f"### opsrun apply: {n} shard run{'s' if n != 1 else ''} merged, {verdict}\n\n" + merged_text(doc)


def merged_text(doc: dict[str, Any]) -> str:
    """The merged recap for people (and, being a table, for a markdown comment)."""
    cols = ("ok", "changed", "failed", "skipped", "blocked", "unreachable")
    width = max([len("host"), *(len(h) for h in doc["hosts"])])
    lines = ["| " + "host".ljust(width) + " | run | " + " | ".join(cols) + " |",
             "|" + "-" * (width + 2) + "|-----|" + "|".join("-" * (len(c) + 2) for c in cols) + "|"]
    for host, h in doc["hosts"].items():
        shard = h.get("shard") or h["run_id"]
        lines.append("| " + host.ljust(width) + f" | {shard} | "
                     + " | ".join(str(h["counts"].get(c, 0)).rjust(len(c)) for c in cols) + " |")
    t = doc["totals"]
    lines.append("")
    of = f" of run {doc['run_id']}" if doc.get("run_id") else ""
    lines.append(f"Merged {len(doc['runs'])} run(s){of}: " + ", ".join(f"{c} {t.get(c, 0)}" for c in cols)
                 + (f"; missing shards: {', '.join(doc['missing_shards'])}" if doc["missing_shards"] else "")
                 + ("" if doc["ok"] else "; NOT OK"))
    return "\n".join(lines) + "\n"
