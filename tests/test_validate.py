"""`opsrun validate` end to end: it finds what plan finds without a host (undefined variables,
registered names, -e values, secrets not read), templated vars reach plan, and validate stays
linear in the number of steps (a generated 20,000-step playbook, time-bounded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def opsrun(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPSRUN_STATE_DIR"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, text=True,
                          capture_output=True, env=env, timeout=timeout)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_register_then_read_validates(tmp_path: Path) -> None:
    write(tmp_path / "pb.yaml", """\
        opsrun: 1
        name: register
        hosts: local
        steps:
          - id: hello
            run: echo hello
            register: greet
          - id: show
            run: "echo {{ greet.stdout }} {{ steps.hello.rc }}"
            when: greet.rc == 0
        """)
    p = opsrun("validate", "pb.yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "ok: 1 file valid" in p.stdout


def test_undefined_variable_is_located_and_e_supplies_it(tmp_path: Path) -> None:
    write(tmp_path / "pb.yaml", """\
        opsrun: 1
        name: undefined
        hosts: local
        vars:
          token: "{{ secret('VALIDATE_NEVER_SET') }}"
        steps:
          - id: a
            run: "echo {{ target }} {{ token }}"
        """)
    p = opsrun("validate", "pb.yaml", "--json", cwd=tmp_path)
    assert p.returncode == 4, p.stdout + p.stderr
    (err,) = json.loads(p.stdout)["errors"]
    assert (err["line"], err["col"], err["message"]) == (8, 10, "undefined variable 'target'")
    assert "-e target=VALUE" in err["hint"]
    # validate reads no secret: the unset secret is not an error here (plan reads it)
    ok = opsrun("validate", "pb.yaml", "-e", "target=db1", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_missing_source_and_template_file_error(tmp_path: Path) -> None:
    write(tmp_path / "t" / "motd.j2", "Hello {{ who }}\n{% if x %}\n")
    write(tmp_path / "pb.yaml", """\
        opsrun: 1
        name: sources
        hosts: local
        steps:
          - id: a
            copy: {src: files/nope.txt, dest: /tmp/x}
          - id: b
            template: {src: t/motd.j2, dest: /tmp/y}
        """)
    p = opsrun("validate", "pb.yaml", cwd=tmp_path)
    assert p.returncode == 4
    assert "pb.yaml:6:17: error: copy source 'files/nope.txt' not found" in p.stderr
    assert "t/motd.j2:2: error: template error: Unexpected end of template" in p.stderr
    assert "Traceback" not in p.stderr


def test_templated_vars_reach_plan(tmp_path: Path) -> None:
    write(tmp_path / "pb.yaml", f"""\
        opsrun: 1
        name: vars
        hosts: local
        vars:
          base: "{tmp_path}/out"
          n: "{{{{ 1 + 1 }}}}"
          path: "{{{{ base }}}}/n{{{{ n }}}}.txt"
        steps:
          - id: f
            file: {{path: "{{{{ path }}}}", content: "n={{{{ n }}}}\\n"}}
        """)
    assert opsrun("validate", "pb.yaml", cwd=tmp_path).returncode == 0
    p = opsrun("plan", "pb.yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"{tmp_path}/out/n2.txt" in p.stdout and "n=2" in p.stdout


def test_validate_is_linear_in_steps(tmp_path: Path) -> None:
    """20,000 steps (run/file/line with templates, when, step references) validate in well
    under the bound; it took ~45 s before (quadratic). docs/benchmarks.md has the numbers."""
    lines = ["opsrun: 1", "name: big", "hosts: local", "vars:", "  base: /tmp/big", "steps:"]
    for i in range(20_000):
        lines += [f"  - id: s{i}", f"    name: step {i}"]
        if i % 3 == 0:
            ref = f" {{{{ steps.s{i - 1}.rc }}}}" if i else ""
            lines.append(f'    run: "echo {{{{ base }}}}{ref}"')
        elif i % 3 == 1:
            lines.append(f'    file: {{path: "{{{{ base }}}}/f{i}", state: directory, mode: "0755"}}')
        else:
            lines.append(f"    line: {{path: /tmp/big/l, line: \"x={i}\", create: true}}")
        if i % 5 == 0 and i:
            lines.append("    when: steps.s0.rc == 0")
    (tmp_path / "big.yaml").write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    p = opsrun("validate", "big.yaml", cwd=tmp_path, timeout=30)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    assert took < 30


def test_fuzzed_playbooks_never_raise_in_the_offline_checks(tmp_path: Path) -> None:
    """Values of valid playbooks replaced by values of other types (templates, cycles,
    sources, enum templates among them): diagnostics only, with and without an inventory."""
    import random

    from yaml import safe_dump

    from runner import config, load, offline
    from runner.errors import Diagnostic
    from tests.test_schema import GOOD_PLAYBOOKS, _paths, _set

    write(tmp_path / "templates" / "site.conf.j2", "listen {{ listen }} {{ nope }}\n")
    inv = config.build_inventory(load.parse(
        "opsrun: 1\nvars: {port: 1}\nhosts:\n  web1: {transport: local, vars: {st: x}}\n"
        "groups:\n  web: {hosts: [web1]}\n", "inv.yaml"))
    rng = random.Random(99)
    samples: list[object] = [None, 0, True, "", "{{", "{{ a }}", "{{ st }}", "{{ port }}", "{% if %}",
                             [], ["{{ a }}"], {}, {"a": "{{ b }}", "b": "{{ a }}"}, {"src": 5},
                             "templates/site.conf.j2", "{{ steps.zz.rc }}", "{{ item }}", "greet"]
    bases = [load.parse(t, "f.yaml").data for t in GOOD_PLAYBOOKS]
    for n in range(150):
        data = json.loads(json.dumps(rng.choice(bases)))
        paths = list(_paths(data))
        for _ in range(rng.randint(1, 4)):
            _set(data, rng.choice(paths), rng.choice(samples))
        doc = load.parse(safe_dump(data, sort_keys=False), str(tmp_path / "f.yaml"))
        diags = offline.validate_playbook(doc, inv if n % 2 else None, {"x": 1})
        assert all(isinstance(d, Diagnostic) for d in diags)


def test_validate_refuses_names_that_would_be_options(tmp_path: Path) -> None:
    """The grammar check prepare() makes before any probe, made by validate too (issue 11)."""
    pb = tmp_path / "pb.yaml"
    pb.write_text(
        "opsrun: 1\nname: t\nhosts: local\nsteps:\n"
        "  - id: pkg\n    package: {name: ['-oDPkg::Pre-Invoke::=touch /tmp/x', curl]}\n"
        "  - id: own\n    file: {path: /tmp/o, owner: '--reference=/etc/shadow'}\n"
        "  - id: tpl\n    package: {name: '{{ later }}'}\n"
    )
    res = subprocess.run([sys.executable, "-m", "runner", "validate", str(pb), "-e", "later=x"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 4, res.stderr
    assert f"{pb}:6:" in res.stderr and "package name '-oDPkg" in res.stderr
    assert f"{pb}:8:" in res.stderr and "owner '--reference=/etc/shadow'" in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("error:") == 2


def test_boolean_when_and_changed_when_as_ansible_users_write_them(tmp_path: Path) -> None:
    pb = tmp_path / "pb.yaml"
    pb.write_text(
        "opsrun: 1\nname: t\nhosts: local\nsteps:\n"
        "  - id: a\n    run: {command: 'echo hi', changed_when: false}\n"
        "  - id: b\n    when: false\n    run: echo no\n"
        "  - id: c\n    run: {command: 'false', failed_when: false}\n"
    )
    res = subprocess.run([sys.executable, "-m", "runner", "apply", str(pb), "--yes", "--json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    ends = {e["instance"]: e["status"] for e in map(json.loads, res.stdout.splitlines()) if e["type"] == "step_end"}
    assert ends == {"a": "ok", "b": "skipped", "c": "changed"}
