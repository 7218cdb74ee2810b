"""runner.schema_cache: a document found valid is not checked by jsonschema again while it,
the schema, the validator and jsonschema stay the same; an invalid one is always checked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from runner import schema_cache

ROOT = Path(__file__).resolve().parent.parent
VALID = "opsrun: 1\nname: t\nhosts: local\nsteps:\n  - id: a\n    run: echo hi\n"
INVALID = "opsrun: 1\nname: t\nhosts: local\nsteps:\n  - id: a\n    run: echo hi\n    retries: many\n"


def _validate(tmp: Path, text: str, **env: str) -> tuple[int, str, bool]:
    (tmp / "site.yaml").write_text(text)
    code = textwrap.dedent("""
        import sys
        from runner.cli import main
        try:
            main(["validate", "site.yaml"])
        finally:
            print("JSONSCHEMA", "jsonschema" in sys.modules, file=sys.stderr)
        """)
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp / "cache"), **env})
    imported = "JSONSCHEMA True" in p.stderr
    return p.returncode, p.stdout + p.stderr.replace(f"JSONSCHEMA {imported}\n", ""), imported


def test_a_valid_document_is_checked_once(tmp_path: Path) -> None:
    first = _validate(tmp_path, VALID)
    assert first[0] == 0 and first[2], first
    assert len(list((tmp_path / "cache" / "opsrun" / "schema-ok").iterdir())) == 1
    again = _validate(tmp_path, VALID)
    assert again[:2] == first[:2] and not again[2], again
    changed = _validate(tmp_path, VALID.replace("echo hi", "echo bye"))
    assert changed[0] == 0 and changed[2], changed


def test_an_invalid_document_is_always_checked(tmp_path: Path) -> None:
    first = _validate(tmp_path, INVALID)
    assert first[0] == 4 and first[2] and "retries" in first[1], first
    assert not (tmp_path / "cache" / "opsrun" / "schema-ok").exists()
    assert _validate(tmp_path, INVALID) == first


def test_turned_off(tmp_path: Path) -> None:
    assert _validate(tmp_path, VALID, OPSRUN_SCHEMA_CACHE="0")[2]
    assert _validate(tmp_path, VALID, OPSRUN_SCHEMA_CACHE="0")[2]
    assert not (tmp_path / "cache").exists()


def test_the_key_tells_types_and_schemas_apart(tmp_path: Path) -> None:
    os.environ["XDG_CACHE_HOME"] = str(tmp_path)
    try:
        keys = {schema_cache.key("inventory", {"type": "object"}, data)
                for data in ({"a": 1}, {"a": "1"}, {"a": True}, {"a": 1.0}, {"a": [1]}, {"a": None})}
        assert len(keys) == 6
        assert (schema_cache.key("inventory", {"type": "object"}, {"a": 1})
                != schema_cache.key("inventory", {"type": "array"}, {"a": 1}))
        assert (schema_cache.key("inventory", {}, {"a": 1}) != schema_cache.key("playbook", {}, {"a": 1}))
        assert schema_cache.key("inventory", {}, {"a": object()}) is None
    finally:
        del os.environ["XDG_CACHE_HOME"]
