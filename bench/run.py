"""Benchmark harness: the same workload on the same real sshd hosts with opsrun, ansible-core
(ssh and paramiko connections), pyinfra and a raw paramiko floor; first run and re-run
wall-clock at several host counts; medians, ratios, correctness checks, results files.

Starts sshds on 127.0.0.2.. only and stops them by PID at the end (also on Ctrl-C/failure).
Not a test: run it by hand, as root: .venv/bin/python bench/run.py --hosts 1,10,50 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO))

import peers  # noqa: E402
from tools import TOOLS, HostInfo, Tool  # noqa: E402
from workload import spec  # noqa: E402

from tests.peers.sshd import TEST_USER, SshdFarm, user_ready  # noqa: E402

RESULTS = BENCH / "results"
PHASES = ("first", "rerun")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default="1,10,50", help="host counts, comma-separated (default 1,10,50)")
    p.add_argument("--repeat", type=int, default=5, help="runs of each tool at each count (default 5)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    p.add_argument("--timeout", type=float, default=600, help="seconds one tool run may take")
    p.add_argument("--slow-cap", type=float, default=20,
                   help="a tool whose first run at a host count took longer than this many seconds "
                        "is not repeated at that count (keeps the whole run near 15 minutes; "
                        "0 repeats everything)")
    p.add_argument("--upgrade-peers", action="store_true", help="re-install ansible-core/pyinfra")
    p.add_argument("--log-dir", type=Path, help="save every run's stdout/stderr in this folder")
    p.add_argument("--summarize", type=Path, metavar="RAW_JSON",
                   help="only rewrite bench/results/latest.md from a raw results file")
    p.add_argument("--no-summary", action="store_true",
                   help="do not rewrite bench/results/latest.md (exploratory runs)")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "benchmarks-scaling.png",
                   help="where the summary writes its curve (controller CPU and peak memory per host; "
                        "needs matplotlib in the harness's Python, never in opsrun's dependencies)")
    p.add_argument("--stat", choices=("median", "best"), default="median",
                   help="one number per measurement from its repeats: the median, or the best "
                        "(minimum: on a shared machine other load only ever adds time)")
    p.add_argument("--startup-rounds", type=int, default=9,
                   help="fresh `opsrun --help` and `opsrun validate` processes timed (0: skip)")
    return p.parse_args(argv)


def machine_facts() -> dict[str, Any]:
    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": first_line(["ssh", "-V"]),
        "network": "loopback (127.0.0.x), one sshd per host on this machine",
        "loadavg_at_start": os.getloadavg(),
    }


def git_state() -> dict[str, Any]:
    """Which opsrun was measured: HEAD and the files of runner/ changed since (read-only)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *a], check=False, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"),
            "dirty_runner_files": git("status", "--porcelain", "--", "runner").splitlines()}


