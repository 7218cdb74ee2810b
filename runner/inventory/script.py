"""Executable (dynamic) inventories, the Ansible protocol: `SCRIPT --list` prints JSON of groups
(with `_meta.hostvars`), else `SCRIPT --host NAME` per host. Bounded in time and output; runs
only the inventory program itself, never a target.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

from runner import load
from runner.errors import Diagnostic, InvalidInput, OpsrunError
from runner.inventory import ansible

TIMEOUT = 60.0  # seconds for one run of the program
MAX_OUTPUT = 16 * 1024 * 1024  # bytes of stdout kept; more is an error
STDERR_TAIL = 2000  # characters of stderr shown in an error
MAX_HOST_CALLS = 10_000  # `--host NAME` calls when the --list output has no _meta


def is_program(path: Path) -> bool:
    """An executable file that starts like a program (#! or ELF): a YAML or INI file that
    happens to have its x bit set (a Windows share, a careless chmod) is read, not run."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(b"#!") or head == b"\x7fELF"


def read(path: Path) -> ansible.Tree:
    """Run the program with --list (and --host NAME when the output has no _meta)."""
    label = f"{path} --list"
    text = _run(path, ["--list"])
    doc = _json(text, label)
    tree, has_meta = ansible.from_list_json(doc, ansible.Tree(str(path), text))
    if not has_meta and not tree.errors:
        if len(tree.hosts) > MAX_HOST_CALLS:
            raise _invalid(path, f"{len(tree.hosts)} hosts and no _meta.hostvars in the --list output",
                         'print "_meta": {"hostvars": {...}} with --list (one call instead of one per host)')
        for name in list(tree.hosts):
            host_label = f"{path} --host {name}"
            out = _run(path, ["--host", name])
            hdoc = _json(out, host_label)
            if hdoc.data is None:
                continue
            if not isinstance(hdoc.data, dict):
                raise _invalid(path, f"--host {name} printed {type(hdoc.data).__name__}, not a JSON object of vars",
                             'print {} when the host has no vars')
            tree.text += "\n" + out
            for key, value in hdoc.data.items():
                m = hdoc.mark((key,), key=True)
                tree.host_var(name, str(key), value, (host_label, m.line, m.col))
    return tree


def _run(path: Path, args: list[str]) -> str:
    """stdout of the program; InvalidInput when it fails, hangs or prints too much."""
    label = " ".join([str(path), *args])
    try:
        proc = subprocess.Popen([str(path.resolve()), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise _error(path, f"cannot run the inventory program: {exc.strerror or exc}",
                     "check its #! line and that it is executable (chmod +x)") from None
    deadline = time.monotonic() + TIMEOUT
    out = bytearray()
    err = bytearray()
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                _stop(proc)
                raise _error(path, f"`{label}` did not finish within {TIMEOUT:g}s",
                             "make the inventory program faster, or cache its answer")
            for key, _ in sel.select(min(left, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = key.data
                buf += chunk
                if len(out) > MAX_OUTPUT:
                    _stop(proc)
                    raise _error(path, f"`{label}` printed more than {MAX_OUTPUT // (1024 * 1024)} MiB",
                                 "an inventory of that size is not supported; split it")
                if len(err) > MAX_OUTPUT:
                    del err[: len(err) - STDERR_TAIL]
        rc = proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise _error(path, f"`{label}` did not finish within {TIMEOUT:g}s") from None
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
    if rc != 0:
        tail = err.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
        raise _error(path, f"`{label}` failed with exit code {rc}" + (f":\n    {tail}" if tail else ""),
                     "run it by hand to see why; opsrun reads its stdout as Ansible does")
    try:
        return out.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise _invalid(path, f"`{label}` printed text that is not UTF-8") from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the program and everything it started (its own process group), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        pass


def _json(text: str, label: str) -> load.Document:
    if not text.strip():
        raise InvalidInput(f"{label} printed nothing", [Diagnostic(
            label, 0, 0, "no output: expected a JSON object of groups",
            hint='print e.g. {"web": {"hosts": ["web1"]}, "_meta": {"hostvars": {}}}')])
    try:
        return load.parse(text, label)
    except InvalidInput as exc:
        raise InvalidInput(f"{label} did not print JSON", [
            Diagnostic(d.file, d.line, d.col, d.message.replace("YAML syntax", "JSON syntax"), d.path,
                       "the output must be one JSON object (print logs to stderr)")
            for d in exc.diagnostics]) from None


def _error(path: Path, message: str, hint: str = "") -> OpsrunError:
    """The program could not give an answer (exit 1): it failed, hung or printed too much."""
    return OpsrunError(f"inventory program {path}: {message}", hint=hint)


def _invalid(path: Path, message: str, hint: str = "") -> InvalidInput:
    """The program answered, but not with an inventory (exit 4)."""
    return InvalidInput(f"inventory program {path}: {message}", [Diagnostic(str(path), 0, 0, message, hint=hint)])
