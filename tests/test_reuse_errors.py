"""What goes wrong with includes, roles and vars files, said at file:line:col with a fix:
cycles (the chain shown), paths escaping the project, bad parameters at the call site (unknown,
missing, wrong type, before and after rendering), bounds, names used across includes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner import config, load, offline, reuse
from runner.errors import Diagnostic, InvalidInput

HEAD = "opsrun: 1\nname: t\nhosts: local\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def check(path: Path) -> list[Diagnostic]:
    """What `opsrun validate` says about the playbook (the full offline check, embedded inventory)."""
    inv = config.load_inventory(None)
    return offline.validate_playbook(load.read(path), inv, {})


def at(diags: list[Diagnostic], where: str) -> Diagnostic:
    """The diagnostic at `where` ("file:line:col", the file relative to the playbook's folder)."""
    found = [d for d in diags if d.where().endswith(where) and (d.file == where.split(":", 1)[0]
                                                                or d.file.endswith("/" + where.split(":", 1)[0]))]
    assert found, f"nothing at {where}; got:\n" + "\n".join(d.render() for d in diags)
    return found[0]


def test_include_cycle_is_refused_with_the_chain(tmp_path: Path) -> None:
    write(tmp_path / "tasks/a.yaml", "params: {}\nsteps:\n  - id: b\n    include: b.yaml\n")
    write(tmp_path / "tasks/b.yaml", "params: {}\nsteps:\n  - id: a\n    include: a.yaml\n")
    pb = write(tmp_path / "site.yaml", HEAD + "steps:\n  - id: a\n    include: tasks/a.yaml\n")
    diags = check(pb)
    d = at(diags, "tasks/b.yaml:4:14")
    assert d.message == f"include cycle: {tmp_path}/tasks/a.yaml -> {tmp_path}/tasks/b.yaml -> " \
                        f"{tmp_path}/tasks/a.yaml"
    assert d.via == f"{tmp_path}/tasks/a.yaml:3:5 <- {pb}:5:5"
    assert "included by" in d.render()


def test_a_playbook_including_itself_is_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "self.yaml", "params: {}\nsteps:\n  - id: again\n    include: self.yaml\n")
    diags = check(write(tmp_path / "site.yaml", HEAD + "steps:\n  - id: s\n    include: self.yaml\n"))
    assert "include cycle: " in at(diags, "self.yaml:4:14").message


@pytest.mark.parametrize("written", ["../outside.yaml", "tasks/../../outside.yaml", "/etc/hostname"])
def test_includes_cannot_leave_the_project(tmp_path: Path, written: str) -> None:
    project = tmp_path / "repo"
    write(tmp_path / "outside.yaml", "params: {}\nsteps:\n  - id: x\n    run: id\n")
    pb = write(project / "site.yaml", HEAD + f"steps:\n  - id: s\n    include: {written}\n")
    d = at(check(pb), "site.yaml:6:14")
    assert d.message.startswith(f"step file '{written}' is outside the project {os.path.realpath(project)}")
    assert ".git" in d.hint


def test_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    write(tmp_path / "elsewhere/role.yaml", "params: {}\nsteps:\n  - id: x\n    run: id\n")
    project.mkdir()
    (project / "roles").mkdir()
    (project / "roles" / "r").symlink_to(tmp_path / "elsewhere")
    pb = write(project / "site.yaml", HEAD + "steps:\n  - id: s\n    role: roles/r\n")
    assert "is outside the project" in at(check(pb), "site.yaml:6:11").message


def test_in_a_git_repository_the_project_is_the_repository(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path / "shared/tasks.yaml", "params: {}\nsteps:\n  - id: x\n    run: id\n")
    pb = write(tmp_path / "playbooks/site.yaml", HEAD + "steps:\n  - id: s\n    include: ../shared/tasks.yaml\n")
    assert check(pb) == []
    assert reuse.project_root(str(pb)) == os.path.realpath(tmp_path)


def test_bad_parameters_are_said_at_the_call_site(tmp_path: Path) -> None:
    write(tmp_path / "tasks/web.yaml", """\
        params:
          port: {type: integer, default: 80, description: the port nginx listens on}
          server_name: {type: string, description: the site's host name}
          mode: {type: string, default: plain, choices: [plain, tls]}
        steps:
          - id: conf
            run: echo {{ port }} {{ server_name }} {{ mode }}
    """)
    pb = write(tmp_path / "site.yaml", HEAD + """\
steps:
  - id: web
    include:
      file: tasks/web.yaml
      with: {prot: 8080, port: "8080", mode: ssl}
""")
    diags = check(pb)
    d = at(diags, "site.yaml:6:5")
    assert d.message == "missing parameter 'server_name', required by tasks/web.yaml"
    assert d.hint.startswith("add with: {server_name: ...}") and "the site's host name" in d.hint
    d = at(diags, "site.yaml:8:14")
    assert d.message == "tasks/web.yaml has no parameter 'prot'" and d.hint == "did you mean 'port'?"
    d = at(diags, "site.yaml:8:32")
    assert d.message == "parameter 'port' must be a whole number (integer), got '8080' (a string)"
    assert "write it without quotes: port: 8080" in d.hint and "tasks/web.yaml:2" in d.hint
    d = at(diags, "site.yaml:8:46")
    assert d.message.startswith("parameter 'mode' must be one of: plain, tls")
    assert len(diags) == 4


