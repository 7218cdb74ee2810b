"""Contained sources (runner/steps/sources.py) and masked diffs, through `opsrun plan` on the
local host: every refusal is a located error with exit 4 and prints none of the content."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.steps import sources

SHADOW_HEAD = "root:"  # /etc/shadow and /etc/passwd both open with root's line
CANARY = "opsrun-canary-7f3a9c"


def opsrun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPSRUN_")}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**base, "OPSRUN_CANARY_SECRET": CANARY, **(env or {})},
        timeout=60,
        check=False,
    )


def playbook(folder: Path, step: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pb.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            opsrun: 1
            name: sources
            hosts: local
            steps:
              - id: s
            """
        )
        + textwrap.indent(step, "    ")
    )
    return path


def refused(p: subprocess.CompletedProcess[str], pb: Path, words: str) -> None:
    out = p.stdout + p.stderr
    assert p.returncode == 4, out
    assert f"{pb}:5: error: step 's' on host 'local': " in p.stderr, out
    assert words in p.stderr, out
    assert "Traceback" not in out and "MemoryError" not in out
    assert SHADOW_HEAD not in out and CANARY not in out


# ---------------------------------------------------------------- refusals, end to end


def test_copy_of_etc_shadow_by_climbing_is_refused(tmp_path: Path) -> None:
    pb = playbook(tmp_path / "pb", f"copy: {{src: ../../../../../../../../etc/shadow, dest: {tmp_path}/out}}\n")
    p = opsrun("plan", str(pb), cwd=tmp_path)
    refused(p, pb, "copy source '../../../../../../../../etc/shadow' (resolves to /etc/shadow) is outside")


def test_template_of_proc_self_environ_is_refused(tmp_path: Path) -> None:
    pb = playbook(tmp_path / "pb", f"template: {{src: /proc/self/environ, dest: {tmp_path}/out}}\n")
    p = opsrun("plan", str(pb), cwd=tmp_path)
    refused(p, pb, "template source '/proc/self/environ' (resolves to /proc/")


