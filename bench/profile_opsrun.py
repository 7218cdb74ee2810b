"""Where opsrun's time goes on the benchmark workload: starts N real sshds (like bench/run.py),
runs the first apply and the re-run through bench/opsrun_traced.py (phase timers, channel and
SFTP counters), optionally under py-spy (all threads), and prints a per-step timeline from the
run's journal plus the hottest functions.

Profiling aid, not a test; stops its sshds by PID. As root:
  .venv/bin/python bench/profile_opsrun.py --hosts 50 [--py-spy [--gil]] [--rate 250]
  .venv/bin/python bench/profile_opsrun.py --hosts 50 --rounds 5 --what-if nofsync,free
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pwd
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO))

import peers  # noqa: E402
from tools import HostInfo, Opsrun, Outcome  # noqa: E402
from workload import spec  # noqa: E402

from tests.peers.sshd import TEST_USER, SshdFarm  # noqa: E402

PY = REPO / ".venv" / "bin" / "python"
CPU: list[float] = []  # the controller's CPU seconds of each run (wait4 of the child)


def timeline(journal: Path) -> list[str]:
    """Per step: wall time from the first host starting it to the last host finishing it."""
    evs = [json.loads(line) for line in journal.read_text().splitlines()]

    def ts(e: dict[str, Any]) -> float:
        return datetime.fromisoformat(e["ts"]).timestamp()

    start = next(ts(e) for e in evs if e["type"] == "run_start")
    steps: dict[str, list[float]] = collections.OrderedDict()
    for e in evs:
        if e["type"] in ("step_start", "step_end") and "step" in e:
            steps.setdefault(e["step"], []).append(ts(e))
    out = []
    prev = start
    for step, times in steps.items():
        out.append(f"    {step:8s} {max(times) - min(times):6.3f}s  (gap before {min(times) - prev:6.3f}s)")
        prev = max(times)
    out.append(f"    last event {ts(evs[-1]) - start:.3f}s after run_start")
    return out


def hot(raw: Path, top: int) -> list[str]:
    """Self samples per function and inclusive samples per runner/ frame (py-spy raw)."""
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = stack.split(";")
        self_[frames[-1]] += k
        for f in set(frames):
            if "runner/" in f or "opsrun" in f:
                incl[f] += k
    lines = [f"  {total} samples; self:"]
    lines += [f"    {100 * v / total:5.1f}%  {f}" for f, v in self_.most_common(top)]
    lines += ["  inclusive (runner/ frames):"]
    lines += [f"    {100 * v / total:5.1f}%  {f}" for f, v in incl.most_common(top)]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--py-spy", action="store_true", help="sample with py-spy (CPU, all threads)")
    p.add_argument("--idle", action="store_true", help="py-spy: count waiting threads too")
    p.add_argument("--gil", action="store_true", help="py-spy: only the thread holding the GIL")
    p.add_argument("--rate", type=int, default=250)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--rounds", type=int, default=1, help="repeat first run + re-run; print medians")
    p.add_argument("--what-if", default="",
                   help="also run variants with an experiment patched in from outside (see "
                        "opsrun_traced.py what_if), e.g. nofsync,free; alternates with baseline")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "opsrun-profile")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.py_spy:
        peers.ensure("prof", log=lambda m: print(m, file=sys.stderr))
    pw = pwd.getpwnam(TEST_USER)
    work = Path(tempfile.mkdtemp(prefix="opsrun-prof-"))
    os.chmod(work, 0o755)
    (work / "farm").mkdir()
    farm = SshdFarm(work / "farm", TEST_USER)
    try:
        for i in range(args.hosts):
            farm.add(f"h{i + 1:02d}", MaxSessions="100")
        hosts = [HostInfo(s.name, s.address, s.port, s.user, str(s.client_key), str(s.known_hosts))
                 for s in farm.hosts]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SSH_AUTH_SOCK", "OPSRUN_"))}
        (work / "empty").write_text("")
        env.update(HOME=str(work), OPSRUN_SSH_CONFIG=str(work / "empty"), TERM="dumb", NO_COLOR="1")
        tool = Opsrun(work, env)
        variants = ["baseline", *[v for v in args.what_if.split(",") if v]]
        detail = args.rounds == 1 and len(variants) == 1
        walls: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        cpus: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        for rnd in range(args.rounds):
            for variant in variants:
                tool.env["BENCH_WHAT_IF"] = "" if variant == "baseline" else variant.replace("+", ",")
                spec.prepare(tool.name, [h.name for h in hosts], pw.pw_uid, pw.pw_gid)
                tool.prepare(hosts)
                for phase in ("first", "rerun"):
                    if not detail:
                        print(f"  round {rnd + 1} {variant:10s} {phase:5s}", end="", flush=True)
                    wall = one_run(args, tool, hosts, phase, pw.pw_uid, detail)
                    walls[(variant, phase)].append(wall)
                    cpus[(variant, phase)].append(CPU[-1])

        if not detail:
            print(f"== {args.hosts} hosts, medians of {args.rounds} rounds:")
            for (variant, phase), xs in walls.items():
                print(f"    {variant:10s} {phase:5s} {statistics.median(xs):6.2f}s  "
                      f"(min {min(xs):.2f}, max {max(xs):.2f}); cpu median "
                      f"{statistics.median(cpus[(variant, phase)]):.3f}s, min {min(cpus[(variant, phase)]):.3f}s")
    finally:
        farm.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(spec.BASE / "opsrun", ignore_errors=True)
    return 0


def one_run(args: argparse.Namespace, tool: Opsrun, hosts: list[HostInfo], phase: str, uid: int,
            detail: bool) -> float:
    tool.runs += 1
    argv, cwd = tool.command(hosts)
    argv = [str(PY), str(BENCH / "opsrun_traced.py"), *argv[1:]]
    raw = args.out / f"pyspy-{args.hosts}-{phase}.txt"
    if args.py_spy:
        argv = [str(peers.venv_bin("prof", "py-spy")), "record", "--format", "raw",
                "-r", str(args.rate), "-o", str(raw),
                *([] if os.environ.get("PYSPY_BLOCKING") else ["--nonblocking"]),
                *(["--idle"] if args.idle else []), *(["--gil"] if args.gil else []), "--", *argv]
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(argv, check=False, cwd=cwd, env=tool.env, capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    bad = tool.check_report(hosts, Outcome(wall, 0.0, 0.0, 0, res.returncode, res.stdout, res.stderr),
                            phase)
    bad += [x for h in hosts for x in spec.check(tool.name, h.name, uid)]
    if bad or res.returncode:
        print(f"!! {phase}: rc {res.returncode}, {bad[:3]}\n{res.stderr[-2000:]}")
    trace = next((json.loads(line[8:]) for line in res.stderr.splitlines()
                  if line.startswith("@@trace ")), None)
    if not detail:
        c = trace["counters"] if trace else {}
        print(f" {wall:6.2f}s cpu {CPU[-1]:5.2f}s: channels {c.get('channel:session', '?')}, probe batches "
              f"{c.get('exec:probe-batch', 0)}, SFTP requests "
              f"{sum(v for k, v in c.items() if k.startswith('sftp:'))}")
        return wall
    print(f"== {args.hosts} hosts, {phase}: {wall:.2f}s wall, rc {res.returncode}, "
          f"{'ok' if not bad else bad[:3]}")
    if trace:
        print(f"  in-process wall {trace['wall']:.3f}s, CPU {trace.get('cpu_total', 0):.3f}s")
        for k, v in trace["phases"].items():
            print(f"    {k:34s} at {v.get('start', 0):6.3f}s n={v['n']:<4d} "
                  f"sum={v['sum']:8.3f}s max={v['max']:.3f}s" + (f" cpu={v['cpu']:.3f}s" if v["n"] == 1 else ""))
        print("  counters: " + ", ".join(f"{k}={v}" for k, v in trace["counters"].items()))
    else:
        print(res.stderr[-3000:])
    journals = sorted((tool.state_dir() / "runs").glob("*/events.jsonl"))
    if journals:
        print("  timeline (journal):")
        print("\n".join(timeline(journals[0])))
    if args.py_spy and raw.exists():
        print("\n".join(hot(raw, args.top)))
        print(f"  raw samples: {raw}")
    return wall


if __name__ == "__main__":
    sys.exit(main())
