"""The plan/apply oracle on `local`: playbooks whose steps touch the same things (issue 10's
cases, first and second runs), every shipped example that runs on local, and the oracle's own checks.

Each playbook and every path it manages live in the test's tmp folder (under /tmp).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.oracle import Applied, Oracle, Planned, action_mismatches, compare, unconverged

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "playbooks"


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """The folder the playbooks manage (the project folder is tmp_path itself)."""
    path = tmp_path / "t"
    path.mkdir()
    return path


def playbook(project: Path, target: Path, steps: str, name: str = "site.yaml") -> Path:
    """A playbook for `local` in `project`; `@T` in the steps stands for the target folder."""
    head = "opsrun: 1\nname: oracle case\nhosts: local\nsteps:\n"
    path = project / name
    path.write_text(head + textwrap.indent(textwrap.dedent(steps).replace("@T", str(target)), "  "))
    return path


def diff_lines(sp: Planned) -> list[str]:
    return sp.diff.splitlines()


# ---------------------------------------------------------------- the oracle's own checks


def _p(
    instance: str,
    status: str,
    summary: str = "s",
    reason: str = "",
    actions: tuple[str, ...] = (),
    read_only: bool = False,
) -> Planned:
    return Planned(
        "h", instance, instance.split("[", maxsplit=1)[0], status, summary, reason, actions, "", (), read_only
    )


def _a(instance: str, status: str, commands: tuple[str, ...] = ()) -> Applied:
    return Applied("h", instance, instance.split("[", maxsplit=1)[0], status, "m", list(commands))


def test_oracle_names_every_pair_that_lies() -> None:
    plan = [
        _p("a", "noop"),
        _p("b", "create"),
        _p("c", "run"),
        _p("d", "run", read_only=True),
        _p("e", "unknown"),
        _p("f", "blocked"),
        _p("g", "skip"),
        _p("h", "update"),
    ]
    applied = {
        ("h", k): v
        for k, v in {
            "a": _a("a", "changed"),
            "b": _a("b", "ok"),
            "c": _a("c", "ok"),
            "d": _a("d", "ok"),
            "e": _a("e", "changed"),
            "f": _a("f", "failed"),
            "g": _a("g", "skipped"),
            "x": _a("x", "ok"),
        }.items()
    }
    problems = compare(plan, applied)
    named = sorted(p.split(":", 1)[0] for p in problems)
    # a: `=` changed; b: `+` ok; c: `>` ok; e: `?` without reason; f: `!` failed; h: nothing; x: unplanned
    assert named == ["h/a", "h/b", "h/c", "h/e", "h/f", "h/h", "h/x"], problems
    assert any("h/a" in p and "expected ok or skipped" in p for p in problems)
    assert compare([_p("e", "unknown", reason="why")], {("h", "e"): _a("e", "changed")}) == []
    assert compare([_p("e", "unknown", reason="why")], {("h", "e"): _a("e", "ok")}, known=True)
    # a loop the plan could not expand covers the items apply ran
    assert compare([_p("l", "unknown", reason="why")], {("h", "l[0]"): _a("l[0]", "changed")}) == []


def test_oracle_convergence_and_actions_checks_can_fail() -> None:
    second = [_p("a", "noop"), _p("b", "update"), _p("c", "run"), _p("d", "run", read_only=True), _p("e", "delete")]
    assert sorted(p.split(":")[0] for p in unconverged(second)) == ["h/b", "h/c", "h/e"]
    assert [p.split(":")[0] for p in unconverged(second, {"b", "c"})] == ["h/e"]
    plan = [_p("a", "create", actions=("put /x (2 bytes)",)), _p("b", "update", actions=("chmod 0600 -- /x",))]
    applied = {
        ("h", "a"): _a("a", "changed", ("put /x (2 bytes)",)),
        ("h", "b"): _a("b", "changed", ("touch -- /x", "chmod 0600 -- /x")),
    }
    assert [p.split(":")[0] for p in action_mismatches(plan, applied)] == ["h/b"]


# ---------------------------------------------------------------- exact content, then a line edit


CONTENT_THEN_LINE = """\
    - id: exact_content
      file: {path: "@T/app.env", content: "A=1\\nB=2\\n"}
    - id: line_edit
      line: {path: "@T/app.env", line: "C=3"}
    """
FIGHTING = {"exact_content", "line_edit"}  # they fight on every run: both change again, by design


def test_content_then_line_first_run(tmp_path: Path, target: Path) -> None:
    pb = playbook(tmp_path, target, CONTENT_THEN_LINE)
    report = Oracle(tmp_path).check(pb, non_convergent=FIGHTING, known=True, check_actions=True)
    assert (target / "app.env").read_text() == "A=1\nB=2\nC=3\n"
    assert "+C=3" in diff_lines(report.first.step("line_edit"))


def test_content_then_line_second_run(tmp_path: Path, target: Path) -> None:
    pb = playbook(tmp_path, target, CONTENT_THEN_LINE)
    oracle = Oracle(tmp_path)
    assert oracle.apply(pb).call.rc == 0
    report = oracle.check(pb, non_convergent=FIGHTING, known=True, check_actions=True)
    # the content step takes C=3 out again, so the line step has to put it back
    line = report.first.step("line_edit")
    assert line.status == "update" and "+C=3" in diff_lines(line), line
    assert (target / "app.env").read_text() == "A=1\nB=2\nC=3\n"


def test_content_and_line_fighting_are_named(tmp_path: Path, target: Path) -> None:
    pb = playbook(tmp_path, target, CONTENT_THEN_LINE)
    oracle = Oracle(tmp_path)
    for command in ("validate", "plan"):
        call = oracle.opsrun(command, str(pb))
        said = [ln for ln in (call.stdout + call.stderr).splitlines() if "exact_content" in ln and "line_edit" in ln]
        assert said, f"{command} does not name the two steps that fight over app.env:\n{call.show()}"


# ---------------------------------------------------------------- a line loop into a file written earlier


def test_line_loop_into_a_file_an_earlier_step_writes(tmp_path: Path, target: Path) -> None:
    pb = playbook(
        tmp_path,
        target,
        """\
        - id: base
          file: {path: "@T/users.txt", content: "# users\\n"}
        - id: users
          loop: [alice, bob]
          line: {path: "@T/users.txt", line: "{{ item }}", create: true}
        """,
    )
    report = Oracle(tmp_path).check(pb, non_convergent={"base", "users"}, known=True, check_actions=True)
    assert (target / "users.txt").read_text() == "# users\nalice\nbob\n"
    second = report.first.step("users[1]")
    lines = diff_lines(second)
    # users[1] finds the file base wrote and users[0] extended: both lines, only bob added
    assert second.status == "update", second
    assert "+bob" in lines and " alice" in lines and " # users" in lines, second.diff
    assert "+alice" not in lines, second.diff


# ---------------------------------------------------------------- a folder removed, then made again


FOLDER_AGAIN = """\
    - id: wipe
      file: {path: "@T/site", state: absent}
    - id: folder
      file: {path: "@T/site", state: directory}
    - id: page
      file: {path: "@T/site/index.html", content: "hi\\n"}
    """
EVERY_RUN = {"wipe", "folder", "page"}  # removed and made again each run


def test_folder_absent_then_directory_and_file_first_run(tmp_path: Path, target: Path) -> None:
    pb = playbook(tmp_path, target, FOLDER_AGAIN)
    report = Oracle(tmp_path).check(pb, non_convergent=EVERY_RUN, known=True, check_actions=True)
    assert (target / "site" / "index.html").read_text() == "hi\n"
    assert [report.first.step(s).status for s in ("wipe", "folder", "page")] == ["noop", "create", "create"]


def test_folder_absent_then_directory_and_file_second_run(tmp_path: Path, target: Path) -> None:
    pb = playbook(tmp_path, target, FOLDER_AGAIN)
    oracle = Oracle(tmp_path)
    assert oracle.apply(pb).call.rc == 0
    report = oracle.check(pb, non_convergent=EVERY_RUN, known=True, check_actions=True)
    # the folder goes, with its page: both are made again
    assert [report.first.step(s).status for s in ("wipe", "folder", "page")] == ["delete", "create", "create"]
    assert (target / "site" / "index.html").read_text() == "hi\n"


# ---------------------------------------------------------------- register and stdout


def test_register_then_use_and_stdout_without_newline(tmp_path: Path, target: Path) -> None:
    pb = playbook(
        tmp_path,
        target,
        """\
        - id: hello
          register: greet
          run: {command: "echo hello", changed_when: "false"}
        - id: use
          file: {path: "@T/greet.txt", content: "{{ greet.stdout }}!\\n"}
        - id: same
          when: "steps.hello.stdout == 'hello'"
          file: {path: "@T/same.txt", content: "yes\\n"}
        """,
    )
    report = Oracle(tmp_path).check(pb, check_actions=True)
    assert (target / "greet.txt").read_text() == "hello!\n"
    assert report.apply.step("same").status == "changed"
    assert (target / "same.txt").read_text() == "yes\n"


# ---------------------------------------------------------------- tags and a step that reads another


TAGGED = """\
    - id: conf
      tags: [config]
      file: {path: "@T/app.conf", content: "x=1\\n"}
    - id: restart
      when: steps.conf.changed
      file: {path: "@T/restarted", content: "yes\\n"}
    - id: other
      file: {path: "@T/other", content: "o\\n"}
    """


@pytest.mark.parametrize("selection", [{"skip_tags": ["config"]}, {"tags": ["config"]}], ids=["skip-tags", "tags"])
def test_step_reading_an_unselected_step(tmp_path: Path, target: Path, selection: dict[str, list[str]]) -> None:
    pb = playbook(tmp_path, target, TAGGED)
    report = Oracle(tmp_path, **selection).check(pb, check_actions=True)  # type: ignore[arg-type]
    restart = report.first.find("restart")
    assert restart is not None, "the plan says nothing about 'restart', which reads the unselected step 'conf'"
    assert restart.reason.strip(), f"the plan does not say why 'restart' does what it does: {restart.show()}"
    if "skip_tags" in selection:  # the host goes on after it
        assert report.apply.step("other").status == "changed"


# ---------------------------------------------------------------- template / copy over an earlier file


def test_template_overwrites_a_file_an_earlier_step_wrote(tmp_path: Path, target: Path) -> None:
    (tmp_path / "app.conf.j2").write_text("name = {{ inventory_hostname }}\n")
    pb = playbook(
        tmp_path,
        target,
        """\
        - id: draft
          file: {path: "@T/app.conf", content: "draft\\n"}
        - id: render
          template: {src: app.conf.j2, dest: "@T/app.conf", mode: "0640", show_diff: true}
        """,
    )
    report = Oracle(tmp_path).check(pb, non_convergent={"draft", "render"}, known=True, check_actions=True)
    render = report.first.step("render")
    assert render.status == "update", render
    assert "-draft" in diff_lines(render) and "+name = local" in diff_lines(render), render.diff
    assert (target / "app.conf").read_text() == "name = local\n"
    assert oct((target / "app.conf").stat().st_mode & 0o777) == "0o640"


def test_copy_overwrites_a_file_an_earlier_step_touched(tmp_path: Path, target: Path) -> None:
    (tmp_path / "static.txt").write_text("static\n")
    pb = playbook(
        tmp_path,
        target,
        """\
        - id: touch
          file: {path: "@T/static.txt", state: touch}
        - id: copy
          copy: {src: static.txt, dest: "@T/static.txt", mode: "0640", show_diff: true}
        """,
    )
    report = Oracle(tmp_path).check(pb, known=True, check_actions=True)
    copy = report.first.step("copy")
    assert copy.status == "update" and "+static" in diff_lines(copy), copy
    assert not copy.diff.startswith("--- /dev/null"), copy.diff
    assert (target / "static.txt").read_text() == "static\n"


# ---------------------------------------------------------------- mode and owner after a create


def test_mode_and_owner_after_a_create(tmp_path: Path, target: Path) -> None:
    owner = "nobody" if os.geteuid() == 0 else None  # chown to another user needs root
    attrs = '{path: "@T/secret", mode: "0600"' + (f", owner: {owner}" if owner else "") + "}"
    pb = playbook(
        tmp_path,
        target,
        f"""\
        - id: make
          file: {{path: "@T/secret", content: "s\\n"}}
        - id: lock
          file: {attrs}
        - id: folder
          file: {{path: "@T/private", state: directory}}
        - id: folder_mode
          file: {{path: "@T/private", state: directory, mode: "0700"}}
        """,
    )
    report = Oracle(tmp_path).check(pb, known=True, check_actions=True)
    lock = report.first.step("lock")
    assert lock.status == "update" and "0600" in lock.summary, lock
    if owner:
        assert owner in lock.summary, lock
        assert (target / "secret").owner() == owner
    assert report.first.step("folder_mode").status == "update", report.first.step("folder_mode")
    assert oct((target / "secret").stat().st_mode & 0o777) == "0o600"
    assert oct((target / "private").stat().st_mode & 0o777) == "0o700"


# ---------------------------------------------------------------- the shipped examples that run on local


def test_example_hello(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    oracle = Oracle(tmp_path, inventory=ROOT / "inventory.yaml", variables=[f"demo_dir={demo}"])
    oracle.check(EXAMPLES / "hello.yaml", check_actions=True)
    assert (demo / "motd").read_text().startswith("Hello from opsrun, local!")
    oracle.check(EXAMPLES / "hello.yaml", check_actions=True)  # the second run holds it too


def test_example_web_on_local(tmp_path: Path) -> None:
    site = tmp_path / "site"
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {"opsrun": 1, "hosts": {"local": {"transport": "local"}}, "groups": {"web": {"hosts": ["local"]}}}
        )
    )
    oracle = Oracle(tmp_path, inventory=inventory, variables=[f"site_root={site}"])
    oracle.check(EXAMPLES / "web.yaml", check_actions=True)
    assert "Welcome from local" in (site / "index.html").read_text()
    assert (site / "robots.txt").read_text() == "Disallow: /private\n"
    oracle.check(EXAMPLES / "web.yaml", check_actions=True)


def test_every_example_is_covered() -> None:
    """A new example must get an oracle run here or in a transport's end-to-end test."""
    covered = {
        "hello.yaml": "here",
        "web.yaml": "here and tests/test_ssh_e2e.py",
        "kiosk.yaml": "tests/test_adb.py",
        "proxmox-lab.yaml": "tests/test_proxmox_cli.py",
        "shop.yaml": "tests/test_reuse.py",
        "docs-site.yaml": "tests/test_reuse.py",
        "host-info.yaml": "tests/test_host_facts.py",
    }
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(covered)
