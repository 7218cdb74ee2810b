"""pytest plugin: the fake LLM server (tests/peers/fake_llm.py), gateways pointed at it, and a
network audit that fails a test which connects anywhere but loopback. Every server is stopped
at teardown, also when the test failed.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.fake_llm import FakeLLM, free_port

# litellm must never fetch its model cost map from the network (it reads this at import)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

FAKE_MODELS = ("qwen2.5-coder:7b", "fake-model", "second-model", "third-model")
KEY_VARS = ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "HF_TOKEN", "HUGGINGFACE_API_KEY",
            "OLLAMA_API_KEY", "ANTHROPIC_API_KEY")


# -- network audit ----------------------------------------------------------------------------
class _Audit:
    """Collects socket.connect / getaddrinfo targets while a test wants them (audit hooks
    cannot be removed, so one hook is installed once and switched on and off)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: list[list[tuple[str, Any]]] = []
        self.installed = False

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event not in ("socket.connect", "socket.getaddrinfo"):
            return
        target = args[1] if event == "socket.connect" else args[0]
        with self.lock:
            for sink in self.active:
                sink.append((event, target))


_AUDIT = _Audit()


def is_loopback(event: str, target: Any) -> bool:
    if isinstance(target, str | bytes) and event == "socket.connect":
        return True  # a unix socket path
    host = target[0] if isinstance(target, tuple) else target
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_audit() -> Iterator[list[tuple[str, Any]]]:
    """Every outgoing connection and name lookup made during the test (any thread); fails the
    test at teardown if one went anywhere but 127.0.0.0/8 or ::1."""
    if not _AUDIT.installed:
        sys.addaudithook(_AUDIT.hook)
        _AUDIT.installed = True
    sink: list[tuple[str, Any]] = []
    with _AUDIT.lock:
        _AUDIT.active.append(sink)
    try:
        yield sink
    finally:
        with _AUDIT.lock:
            _AUDIT.active.remove(sink)
    outside = [(e, t) for e, t in sink if not is_loopback(e, t)]
    assert not outside, f"network access outside loopback: {outside[:5]}"


# -- servers and gateways ---------------------------------------------------------------------
@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider keys or proxies from the developer's environment; litellm offline."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for var in (*KEY_VARS, "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "OPSRUN_GATEWAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def fake_llm(llm_env: None) -> Iterator[FakeLLM]:
    """A running fake OpenAI/Ollama server on 127.0.0.1 (fresh per test)."""
    server = FakeLLM(models=FAKE_MODELS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connections are refused."""
    return free_port()


@pytest.fixture
def make_gateway(fake_llm: FakeLLM, tmp_path: Path) -> Callable[..., Any]:
    """Build a Gateway from a dict shaped like gateway.yaml. Defaults: one OpenAI-compatible
    provider `fake` (model fake-model) on the fake server, no retries, a 10 s deadline, cache
    off; state (bench file) under tmp_path. Keyword arguments go to Gateway()."""
    from runner.gateway import Gateway
    from runner.gateway.config import from_data

    def make(providers: dict[str, Any] | None = None, *, routing: dict[str, Any] | None = None,
             tasks: dict[str, Any] | None = None, cache: dict[str, Any] | None = None,
             rate_limit: dict[str, Any] | None = None, **kwargs: Any) -> Gateway:
        data: dict[str, Any] = {
            "opsrun": 1,
            "providers": providers or {
                "fake": {"kind": "openai", "model": "fake-model", "api_base": fake_llm.url + "/v1"},
            },
            "routing": {"retries_per_provider": 0, "deadline_s": 10, "cooldown_s": 60,
                        **(routing or {})},
            "cache": {"enabled": False, "dir": str(tmp_path / "cache"), **(cache or {})},
        }
        if tasks:
            data["tasks"] = tasks
        if rate_limit:
            data["rate_limit"] = rate_limit
        config = from_data(data, file=str(tmp_path / "gateway.yaml"), base_dir=tmp_path)
        kwargs.setdefault("state_dir", tmp_path / ".opsrun")
        return Gateway(config, **kwargs)

    return make
