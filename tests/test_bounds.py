"""Hostile inputs end to end: the CLI runs under a memory cap (prlimit --as) and a time cap
(timeout) and must stop each one quickly with a located error and exit 4, never a traceback."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import load, render
from runner.errors import InvalidInput

MEMORY_CAP = 1024 * 1024 * 1024  # bytes of address space for one opsrun
TIME_CAP = 20  # seconds; each case below takes well under one

# the billion laughs: 9 levels of 9 aliases, 9^9 strings if expanded, in under 500 bytes
_LEVELS = "abcdefghi"
BOMB = "opsrun: 1\nname: lol\nhosts: local\nsteps: []\nvars:\n  a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"  {c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in itertools.pairwise(_LEVELS)
)


def capped(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run opsrun under the memory and time caps; return the result and how long it took."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    cmd = ["timeout", "-s", "KILL", str(TIME_CAP), "prlimit", f"--as={MEMORY_CAP}", "--",
           sys.executable, "-m", "runner", *args]
    start = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True, stdin=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                       timeout=TIME_CAP + 10)
    return p, time.monotonic() - start


def assert_clean_exit_4(p: subprocess.CompletedProcess[str], took: float, *fragments: str) -> None:
    out = p.stdout + p.stderr
    assert p.returncode == 4, out
    assert "Traceback" not in out and "MemoryError" not in out and "RecursionError" not in out, out
    assert took < 10, f"took {took:.1f}s"
    for f in fragments:
        assert f in out, out


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_alias_bomb_fails_fast_with_a_located_error(tmp_path: Path, command: str) -> None:
    assert len(BOMB.encode()) < 500
    write(tmp_path / "bomb.yaml", BOMB)
    p, took = capped(command, "bomb.yaml", cwd=tmp_path)
    assert_clean_exit_4(p, took, "bomb.yaml:", "aliases expand to more than 100,000 values")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("opsrun: 1\nname: r\nhosts: local\nvars:\n  a: &a [*a]\nsteps: []\n", "bad.yaml:5:"),
        ("opsrun: 1\nname: r\nhosts: local\nvars:\n  a: &a {b: *a}\nsteps: []\n", "recursive YAML alias"),
        ("opsrun: 1\nname: r\nhosts: local\nvars:\n  a: &a {<<: *a}\nsteps: []\n", "recursive YAML alias"),
    ],
)
def test_recursive_alias_is_a_located_error(tmp_path: Path, text: str, fragment: str) -> None:
    write(tmp_path / "bad.yaml", text)
    for command in ("validate", "plan"):
        p, took = capped(command, "bad.yaml", cwd=tmp_path)
        assert_clean_exit_4(p, took, fragment, "recursive YAML alias")


@pytest.mark.parametrize("style", ["block", "flow"])
def test_600_deep_nesting_is_a_located_error(tmp_path: Path, style: str) -> None:
    if style == "flow":
        deep = "[" * 600 + "]" * 600
    else:
        deep = "\n" + "".join("    " + "  " * i + "k:\n" for i in range(600)) + "    " + "  " * 600 + "v"
    write(tmp_path / "deep.yaml", f"opsrun: 1\nname: d\nhosts: local\nvars:\n  x: {deep}\nsteps: []\n")
    for command in ("validate", "plan"):
        p, took = capped(command, "deep.yaml", cwd=tmp_path)
        assert_clean_exit_4(p, took, "deep.yaml:", "nested deeper than 64 levels")


@pytest.mark.parametrize(
    "value",
    [
        '!!python/object/apply:os.system ["touch MARKER"]',  # on a list: was ignored silently
        "!!python/object/apply:os.system {args: [touch MARKER]}",
        "!!python/name:os.system ''",
        "!custom {a: 1}",
        "!!set {a, b}",
        "!!binary aGVsbG8=",
    ],
)
def test_every_non_standard_tag_is_a_located_error(tmp_path: Path, value: str) -> None:
    write(tmp_path / "tag.yaml", f"opsrun: 1\nname: t\nhosts: local\nvars:\n  x: {value}\nsteps: []\n")
    p, took = capped("validate", "tag.yaml", cwd=tmp_path)
    assert_clean_exit_4(p, took, "tag.yaml:5:6:", "unsupported YAML tag")
    assert not (tmp_path / "MARKER").exists()


def test_a_document_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("opsrun: 1\nname: big\nhosts: local\nsteps: []\nvars:\n")
        line = "  k{}: " + "x" * 1000 + "\n"
        for i in range(load.MAX_BYTES // 1000 + 10):
            fh.write(line.format(i))
    p, took = capped("validate", "big.yaml", cwd=tmp_path)
    assert_clean_exit_4(p, took, "big.yaml", "larger than 16 MiB")


def test_a_deep_saved_plan_file_exits_4_without_a_traceback(tmp_path: Path) -> None:
    """json.loads recursing too deep: the CLI's last resort turns it into exit 4."""
    write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000)
    p, took = capped("apply", "deep.json", cwd=tmp_path)
    assert_clean_exit_4(p, took, "nested too deeply")


