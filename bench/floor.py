"""The raw floor: the benchmark workload sent straight over paramiko, as a separate process.

One connection per host (TCP_NODELAY on, host key checked against known_hosts), hosts in
parallel threads; state items over one SFTP session (read, compare, write only when
different), the five commands as one exec channel each. No planning, journal or framework:
the least a tool could do. Usage: python bench/floor.py HOSTS.json  (prints JSON results).
"""

from __future__ import annotations

import json
import re
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import spec


def _read(sftp: paramiko.SFTPClient, path: str) -> bytes | None:
    try:
        with sftp.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _write(sftp: paramiko.SFTPClient, path: str, data: bytes, mode: int) -> None:
    head, _, name = path.rpartition("/")
    tmp = f"{head}/.{name}.floor-tmp"
    with sftp.open(tmp, "wb") as fh:
        fh.write(data)
    sftp.chmod(tmp, mode)
    sftp.posix_rename(tmp, path)


def _ensure_line(text: str, regexp: str, line: str) -> str:
    lines = text.splitlines()
    pat = re.compile(regexp)
    hits = [i for i, cur in enumerate(lines) if pat.search(cur)]
    if hits:
        lines[hits[-1]] = line
    elif line not in lines:
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_host(h: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    changed = 0
    root = h["root"]
    client = paramiko.SSHClient()
    client.load_host_keys(h["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((h["address"], h["port"]), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(h["address"], h["port"], username=h["user"], key_filename=h["key"], sock=sock,
                   look_for_keys=False, allow_agent=False, timeout=10)
    try:
        sftp = client.open_sftp()
        # 1. directory
        d = f"{root}/{spec.DIR}"
        try:
            st = sftp.stat(d)
            if stat.S_IMODE(st.st_mode or 0) != spec.DIR_MODE:
                sftp.chmod(d, spec.DIR_MODE)
                changed += 1
        except FileNotFoundError:
            sftp.mkdir(d, spec.DIR_MODE)
            sftp.chmod(d, spec.DIR_MODE)
            changed += 1
        # 2. file with content
        f = f"{root}/{spec.FILE}"
        want = spec.CONTENT.encode()
        if _read(sftp, f) != want:
            _write(sftp, f, want, spec.FILE_MODE)
            changed += 1
        elif stat.S_IMODE(sftp.stat(f).st_mode or 0) != spec.FILE_MODE:
            sftp.chmod(f, spec.FILE_MODE)
            changed += 1
        # 3. a line in a file
        lf = f"{root}/{spec.LINE_FILE}"
        cur = (_read(sftp, lf) or b"").decode()
        new = _ensure_line(cur, spec.LINE_REGEXP, spec.LINE)
        if new != cur:
            _write(sftp, lf, new.encode(), stat.S_IMODE(sftp.stat(lf).st_mode or 0o644))
            changed += 1
        # 4-8. five commands, one exec channel each
        outputs = []
        for command in spec.COMMANDS:
            chan = client.get_transport().open_session()
            chan.exec_command(f"/bin/sh -c '{command}'")
            out = b""
            while True:
                data = chan.recv(65536)
                if not data:
                    break
                out += data
            rc = chan.recv_exit_status()
            chan.close()
            if rc != 0:
                raise RuntimeError(f"{h['name']}: {command!r} exited {rc}")
            outputs.append(out.decode(errors="replace"))
            changed += 1
        # 9. a file absent
        try:
            sftp.remove(f"{root}/{spec.ABSENT}")
            changed += 1
        except FileNotFoundError:
            pass
        sftp.close()
    finally:
        client.close()
    return {"host": h["name"], "changed": changed, "ok": True, "echo": outputs[-1].strip(),
            "seconds": round(time.monotonic() - t0, 4)}


def main() -> int:
    hosts = json.loads(Path(sys.argv[1]).read_text())
    if "--gcm" in sys.argv[2:]:  # the floor with opsrun's cipher order (AES-GCM first)
        pref = paramiko.Transport._preferred_ciphers
        gcm = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
        paramiko.Transport._preferred_ciphers = (*gcm, *(c for c in pref if c not in gcm))
    results: list[dict[str, Any]] = [{} for _ in hosts]

    def work(i: int) -> None:
        try:
            results[i] = run_host(hosts[i])
        except Exception as exc:  # reported per host, like a tool's recap
            results[i] = {"host": hosts[i]["name"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(hosts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(results))
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
