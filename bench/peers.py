"""Installs the benchmark's peer tools (ansible-core + paramiko, pyinfra) into their own
virtualenvs under bench/.venvs/ and reports their versions.

It only ever touches bench/.venvs/; never the project's .venv or the system Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENVS = BENCH / ".venvs"

# venv name -> (requirements, distributions whose versions are recorded)
PEERS: dict[str, tuple[list[str], list[str]]] = {
    "ansible": (["ansible-core", "paramiko"], ["ansible-core", "paramiko"]),
    "pyinfra": (["pyinfra"], ["pyinfra", "paramiko", "gevent"]),
    # not a peer: the sampling profiler bench/profile_opsrun.py uses
    "prof": (["py-spy"], ["py-spy"]),
}


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def venv_bin(name: str, program: str) -> Path:
    return VENVS / name / "bin" / program


def _base_python() -> str:
    """The interpreter the venvs are made from (the one running us, minus any venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure(name: str, *, upgrade: bool = False, log=print) -> None:  # type: ignore[no-untyped-def]
    reqs, _ = PEERS[name]
    py = venv_python(name)
    marker = VENVS / name / ".bench-installed"
    if py.exists() and marker.exists() and not upgrade:
        return
    VENVS.mkdir(parents=True, exist_ok=True)
    if not py.exists():
        log(f"creating {VENVS / name}")
        subprocess.run([_base_python(), "-m", "venv", str(VENVS / name)], check=True, timeout=300)
    log(f"installing {' '.join(reqs)} into {VENVS / name} (latest that installs on "
        f"Python {sys.version_info.major}.{sys.version_info.minor})")
    subprocess.run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--upgrade", *reqs],
        check=True, timeout=900,
    )
    marker.write_text("ok\n")


def versions(name: str) -> dict[str, str]:
    _, dists = PEERS[name]
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        f"for d in {dists!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([str(venv_python(name)), "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    out: dict[str, str] = json.loads(res.stdout)
    return out


if __name__ == "__main__":
    for peer in ("ansible", "pyinfra"):
        ensure(peer, upgrade="--upgrade" in sys.argv)
        print(peer, versions(peer))
    sys.exit(0)