def test_dev_zero_is_refused_not_a_memory_error(tmp_path: Path) -> None:
    pb = playbook(tmp_path / "pb", f"copy: {{src: /dev/zero, dest: {tmp_path}/out}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "is outside the playbook's folder")
    # even inside an allowed root, a device is not a regular file (and is never opened)
    p = opsrun("plan", str(pb), cwd=tmp_path, env={"OPSRUN_FILES_ROOT": "/dev"})
    refused(p, pb, "copy source '/dev/zero' is a character device: only regular files are read")


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pb"
    folder.mkdir()
    (folder / "files").mkdir()
    (folder / "files" / "innocent.conf").symlink_to("/etc/passwd")
    pb = playbook(folder, f"copy: {{src: files/innocent.conf, dest: {tmp_path}/out}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "'files/innocent.conf' (resolves to /etc/passwd) is outside")


def test_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    folder = tmp_path / "pb"
    folder.mkdir()
    (folder / "real.conf").write_text("a=1\n")
    (folder / "alias.conf").symlink_to("real.conf")
    pb = playbook(folder, f"copy: {{src: alias.conf, dest: {tmp_path}/out}}\n")
    p = opsrun("plan", str(pb), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "+a=1" in p.stdout


def test_a_root_named_by_the_operator_is_allowed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "motd").write_text("hello\n")
    pb = playbook(tmp_path / "pb", f"copy: {{src: {shared}/motd, dest: {tmp_path}/out}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "(or inside a folder named in OPSRUN_FILES_ROOT)")
    p = opsrun("plan", str(pb), cwd=tmp_path, env={"OPSRUN_FILES_ROOT": f"/nonexistent:{shared}"})
    assert p.returncode == 0, p.stderr
    assert "+hello" in p.stdout


def test_big_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "pb"
    folder.mkdir()
    with open(folder / "big.bin", "wb") as fh:  # sparse: 17 MiB on paper, nothing on disk
        fh.truncate(17 * 1024 * 1024)
    pb = playbook(folder, f"copy: {{src: big.bin, dest: {tmp_path}/out}}\n")
    p = opsrun("plan", str(pb), cwd=tmp_path)
    refused(p, pb, "copy source 'big.bin' is 17825792 bytes, more than the limit of 16 MiB (raise it with")
    small = folder / "small.j2"
    small.write_text(CANARY * 100)
    pb = playbook(folder, f"template: {{src: small.j2, dest: {tmp_path}/out}}\n")
    p = opsrun("plan", str(pb), cwd=tmp_path, env={"OPSRUN_MAX_SOURCE_SIZE": "1K"})
    refused(p, pb, f"template source 'small.j2' is {len(CANARY) * 100} bytes, more than the limit of 1 KiB")
    p = opsrun("plan", str(pb), cwd=tmp_path, env={"OPSRUN_MAX_SOURCE_SIZE": "lots"})
    refused(p, pb, "OPSRUN_MAX_SOURCE_SIZE='lots' is not a size")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    folder = tmp_path / "pb"
    folder.mkdir()
    os.mkfifo(folder / "pipe")
    pb = playbook(folder, f"template: {{src: pipe, dest: {tmp_path}/out}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "template source 'pipe' is a FIFO: only regular files are read")


def test_folder_and_missing_file_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pb"
    (folder / "dir").mkdir(parents=True)
    pb = playbook(folder, f"copy: {{src: dir, dest: {tmp_path}/out}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "copy source 'dir' is a directory")
    pb = playbook(folder, f"copy: {{src: nope, dest: {tmp_path}/out}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "copy source nope: No such file or directory")


def test_template_that_is_not_utf8_is_a_located_error(tmp_path: Path) -> None:
    folder = tmp_path / "pb"
    folder.mkdir()
    (folder / "latin1.j2").write_bytes(b"caf\xe9\n")
    pb = playbook(folder, f"template: {{src: latin1.j2, dest: {tmp_path}/out}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "template source latin1.j2: not UTF-8 text")


# ---------------------------------------------------------------- names, end to end


def test_hostile_names_never_reach_a_probe(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pb = playbook(tmp_path / "pb", f'package: {{name: "-oDPkg::Pre-Invoke::=touch {marker}", manager: apt}}\n')
    p = opsrun("plan", str(pb), cwd=tmp_path)
    refused(p, pb, "package name (apt) '-oDPkg::Pre-Invoke::=touch ")
    assert "is not valid (Debian names" in p.stderr
    pb = playbook(tmp_path / "pb", f"file: {{path: {tmp_path}/x, owner: --reference=/etc/shadow}}\n")
    refused(opsrun("plan", str(pb), cwd=tmp_path), pb, "owner '--reference=/etc/shadow' is not valid")
    assert not marker.exists()


# ---------------------------------------------------------------- masked diffs


def test_diff_of_a_private_target_is_masked_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text(f"old {CANARY}\n")
    target.chmod(0o600)
    step = f'file: {{path: {target}, content: "new {CANARY}-2\\n"}}\n'
    pb = playbook(tmp_path / "pb", step)
    p = opsrun("plan", str(pb), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"diff hidden: {target} is not world-readable (mode 0600)" in p.stdout
    assert CANARY not in p.stdout + p.stderr
    pb = playbook(tmp_path / "pb", step.replace("content:", "show_diff: true, content:"))
    p = opsrun("plan", str(pb), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"-old {CANARY}" in p.stdout and f"+new {CANARY}-2" in p.stdout


def test_diff_of_a_private_source_is_masked(tmp_path: Path) -> None:
    folder = tmp_path / "pb"
    folder.mkdir()
    src = folder / "token.txt"
    src.write_text(f"{CANARY}\n")
    src.chmod(0o640)
    pb = playbook(folder, f"copy: {{src: token.txt, dest: {tmp_path}/out, mode: '0644'}}\n")
    p = opsrun("plan", str(pb), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "diff hidden: the local source file is not world-readable" in p.stdout
    assert CANARY not in p.stdout + p.stderr
    src.chmod(0o644)
    p = opsrun("plan", str(pb), cwd=tmp_path)
    assert f"+{CANARY}" in p.stdout


# ---------------------------------------------------------------- the module itself


def test_roots_and_limits_from_the_environment(tmp_path: Path) -> None:
    assert sources.roots(str(tmp_path), {}) == [os.path.realpath(tmp_path)]
    assert sources.roots(str(tmp_path), {"OPSRUN_FILES_ROOT": "/srv::/opt/x/.."}) == [
        os.path.realpath(tmp_path), "/srv", "/opt"]
    with pytest.raises(sources.SourceError, match="not an absolute path"):
        sources.roots(str(tmp_path), {"OPSRUN_FILES_ROOT": "relative/dir"})
    assert sources.max_size({}) == 16 * 1024 * 1024
    assert [sources.max_size({"OPSRUN_MAX_SOURCE_SIZE": v}) for v in ("100", "2k", "3M", "1G")] == [
        100, 2048, 3 * 1024**2, 1024**3]
    assert sources.max_size({}, default=5) == 5


def test_a_root_is_a_folder_not_a_prefix(tmp_path: Path) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb-other").mkdir()
    (tmp_path / "pb-other" / "x").write_text("x")
    with pytest.raises(sources.SourceError, match="outside the playbook's folder"):
        sources.read_source(str(tmp_path / "pb"), "../pb-other/x", "copy source")
    got = sources.read_source(str(tmp_path / "pb"), "../pb/../pb-other/x", "copy source", contain=False)
    assert got.data == b"x" and not got.private


@pytest.mark.parametrize(
    ("src", "words"),
    [
        ("a\x00b", "contains a NUL byte"),
        ("x" * 5000, "File name too long"),
        ("///", "(resolves to /) is outside"),
        (".", "is a directory"),
    ],
    ids=["nul", "long", "root", "folder"],
)
def test_hostile_source_strings_are_source_errors(src: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(sources.SourceError) as info:
        sources.read_source(str(tmp_path), src, "copy source")
    assert words in str(info.value)
    assert len(str(info.value)) < 600  # a long value is shortened in the message
