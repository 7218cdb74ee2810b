"""Property-based: random sequences of file/line/template/copy steps on overlapping paths (a file,
a folder and a file inside it) from random starting states must hold the plan/apply oracle.

A small model of what each step does to the folder says which steps change again on a second run
(two steps fighting over one file): only those may show a change in the re-plan after apply. The
model is checked against the disk after apply, so it cannot drift from what opsrun does. The CLI
runs in this process (runner.cli.main, the `opsrun` command's own entry point) to stay fast.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from runner.steps.shell_files import edit_lines  # the line-edit rule itself; the model only sequences it
from tests.oracle import Oracle, explain

WORDS = ("alpha", "beta", "delta")
REGEXPS = (None, "^al", "^b", "ta$")
CONTENTS = ("", "alpha\n", "alpha\nbeta\n", "gamma\n", "beta\nalpha\ngamma\n")
FILE_MODES = (None, "0644", "0600", "0640")
DIR_MODES = (None, "0755", "0700")
TEMPLATES = {"t1.j2": "tpl {{ inventory_hostname }}\n", "t2.j2": "alpha\n{{ 1 + 1 }}\n"}
RENDERED = {"t1.j2": "tpl local\n", "t2.j2": "alpha\n2\n"}
SOURCES = {"c1.txt": "copied\n", "c2.txt": "beta\ngamma\n"}
FILES = ("a.txt", "sub/b.txt")  # sub/b.txt lives in the folder `sub`, which steps remove and make


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


NEW_FILE = 0o666 & ~_umask()  # what a new file and a new folder get here
NEW_DIR = 0o777 & ~_umask()

State = dict[str, tuple[str, str, int] | None]  # path -> (type, content, mode) or absent


# ---------------------------------------------------------------- generated steps


@dataclass(frozen=True)
class Spec:
    op: str  # content | absent | directory | touch | line | template | copy
    path: str
    mode: str | None = None
    content: str = ""
    line: str = ""
    regexp: str | None = None
    present: bool = True
    src: str = ""

    def step(self, root: Path) -> dict[str, Any]:
        path = str(root / self.path)
        extra = {"mode": self.mode} if self.mode else {}
        if self.op == "content":
            return {"file": {"path": path, "content": self.content, **extra}}
        if self.op == "absent":
            return {"file": {"path": path, "state": "absent"}}
        if self.op in ("directory", "touch"):
            return {"file": {"path": path, "state": self.op, **extra}}
        if self.op == "line":
            p: dict[str, Any] = {"path": path, "state": "present" if self.present else "absent"}
            if self.present:
                p.update(line=self.line, create=True, **extra)
            elif self.regexp is None:
                p["line"] = self.line
            if self.regexp:
                p["regexp"] = self.regexp
            return {"line": p}
        return {self.op: {"src": self.src, "dest": path, **extra}}


def _file_spec() -> st.SearchStrategy[Spec]:
    path = st.sampled_from(FILES)
    mode = st.sampled_from(FILE_MODES)
    return st.one_of(
        st.builds(Spec, op=st.just("content"), path=path, mode=mode, content=st.sampled_from(CONTENTS)),
        st.builds(Spec, op=st.just("absent"), path=st.sampled_from((*FILES, "sub"))),
        st.builds(Spec, op=st.just("directory"), path=st.just("sub"), mode=st.sampled_from(DIR_MODES)),
        st.builds(Spec, op=st.just("touch"), path=path, mode=mode),
        st.builds(
            Spec,
            op=st.just("line"),
            path=path,
            mode=mode,
            line=st.sampled_from(WORDS),
            regexp=st.sampled_from(REGEXPS),
            present=st.booleans(),
        ),
        st.builds(Spec, op=st.just("template"), path=path, mode=mode, src=st.sampled_from(sorted(TEMPLATES))),
        st.builds(Spec, op=st.just("copy"), path=path, mode=mode, src=st.sampled_from(sorted(SOURCES))),
    )


def _start_state() -> st.SearchStrategy[State]:
    file = st.one_of(
        st.none(), st.tuples(st.just("file"), st.sampled_from(CONTENTS), st.sampled_from((0o644, 0o600, 0o640)))
    )
    folder = st.one_of(st.none(), st.tuples(st.just("dir"), st.just(""), st.sampled_from((0o755, 0o700))))
    return st.fixed_dictionaries({"a.txt": file, "sub": folder, "sub/b.txt": file}).map(
        lambda s: {**s, "sub/b.txt": s["sub/b.txt"] if s["sub"] else None}
    )


# ---------------------------------------------------------------- the model


def _writes(spec: Spec) -> bool:
    return spec.op in ("content", "touch", "template", "copy") or (spec.op == "line" and spec.present)


def with_parents(specs: list[Spec], start: State) -> list[Spec]:
    """Make `sub` first where a step writes into it while it is missing (a put needs its folder)."""
    out: list[Spec] = []
    sub = start["sub"] is not None
    for spec in specs:
        if spec.path.startswith("sub/") and _writes(spec) and not sub:
            out.append(Spec("directory", "sub"))
            sub = True
        if spec.path == "sub":
            sub = spec.op == "directory"
        out.append(spec)
    return out


def _new_content(spec: Spec) -> str:
    if spec.op == "template":
        return RENDERED[spec.src]
    if spec.op == "copy":
        return SOURCES[spec.src]
    return spec.content


def model_step(state: State, spec: Spec) -> bool:
    """Apply one step to the modelled folder; True when it changes something."""
    cur = state[spec.path]
    want_mode = int(spec.mode, 8) if spec.mode else None
    if spec.op == "absent":
        state[spec.path] = None
        if spec.path == "sub":
            state["sub/b.txt"] = None
        return cur is not None
    if spec.op == "directory":
        mode = want_mode or (cur[2] if cur else NEW_DIR)
        state[spec.path] = ("dir", "", mode)
        return cur is None or mode != cur[2]
    if spec.op == "touch":
        content = cur[1] if cur else ""
        mode = want_mode or (cur[2] if cur else NEW_FILE)
        state[spec.path] = ("file", content, mode)
        return cur is None or mode != cur[2]
    if spec.op == "line":
        if cur is None and not spec.present:
            return False
        old = cur[1] if cur else ""
        params = {"line": spec.line or None, "regexp": spec.regexp, "state": "present" if spec.present else "absent"}
        if not spec.present and spec.regexp:
            params["line"] = None
        new = edit_lines(old, params)
        if cur is not None and new == old:
            return False
        given = want_mode if spec.present else None  # the step is written without a mode when absent
        state[spec.path] = ("file", new, given or (cur[2] if cur else NEW_FILE))
        return True
    new = _new_content(spec)
    mode = want_mode or (cur[2] if cur else NEW_FILE)
    state[spec.path] = ("file", new, mode)
    return cur is None or cur[1] != new or mode != cur[2]


def model_run(state: State, specs: list[Spec]) -> list[bool]:
    return [model_step(state, s) for s in specs]


# ---------------------------------------------------------------- the folder on disk


def make_state(root: Path, state: State) -> None:
    for rel in ("sub", "a.txt", "sub/b.txt"):
        item = state[rel]
        if item is None:
            continue
        path = root / rel
        if item[0] == "dir":
            path.mkdir()
        else:
            path.write_text(item[1])
        path.chmod(item[2])


def read_state(root: Path) -> State:
    out: State = {}
    for rel in ("a.txt", "sub", "sub/b.txt"):
        path = root / rel
        if path.is_dir():
            out[rel] = ("dir", "", path.stat().st_mode & 0o7777)
        elif path.is_file():
            out[rel] = ("file", path.read_text(), path.stat().st_mode & 0o7777)
        else:
            out[rel] = None
    return out


def _show(specs: list[Spec], start: State) -> str:
    rows = [f"  start: {start}"] + [f"  s{i + 1}: {s.step(Path('t'))}" for i, s in enumerate(specs)]
    return "\n".join(rows)


# ---------------------------------------------------------------- the property


EMPTY: State = {"a.txt": None, "sub": None, "sub/b.txt": None}
# Shrinking a failure to its smallest case re-runs the CLI hundreds of times (minutes): opt in with
# OPSRUN_PROPS_SHRINK=1 when debugging; by default the first failing case is reported as generated.
PHASES = tuple(Phase) if os.environ.get("OPSRUN_PROPS_SHRINK") else (Phase.explicit, Phase.reuse, Phase.generate)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same 25 cases on every run and machine
    database=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(specs=st.lists(_file_spec(), min_size=1, max_size=6), start=_start_state())
@example(  # issue 10: exact content, then a line edit, on a file that holds the line already
    specs=[Spec("content", "a.txt", content="alpha\n"), Spec("line", "a.txt", line="beta")],
    start={**EMPTY, "a.txt": ("file", "alpha\nbeta\n", 0o644)},
)
@example(  # issue 10: the folder removed, then made again with a file inside
    specs=[Spec("absent", "sub"), Spec("directory", "sub"), Spec("content", "sub/b.txt", content="gamma\n")],
    start={**EMPTY, "sub": ("dir", "", 0o755), "sub/b.txt": ("file", "gamma\n", 0o644)},
)
def test_random_file_steps_hold_the_oracle(specs: list[Spec], start: State) -> None:
    specs = with_parents(specs, start)
    with tempfile.TemporaryDirectory(prefix="opsrun-oracle-") as tmp:
        project = Path(tmp)
        root = project / "t"
        root.mkdir()
        for name, text in {**TEMPLATES, **SOURCES}.items():
            (project / name).write_text(text)
        make_state(root, start)
        steps = [{"id": f"s{i + 1}", **s.step(root)} for i, s in enumerate(specs)]
        (project / "site.yaml").write_text(
            yaml.safe_dump({"opsrun": 1, "name": "props", "hosts": "local", "steps": steps}, sort_keys=False)
        )
        model = dict(start)
        model_run(model, specs)
        after_first = dict(model)
        again = model_run(model, specs)  # a second run from there: who changes again
        fighting = {f"s{i + 1}" for i, changed in enumerate(again) if changed}

        oracle = Oracle(project, in_process=True)
        report = oracle.run("site.yaml", non_convergent=fighting, known=True)
        disk = read_state(root)
        assert disk == after_first, (
            f"apply left another folder than the test's model of these steps says:\n{_show(specs, start)}\n"
            f"  model: {after_first}\n  disk:  {disk}"
        )
        if report.problems:
            raise AssertionError(f"{_show(specs, start)}\n{explain('site.yaml', [], report)}")


def test_the_model_knows_a_fight_from_a_converging_pair() -> None:
    start = EMPTY
    fight = [Spec("content", "a.txt", content="alpha\n"), Spec("line", "a.txt", line="beta")]
    state = dict(start)
    model_run(state, fight)
    assert state["a.txt"] == ("file", "alpha\nbeta\n", NEW_FILE)
    assert model_run(state, fight) == [True, True]
    calm = [Spec("content", "a.txt", content="alpha\nbeta\n"), Spec("line", "a.txt", line="beta", regexp="^b")]
    state = dict(start)
    assert model_run(state, calm) == [True, False]
    assert model_run(state, calm) == [False, False]
    folder = with_parents([Spec("absent", "sub"), Spec("copy", "sub/b.txt", src="c1.txt")], start)
    assert [s.op for s in folder] == ["absent", "directory", "copy"]
    assert re.fullmatch(r"0o?[0-7]+", oct(NEW_FILE))
