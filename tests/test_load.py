"""load.py: YAML -> data that remembers where each value and key is; located errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import InvalidInput
from runner.load import Mark, json_path, parse, read, yaml_files

PLAYBOOK = """\
opsrun: 1
name: web
hosts: [web1, web2]
steps:
  - id: pkgs
    package:
      name: [nginx, curl]
  - id: conf
    file: {path: /etc/x, mode: "0644"}
"""


def test_positions_of_values_and_keys() -> None:
    doc = parse(PLAYBOOK, "web.yaml")
    assert doc.data["steps"][1]["file"]["mode"] == "0644"
    assert doc.values[()] == Mark(1, 1)
    assert doc.keys[("name",)] == Mark(2, 1)
    assert doc.values[("name",)] == Mark(2, 7)
    assert doc.values[("hosts", 1)] == Mark(3, 15)
    assert doc.values[("steps", 0)] == Mark(5, 5)
    assert doc.keys[("steps", 0, "package")] == Mark(6, 5)
    assert doc.values[("steps", 0, "package", "name", 1)] == Mark(7, 21)
    assert doc.keys[("steps", 1, "file", "mode")] == Mark(9, 26)
    assert doc.values[("steps", 1, "file", "mode")] == Mark(9, 32)


def test_mark_falls_back_to_the_nearest_known_parent() -> None:
    doc = parse(PLAYBOOK, "web.yaml")
    assert doc.mark(("steps", 1, "file", "owner")) == Mark(9, 11)  # missing key: its mapping
    assert doc.mark(("steps", 0, "package"), key=True) == Mark(6, 5)
    assert doc.mark(("steps", 0, "package")) == Mark(7, 7)
    d = doc.diag(("steps", 1, "file", "mode"), "bad mode", hint="quote it", key=True)
    assert (d.file, d.line, d.col, d.path, d.message, d.hint) == (
        "web.yaml", 9, 26, "steps[1].file.mode", "bad mode", "quote it"
    )


def test_json_path() -> None:
    assert json_path(()) == ""
    assert json_path(("steps", 2, "run", "command")) == "steps[2].run.command"
    assert json_path((0, "a")) == "[0].a"


def test_duplicate_keys_are_located_both_times() -> None:
    text = "name: a\nvars:\n  x: 1\n  y: 2\n  x: 3\nname: b\n"
    with pytest.raises(InvalidInput) as info:
        parse(text, "dup.yaml")
    got = [(d.line, d.col, d.message, d.path) for d in info.value.diagnostics]
    assert got == [
        (5, 3, "duplicate key 'x' (first at line 3)", "vars.x"),
        (6, 1, "duplicate key 'name' (first at line 1)", "name"),
    ]
    assert "dup.yaml:5:3: error: duplicate key 'x'" in info.value.render()


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("a: 1\nb: [1, 2\n", 3, 1, "did not find expected ',' or ']'"),
        ("a:\n  - x\n b: y\n", 3, 2, "YAML syntax"),
        ("a: *nope\n", 1, 4, "found undefined alias"),
        ("a: 1\n---\nb: 2\n", 2, 1, "expected a single document"),
        ("a: !!python/object:os.system x\n", 1, 4, "unsupported YAML tag '!!python/object:os.system'"),
        ("? [1, 2]\n: x\n", 1, 3, "mapping keys must be plain scalars"),
        ("key: 'unterminated\n", 2, 1, "while scanning a quoted scalar"),
        ("\tname: x\n", 1, 1, "YAML syntax"),
    ],
)
def test_yaml_errors_are_located(text: str, line: int, col: int, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(text, "bad.yaml")
    [d] = info.value.diagnostics
    assert (d.file, d.line, d.col) == ("bad.yaml", line, col)
    assert fragment in d.message
    rendered = info.value.render()
    assert rendered.startswith(f"bad.yaml:{line}:{col}: error:")
    assert "Traceback" not in rendered


def test_cli_reports_a_syntax_error_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("opsrun: 1\nname: x\nsteps:\n  - id: a\n    run: [unclosed\n")
    res = subprocess.run([sys.executable, "-m", "runner", "validate", str(bad)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"{bad}:6:1" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_scalars_keys_and_empty_documents() -> None:
    doc = parse("n: 3\nf: 1.5\nb: true\ns: '0644'\noct: 0644\nnull_v: ~\n1: int key\n", "s.yaml")
    assert doc.data == {"n": 3, "f": 1.5, "b": True, "s": "0644", "oct": 420, "null_v": None, "1": "int key"}
    assert parse("", "e.yaml").data is None
    assert parse("# only a comment\n", "e.yaml").data is None


def test_merge_key_with_an_override() -> None:
    text = "defaults: &d\n  mode: '0644'\n  owner: root\nconf:\n  <<: *d\n  owner: www\n  path: /x\n"
    doc = parse(text, "m.yaml")
    assert doc.data["conf"] == {"mode": "0644", "owner": "www", "path": "/x"}
    assert doc.values[("conf",)] == Mark(5, 3)  # the mapping is where it is written
    assert doc.values[("conf", "owner")] == Mark(6, 10)  # the override, not the anchor's value
    assert doc.values[("conf", "mode")] == Mark(2, 9)  # a merged value points at its definition


def test_merge_key_with_a_list_of_anchors_first_wins() -> None:
    text = "a: &a {p: 1}\nb: &b {p: 2, q: 3}\nx:\n  <<: [*a, *b]\n  r: 4\n"
    doc = parse(text, "m.yaml")
    assert doc.data["x"] == {"p": 1, "q": 3, "r": 4}
    assert doc.values[("x", "p")] == Mark(1, 11)
    assert doc.values[("x", "q")] == Mark(2, 17)
    assert ("x", 0) not in doc.values


def test_merge_key_does_not_hide_real_duplicates() -> None:
    text = "x:\n  <<: {a: 1}\n  b: 1\n  b: 2\n"
    with pytest.raises(InvalidInput) as info:
        parse(text, "m.yaml")
    assert [(d.line, d.message) for d in info.value.diagnostics] == [(4, "duplicate key 'b' (first at line 3)")]


def test_merge_key_needs_a_mapping() -> None:
    with pytest.raises(InvalidInput) as info:
        parse("x:\n  <<: 1\n", "m.yaml")
    [d] = info.value.diagnostics
    assert (d.line, d.col) == (2, 7)
    assert "merge key" in d.message


def test_read_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="file not found"):
        read(tmp_path / "nope.yaml")
    with pytest.raises(InvalidInput, match="is a directory"):
        read(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"a: \xe9\n")
    with pytest.raises(InvalidInput, match="cannot read"):
        read(tmp_path / "latin1.yaml")
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    doc = read(tmp_path / "ok.yaml")
    assert (doc.file, doc.data) == (str(tmp_path / "ok.yaml"), {"a": 1})
    assert doc.digest.startswith("sha256:")


def test_yaml_files_walks_folders_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for rel in ["b.yaml", "a.yml", "sub/c.yaml", "sub/deeper/d.yaml", "notes.txt", ".hidden/e.yaml",
                "sub/.f.yaml", "templates/app.conf.j2"]:
        p = tmp_path / "pb" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("a: 1\n")
    (tmp_path / "pb" / "dir.yaml").mkdir()  # a folder named like a YAML file is not a file
    single = tmp_path / "single.txt"
    single.write_text("a: 1\n")
    got = yaml_files([str(tmp_path / "pb"), str(single)])
    base = tmp_path / "pb"
    assert got == [base / "a.yml", base / "b.yaml", base / "sub/c.yaml", base / "sub/deeper/d.yaml", single]


def test_yaml11_boolean_words_as_keys_stay_text() -> None:
    doc = parse("retry:\n  on: [timeout]\nyes: 1\nOff: 2\n", "b.yaml")
    assert doc.data == {"retry": {"on": ["timeout"]}, "yes": 1, "Off": 2}
    assert doc.keys[("retry", "on")] == Mark(2, 3)