def test_a_templated_parameter_is_checked_after_rendering_by_validate_and_plan(tmp_path: Path) -> None:
    write(tmp_path / "tasks/web.yaml", "params:\n  port: {type: integer}\nsteps:\n  - id: c\n    run: echo {{ port }}\n")
    pb = write(tmp_path / "site.yaml", HEAD + """\
vars:
  web_port: eighty
steps:
  - id: web
    include: {file: tasks/web.yaml, with: {port: "{{ web_port }}"}}
""")
    d = at(check(pb), "site.yaml:8:50")
    assert d.message == "parameter 'port' must be a whole number (integer), got 'eighty' (a string) after rendering"
    p = subprocess.run([sys.executable, "-m", "runner", "plan", "site.yaml"], cwd=tmp_path, text=True,
                       capture_output=True, timeout=60, check=False)
    assert p.returncode == 4
    assert "site.yaml:7:5: error: include 'web' (tasks/web.yaml) on host 'local': parameter 'port' must be a " \
           "whole number" in p.stderr
    assert p.stderr.count("parameter 'port'") == 1  # once for the include, not once per step
    p = subprocess.run([sys.executable, "-m", "runner", "plan", "site.yaml", "-e", "web_port=8080"],
                       cwd=tmp_path, text=True, capture_output=True, timeout=60, check=False)
    assert p.returncode == 0 and "echo 8080" in p.stdout  # rendered text becomes the number


def test_step_file_declarations_are_checked(tmp_path: Path) -> None:
    write(tmp_path / "tasks/t.yaml", """\
        params:
          port: {type: integer, default: "80"}
          steps: {type: string, default: x}
          name: {type: str}
          flag: {type: boolean, required: true}
        steps:
          - id: c
            run: echo
    """)
    diags = check(write(tmp_path / "site.yaml", HEAD + "steps:\n  - id: t\n    include: tasks/t.yaml\n"))
    assert "the default of parameter 'port' must be a whole number" in at(diags, "tasks/t.yaml:2:34").message
    assert "would hide the built-in name 'steps'" in at(diags, "tasks/t.yaml:3:3").message
    assert at(diags, "tasks/t.yaml:4:16").hint == "did you mean 'string'?"
    assert "a parameter without default is required" in at(diags, "tasks/t.yaml:5:25").message


def test_names_inside_and_across_includes(tmp_path: Path) -> None:
    write(tmp_path / "tasks/t.yaml", """\
        params: {}
        steps:
          - id: probe
            run: "true"
            register: probed
          - id: use
            run: echo {{ probed.rc }} {{ steps.probe.rc }} {{ steps.missing.rc }}
    """)
    pb = write(tmp_path / "site.yaml", HEAD + """\
steps:
  - id: t
    include: tasks/t.yaml
  - id: after
    run: echo {{ steps.t.probe.rc }} {{ steps.t.changed }} {{ probed.rc }} {{ steps.t.nope }}
  - id: early
    run: echo {{ steps.later.probe.rc }} {{ steps.later.changed }}
  - id: later
    include: tasks/t.yaml
""")
    diags = check(pb)
    d = at(diags, "tasks/t.yaml:7:10")
    assert d.message == "no step 'missing'" and d.via == f"{pb}:5:5"
    d = next(d for d in diags if "probed" in d.message)
    assert d.where().endswith("site.yaml:8:10") and d.message == "undefined variable 'probed'"
    assert "steps.t.probe" in d.hint
    assert any(d.message == "include 't' has no step 'nope'" for d in diags)
    assert any(d.message == "step 'later.probe' is used before it runs" for d in diags)
    assert any(d.message == "include 'later' is used before its steps run" for d in diags)
    assert len(diags) == 5, "\n".join(d.render() for d in diags)


def test_duplicate_ids_inside_a_step_file_point_into_it(tmp_path: Path) -> None:
    write(tmp_path / "t.yaml", "params: {}\nsteps:\n  - id: a\n    run: x\n  - id: a\n    run: y\n")
    diags = check(write(tmp_path / "site.yaml", HEAD + "steps:\n  - id: t\n    include: t.yaml\n  - id: a\n"
                                                       "    run: z\n"))
    (d,) = diags
    assert d.where() == f"{tmp_path}/t.yaml:5:9" and d.message.startswith("duplicate step id 't.a'")


