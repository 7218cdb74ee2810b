"""The layers of DESIGN.md §9, enforced: every import in runner/ (lazy ones inside functions
included, type-only ones under `if TYPE_CHECKING:` left out) points to the same layer or
one below. And the validate/plan paths (and --help) never reach litellm, proxmoxer, adbutils or the
server libraries (fastapi, uvicorn, starlette, mcp)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "runner"

# lowest first; a module may import its own layer and the ones below
LAYERS: list[tuple[str, ...]] = [
    ("runner", "runner.errors", "runner.model", "runner.files", "runner.policy", "runner.ansible_hints",
     "runner.scaffold", "runner.shard", "runner.overlay", "runner.apk", "runner.gc_passes"),
    ("runner.load", "runner.secrets", "runner.safety", "runner.shellquote", "runner.scope"),
    ("runner.render", "runner.journal", "runner.recap", "runner.tally", "runner.ci_report", "runner.transports"),
    ("runner.schema", "runner.schema_messages", "runner.schema_names", "runner.schema_semantics",
     "runner.schema_handlers", "runner.schema_cache", "runner.schema_fast", "runner.plan", "runner.approval_policy",
     "runner.config", "runner.variables", "runner.params", "runner.gateway", "runner.inventory", "runner.reuse",
     "runner.reuse_params", "runner.fact_names", "runner.fact_reads"),
    ("runner.steps.facts", "runner.steps.host_facts", "runner.steps.file_facts"),  # named probes (and their
    # answers from file access): below every step kind, so host facts never reach up
    ("runner.steps", "runner.expand", "runner.handlers", "runner.session", "runner.offline"),
    ("runner.planner",),
    ("runner.plan_conflicts",),
    ("runner.report", "runner.report_conventions", "runner.report_do", "runner.report_runs", "runner.formats", "runner.escalate", "runner.merge",
     "runner.validation"),  # validation: what validate finds in one document (cli and service share it)
    ("runner.apply",),  # the executor (engine, host, ladder) and the apply use case (usecase)
    ("runner.llm",),
    ("runner.service",),  # the use cases the faces share: plan store, approvals, job queue, audit
    ("runner.cli", "runner.__main__", "runner.serve", "runner.mcp"),  # runner.cli: every command, one output
]
HEAVY = ("litellm", "proxmoxer", "adbutils", "fabric", "paramiko", "fastapi", "uvicorn", "starlette", "mcp")


def _layer(module: str) -> int:
    best, found = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            hit = module == name or (name != "runner" and module.startswith(name + "."))
            if hit and len(name) > best:
                best, found = len(name), i
    if found < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return found


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                type_only.update(id(n) for n in ast.walk(sub))
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name == "runner":  # `from runner import config`: the submodules (or the package itself)
                for a in node.names:
                    sub = (RUNNER / a.name).is_dir() or (RUNNER / f"{a.name}.py").is_file()
                    out.append((node.lineno, f"runner.{a.name}" if sub else "runner"))
            else:
                out.append((node.lineno, name))
    return out


def _arrows_up() -> list[str]:
    bad = []
    for path in sorted(RUNNER.rglob("*.py")):
        me = _module(path)
        mine = _layer(me)
        for line, name in _imports(path):
            if not name.startswith("runner"):
                continue
            theirs = _layer(name)
            if theirs > mine:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {me} (layer {mine}) imports {name} (layer {theirs})")
    return bad


def test_imports_only_point_down_the_layers() -> None:
    bad = _arrows_up()
    assert not bad, "imports that point up the layers (DESIGN.md §9):\n" + "\n".join(bad)


def test_the_layer_test_can_fail(tmp_path: Path) -> None:
    """The walker sees a lazy import inside a function and resolves relative imports."""
    sample = RUNNER / "transports" / "base.py"
    names = {n for _, n in _imports(sample)}
    assert "runner.model" in names
    assert _layer("runner.cli") > _layer("runner.apply") > _layer("runner.planner") > _layer("runner.steps.shell")
    assert _layer("runner.transports.ssh") < _layer("runner.steps")
    assert _layer("runner.steps.facts") < _layer("runner.steps.base") == _layer("runner.steps.shell")
    assert _layer("runner.cli.gateway") > _layer("runner.llm.author") > _layer("runner.apply.usecase")
    assert _layer("runner.recap") == _layer("runner.journal") < _layer("runner.report") < _layer("runner.apply.engine")
    with pytest.raises(AssertionError):
        _layer("runner.nowhere")


def test_report_imports_nothing_from_apply_even_for_types() -> None:
    """The recap report.py renders lives beside the journal (runner.recap), not in apply."""
    tree = ast.parse((RUNNER / "report.py").read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "runner.recap" in names
    assert not [n for n in names if n == "runner.apply" or n.startswith("runner.apply.")], names


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_validate_and_plan_never_import_heavy_libraries(command: str, tmp_path: Path) -> None:
    """On a local-only playbook, `validate` and `plan` import no litellm, proxmoxer, adbutils,
    fabric, paramiko, fastapi, uvicorn, mcp or starlette (they load only when a playbook's hosts
    or a serving command need them)."""
    code = (
        "import sys\n"
        "from runner.cli import main\n"
        "try:\n"
        f"    main([{command!r}, {str(ROOT / 'playbooks' / 'hello.yaml')!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["mcp", "--help"]])
def test_help_never_imports_the_server_libraries(argv: list[str], tmp_path: Path) -> None:
    """`opsrun --help`, `opsrun serve --help` and `opsrun mcp --help` import no fastapi, uvicorn,
    starlette or mcp (nor the other heavy libraries): the serve and mcp commands import them inside."""
    code = (
        "import sys\n"
        "from runner.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "serve" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr
