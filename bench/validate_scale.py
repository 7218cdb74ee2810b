"""How `opsrun validate` scales with the number of steps (issue 11: it was quadratic).

Generates playbooks of N steps (run/file/line with templates, `when`, step references) and
times `opsrun validate` on each in a fresh process. Usage:
    PYTHONPATH=. python bench/validate_scale.py 1000 5000 20000
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def playbook(n: int) -> str:
    lines = ["opsrun: 1", "name: big", "hosts: local", "vars:", "  base: /tmp/big", "steps:"]
    for i in range(n):
        lines += [f"  - id: s{i}", f"    name: step {i}"]
        if i % 3 == 0:
            ref = f" {{{{ steps.s{i - 1}.rc }}}}" if i else ""
            lines.append(f'    run: "echo {{{{ base }}}}{ref}"')
        elif i % 3 == 1:
            lines.append(f'    file: {{path: "{{{{ base }}}}/f{i}", state: directory, mode: "0755"}}')
        else:
            lines.append(f'    line: {{path: /tmp/big/l, line: "x={i}", create: true}}')
        if i % 5 == 0 and i:
            lines.append("    when: steps.s0.rc == 0")
    return "\n".join(lines) + "\n"


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'steps':>8} {'MB':>6} {'wall s':>8} {'cpu s':>7}  result")
        for n in sizes:
            path = Path(tmp) / f"big{n}.yaml"
            path.write_text(playbook(n))
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "runner", "validate", str(path)], check=False, cwd=tmp,
                               capture_output=True, text=True, env=dict(os.environ))
            wall = time.monotonic() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            result = (p.stdout or p.stderr).strip().splitlines()[-1:]
            mb = path.stat().st_size / 1e6
            print(f"{n:>8} {mb:>6.1f} {wall:>8.2f} {cpu:>7.2f}  {result[0] if result else p.returncode}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 5000, 20000])
