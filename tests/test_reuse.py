"""Includes, roles and vars files on `local`, end to end: real files in tmp_path, the real CLI,
the plan/apply oracle (apply did what plan said per (host, step), a re-plan converges), and the
shipped example repo layout (playbooks/shop.yaml, docs-site.yaml, roles/static_site)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner import config, load, reuse, schema
from tests.oracle import Oracle

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "playbooks"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def opsrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True, capture_output=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def site_role(project: Path) -> None:
    """roles/site: a folder, a templated config (templates/), a copied file (files/), a note."""
    write(project / "roles/site/role.yaml", """\
        opsrun: 1
        description: a small site
        params:
          name: {type: string, description: the site's name}
          port: {type: integer, default: 80, description: the port it listens on}
        defaults:
          owner_note: nobody
          site_dir: "{{ base }}/{{ name }}"
        steps:
          - id: dir
            file: {path: "{{ site_dir }}", state: directory}
          - id: conf
            template: {src: site.conf.j2, dest: "{{ site_dir }}/site.conf"}
            register: conf_result
          - id: robots
            copy: {src: robots.txt, dest: "{{ site_dir }}/robots.txt"}
          - id: note
            when: conf_result.changed and steps.conf.changed
            run:
              command: echo "{{ name }} {{ owner_note }}" > {{ site_dir }}/note
              creates: "{{ site_dir }}/note"
    """)
    write(project / "roles/site/templates/site.conf.j2", "server {{ name }} listen {{ port }};\n")
    write(project / "roles/site/files/robots.txt", "Disallow: /\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    site_role(tmp_path)
    write(tmp_path / "vars/common.yaml", "greeting: from the vars file\nlevel: file\n")
    write(tmp_path / "vars/override.yaml", "level: second file\n")
    write(tmp_path / "tasks/motd.yaml", """\
        params:
          text: {type: string, description: what the file says}
          path: {type: string, default: motd}
        steps:
          - id: motd
            file: {path: "{{ base }}/{{ path }}", content: "{{ text }} ({{ level }})\\n"}
    """)
    write(tmp_path / "site.yaml", f"""\
        opsrun: 1
        name: reuse
        hosts: local
        vars_files: [vars/common.yaml, vars/override.yaml]
        vars:
          base: {tmp_path}/out
          level: playbook vars
        steps:
          - id: root
            file: {{path: "{{{{ base }}}}", state: directory}}
          - id: shop
            role: {{path: roles/site, with: {{name: shop, port: 8080}}}}
          - id: blog
            role: {{path: roles/site, with: {{name: blog}}}}
            tags: [blog]
            when: "true"
          - id: after
            when: steps.shop.conf.changed and steps.shop.changed
            run:
              command: echo done > {{{{ base }}}}/after
              creates: "{{{{ base }}}}/after"
          - id: common
            include: {{file: tasks/motd.yaml, with: {{text: "{{{{ greeting }}}}"}}}}
    """)
    return tmp_path


def test_a_role_used_twice_plans_and_applies_each_use(project: Path) -> None:
    """The oracle: apply did what plan said for every (host, step), and a re-plan converges."""
    site = project / "site.yaml"
    oracle = Oracle(project, in_process=True)
    report = oracle.check(site, check_actions=True)
    ids = [sp.instance for sp in report.first.steps]
    assert ids == ["root", "shop.dir", "shop.conf", "shop.robots", "shop.note", "blog.dir", "blog.conf",
                   "blog.robots", "blog.note", "after", "common.motd"]
    out = project / "out"
    assert (out / "shop/site.conf").read_text() == "server shop listen 8080;\n"
    assert (out / "blog/site.conf").read_text() == "server blog listen 80;\n"
    assert (out / "blog/robots.txt").read_text() == "Disallow: /\n"  # files/ of the role
    assert (out / "shop/note").read_text() == "shop nobody\n"  # defaults, register and steps.conf, in the role
    assert (out / "after").exists()  # steps.shop.conf.changed and steps.shop.changed, from outside
    assert (out / "motd").read_text() == "from the vars file (second file)\n"  # later vars files win
    oracle.check(site, check_actions=True)  # the second run holds it too


def test_plan_json_names_the_file_and_include_chain(project: Path) -> None:
    p = opsrun("plan", "site.yaml", "--json", cwd=project)
    assert p.returncode == 0, p.stderr
    steps = {s["instance"]: s for s in json.loads(p.stdout)["steps"]}
    assert steps["shop.conf"]["source"] == "roles/site/role.yaml:12:5 (included by site.yaml:11:5)"
    assert steps["common.motd"]["source"] == "tasks/motd.yaml:5:5 (included by site.yaml:22:5)"
    assert "source" not in steps["root"]
    text = opsrun("plan", "site.yaml", cwd=project).stdout  # the console names it too
    at = text.index("shop.conf:")
    assert "from: roles/site/role.yaml:12:5 (included by site.yaml:11:5)" in text[at:at + 300]


def test_tags_when_and_hosts_of_an_include_reach_its_steps(project: Path) -> None:
    site = project / "site.yaml"
    text = site.read_text()
    site.write_text(text.replace('when: "true"', "when: level == 'nope'"))
    p = opsrun("plan", "site.yaml", "--json", cwd=project)
    plan = {s["instance"]: s for s in json.loads(p.stdout)["steps"]}
    assert plan["blog.dir"]["status"] == "skip"
    assert "when: level == 'nope' is false (include 'blog' at site.yaml:13:5)" in plan["blog.dir"]["summary"]
    p = opsrun("plan", "site.yaml", "--json", "--tags", "blog", cwd=project)
    assert {s["instance"] for s in json.loads(p.stdout)["steps"]} == {"blog.dir", "blog.conf", "blog.robots",
                                                                     "blog.note"}
    site.write_text(text.replace('when: "true"', 'hosts: "!local"'))
    p = opsrun("plan", "site.yaml", "--json", cwd=project)
    assert not [s for s in json.loads(p.stdout)["steps"] if s["instance"].startswith("blog.")]


def test_a_saved_plan_is_refused_when_an_included_file_changed(project: Path) -> None:
    p = opsrun("plan", "site.yaml", "-o", "plan.json", cwd=project)
    assert p.returncode == 0, p.stderr
    tmpl = project / "roles/site/templates/site.conf.j2"
    (project / "roles/site/role.yaml").write_text((project / "roles/site/role.yaml").read_text() + "\n# edited\n")
    p = opsrun("apply", "plan.json", "--yes", cwd=project)
    assert p.returncode != 0 and "playbook" in (p.stdout + p.stderr).lower()
    assert not (project / "out").exists()
    assert tmpl.exists()


def test_precedence_of_defaults_vars_files_params(project: Path) -> None:
    """role defaults < inventory vars < playbook vars < vars files < host vars < --var < parameters."""
    inv = write(project / "inv.yaml", """\
        opsrun: 1
        vars: {owner_note: from-inventory, level: inventory}
        hosts:
          local: {transport: local}
    """)
    site = project / "site.yaml"
    pb = config.load_playbook(str(site), config.load_inventory(str(inv)))
    assert pb.vars["level"] == "second file" and pb.vars["greeting"] == "from the vars file"
    step = next(s for s in pb.steps if s.id == "blog.dir")
    from runner.expand import expand

    host = config.load_inventory(str(inv)).hosts["local"]
    base = config.host_vars(config.load_inventory(str(inv)), host, pb, {"port": 1})
    errors: list[Any] = []
    (inst,) = expand(step, host, base, {}, set(), pb.dir, errors, pb.file)
    assert not errors
    assert inst.vars["owner_note"] == "from-inventory"  # an inventory var beats the role's default
    assert inst.vars["port"] == 80  # the parameter's default beats --var
    assert inst.vars["name"] == "blog" and inst.vars["level"] == "second file"


def test_a_step_file_alone_validates_and_is_not_planned(project: Path) -> None:
    p = opsrun("validate", "roles/site/role.yaml", "tasks/motd.yaml", cwd=project)
    assert p.returncode == 0, p.stderr
    p = opsrun("plan", "roles/site/role.yaml", cwd=project)
    assert p.returncode == 4 and "is a step file, not a playbook" in p.stderr


def test_resume_after_a_failure_inside_a_role(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    write(tmp_path / "roles/r/role.yaml", f"""\
        params: {{}}
        steps:
          - id: first
            run: echo ran >> {tmp_path}/first.log
          - id: needs_flag
            run: test -f {flag}
          - id: last
            run: echo ran >> {tmp_path}/last.log
    """)
    write(tmp_path / "p.yaml", "opsrun: 1\nname: r\nhosts: local\nsteps:\n  - id: r\n    role: roles/r\n")
    p = opsrun("apply", "p.yaml", "--yes", cwd=tmp_path)
    assert p.returncode == 1 and "r.needs_flag" in p.stdout + p.stderr
    run_id = sorted((tmp_path / ".opsrun" / "runs").iterdir())[-1].name
    flag.write_text("ok")
    p = opsrun("apply", "--resume", run_id, "--yes", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "first.log").read_text() == "ran\n"  # r.first is not run again
    assert (tmp_path / "last.log").read_text() == "ran\n"


# ---------------------------------------------------------------- the shipped example layout


def _web_inventory(tmp_path: Path) -> Path:
    return write(tmp_path / "inventory.yaml", """\
        opsrun: 1
        hosts:
          local: {transport: local}
        groups:
          web: {hosts: [local]}
    """)


def test_example_shop_on_local(tmp_path: Path) -> None:
    www = tmp_path / "www"
    oracle = Oracle(tmp_path, inventory=_web_inventory(tmp_path), variables=[f"sites_root={www}"])
    oracle.check(EXAMPLES / "shop.yaml", check_actions=True)
    assert (www / "shop/robots.txt").read_text() == "User-agent: *\nDisallow: /cart\nDisallow: /account\n"
    assert (www / "outlet/robots.txt").read_text() == "User-agent: *\nDisallow:\n"
    assert "listen 8081;" in (www / "outlet/site.conf").read_text()
    assert (www / "shop/404.html").read_text().startswith("<!doctype html>")
    assert (www / "motd").read_text() == "Sites on local: shop, outlet\nQuestions: webmaster@example.net\n"
    oracle.check(EXAMPLES / "shop.yaml", check_actions=True)


def test_example_docs_site_on_local(tmp_path: Path) -> None:
    www = tmp_path / "www"
    oracle = Oracle(tmp_path, inventory=_web_inventory(tmp_path), variables=[f"sites_root={www}"])
    oracle.check(EXAMPLES / "docs-site.yaml", check_actions=True)
    assert "<title>opsrun documentation</title>" in (www / "docs/index.html").read_text()
    assert "listen 80;" in (www / "docs/site.conf").read_text()


def test_validate_passes_on_the_example_repo() -> None:
    p = opsrun("validate", "playbooks/", cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    role = load.read(EXAMPLES / "roles/static_site/role.yaml")
    assert schema.detect(role) == "playbook" and reuse.is_step_file(role.data)
    assert not schema.validate_playbook(role)


def test_docs_reuse_examples_are_one_working_repository(tmp_path: Path) -> None:
    """The `# file:` examples of docs/reuse.md, written out: they validate, and the error and
    the plan's `source` the page shows are what opsrun says."""
    import re

    text = (ROOT / "docs/reuse.md").read_text()
    blocks = re.findall(r"```yaml\n# file: (\S+)\n(.*?)```", text, re.S)
    assert {name for name, _ in blocks} >= {"site.yaml", "tasks/nginx.yaml", "roles/blog/role.yaml"}
    for name, body in blocks:
        write(tmp_path / name, body)
    shown = re.search(r"```\n(roles/blog/role.yaml:.*?)```", text, re.S)
    assert shown is not None
    p = opsrun("validate", "site.yaml", cwd=tmp_path)
    assert p.returncode == 4
    assert p.stderr.startswith(shown.group(1)), p.stderr
    write(tmp_path / "roles/blog/templates/index.html.j2", "<h1>{{ title }}</h1>\n")
    p = opsrun("validate", "site.yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = opsrun("plan", "site.yaml", "--json", "--offline", cwd=tmp_path)
    steps = {s["instance"]: s for s in json.loads(p.stdout)["steps"]}
    assert f'"{steps["blog.index"]["source"]}"' in text.replace("\n", " ")
    assert [i for i in steps if i.startswith("web.")] == ["web.pkg", "web.conf", "web.reload"]


# ---------------------------------------------------------------- the step-file schema


def test_steps_schema_points_into_the_playbook_schema() -> None:
    from jsonschema import Draft202012Validator

    data = json.loads((ROOT / "schemas/steps.schema.json").read_text())
    Draft202012Validator.check_schema(data)
    assert data["$ref"] == "playbook.schema.json#/$defs/steps_file"
    assert "steps_file" in schema.load_schema("playbook")["$defs"]
    assert json.loads(schema.schema_text("steps"))["$id"] == "https://opsrun.dev/schemas/steps.schema.json"
    # the include step's keys are the ones reuse.py reads (the registry test for kinds, for includes)
    inc = schema.load_schema("playbook")["$defs"]["include_step"]["properties"]
    used = {k for k, v in inc.items() if v.get("not") != {}}
    assert used == {"id", "name", "description", *reuse.INCLUDE_KEYS, "hosts", "when", "tags", "policy",
                    "timeout", "sensitive", "sudo"}


def test_the_example_modelines_name_existing_schemas() -> None:
    for path in [*EXAMPLES.rglob("*.yaml")]:
        first = path.read_text().splitlines()[0]
        if "$schema=" in first:
            target = (path.parent / first.split("$schema=", 1)[1]).resolve()
            assert target.is_file(), f"{path}: {target}"
            assert os.path.basename(target) == ("steps.schema.json" if "params:" in path.read_text()
                                                else "playbook.schema.json")
