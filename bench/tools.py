"""How each benchmarked tool is driven: its generated inventory/config, its command line, and
how its own report is checked (a run that did not do every task on every host is refused).

Writes only into the harness's private work folder; starts tools, never sshds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers import venv_bin
from workload import spec

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKLOAD = BENCH / "workload"
OPSRUN = REPO / ".venv" / "bin" / "opsrun"
PROJECT_PY = REPO / ".venv" / "bin" / "python"


@dataclass
class HostInfo:
    """One sshd as the tools see it."""

    name: str
    address: str
    port: int
    user: str
    key: str
    known_hosts: str


@dataclass
class Outcome:
    seconds: float
    cpu_seconds: float  # user+sys of the tool and the children it waited for
    machine_busy: float  # CPU-seconds the whole machine spent busy meanwhile (sshds too)
    forks: int  # processes created on the machine meanwhile (sshd sessions, shells, probes)
    rc: int
    stdout: str
    stderr: str
    peak_rss_mib: float = 0.0  # the largest resident set of the tool or a child it waited for


class Tool:
    """One tool under test. `first_changes`/`rerun_changes`: what its report must say."""

    name = ""
    label = ""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.runs = 0

    def prepare(self, hosts: list[HostInfo]) -> None:
        """Write the inventory (and config) for these hosts."""

    def command(self, hosts: list[HostInfo]) -> tuple[list[str], Path]:
        """argv and cwd of one run."""
        raise NotImplementedError

    def after_run(self) -> None:
        """Stop anything the run left behind (e.g. ssh ControlMaster processes)."""

    def check_report(self, hosts: list[HostInfo], out: Outcome, phase: str) -> list[str]:
        """What the tool's own report says went wrong (changed/ok counts per host)."""
        raise NotImplementedError

    def run(self, hosts: list[HostInfo], timeout: float) -> Outcome:
        import tempfile
        import threading
        import time

        self.runs += 1
        argv, cwd = self.command(hosts)
        busy0, forks0 = machine_busy(), machine_forks()
        with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=out_f, stderr=err_f, start_new_session=True)
            # wait4 gives this run's own rusage: CPU of the tool and the children it waited
            # for, and the peak resident memory of the largest of those processes
            timer = threading.Timer(timeout, _kill_group, (proc.pid,))
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                # Ctrl-C: end the tool and its process group (it is our child).
                _kill_group(proc.pid)
                proc.wait()
                self.after_run()
                raise
            finally:
                timer.cancel()
            seconds = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            busy, forks = machine_busy() - busy0, machine_forks() - forks0
            out_f.seek(0)
            err_f.seek(0)
            stdout = out_f.read().decode("utf-8", "replace")
            stderr = err_f.read().decode("utf-8", "replace")
        cpu = usage.ru_utime + usage.ru_stime
        self.after_run()
        return Outcome(seconds, cpu, busy, forks, proc.returncode, stdout, stderr,
                       peak_rss_mib=usage.ru_maxrss / 1024)

    def root(self, host: str) -> str:
        return str(spec.root(self.name, host))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def machine_busy() -> float:
    """Busy CPU-seconds of the whole machine since boot (all cores, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def machine_forks() -> int:
    """Processes created on the machine since boot (/proc/stat `processes`)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    return 0


def _counts_problem(host: str, got: dict[str, int], want: dict[str, int]) -> str | None:
    if all(got.get(k, 0) == v for k, v in want.items()):
        return None
    return f"{host}: report says {got}, want {want}"


def _want(phase: str) -> dict[str, int]:
    changed = spec.N_CHANGES_FIRST if phase == "first" else spec.N_CHANGES_RERUN
    return {"ok": spec.N_TASKS - changed, "changed": changed, "failed": 0, "unreachable": 0}


