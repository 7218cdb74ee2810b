"""Shared pytest set-up: peer requirements (skip locally, fail in CI) and fixture plugins."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# every document the suite validates (here and in the opsrun processes it starts) is checked
# by jsonschema too, and runner/schema_fast.py must agree with it (runner/schema.py)
os.environ["OPSRUN_SCHEMA_CROSSCHECK"] = "1"


def require_peer(available: bool, why: str) -> None:
    """A test that needs a real peer: skip on a developer machine, fail under CI=true."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required peer missing in CI: {why}", pytrace=False)
    pytest.skip(f"peer not available: {why}")


pytest_plugins = [
    "tests.fixtures_adb",
    "tests.fixtures_pve",
    "tests.fixtures_ssh",
    "tests.fixtures_llm",
]


@pytest.fixture(autouse=True)
def _forget_secrets_after_each_test():
    """Secrets are process-wide (runner.secrets.REGISTRY): one test's values must not mask the
    next test's text, whichever xdist worker runs them in which order."""
    yield
    from runner import secrets

    secrets.REGISTRY.clear()
