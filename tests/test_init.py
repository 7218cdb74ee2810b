"""`opsrun init` through the real CLI: the repo it writes validates, plans and converges on
`local`; it never overwrites without --force and never half-writes. Also --version, -e and
shell completion (which must stay free of heavy imports)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runner import scaffold

HEAVY = ("litellm", "proxmoxer", "adbutils", "fabric", "paramiko")


def opsrun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPSRUN_STATE_DIR", "GITHUB_ACTIONS")}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**base, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A folder with a unique name: the site playbook writes under /tmp/<that name>."""
    name = f"opsrun-init-{uuid.uuid4().hex[:10]}"
    yield tmp_path / name
    shutil.rmtree(Path("/tmp") / name, ignore_errors=True)


def test_init_then_validate_plan_apply_converges(repo: Path) -> None:
    p = opsrun("init", str(repo), cwd=repo.parent)
    assert p.returncode == 0, p.stderr
    for rel in ("inventory.yaml", "site.yaml", "gateway.yaml", ".gitignore", ".pre-commit-config.yaml",
                ".github/workflows/opsrun.yml", "README.md", "schemas/playbook.schema.json"):
        assert (repo / rel).is_file(), rel
        assert rel in p.stdout
    assert ".opsrun/" in (repo / ".gitignore").read_text()
    for rel in ("inventory.yaml", "site.yaml", "gateway.yaml"):  # every opsrun file names its schema
        first = (repo / rel).read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=schemas/"), first
        assert (repo / first.split("$schema=")[1]).is_file()
    for rel in (".pre-commit-config.yaml", ".github/workflows/opsrun.yml"):
        yaml.safe_load((repo / rel).read_text())  # valid YAML for their own tools
    assert "--skip-other" in (repo / ".pre-commit-config.yaml").read_text()

    v = opsrun("validate", ".", cwd=repo)
    assert v.returncode == 0, v.stderr
    assert "ok: 3 files valid" in v.stdout
    plan = opsrun("plan", "site.yaml", "--detailed-exitcode", cwd=repo)
    assert plan.returncode == 2, plan.stderr  # changes to make
    assert f"/tmp/{repo.name}" in plan.stdout
    a = opsrun("apply", "site.yaml", "--yes", cwd=repo)
    assert a.returncode == 0, a.stderr
    assert (Path("/tmp") / repo.name / "README").read_text() == f"managed by opsrun ({repo.name})\n"
    again = opsrun("plan", "site.yaml", "--detailed-exitcode", cwd=repo)
    assert again.returncode == 0, again.stdout  # converged
    assert "0 to change" in again.stdout


def test_init_never_overwrites_without_force_and_writes_nothing(repo: Path) -> None:
    repo.mkdir()
    (repo / "site.yaml").write_text("mine\n")
    (repo / "README.md").symlink_to(repo / "nowhere")  # a dangling link counts as there
    p = opsrun("init", str(repo), cwd=repo.parent)
    assert p.returncode == 4
    assert "would overwrite README.md, site.yaml" in p.stderr and "--force" in p.stderr
    assert sorted(x.name for x in repo.iterdir()) == ["README.md", "site.yaml"]  # nothing half-written
    assert (repo / "site.yaml").read_text() == "mine\n"
    f = opsrun("init", str(repo), "--force", cwd=repo.parent)
    assert f.returncode == 0, f.stderr
    assert (repo / "site.yaml").read_text().startswith("# yaml-language-server")
    assert (repo / "README.md").is_file() and not (repo / "README.md").is_symlink()
    assert not (repo / "nowhere").exists()  # the link was replaced, not followed
    assert not [x for x in repo.rglob("*.init")]  # no staged file left behind


def test_init_refuses_a_file_as_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    p = opsrun("init", "f", cwd=tmp_path)
    assert p.returncode == 4 and "not a folder" in p.stderr


def test_init_in_the_current_folder_with_an_awkward_name(tmp_path: Path) -> None:
    """A folder name with quotes and braces still gives valid YAML and a safe path."""
    name = f"it's {{x}} #{uuid.uuid4().hex[:6]}"
    files = scaffold.files(name, {"playbook": "{}"})
    inv = yaml.safe_load(files["inventory.yaml"])
    assert inv["vars"]["site_dir"].startswith("/tmp/it-s-x-") and " " not in inv["vars"]["site_dir"]
    assert "{x}" not in files["site.yaml"] and yaml.safe_load(files["site.yaml"])["name"] == "site"
    repo = tmp_path / name
    repo.mkdir()
    p = opsrun("init", cwd=repo)
    assert p.returncode == 0, p.stderr
    assert "Next: opsrun validate ." in p.stdout
    v = opsrun("validate", ".", cwd=repo)
    assert v.returncode == 0, v.stderr


def test_version_option_and_command(tmp_path: Path) -> None:
    from runner import __version__

    for args in (["--version"], ["-V"], ["version"]):
        p = opsrun(*args, cwd=tmp_path)
        assert p.returncode == 0 and p.stdout == f"opsrun {__version__}\n", (args, p.stderr)


def test_e_is_var_on_every_command_that_takes_vars(tmp_path: Path) -> None:
    (tmp_path / "pb.yaml").write_text(textwrap.dedent(f"""\
        opsrun: 1
        name: e
        hosts: local
        steps:
          - id: f
            file: {{path: "{tmp_path}/{{{{ where }}}}", content: "x\\n"}}
        """))
    v = opsrun("validate", "pb.yaml", cwd=tmp_path)
    assert v.returncode == 4 and "where" in v.stderr  # undefined without it
    assert opsrun("validate", "pb.yaml", "-e", "where=out", cwd=tmp_path).returncode == 0
    p = opsrun("plan", "pb.yaml", "-e", "where=out", cwd=tmp_path)
    assert p.returncode == 0 and f"{tmp_path}/out" in p.stdout
    a = opsrun("apply", "pb.yaml", "-e", "where=out", "--yes", cwd=tmp_path)
    assert a.returncode == 0 and (tmp_path / "out").read_text() == "x\n"


def test_shell_completion_works_without_heavy_imports(tmp_path: Path) -> None:
    show = opsrun("--show-completion", "bash", cwd=tmp_path)
    assert show.returncode == 0 and "_OPSRUN_COMPLETE=complete_bash" in show.stdout
    assert "--install-completion" in opsrun("--help", cwd=tmp_path).stdout
    code = textwrap.dedent(f"""
        import sys
        from runner.cli import main
        try:
            main([])
        except SystemExit:
            pass
        print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
        """)
    env = {**os.environ, "_OPSRUN_COMPLETE": "complete_bash", "COMP_WORDS": "opsrun pl", "COMP_CWORD": "1"}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.stdout.splitlines()[0] == "plan", p.stdout + p.stderr
    assert "HEAVY []" in p.stdout
    env["COMP_WORDS"], env["COMP_CWORD"] = "opsrun runs m", "2"
    sub = subprocess.run([sys.executable, "-m", "runner"], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=60)
    assert "merge" in sub.stdout.split(), sub.stdout + sub.stderr
