"""Start-up of the commands that touch no host: `opsrun --help` and `opsrun validate` of the
benchmark workload, wall-clock of fresh processes, for one or more opsrun trees side by side.

Not a test. bench/run.py calls measure() for the checkout it is in; by hand, to compare trees:
  .venv/bin/python bench/startup.py --rounds 15 . /tmp/opsrun-at-some-commit
(a tree is a folder holding runner/ and schemas/, e.g. `git archive COMMIT runner schemas | tar -x`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = REPO / ".venv" / "bin" / "python"
INVENTORY = ("opsrun: 1\nhosts:\n  h01: {transport: ssh, address: 127.0.0.2, vars: {root: /tmp/x}}\n"
             "groups:\n  bench: {hosts: [h01]}\n")
COMMANDS = {"--help": ["--help"], "validate": ["validate", str(BENCH / "workload" / "opsrun.yaml"), "-i", "INV"]}


def _once(tree: Path, argv: list[str], inventory: Path, cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSRUN_")}
    env.update(PYTHONPATH=str(tree), TERM="dumb", NO_COLOR="1", COLUMNS="120")
    args = [str(inventory) if a == "INV" else a for a in argv]
    t0 = time.perf_counter()
    res = subprocess.run([str(PY), "-m", "runner", *args], check=False, cwd=cwd, env=env, capture_output=True,
                         timeout=120)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"opsrun {' '.join(args)} in {tree} exited {res.returncode}: {res.stderr[-500:]!r}")
    return took


def measure(trees: list[Path], rounds: int = 9) -> dict[str, dict[str, list[float]]]:
    """tree -> command -> wall seconds of each round (trees and commands interleaved)."""
    out: dict[str, dict[str, list[float]]] = {str(t): {c: [] for c in COMMANDS} for t in trees}
    with tempfile.TemporaryDirectory(prefix="opsrun-startup-") as work:
        inventory = Path(work) / "inventory.yaml"
        inventory.write_text(INVENTORY)
        for tree in trees:  # one unmeasured run each: byte-code caches written
            for argv in COMMANDS.values():
                _once(tree, argv, inventory, Path(work))
        for _ in range(rounds):
            for tree in trees:
                for name, argv in COMMANDS.items():
                    out[str(tree)][name].append(_once(tree, argv, inventory, Path(work)))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="*", type=Path, default=[REPO])
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args()
    trees = [t.resolve() for t in args.trees]
    got = measure(trees, args.rounds)
    for tree, cmds in got.items():
        cells = [f"{c} {statistics.median(xs):.3f} s (min {min(xs):.3f})" for c, xs in cmds.items()]
        print(f"{tree}: " + ", ".join(cells))
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