# ---------------------------------------------------------------------------- opsrun
class Opsrun(Tool):
    name = "opsrun"
    label = "opsrun"

    def prepare(self, hosts: list[HostInfo]) -> None:
        import yaml

        inv: dict[str, Any] = {"opsrun": 1, "hosts": {}, "groups": {"bench": {"hosts": []}}}
        for h in hosts:
            inv["hosts"][h.name] = {
                "transport": "ssh", "address": h.address, "port": h.port, "user": h.user,
                "key": h.key, "known_hosts": "strict", "known_hosts_file": h.known_hosts,
                "connect_timeout": 10, "vars": {"root": self.root(h.name)},
            }
            inv["groups"]["bench"]["hosts"].append(h.name)
        (self.work / "inventory.yaml").write_text(yaml.safe_dump(inv, sort_keys=False))

    def state_dir(self) -> Path:
        return self.work / "state" / str(self.runs)

    def command(self, hosts: list[HostInfo]) -> tuple[list[str], Path]:
        self.env["OPSRUN_STATE_DIR"] = str(self.state_dir())
        self.env["PYTHONPATH"] = str(REPO)  # the checkout the harness is in, not the venv's install
        return ([str(OPSRUN), "apply", str(WORKLOAD / "opsrun.yaml"), "-i",
                 str(self.work / "inventory.yaml"), "--yes", "--forks", str(len(hosts))],
                self.work)

    def check_report(self, hosts: list[HostInfo], out: Outcome, phase: str) -> list[str]:
        runs = sorted((self.state_dir() / "runs").glob("*/events.jsonl"))
        if len(runs) != 1:
            return [f"expected one journal under {self.state_dir()}, found {len(runs)}"]
        counts: dict[str, dict[str, int]] = {h.name: {} for h in hosts}
        echo: dict[str, str] = {}
        for line in runs[0].read_text().splitlines():
            ev = json.loads(line)
            if ev.get("type") == "step_end" and ev.get("host") in counts:
                c = counts[ev["host"]]
                c[ev["status"]] = c.get(ev["status"], 0) + 1
            if ev.get("type") == "attempt" and ev.get("step") == "echo":
                echo[ev["host"]] = ev.get("stdout_tail", "")
        bad = [p for h in hosts if (p := _counts_problem(h.name, counts[h.name], _want(phase)))]
        bad += [f"{h.name}: `echo x` printed {echo.get(h.name)!r}" for h in hosts
                if echo.get(h.name, "").strip() != "x"]
        return bad


# ---------------------------------------------------------------------------- ansible
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                    re.M)


class Ansible(Tool):
    connection = "ssh"

    def prepare(self, hosts: list[HostInfo]) -> None:
        h0 = hosts[0]
        empty = self.work / "ssh_config"
        empty.write_text("")
        self.cp_dir = self.work / "cp"
        self.cp_dir.mkdir(exist_ok=True)
        cfg = [
            "[defaults]",
            f"forks = {len(hosts)}",
            "host_key_checking = True",
            "gathering = explicit",
            "interpreter_python = /usr/bin/python3",
            "retry_files_enabled = False",
            "deprecation_warnings = False",
            "nocolor = True",
            f"local_tmp = {self.work / 'ansible-local'}",
            "",
            "[ssh_connection]",
            "pipelining = True",
            f"control_path_dir = {self.cp_dir}",
            "",
            "[paramiko_connection]",
            "record_host_keys = False",
            "",
        ]
        (self.work / "ansible.cfg").write_text("\n".join(cfg))
        common = (f"-F {empty} -o UserKnownHostsFile={h0.known_hosts} "
                  "-o StrictHostKeyChecking=yes")
        lines = ["[bench]"]
        for h in hosts:
            lines.append(f"{h.name} ansible_host={h.address} ansible_port={h.port} "
                         f"root={self.root(h.name)}")
        lines += [
            "", "[bench:vars]",
            f"ansible_connection={self.connection}",
            f"ansible_user={h0.user}",
            f"ansible_ssh_private_key_file={h0.key}",
            "ansible_python_interpreter=/usr/bin/python3",
            f"ansible_ssh_common_args={shlex.quote(common)}" if self.connection == "ssh" else "",
            "",
        ]
        (self.work / "inventory.ini").write_text("\n".join(lines))
        # The paramiko connection reads ~/.ssh/known_hosts ($HOME is the harness's own).
        home_ssh = Path(self.env["HOME"]) / ".ssh"
        home_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        (home_ssh / "known_hosts").write_text(Path(h0.known_hosts).read_text())

    def command(self, hosts: list[HostInfo]) -> tuple[list[str], Path]:
        self.env["ANSIBLE_CONFIG"] = str(self.work / "ansible.cfg")
        return ([str(venv_bin("ansible", "ansible-playbook")), "-i",
                 str(self.work / "inventory.ini"), str(WORKLOAD / "ansible.yml"),
                 "-f", str(len(hosts))], self.work)

    def after_run(self) -> None:
        """ControlPersist masters outlive ansible-playbook: end them so every run starts cold."""
        if self.connection != "ssh" or not getattr(self, "cp_dir", None):
            return
        for sock in self.cp_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"], check=False,
                           capture_output=True, timeout=10)
        _kill_matching(str(self.cp_dir))

    def check_report(self, hosts: list[HostInfo], out: Outcome, phase: str) -> list[str]:
        found = {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]),
                        "failed": int(m[4])} for m in _RECAP.findall(out.stdout)}
        want = _want(phase)
        want = {**want, "ok": spec.N_TASKS}  # ansible counts changed tasks as ok too
        bad = []
        for h in hosts:
            if h.name not in found:
                bad.append(f"{h.name}: not in PLAY RECAP")
            elif p := _counts_problem(h.name, found[h.name], want):
                bad.append(p)
        return bad