def test_depth_and_count_are_bounded(tmp_path: Path) -> None:
    for i in range(reuse.MAX_DEPTH + 2):
        write(tmp_path / f"d{i}.yaml", f"params: {{}}\nsteps:\n  - id: n\n    include: d{i + 1}.yaml\n")
    write(tmp_path / f"d{reuse.MAX_DEPTH + 2}.yaml", "params: {}\nsteps:\n  - id: x\n    run: id\n")
    diags = check(write(tmp_path / "site.yaml", HEAD + "steps:\n  - id: d\n    include: d0.yaml\n"))
    assert any(f"includes nested deeper than {reuse.MAX_DEPTH} levels" in d.message for d in diags)
    # a diamond: each file uses the next twice, 2**11 uses in all
    for i in range(11):
        write(tmp_path / f"w{i}.yaml", f"params: {{}}\nsteps:\n  - id: a\n    include: w{i + 1}.yaml\n"
                                       f"  - id: b\n    include: w{i + 1}.yaml\n")
    write(tmp_path / "w11.yaml", "params: {}\nsteps:\n  - id: x\n    run: id\n")
    diags = check(write(tmp_path / "wide.yaml", HEAD + "steps:\n  - id: w\n    include: w0.yaml\n"))
    assert [d.message for d in diags if "include and role steps" in d.message] == [
        f"more than {reuse.MAX_INCLUDES:,} include and role steps in one playbook (each use counts)"]


def test_roles_own_their_sources(tmp_path: Path) -> None:
    write(tmp_path / "secret.txt", "s3cret\n")
    write(tmp_path / "roles/r/role.yaml", """\
        params: {}
        steps:
          - id: leak
            copy: {src: ../../secret.txt, dest: /tmp/x}
          - id: gone
            template: {src: nothere.j2, dest: /tmp/y}
    """)
    diags = check(write(tmp_path / "site.yaml", HEAD + "steps:\n  - id: r\n    role: roles/r\n"))
    d = at(diags, "roles/r/role.yaml:4:17")
    assert "is outside the role's folder" in d.message and d.via == f"{tmp_path}/site.yaml:5:5"
    d = at(diags, "roles/r/role.yaml:6:21")
    assert d.message == "template source 'nothere.j2' not found" and "templates/" in d.hint


def test_role_and_vars_file_problems(tmp_path: Path) -> None:
    write(tmp_path / "roles/empty/README", "no role.yaml here\n")
    write(tmp_path / "vars/list.yaml", "- a\n- b\n")
    write(tmp_path / "vars/bad.yaml", "ok: 1\n2bad: x\n")
    pb = write(tmp_path / "site.yaml", HEAD + """\
vars_files: [vars/list.yaml, vars/bad.yaml, vars/none.yaml, "{{ env }}.yaml"]
steps:
  - id: a
    role: roles/empty
  - id: b
    include_role: {name: web}
""")
    diags = check(pb)
    assert at(diags, "site.yaml:7:11").message == "role roles/empty has no role.yaml"
    assert at(diags, "vars/list.yaml:1:1").message == "a vars file must hold a mapping of names to values"
    assert at(diags, "vars/bad.yaml:2:1").message == "'2bad' is not a variable name"
    assert at(diags, "site.yaml:4:45").message == "vars file vars/none.yaml not found"
    assert "not a template" in at(diags, "site.yaml:4:61").message
    d = at(diags, "site.yaml:9:5")
    assert d.message.startswith("unknown key 'include_role'") and "role: {path: roles/nginx" in d.hint


def test_ansible_habits_on_include_steps_get_hints(tmp_path: Path) -> None:
    write(tmp_path / "t.yaml", "params: {}\nsteps:\n  - id: x\n    run: id\n")
    pb = write(tmp_path / "site.yaml", HEAD + """\
steps:
  - id: a
    include_tasks: t.yaml
  - id: b
    include: t.yaml
    vars: {x: 1}
    loop: [1, 2]
""")
    diags = check(pb)
    assert "include: {file: tasks/web.yaml" in at(diags, "site.yaml:6:5").hint
    assert at(diags, "site.yaml:9:5").message.startswith("vars cannot be used on an include")
    assert "cannot be used on an include" in at(diags, "site.yaml:10:5").message


def test_load_playbook_refuses_what_validate_refuses(tmp_path: Path) -> None:
    write(tmp_path / "t.yaml", "params:\n  n: {type: integer}\nsteps:\n  - id: x\n    run: echo {{ n }}\n")
    pb = write(tmp_path / "site.yaml", HEAD + "steps:\n  - id: t\n    include: t.yaml\n")
    with pytest.raises(InvalidInput) as exc:
        config.load_playbook(str(pb))
    assert [d.message for d in exc.value.diagnostics] == ["missing parameter 'n', required by t.yaml"]
