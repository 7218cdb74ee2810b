"""One source of truth for step kinds: the kinds discovered in runner/steps/ are exactly the
kinds the playbook schema names, and each kind's Python reads only parameters its schema
declares, while every declared parameter is used by its module (no dead schema fields)."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner import schema
from runner.steps import base

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "playbook.schema.json").read_text())
KINDS = base.load_all()


def _properties(kind: str) -> set[str]:
    """Every parameter name the schema allows for `kind` (all branches of anyOf/oneOf)."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node and str(node["$ref"]).startswith("#/$defs/") and not str(node["$ref"]).startswith(
                "#/$defs/kind_"
            ):
                return
            out.update((node.get("properties") or {}).keys())
            for key in ("anyOf", "oneOf", "allOf", "then", "else"):
                for sub in node.get(key) or ([] if key in ("anyOf", "oneOf", "allOf") else [None]):
                    walk(sub) if isinstance(sub, dict) else None
                if isinstance(node.get(key), dict):
                    walk(node[key])

    walk(SCHEMA["$defs"][f"kind_{kind}"])
    return out


def _keys(func: Any) -> set[str]:
    """Keys a function reads from `params` (params["x"], params.get("x"))."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(func)))):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "params":
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                keys.add(node.slice.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "params"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            keys.add(node.args[0].value)
    return {k for k in keys if not k.startswith("_")}  # _content etc.: made by prepare()


def _methods(cls: type) -> dict[str, Any]:
    """The methods a kind really uses: for each name, the first class of its MRO defining it."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is base.StepKind or not klass.__module__.startswith("runner.steps"):
            continue
        for name, value in vars(klass).items():
            if inspect.isfunction(value) and name not in out:
                out[name] = value
    return out


def test_registry_and_schema_name_the_same_kinds() -> None:
    assert sorted(KINDS) == sorted(schema.kind_names())


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_kind_reads_only_declared_parameters(name: str) -> None:
    """A method shared by several kinds (proxmox.lxc and .vm) may read what any of them declares."""
    short = {"command", "value", "prompt"}  # what a short form (`run: "cmd"`) normalises to
    missing: set[str] = set()
    for method in _methods(type(KINDS[name])).values():
        sharing = [k for k in KINDS if method in _methods(type(KINDS[k])).values()]
        declared = set().union(*(_properties(k) for k in sharing))
        missing |= _keys(method) - declared - short
    assert not missing, f"{name} reads parameters its schema does not declare: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_declared_parameter_is_used(name: str) -> None:
    """Every parameter the schema declares is read somewhere in the kind's modules (kinds that
    hand their remaining parameters on as a whole, like Proxmox guest config, are exempt)."""
    cls = type(KINDS[name])
    modules = {inspect.getmodule(k) for k in cls.__mro__ if k.__module__.startswith("runner.steps")}
    source = "\n".join(inspect.getsource(m) for m in modules if m is not None)
    if "params.items()" in source or "in params.items()" in source:
        pytest.skip(f"{name} hands parameters on as a whole")
    unused = sorted(p for p in _properties(name) if f'"{p}"' not in source and f"'{p}'" not in source)
    assert not unused, f"{name}: the schema declares parameters its modules never read: {unused}"


def test_kinds_are_routed_by_capability_and_the_table_matches_the_classes() -> None:
    """A kind runs where a transport offers what it needs; the light table the planner reads
    (no transport library imported) is what each transport class declares."""
    import importlib.util

    from runner.transports import _MODULES, CAPABILITIES

    for name, (module, cls) in _MODULES.items():
        if name in ("proxmox", "adb"):  # their libraries are optional here: read the source instead
            text = (Path(importlib.util.find_spec(module).origin)).read_text(encoding="utf-8")
            assert f'capabilities: ClassVar[frozenset[str]] = CAPABILITIES["{name}"]' in text
            continue
        assert getattr(importlib.import_module(module), cls).capabilities == CAPABILITIES[name]
    where = {n: k.runs_where() for n, k in base.load_all().items()}
    assert where["file"] == ["local", "ssh"] and where["run"] == ["local", "ssh"]
    assert where["adb.shell"] == ["adb"] and where["proxmox.vm"] == ["proxmox"]
    assert where["llm.ask"] == ["local", "ssh", "proxmox", "adb"]  # it never touches the host
    for kind in base.load_all().values():
        assert where[kind.name], f"{kind.name} runs nowhere: its `needs` match no transport"
