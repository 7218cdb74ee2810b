"""runner/schema_fast.py: True only where jsonschema finds no error, and True for every valid
document (so a valid file skips jsonschema): checked on the repo's playbooks and inventories
and on Hypothesis mutations of them. (Every document the rest of the suite validates is also
cross-checked: tests/conftest.py sets OPSRUN_SCHEMA_CROSSCHECK.)"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import schema, schema_fast

ROOT = Path(__file__).resolve().parent.parent


def _seeds() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for path in sorted([*ROOT.glob("playbooks/*.yaml"), *ROOT.glob("tests/golden/*.yaml"),
                        ROOT / "bench/workload/opsrun.yaml", *ROOT.glob("tests/malformed/*.yaml")]):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            what = schema.detect(data)
            if what in ("playbook", "inventory"):
                out.append((what, data))
    out.append(("inventory", {
        "opsrun": 1,
        "hosts": {f"h{i}": {"transport": "ssh", "address": f"127.0.0.{i + 2}", "port": 2200 + i, "user": "ops",
                            "known_hosts": "strict", "connect_timeout": 10, "vars": {"root": f"/srv/{i}"}}
                  for i in range(3)},
        "groups": {"web": {"hosts": ["h0", "h1"], "vars": {"tier": "front"}}},
    }))
    return out


SEEDS = _seeds()


def _jsonschema_ok(what: str, data: Any) -> bool:
    return not list(schema._validator(what).iter_errors(data))


def test_the_seeds_cover_valid_and_invalid_documents_of_both_kinds() -> None:
    verdicts = {(what, _jsonschema_ok(what, data)) for what, data in SEEDS}
    assert {("playbook", True), ("playbook", False), ("inventory", True)} <= verdicts


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_the_repos_documents_get_jsonschemas_verdict(index: int) -> None:
    what, data = SEEDS[index]
    assert schema_fast.valid(schema._schema(what), data) == _jsonschema_ok(what, data)


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "0755", "all", "present", "absent", "{{ x }}", "a b", "-x", "web1", "run", "1.5",
                     "[", "^ok$", "env:TOKEN", "/etc/motd", "ssh", "local", "linear", "stop"]),
    st.just([]), st.just({}), st.just(["a", "a"]), st.just({"run": "true"}),
)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


@st.composite
def _mutants(draw: st.DrawFn) -> tuple[str, Any]:
    what, seed = draw(st.sampled_from(SEEDS))
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        at = draw(st.sampled_from(paths))
        if not at:
            continue
        parent = doc
        for part in at[:-1]:
            parent = parent[part]
        op = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        last = at[-1]
        if op == "replace":
            parent[last] = copy.deepcopy(draw(_VALUES))
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "when", "mode", "sudo", "tags", "vars", "hosts"]))] = copy.deepcopy(
                draw(_VALUES))
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return what, doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutants())
def test_mutated_documents_get_jsonschemas_verdict(case: tuple[str, Any]) -> None:
    what, doc = case
    assert schema_fast.valid(schema._schema(what), doc) == _jsonschema_ok(what, doc)


def test_json_equality_and_types_as_jsonschema_has_them() -> None:
    s = {"enum": [1, "a", [1, 2], {"k": None}]}
    assert schema_fast.valid(s, 1.0) and schema_fast.valid(s, [1, 2.0]) and schema_fast.valid(s, {"k": None})
    assert not schema_fast.valid(s, True)  # true is not 1
    assert not schema_fast.valid({"const": False}, 0)
    assert schema_fast.valid({"type": "integer"}, 2.0) and not schema_fast.valid({"type": "integer"}, 2.5)
    assert not schema_fast.valid({"type": "number"}, True)
    assert not schema_fast.valid({"uniqueItems": True}, [1, 1.0]) and schema_fast.valid({"uniqueItems": True}, [1, True])
    cond = {"if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {"required": ["c"]}}
    assert schema_fast.valid(cond, {"a": 1, "b": 2}) and schema_fast.valid(cond, {"c": 1})
    assert not schema_fast.valid(cond, {"a": 1}) and not schema_fast.valid(cond, {})
    assert schema_fast.valid({"format": "regex"}, "^a+$") and not schema_fast.valid({"format": "regex"}, "(")
    assert schema_fast.valid({"format": "regex"}, "{{ pattern }}")  # a template: checked when rendered


def test_what_it_does_not_know_is_left_to_jsonschema() -> None:
    assert not schema_fast.valid({"multipleOf": 2}, 4)
    assert not schema_fast.valid({"prefixItems": [{"type": "string"}]}, ["a"])
    assert not schema_fast.valid({"$ref": "https://example.com/other.json"}, 1)
    assert not schema_fast.valid({"$ref": "#/$defs/missing"}, 1)
    assert not schema_fast.valid({"type": "money"}, 1)


def test_valid_files_are_checked_without_jsonschema(tmp_path: Path) -> None:
    """The use: a valid inventory and playbook load with no schema cache and no jsonschema
    imported; a broken one still gets jsonschema's located errors."""
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text("opsrun: 1\nname: x\nhosts: all\nsteps:\n  - id: a\n    run: 5\n")
    code = (
        "import sys\n"
        "from runner import config\n"
        "from runner.errors import InvalidInput\n"
        f"inv = config.load_inventory({str(ROOT / 'inventory.yaml')!r})\n"
        f"config.load_playbook({str(ROOT / 'playbooks' / 'hello.yaml')!r}, inv)\n"
        "assert 'jsonschema' not in sys.modules, 'jsonschema was imported'\n"
        "try:\n"
        "    config.load_playbook('bad.yaml', inv)\n"
        "except InvalidInput as exc:\n"
        "    assert 'jsonschema' in sys.modules and exc.diagnostics[0].line == 6, exc.diagnostics\n"
        "print('ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OPSRUN_SCHEMA_CACHE": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
