"""Golden cases for the shell step kinds: params + probe answers in, the exact Change out.

The cases live in tests/golden/<kind>.yaml so a reviewer reads input and expected output
side by side. Each case asserts the status, the summary, every action (Action.display())
and the diff, so any change in what a step would do makes a case fail. A second set runs
real probes and actions on tmp files through the local transport: plan, apply, plan again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner import render
from runner.model import Action, Change, CommandResult, Host, ProbeResult
from runner.steps import base, facts, shell
from runner.steps.base import StepContext
from runner.transports.base import probe_script
from runner.transports.local import LocalTransport

GOLDEN = Path(__file__).parent / "golden"
SHELL_KINDS = ("run", "file", "line", "template", "copy", "package", "service")
HOST = Host("web1", "local")
SH = shutil.which("sh") or "/bin/sh"


def _load_cases() -> list[Any]:
    out = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            out.append(pytest.param(doc["kind"], doc.get("mode", "plan"), case, id=f"{path.stem}: {case['name']}"))
    return out


CASES = _load_cases()


def _fact(answer: Any) -> ProbeResult:
    """Shorthand in the golden files: an int is an rc, a string is stdout (rc 0)."""
    if isinstance(answer, int):
        return ProbeResult(answer)
    if isinstance(answer, str):
        return ProbeResult(0, answer.encode())
    out = answer.get("stdout", "")
    return ProbeResult(
        int(answer.get("rc", 0)),
        out if isinstance(out, bytes) else out.encode(),
        str(answer.get("stderr", "")).encode(),
    )


def _context(case: dict[str, Any], tmp_path: Path) -> StepContext:
    for name, content in (case.get("files") or {}).items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    host = Host("web1", case.get("transport", "local"), settings=case.get("settings") or {})  # default: HOST
    return StepContext(host=host, playbook_dir=str(tmp_path), render=render.render_text, vars=case.get("vars") or {})


def _syntax_ok(script: str) -> None:
    """`sh -n`: the generated shell text parses (quoting mistakes show up here)."""
    res = subprocess.run([SH, "-n", "-c", script], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, f"sh -n rejects:\n{script}\n{res.stderr}"


# ---------------------------------------------------------------- the golden table


@pytest.mark.parametrize(("kind_name", "mode", "case"), CASES)
def test_golden(kind_name: str, mode: str, case: dict[str, Any], tmp_path: Path) -> None:
    kind = base.get(kind_name)
    params = kind.normalize(case["params"])
    expect = case["expect"]
    if mode == "outcome":
        _check_outcome(kind, params, case)
        return
    ctx = _context(case, tmp_path)
    if "prepare_error" in expect:
        with pytest.raises((shell.PrepareError, render.RenderError)) as info:
            kind.prepare(params, ctx)
        assert expect["prepare_error"] in str(info.value)
        return
    params = kind.prepare(params, ctx)

    probes = kind.probes(params, ctx)
    keys = [p.key for p in probes]
    if "probe_keys" in expect:
        assert keys == expect["probe_keys"]
    for key, command in (expect.get("probes") or {}).items():
        assert next(p.command for p in probes if p.key == key) == command
    facts = {k: _fact(v) for k, v in (case.get("facts") or {}).items()}
    unknown = set(facts) - set(keys)
    assert not unknown, f"the case answers probes the step does not ask: {sorted(unknown)}"
    if probes:
        _syntax_ok(probe_script(probes))

    change = kind.plan(params, facts, ctx)
    _check_change(change, expect)
    for action in change.actions:
        if action.kind == "cmd":
            _syntax_ok(action.command)


def _check_change(change: Change, expect: dict[str, Any]) -> None:
    got = {
        "status": change.status,
        "summary": change.summary,
        "actions": [a.display() for a in change.actions],
        "diff": change.diff,
        "read_only": change.read_only,
    }
    want = {
        "status": expect["status"],
        "summary": expect["summary"],
        "actions": expect.get("actions", []),
        "diff": expect.get("diff", ""),
        "read_only": expect.get("read_only", False),
    }
    assert got == want
    if "reason" in expect:
        assert expect["reason"] in change.reason
    if "put_content" in expect:
        puts = [a for a in change.actions if a.kind == "put"]
        assert len(puts) == 1
        want_bytes = expect["put_content"]
        assert puts[0].content == (want_bytes if isinstance(want_bytes, bytes) else want_bytes.encode())
    if "stdin" in expect:
        assert [a.stdin for a in change.actions] == [
            None if s is None else s.encode() for s in expect["stdin"]
        ]


def _check_outcome(kind: base.StepKind, params: dict[str, Any], case: dict[str, Any]) -> None:
    results = [
        CommandResult(int(r.get("rc", 0)), str(r.get("stdout", "")).encode(), str(r.get("stderr", "")).encode())
        for r in case.get("results") or []
    ]
    change = Change("run", "will run", (Action("cmd", command="true"),))
    status, message = kind.outcome(params, change, results, render.evaluate)
    assert [status, message] == case["expect"]


def test_every_shell_kind_has_golden_cases() -> None:
    covered = {k for k, _, _ in (p.values for p in CASES)}
    assert set(SHELL_KINDS) <= covered
    for name in SHELL_KINDS:
        assert base.get(name).name == name


# ---------------------------------------------------------------- probes on real files


def _plan_real(kind_name: str, params: dict[str, Any], tmp_path: Path) -> tuple[Change, LocalTransport]:
    kind = base.get(kind_name)
    ctx = StepContext(host=Host("local", "local"), playbook_dir=str(tmp_path), render=render.render_text)
    p = kind.prepare(kind.normalize(params), ctx)
    transport = LocalTransport(Host("local", "local"))
    facts = transport.probe(kind.probes(p, ctx))
    return kind.plan(p, facts, ctx), transport


def _apply(change: Change, transport: LocalTransport) -> None:
    for action in change.actions:
        res = transport.execute(action, timeout=10)
        assert res.rc == 0, (action.display(), res.err)


REAL_CASES = [
    ("file", lambda d: {"path": f"{d}/conf dir", "state": "directory", "mode": "0750"}, "create"),
    ("file", lambda d: {"path": f"{d}/motd", "content": "hi 'there'\n$(not run)\n", "mode": "0600"}, "create"),
    ("file", lambda d: {"path": f"{d}/empty", "state": "touch"}, "create"),
    ("file", lambda d: {"path": f"{d}/ln", "state": "link", "src": f"{d}/target"}, "create"),
    ("line", lambda d: {"path": f"{d}/env", "line": "A=1", "create": True, "mode": "0644"}, "create"),
    ("template", lambda d: {"src": "t.j2", "dest": f"{d}/out.conf", "vars": {"port": 8080}}, "create"),
    ("copy", lambda d: {"src": "blob.bin", "dest": f"{d}/blob.bin"}, "create"),
    ("run", lambda d: {"command": f"echo made > {d}/made", "creates": f"{d}/made"}, "run"),
]


@pytest.mark.parametrize(("kind_name", "make", "first"), REAL_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(REAL_CASES)])
def test_real_probe_apply_replan(kind_name: str, make: Any, first: str, tmp_path: Path) -> None:
    """The probe commands answer in the form plan() reads: after applying, the plan is noop."""
    (tmp_path / "t.j2").write_text("port={{ port }}\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    work = tmp_path / "work"
    work.mkdir()
    params = make(work)
    change, transport = _plan_real(kind_name, params, tmp_path)
    assert change.status == first, change
    _apply(change, transport)
    again, _ = _plan_real(kind_name, params, tmp_path)
    assert again.status == "noop", again
    assert again.actions == ()


def test_real_stat_sees_drift_and_big_files(tmp_path: Path) -> None:
    path = tmp_path / "big"
    content = b"x" * (facts.MAX_CONTENT + 10)
    path.write_bytes(content)
    path.chmod(0o600)
    change, _ = _plan_real("file", {"path": str(path), "content": content.decode(), "mode": "0644"}, tmp_path)
    # compared by sha256 (too big to read back), so only the mode differs
    assert (change.status, [a.display() for a in change.actions]) == ("update", [f"chmod 0644 -- {path}"])
    change, _ = _plan_real("file", {"path": str(path), "content": "small\n", "show_diff": True}, tmp_path)
    digest = hashlib.sha256(content).hexdigest()
    assert change.status == "update"
    assert change.diff == f"content differs (sha256 {digest} -> {hashlib.sha256(b'small' + bytes([10])).hexdigest()})\n"


@pytest.mark.parametrize(("binaries", "expected"), [(["apt-get", "dnf"], "apt"), (["yum"], "yum"),
                                                     (["dnf", "yum"], "dnf"), (["apk"], "apk"), ([], None)])
def test_package_manager_detection_in_a_real_shell(binaries: list[str], expected: str | None, tmp_path: Path) -> None:
    for name in binaries:
        shim = tmp_path / name
        shim.write_text("#!/bin/sh\nexit 0\n")
        shim.chmod(0o755)
    kind = base.get("package")
    params = kind.normalize({"name": "curl"})
    [detect] = [p for p in kind.probes(params, StepContext(host=HOST)) if p.key == "manager"]
    assert detect.command is not None
    res = subprocess.run([SH, "-c", detect.command], capture_output=True, text=True, timeout=10,
                         env={"PATH": str(tmp_path)})
    assert (res.returncode, res.stdout.strip() or None) == ((0, expected) if expected else (1, None))


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian-family host (dpkg-query)")
def test_package_probes_on_this_debian_host(tmp_path: Path) -> None:
    """The apt query probe reads real dpkg state the way plan() expects."""
    change, _ = _plan_real("package", {"name": ["coreutils", "opsrun-no-such-package"], "manager": "apt"}, tmp_path)
    assert change.status == "create"
    assert change.summary == "install opsrun-no-such-package (apt)"
    assert [a.display() for a in change.actions] == [
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -- opsrun-no-such-package"
    ]
    change, _ = _plan_real("package", {"name": "coreutils", "state": "absent", "manager": "apt"}, tmp_path)
    assert change.status == "delete"
    assert change.summary.startswith("remove coreutils ")  # with its installed version


def test_real_line_edit_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "sshd_config"
    path.write_text("# keep me\nPermitRootLogin yes\nPort 22\n")
    params = {"path": str(path), "regexp": "^PermitRootLogin ", "line": "PermitRootLogin no"}
    change, transport = _plan_real("line", params, tmp_path)
    assert change.status == "update"
    _apply(change, transport)
    assert path.read_text() == "# keep me\nPermitRootLogin no\nPort 22\n"
    again, _ = _plan_real("line", params, tmp_path)
    assert again.status == "noop"
