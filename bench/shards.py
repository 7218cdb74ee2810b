"""Sharding measured: the bench workload on N real sshds applied as K shards (`--shard i/K`,
one run id, P shards at a time), merged with `opsrun runs merge`, against one unsharded run.

Not a test. As root, after tests/peers/setup_ssh.sh:
    .venv/bin/python bench/shards.py --hosts 200 --shards 4 --parallel 2
Prints a markdown table (wall-clock, CPU, peak memory and load per run) and whether the merged
per-host outcomes equal the unsharded run's; writes bench/results/shards-<date>.raw.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO))

from run import Harness, parse_args  # noqa: E402
from tools import OPSRUN, WORKLOAD, HostInfo, Opsrun, Outcome  # noqa: E402
from workload import spec  # noqa: E402

from tests.peers.sshd import TEST_USER  # noqa: E402


class Shard(Opsrun):
    """One `opsrun apply` over the whole inventory, cut to shard `part` (None: unsharded),
    its journal in its own state folder (as a CI worker's)."""

    def __init__(self, work: Path, env: dict[str, str], part: str | None, run_id: str, forks: int) -> None:
        super().__init__(work, env)
        self.part, self.run_id, self.forks = part, run_id, forks
        self.state = work / "states" / (part.replace("/", "-of-") if part else "whole")

    def state_dir(self) -> Path:
        return self.state

    def command(self, hosts: list[HostInfo]) -> tuple[list[str], Path]:
        self.env["OPSRUN_STATE_DIR"] = str(self.state)
        self.env["PYTHONPATH"] = str(REPO)
        argv = [str(OPSRUN), "apply", str(WORKLOAD / "opsrun.yaml"), "-i", str(self.work / "inventory.yaml"),
                "--yes", "--forks", str(self.forks), "--run-id", self.run_id]
        if self.part:
            argv += ["--shard", self.part]
        return argv, self.work


def merged(states: list[Path], env: dict[str, str]) -> dict[str, Any]:
    res = subprocess.run([str(OPSRUN), "runs", "merge", *map(str, states), "--json"], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    return json.loads(res.stdout)


def outcomes(doc: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """host -> [(step instance, status)]: what must be the same sharded or not."""
    return {h: sorted((str(s["instance"]), str(s["status"])) for s in v["steps"]) for h, v in doc["hosts"].items()}


def row(label: str, out: Outcome, load1: float, n: int) -> dict[str, Any]:
    return {"run": label, "hosts": n, "seconds": round(out.seconds, 2), "cpu_seconds": round(out.cpu_seconds, 2),
            "peak_rss_mib": round(out.peak_rss_mib, 1), "load1": round(load1, 2), "rc": out.rc}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--parallel", type=int, default=2, help="shards run at once (the machine's cores)")
    p.add_argument("--forks", type=int, default=64)
    a = p.parse_args()
    if os.geteuid() != 0:
        print("run as root (see bench/README.md)", file=sys.stderr)
        return 2
    harness = Harness(parse_args(["--hosts", str(a.hosts), "--tools", "opsrun"]))
    pw = pwd.getpwnam(TEST_USER)
    work = Path(tempfile.mkdtemp(prefix="opsrun-shards-"))
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(a), "runs": []}
    try:
        hosts = harness.start_farm()
        env = harness.tool_env()
        names = [h.name for h in hosts]
        run_id = f"bench-shards-{int(time.time())}"
        parts = [f"{i}/{a.shards}" for i in range(1, a.shards + 1)]
        shards = [Shard(work, dict(env), part, run_id, a.forks) for part in parts]
        for s in shards:
            s.prepare(hosts)
        spec.prepare("opsrun", names, pw.pw_uid, pw.pw_gid)

        def one(s: Shard) -> dict[str, Any]:
            load1 = os.getloadavg()[0]
            out = s.run(hosts, 900)
            return row(f"shard {s.part}", out, load1, a.hosts)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=a.parallel) as pool:
            results["runs"] += list(pool.map(one, shards))
        sharded_wall = time.perf_counter() - t0
        bad = [msg for h in names for msg in spec.check("opsrun", h, pw.pw_uid)]
        doc = merged([s.state for s in shards], env)
        results["sharded"] = {"wall_seconds": round(sharded_wall, 2), "problems": bad[:10],
                              "ok": doc.get("ok"), "missing": doc.get("missing_shards"),
                              "run_id": doc.get("run_id"), "totals": doc.get("totals")}

        whole = Shard(work, dict(env), None, run_id + "-whole", a.forks)
        whole.prepare(hosts)
        spec.prepare("opsrun", names, pw.pw_uid, pw.pw_gid)
        load1 = os.getloadavg()[0]
        out = whole.run(hosts, 900)
        results["runs"].append(row("unsharded", out, load1, a.hosts))
        bad_whole = [msg for h in names for msg in spec.check("opsrun", h, pw.pw_uid)]
        doc_whole = merged([whole.state], env)
        results["whole"] = {"problems": bad_whole[:10], "ok": doc_whole.get("ok"), "totals": doc_whole.get("totals")}
        same = outcomes(doc) == outcomes(doc_whole)
        results["same_outcomes"] = same
        results["hosts_merged"] = len(doc.get("hosts", {}))
        per_shard = {str(r["shard"]): sum(1 for h in doc["hosts"].values() if h["run_id"] == r["run_id"])
                     for r in doc.get("runs", [])}
        results["hosts_per_shard"] = list(per_shard.values())
        for r in results["runs"]:  # a shard's own hosts, as the merge counts them
            r["hosts"] = per_shard.get(r["run"].removeprefix("shard "), r["hosts"])
    finally:
        harness.stop()
        shutil.rmtree(work, ignore_errors=True)
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"shards-{results['date'][:19].replace(':', '')}.raw.json").write_text(json.dumps(results, indent=1))
    print("| run | hosts | wall s | CPU s | peak MiB | load avg before | rc |\n|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['run']} | {r['hosts']} | {r['seconds']} | {r['cpu_seconds']} | {r['peak_rss_mib']:.0f} "
              f"| {r['load1']} | {r['rc']} |")
    print(f"\nsharded: {a.shards} shards, {a.parallel} at a time, {results['sharded']['wall_seconds']} s in all; "
          f"hosts per shard {results['hosts_per_shard']}; merged {results['hosts_merged']} hosts, "
          f"ok={results['sharded']['ok']}, missing={results['sharded']['missing']}, "
          f"run id {results['sharded']['run_id']}, totals {results['sharded']['totals']}")
    print(f"unsharded totals {results['whole']['totals']}; end state problems: sharded "
          f"{len(results['sharded']['problems'])}, unsharded {len(results['whole']['problems'])}")
    print(f"same per-host outcomes (every host x step status): {same}")
    return 0 if same and not bad and not bad_whole else 1


if __name__ == "__main__":
    sys.exit(main())
