"""Documents already found valid against a schema, remembered by digest so that a repeated
plan/apply/validate of unchanged files skips jsonschema (~45 ms of every start). Imports no jsonschema.

Only a clean result is remembered: one empty file per (schema, validator, document) digest
under $XDG_CACHE_HOME/opsrun/schema-ok/ (~/.cache by default; OPSRUN_SCHEMA_CACHE=0 turns it
off). The digest covers the schema's text, this validator's code (runner/schema.py), the
installed jsonschema and the document's data with its types (repr), so any change of these is
a miss and a full check. A cache that cannot be read or written is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any


def _folder() -> Path | None:
    if os.environ.get("OPSRUN_SCHEMA_CACHE", "1") == "0":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or (os.path.join(os.path.expanduser("~"), ".cache"))
    if not os.path.isabs(base):
        return None
    return Path(base) / "opsrun" / "schema-ok"


@cache
def _validator_digest(schema_json: str) -> str:
    """The schema and the code that checks documents against it."""
    h = hashlib.sha256(schema_json.encode())
    h.update((Path(__file__).parent / "schema.py").read_bytes())
    import importlib.util

    spec = importlib.util.find_spec("jsonschema")
    origin = Path(spec.origin).parent if spec and spec.origin else None
    if origin is not None:
        dists = sorted(p.name for p in origin.parent.glob("jsonschema-*.dist-info"))
        h.update("\n".join(dists).encode() if dists else str(os.stat(origin / "validators.py").st_mtime_ns).encode())
    return h.hexdigest()


def key(name: str, schema: dict[str, Any], data: Any) -> Path | None:
    """Where the clean result of `data` under schema `name` is remembered (None: no cache)."""
    folder = _folder()
    if folder is None:
        return None
    try:
        text = repr(data)  # types included: 1, '1', True and 1.0 differ
    except Exception:  # an odd object: simply no cache
        return None
    if " object at 0x" in text:
        return None  # an object without a value repr: never the same twice
    h = hashlib.sha256(_validator_digest(json.dumps(schema, sort_keys=True)).encode())
    h.update(name.encode() + b"\0" + text.encode("utf-8", "surrogatepass"))
    return folder / h.hexdigest()


def known(path: Path | None) -> bool:
    return path is not None and path.is_file()


def remember(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        pass