class AnsibleSsh(Ansible):
    name = "ansible-ssh"
    label = "Ansible (ssh)"
    connection = "ssh"


class AnsibleParamiko(Ansible):
    name = "ansible-paramiko"
    label = "Ansible (paramiko)"
    connection = "paramiko"


def _kill_matching(needle: str) -> None:
    """SIGTERM processes whose command line names our private folder (leftover ssh masters
    this harness caused); matched by PID, never by program name."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline and "ssh" in cmdline.split(" ")[0]:
            try:
                os.kill(int(entry), signal.SIGTERM)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------------- pyinfra
_PYINFRA_OP = re.compile(r"^\s*\[(\S+)\]\s+(Success|No changes|Error)", re.M)


class Pyinfra(Tool):
    name = "pyinfra"
    label = "pyinfra"

    def prepare(self, hosts: list[HostInfo]) -> None:
        rows = []
        for h in hosts:
            data = {
                "ssh_hostname": h.address, "ssh_port": h.port, "ssh_user": h.user,
                "ssh_key": h.key, "ssh_known_hosts_file": h.known_hosts,
                "ssh_strict_host_key_checking": "yes", "root": self.root(h.name),
            }
            rows.append(f"    ({h.name!r}, {data!r}),")
        (self.work / "inventory.py").write_text("bench = [\n" + "\n".join(rows) + "\n]\n")

    def command(self, hosts: list[HostInfo]) -> tuple[list[str], Path]:
        return ([str(venv_bin("pyinfra", "pyinfra")), str(self.work / "inventory.py"),
                 str(WORKLOAD / "pyinfra_deploy.py"), "-y", "--parallel", str(len(hosts))],
                self.work)

    def check_report(self, hosts: list[HostInfo], out: Outcome, phase: str) -> list[str]:
        counts: dict[str, dict[str, int]] = {h.name: {"ok": 0, "changed": 0, "failed": 0,
                                                      "unreachable": 0} for h in hosts}
        text = out.stdout + out.stderr
        for host, status in _PYINFRA_OP.findall(text):
            if host in counts:
                key = {"Success": "changed", "No changes": "ok", "Error": "failed"}[status]
                counts[host][key] += 1
        return [p for h in hosts if (p := _counts_problem(h.name, counts[h.name], _want(phase)))]


# ---------------------------------------------------------------------------- raw floor
class Floor(Tool):
    name = "floor"
    label = "raw paramiko floor"

    def prepare(self, hosts: list[HostInfo]) -> None:
        data = [{**h.__dict__, "root": self.root(h.name)} for h in hosts]
        (self.work / "hosts.json").write_text(json.dumps(data))

    def command(self, hosts: list[HostInfo]) -> tuple[list[str], Path]:
        return [str(PROJECT_PY), str(BENCH / "floor.py"), str(self.work / "hosts.json")], self.work

    def check_report(self, hosts: list[HostInfo], out: Outcome, phase: str) -> list[str]:
        try:
            results = {r["host"]: r for r in json.loads(out.stdout)}
        except ValueError:
            return ["floor printed no JSON"]
        want = spec.N_CHANGES_FIRST if phase == "first" else spec.N_CHANGES_RERUN
        bad = []
        for h in hosts:
            r = results.get(h.name, {})
            if not r.get("ok"):
                bad.append(f"{h.name}: {r.get('error', 'no result')}")
            elif r["changed"] != want or r["echo"] != "x":
                bad.append(f"{h.name}: changed {r['changed']} (want {want}), echo {r['echo']!r}")
        return bad


class FloorGcm(Floor):
    """The floor offering AES-GCM first, as opsrun does (paramiko's default is aes128-ctr with
    hmac-sha2-256): how much of opsrun's distance to the floor the cipher choice hides."""

    name = "floor-gcm"
    label = "raw paramiko floor, AES-GCM"

    def command(self, hosts: list[HostInfo]) -> tuple[list[str], Path]:
        argv, cwd = super().command(hosts)
        return [*argv, "--gcm"], cwd


TOOLS: dict[str, type[Tool]] = {
    t.name: t for t in (Opsrun, AnsibleSsh, AnsibleParamiko, Pyinfra, Floor, FloorGcm)
}