def versions(tools: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    res = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c",
                          "import importlib.metadata as m, json; print(json.dumps("
                          "{d: m.version(d) for d in ('opsrun', 'paramiko')}))"],
                         capture_output=True, text=True, check=True, timeout=60)
    for k, v in json.loads(res.stdout).items():
        out[f"opsrun-venv:{k}"] = v
    if any(t.startswith("ansible") for t in tools):
        for k, v in peers.versions("ansible").items():
            out[f"ansible-venv:{k}"] = v
    if "pyinfra" in tools:
        for k, v in peers.versions("pyinfra").items():
            out[f"pyinfra-venv:{k}"] = v
    return out


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts = sorted({int(x) for x in args.hosts.split(",") if x.strip()})
        self.tool_names = [t.strip() for t in args.tools.split(",") if t.strip()]
        unknown = [t for t in self.tool_names if t not in TOOLS]
        if unknown:
            raise SystemExit(f"unknown tool(s) {unknown}; choose from {list(TOOLS)}")
        self.work = Path(tempfile.mkdtemp(prefix="opsrun-bench-"))
        os.chmod(self.work, 0o755)
        self.farm: SshdFarm | None = None
        self.records: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.finished = False
        pw = pwd.getpwnam(TEST_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    # ------------------------------------------------------------ set-up / tear-down
    def start_farm(self) -> list[HostInfo]:
        (self.work / "farm").mkdir()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.farm = SshdFarm(self.work / "farm", TEST_USER)
        n = max(self.counts)
        t0 = time.monotonic()
        for i in range(n):
            self.farm.add(f"h{i + 1:02d}", MaxSessions="100")
        log(f"started {n} sshds on 127.0.0.2..127.0.0.{n + 1} in {time.monotonic() - t0:.1f}s")
        return [HostInfo(p.name, p.address, p.port, p.user, str(p.client_key), str(p.known_hosts))
                for p in self.farm.hosts]

    def stop(self) -> None:
        if self.farm is not None:
            self.farm.stop_all()
            self.farm = None
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(spec.BASE, ignore_errors=True)

    def tool_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SSH_AUTH_SOCK", "ANSIBLE_", "PYINFRA_", "OPSRUN_"))}
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        empty = self.work / "empty_ssh_config"
        empty.write_text("")
        env.update(HOME=str(home), OPSRUN_SSH_CONFIG=str(empty), PYTHONDONTWRITEBYTECODE="",
                   TERM="dumb", NO_COLOR="1", COLUMNS="120")
        return env

    # ------------------------------------------------------------ one measurement
    def measure(self, tool: Tool, hosts: list[HostInfo], rep: int) -> None:
        names = [h.name for h in hosts]
        spec.prepare(tool.name, names, self.uid, self.gid)
        tool.prepare(hosts)
        for phase in PHASES:
            load1 = os.getloadavg()[0]  # beside every number: the machine is shared
            out = tool.run(hosts, self.args.timeout)
            if self.args.log_dir:
                self.args.log_dir.mkdir(parents=True, exist_ok=True)
                stem = self.args.log_dir / f"{tool.name}-{len(hosts)}-{phase}-{rep}"
                stem.with_suffix(".out").write_text(out.stdout)
                stem.with_suffix(".err").write_text(out.stderr)
            bad = [] if out.rc == 0 else [f"exit code {out.rc}"]
            bad += tool.check_report(hosts, out, phase)
            for h in names:
                bad += spec.check(tool.name, h, self.uid)
            rec = {
                "tool": tool.name, "hosts": len(hosts), "phase": phase, "repeat": rep,
                "seconds": round(out.seconds, 4), "cpu_seconds": round(out.cpu_seconds, 3),
                "machine_busy_seconds": round(out.machine_busy, 2), "forks": out.forks,
                "peak_rss_mib": round(out.peak_rss_mib, 1), "load1": round(load1, 2),
                "ok": not bad, "problems": bad[:20],
            }
            self.records.append(rec)
            mark = "ok" if not bad else f"WRONG ({len(bad)} problems)"
            log(f"  {tool.name:17s} {len(hosts):3d} hosts {phase:5s} {out.seconds:7.2f}s "
                f"cpu {out.cpu_seconds:6.2f}s machine {out.machine_busy:6.2f}s "
                f"forks {out.forks:6d} rss {out.peak_rss_mib:5.0f}M load {load1:4.1f}  {mark}")
            if bad:
                self.problems.append(f"{tool.name} {len(hosts)} hosts {phase} #{rep}: {bad[:3]}")
                log("    " + "\n    ".join(bad[:5]))
                tail = (out.stdout[-1500:] + "\n" + out.stderr[-1500:]).strip()
                log("    output tail:\n      " + tail.replace("\n", "\n      "))
                break  # the re-run of a wrong first run proves nothing

    def is_slow(self, tool: str, n: int) -> bool:
        cap = self.args.slow_cap
        return cap > 0 and any(r["tool"] == tool and r["hosts"] == n and r["phase"] == "first"
                               and r["seconds"] > cap for r in self.records)

    def run(self) -> int:
        hosts = self.start_farm()
        env = self.tool_env()
        tools = [TOOLS[name](self.work, dict(env)) for name in self.tool_names]
        started = time.monotonic()
        for rep in range(self.args.repeat):
            for n in self.counts:
                # rotate the order each repeat so slow drift does not favour one tool
                k = rep % len(tools)
                order = tools[k:] + tools[:k]
                log(f"repeat {rep + 1}/{self.args.repeat}, {n} hosts")
                for tool in order:
                    if self.is_slow(tool.name, n):
                        log(f"  {tool.name:17s} {n:3d} hosts  skipped: its first run took over "
                            f"{self.args.slow_cap:g}s (see --slow-cap)")
                        continue
                    self.measure(tool, hosts[:n], rep)
        log(f"measured in {time.monotonic() - started:.0f}s")
        self.finished = True
        return 0 if not self.problems else 1


# ---------------------------------------------------------------- summarising
def pick(raw: dict[str, Any]) -> Any:
    """How the repeats of one measurement become one number: their median, or (`--stat best`,
    for a shared machine whose other load only ever adds time) their minimum."""
    return min if raw.get("settings", {}).get("stat") == "best" else statistics.median


def stat_name(raw: dict[str, Any]) -> str:
    return "best" if pick(raw) is min else "median"


def medians(raw: dict[str, Any]) -> dict[tuple[str, int, str], float]:
    groups: dict[tuple[str, int, str], list[float]] = {}
    for r in raw["records"]:
        if r["ok"]:
            groups.setdefault((r["tool"], r["hosts"], r["phase"]), []).append(r["seconds"])
    return {k: pick(raw)(v) for k, v in groups.items()}


def load_range(raw: dict[str, Any], n: int, phase: str) -> str:
    """The 1-minute load average just before the runs of one row (min–max)."""
    xs = [r["load1"] for r in raw["records"] if r["hosts"] == n and r["phase"] == phase and "load1" in r]
    return f"{min(xs):.1f}–{max(xs):.1f}" if xs else "?"


def spread(records: list[dict[str, Any]], key: tuple[str, int, str]) -> tuple[float, float, int]:
    xs = [r["seconds"] for r in records if r["ok"] and (r["tool"], r["hosts"], r["phase"]) == key]
    return (min(xs), max(xs), len(xs)) if xs else (0.0, 0.0, 0)


SHORT = {"opsrun": "opsrun", "ansible-ssh": "Ansible ssh", "ansible-paramiko": "Ansible paramiko",
         "pyinfra": "pyinfra", "floor": "raw floor", "floor-gcm": "floor, AES-GCM"}


def table(raw: dict[str, Any]) -> str:
    """The one table: medians per tool, then each peer's time over opsrun's (and opsrun's over
    the floor's), per host count and run."""
    recs = raw["records"]
    med = medians(raw)
    tools = [t for t in TOOLS if t in raw["tools"]]
    v = raw["versions"]
    head_names = {
        "opsrun": f"opsrun {v.get('opsrun-venv:opsrun', '?')}",
        "ansible-ssh": f"ansible-core {v.get('ansible-venv:ansible-core', '?')} (ssh)",
        "ansible-paramiko": f"ansible-core {v.get('ansible-venv:ansible-core', '?')} (paramiko)",
        "pyinfra": f"pyinfra {v.get('pyinfra-venv:pyinfra', '?')}",
        "floor": f"raw floor (paramiko {v.get('opsrun-venv:paramiko', '?')})",
        "floor-gcm": "raw floor, AES-GCM first",
    }
    ratio_cols = [t for t in ("ansible-ssh", "ansible-paramiko", "pyinfra") if t in tools]
    cols = ["hosts", "run"] + [head_names[t] for t in tools]
    if "opsrun" in tools:
        cols += [f"{SHORT[t]} ÷ opsrun" for t in ratio_cols]
        if "floor" in tools:
            cols.append("opsrun ÷ floor")
    cols.append("load avg (1 min) before")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for n in sorted({r["hosts"] for r in recs}):
        for phase in PHASES:
            row = [str(n), "first (changes)" if phase == "first" else "re-run (no changes)"]
            for t in tools:
                m = med.get((t, n, phase))
                row.append(f"{m:.2f} s" if m is not None else "n/a")
            o = med.get(("opsrun", n, phase))
            if "opsrun" in tools:
                for t in ratio_cols:
                    m = med.get((t, n, phase))
                    row.append(f"**{m / o:.1f}×**" if m and o else "n/a")
                if "floor" in tools:
                    f = med.get(("floor", n, phase))
                    row.append(f"**{o / f:.2f}×**" if f and o else "n/a")
            row.append(load_range(raw, n, phase))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def per_host_table(raw: dict[str, Any]) -> str:
    """The controller's own cost per host: CPU seconds of the tool's process (and the children
    it waited for) and its peak resident memory, each divided by the host count (medians)."""
    recs = [r for r in raw["records"] if r["ok"] and "peak_rss_mib" in r]
    tools = [t for t in TOOLS if t in raw["tools"]]
    lines = ["| hosts | run | " + " | ".join(f"{SHORT[t]} CPU s (per host)" for t in tools) + " | "
             + " | ".join(f"{SHORT[t]} peak MiB (per host)" for t in tools) + " |",
             "|" + "---|" * (2 * len(tools) + 2)]
    for n in sorted({r["hosts"] for r in recs}):
        for phase in PHASES:
            cpu_cells, mem_cells = [], []
            for t in tools:
                xs = [r for r in recs if (r["tool"], r["hosts"], r["phase"]) == (t, n, phase)]
                if not xs:
                    cpu_cells.append("n/a")
                    mem_cells.append("n/a")
                    continue
                cpu = pick(raw)(r["cpu_seconds"] for r in xs)
                mem = pick(raw)(r["peak_rss_mib"] for r in xs)
                cpu_cells.append(f"{cpu:.2f} ({1000 * cpu / n:.0f} ms)")
                mem_cells.append(f"{mem:.0f} ({mem / n:.1f})")
            lines.append(f"| {n} | {phase} | " + " | ".join(cpu_cells + mem_cells) + " |")
    return "\n".join(lines)


def plot(raw: dict[str, Any], path: Path) -> str:
    """The curve: controller CPU seconds and peak memory, per host, against the host count,
    each tool's first run and re-run. matplotlib is the harness's own (pip install it into
    the Python that runs bench/run.py); "" when done, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed in the harness's Python: no plot"
    recs = [r for r in raw["records"] if r["ok"] and "peak_rss_mib" in r]
    tools = [t for t in TOOLS if t in raw["tools"]]
    counts = sorted({r["hosts"] for r in recs})
    fig, grid = plt.subplots(2, 2, figsize=(12, 8.5))
    axes = list(grid.flat)
    for t in tools:
        for phase, style in (("first", "-"), ("rerun", "--")):
            xs: list[int] = []
            series: list[list[float]] = [[], [], [], []]
            for n in counts:
                got = [r for r in recs if (r["tool"], r["hosts"], r["phase"]) == (t, n, phase)]
                if got:
                    xs.append(n)
                    cpu = pick(raw)(r["cpu_seconds"] for r in got)
                    series[0].append(pick(raw)(r["seconds"] for r in got))
                    series[1].append(cpu)
                    series[2].append(1000 * cpu / n)
                    series[3].append(pick(raw)(r["peak_rss_mib"] for r in got) / n)
            if xs:
                label = f"{SHORT[t]} {'first run' if phase == 'first' else 're-run'}"
                for ax, ys in zip(axes, series, strict=True):
                    ax.plot(xs, ys, style, marker="o", label=label)
    titles = ("wall-clock of the whole command (s)", "controller CPU, whole run (s)",
              "controller CPU per host (ms)", "controller peak memory per host (MiB)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("hosts")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"bench/run.py {raw['date']}, opsrun {raw.get('git', {}).get('head', '?')}: "
                 "the same workload on N real sshds (2 shared cores)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""


def startup_table(raw: dict[str, Any]) -> str:
    got = raw.get("startup") or {}
    if not got:
        return ""
    cells = [f"`opsrun {c}` {statistics.median(xs):.3f} s (min {min(xs):.3f}, {len(xs)} runs)"
             for c, xs in got.items() if xs]
    return "Start-up without any host (fresh processes, bench/startup.py): " + "; ".join(cells) + "."


def work_table(raw: dict[str, Any]) -> str:
    """Medians of the work behind the times: the tool's own CPU, the whole machine's busy CPU
    (sshds and remote shells share the same 2 cores) and processes created."""
    recs = [r for r in raw["records"] if r["ok"] and "forks" in r]
    tools = [t for t in TOOLS if t in raw["tools"]]
    lines = ["| hosts | run | " + " | ".join(SHORT[t] for t in tools) + " |",
             "|" + "---|" * (len(tools) + 2)]
    for n in sorted({r["hosts"] for r in recs}):
        for phase in PHASES:
            row = [str(n), phase]
            for t in tools:
                xs = [r for r in recs if (r["tool"], r["hosts"], r["phase"]) == (t, n, phase)]
                if not xs:
                    row.append("n/a")
                    continue
                cpu = pick(raw)(r["cpu_seconds"] for r in xs)
                busy = pick(raw)(r["machine_busy_seconds"] for r in xs)
                forks = pick(raw)(r["forks"] for r in xs)
                row.append(f"{cpu:.2f} / {busy:.1f} / {forks:.0f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets(raw: dict[str, Any]) -> list[str]:
    """Issue 14's targets: first run >= 2x faster than pyinfra and <= 1.5x the floor at 10 and
    50 hosts; the no-change re-run <= 1.3x the floor (at every count measured)."""
    med = medians(raw)
    out = []
    for n in (10, 50):
        o = med.get(("opsrun", n, "first"))
        m = med.get(("pyinfra", n, "first"))
        if o and m:
            r = m / o
            out.append(f"- first run, {n} hosts: pyinfra ÷ opsrun = {r:.2f}× (target ≥ 2×): "
                       f"{'met' if r >= 2 else 'MISSED'}")
        f = med.get(("floor", n, "first"))
        if o and f:
            r = o / f
            out.append(f"- first run, {n} hosts: opsrun ÷ floor = {r:.2f}× (target ≤ 1.5×): "
                       f"{'met' if r <= 1.5 else 'MISSED'}")
        for peer in ("ansible-ssh", "ansible-paramiko"):
            a = med.get((peer, n, "first"))
            if o and a:
                out.append(f"- first run, {n} hosts: {peer} ÷ opsrun = {a / o:.1f}× (for reference)")
    for n in sorted({r["hosts"] for r in raw["records"]}):
        o, f = med.get(("opsrun", n, "rerun")), med.get(("floor", n, "rerun"))
        if o and f:
            r = o / f
            out.append(f"- re-run, {n} host{'s' if n > 1 else ''}: opsrun ÷ floor = {r:.2f}× (target ≤ 1.3×): "
                       f"{'met' if r <= 1.3 else 'MISSED'}")
    return out


def summary_md(raw: dict[str, Any], raw_name: str) -> str:
    m = raw["machine"]
    by_venv: dict[str, list[str]] = {}
    for k, v in raw["versions"].items():
        venv, _, dist = k.partition(":")
        by_venv.setdefault(venv.removesuffix("-venv"), []).append(f"{dist} {v}")
    vers = "; ".join(f"{venv}: {', '.join(d)}" for venv, d in by_venv.items())
    git = raw.get("git", {})
    dirty = git.get("dirty_runner_files") or []
    moved = raw.get("git_at_start", git) != git
    lines = [
        f"# Benchmark results ({raw['date']})",
        "",
        f"Command: `{raw['command']}` (effective: repeat {raw.get('settings', {}).get('repeat')}, "
        f"slow-cap {raw.get('settings', {}).get('slow_cap', '?'):g} s), "
        f"{m.get('harness_seconds', '?')} s in all.  ",
        f"opsrun measured: commit {git.get('head', '?')}"
        + (f" with {len(dirty)} changed file(s) in runner/" if dirty else "")
        + (" (WARNING: runner/ changed during the run; opsrun's numbers mix two versions)"
           if moved else "") + ".  ",
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['openssh']}, {m['network']}; load average "
        f"{m['loadavg_at_start'][0]:.1f} at start, {m.get('loadavg_at_end', [0])[0]:.1f} at end "
        "(the machine is shared).  ",
        f"Versions: {vers}.  ",
        f"{stat_name(raw).capitalize()} of {raw['repeat']} runs (wall-clock of the whole command, seconds); "
        f"ratios are slower ÷ faster of those {stat_name(raw)}s. Raw: `bench/results/{raw_name}` "
        "(not committed).",
        "",
        table(raw),
        "",
        "Targets:",
        "",
        *targets(raw),
        "",
    ]
    if raw["problems"]:
        lines += ["Runs refused by the correctness check (left out of the medians):", ""]
        lines += [f"- {p}" for p in raw["problems"]] + [""]
    lines += [f"The controller's cost per host ({stat_name(raw)}): CPU seconds of the tool's own process (and "
              "the children it waited for), and its peak resident memory (the largest of those "
              "processes), each also divided by the host count:", "",
              per_host_table(raw), ""]
    if raw.get("plot"):
        lines += [f"The curve: [`{raw['plot']}`](../../{raw['plot']}).", ""]
    if raw.get("startup"):
        lines += [startup_table(raw), ""]
    lines += [f"Work per run ({stat_name(raw)}): the tool's own CPU seconds / the whole machine's busy "
              "CPU seconds (the sshds and remote shells share the 2 cores, and so does anything "
              "else running on this machine) / processes created on the machine:", "",
              work_table(raw), ""]
    lines += ["Spread (min–max over repeats, seconds; n = runs kept):", "",
              "| tool | hosts | first | re-run |", "|---|---|---|---|"]
    for t in [t for t in TOOLS if t in raw["tools"]]:
        for n in sorted({r["hosts"] for r in raw["records"]}):
            cells = []
            for phase in PHASES:
                lo, hi, k = spread(raw["records"], (t, n, phase))
                cells.append(f"{lo:.2f}–{hi:.2f} (n={k})" if k else "n/a")
            lines.append(f"| {t} | {n} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _repo_path(path: Path) -> str:
    p = path.resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        raw = json.loads(args.summarize.read_text())
        why = plot(raw, args.plot)
        raw["plot"] = "" if why else _repo_path(args.plot)
        (RESULTS / "latest.md").write_text(summary_md(raw, args.summarize.name))
        print(table(raw))
        print(why or f"wrote {args.plot}")
        return 0
    if os.geteuid() != 0:
        log("run as root: the sshds log in as the test user, and the harness prepares its folders")
        return 2
    if not user_ready(TEST_USER):
        log(f"user {TEST_USER} missing: run tests/peers/setup_ssh.sh as root first")
        return 2
    tool_names = [t.strip() for t in args.tools.split(",")]
    if any(t.startswith("ansible") for t in tool_names):
        peers.ensure("ansible", upgrade=args.upgrade_peers, log=log)
    if "pyinfra" in tool_names:
        peers.ensure("pyinfra", upgrade=args.upgrade_peers, log=log)
    vers = versions(tool_names)
    log("versions: " + ", ".join(f"{k}={v}" for k, v in vers.items()))

    # SIGTERM ends the run like Ctrl-C does, so the sshds are stopped either way.
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    harness = Harness(args)
    facts = machine_facts()
    git_at_start = git_state()
    started = time.monotonic()
    rc = 1
    try:
        rc = harness.run()
    except KeyboardInterrupt:
        log("interrupted: stopping the sshds")
        rc = 130
    except Exception:  # a harness bug or a hung tool: keep what was measured, stop the sshds
        import traceback

        log(traceback.format_exc())
        rc = 1
    finally:
        harness.stop()
        facts["loadavg_at_end"] = os.getloadavg()
        facts["harness_seconds"] = round(time.monotonic() - started)
    if not harness.records:
        return rc
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    raw = {
        "date": date, "command": "bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "hosts": harness.counts, "repeat": args.repeat, "tools": harness.tool_names,
        "settings": {"repeat": args.repeat, "slow_cap": args.slow_cap, "timeout": args.timeout,
                     "stat": args.stat},
        "versions": vers, "machine": facts, "git": git_state(), "git_at_start": git_at_start,
        "records": harness.records,
        "problems": harness.problems, "complete": harness.finished,
    }
    if args.startup_rounds and "opsrun" in harness.tool_names and harness.finished:
        import startup

        log(f"timing opsrun --help and validate ({args.startup_rounds} rounds)")
        raw["startup"] = startup.measure([REPO], args.startup_rounds)[str(REPO)]
    RESULTS.mkdir(exist_ok=True)
    raw_name = f"{date}.raw.json"
    (RESULTS / raw_name).write_text(json.dumps(raw, indent=1) + "\n")
    print(table(raw))
    print("\n".join(targets(raw)))
    if not args.no_summary and harness.finished:
        why = plot(raw, args.plot)
        raw["plot"] = "" if why else _repo_path(args.plot)
        log(why or f"wrote {args.plot}")
        (RESULTS / "latest.md").write_text(summary_md(raw, raw_name))
        log(f"wrote bench/results/{raw_name} and bench/results/latest.md")
    else:
        log(f"wrote bench/results/{raw_name}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