HOSTILE_TEMPLATES = [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "range() used for more than 1,000,000 items"),
    ("{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
     "{% endfor %}{% endfor %}{% endfor %}", "range() used for more than"),
    ("{{ range(10000000) | list }}", "range() of more than 100,000 items"),
    ("{{ 'x' * 1000000000 }}", "would make a value larger than 8 MiB"),
    ("{{ [1, 2] * 1000000000 }}", "would make a value larger than 8 MiB"),
    ("{{ 9 ** 99999999 }}", "would make a number larger than"),
    ("{{ 'x' | center(1000000000) }}", "a width larger than"),
    ("{{ '%999999999s' % 'x' }}", "format width larger than"),
    ("{{ '{:>999999999}'.format('x') }}", "format width larger than"),
    ("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}", "output larger than 8 MiB"),
]


def test_hostile_templates_stop_the_plan_quickly(tmp_path: Path) -> None:
    """Each template as a command and as a template file: every step is located, the plan
    ends in seconds under the memory cap, nothing is written."""
    steps = ""
    for n, (template, _) in enumerate(HOSTILE_TEMPLATES):
        write(tmp_path / f"t{n}.j2", template)
        steps += f"  - id: cmd{n}\n    run: {json.dumps('echo ' + template)}\n"
        steps += f"  - id: file{n}\n    template: {{src: t{n}.j2, dest: {tmp_path}/out{n}}}\n"
    write(tmp_path / "p.yaml", f"opsrun: 1\nname: t\nhosts: local\nsteps:\n{steps}")
    p, took = capped("plan", "p.yaml", cwd=tmp_path)
    assert_clean_exit_4(p, took)
    for n, (_, fragment) in enumerate(HOSTILE_TEMPLATES):
        for kind, line in (("cmd", 5 + 4 * n), ("file", 7 + 4 * n)):
            [msg] = [ln for ln in p.stderr.splitlines() if ln.startswith(f"p.yaml:{line}: ")]
            assert f"step '{kind}{n}'" in msg and fragment in msg, msg
    assert not list(tmp_path.glob("out*"))


# ---------------------------------------------------------------- the limits themselves


def test_limits_leave_ordinary_documents_alone() -> None:
    nested = "v: " + "{a: " * (load.MAX_DEPTH - 1) + "1" + "}" * (load.MAX_DEPTH - 1) + "\n"
    assert load.parse(nested, "ok.yaml").data["v"]["a"]["a"]
    anchors = "base: &b {retry: {attempts: 3}, timeout: 5}\n" + "".join(
        f"s{i}: {{<<: *b, id: s{i}}}\n" for i in range(2000)
    )
    doc = load.parse(anchors, "ok.yaml")
    assert doc.data["s1999"] == {"retry": {"attempts": 3}, "timeout": 5, "id": "s1999"}
    assert load.parse("a: !!str 1\nb: !!int '2'\nc: 2026-01-02\nd: ! x\n", "t.yaml").data["b"] == 2


def test_depth_limit_is_exact() -> None:
    def nested(n: int) -> str:
        return "v: " + "[" * (n - 1) + "]" * (n - 1) + "\n"

    load.parse(nested(load.MAX_DEPTH), "ok.yaml")
    with pytest.raises(InvalidInput) as info:
        load.parse(nested(load.MAX_DEPTH + 1), "deep.yaml")
    [d] = info.value.diagnostics
    assert (d.line, d.col) == (1, 4 + load.MAX_DEPTH - 1) and "deeper than 64" in d.message


def test_render_limits_leave_ordinary_templates_alone() -> None:
    text = render.render_text(
        "{% for i in range(300) %}{% for j in range(300) %}{{ '%03d' % j if j < 1 else '' }}{% endfor %}"
        "{% endfor %}{{ 'ab' * 3 }} {{ 2 ** 64 }} {{ 'x' | center(9) }} {{ '{:>6}'.format(42) }}"
        " {{ 'id 123456789012 %s' % 'n' }}",
        {},
    )
    assert text.startswith("000" * 300) and text.endswith("ababab 18446744073709551616     x         42 id 123456789012 n")
    # each render has its own budget: many renders of a loop near the limit all pass
    for _ in range(5):
        render.render_text("{% for i in range(100000) %}{% for j in range(9) %}{% endfor %}{% endfor %}ok", {})
    assert render.evaluate("range(5) | list", {}) == [0, 1, 2, 3, 4]
