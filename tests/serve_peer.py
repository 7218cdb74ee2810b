"""A live `opsrun serve` for the tests: a subprocess on 127.0.0.1:<free port>, driven over HTTP
(httpx), stopped (SIGTERM) or killed (SIGKILL) by its PID. Its stderr is kept for assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.peers.fake_llm import free_port

ROOT = Path(__file__).resolve().parent.parent
CANARY = "canary-Zq81-secret-value-7f3e"  # put in the environment of a server: must never come out
TOKENS = {  # name -> (role, value)
    "reader": ("read", "tok-reader-0123456789abcdef"),
    "planner": ("plan", "tok-planner-0123456789abcdef"),
    "approver": ("approve", "tok-approver-0123456789abcdef"),
    "operator": ("apply", "tok-operator-0123456789abcdef"),
}


def token_env() -> dict[str, str]:
    return {f"OPSRUN_TEST_TOKEN_{name.upper()}": value for name, (_, value) in TOKENS.items()}


def serve_yaml(project: Path, *, limits: dict[str, Any] | None = None, anonymous_role: str | None = None,
               tokens: bool = True, extra: dict[str, Any] | None = None) -> Path:
    data: dict[str, Any] = {"opsrun": 1}
    if tokens:
        data["tokens"] = {name: {"token": f"env:OPSRUN_TEST_TOKEN_{name.upper()}", "role": role}
                          for name, (role, _) in TOKENS.items()}
    if anonymous_role is not None:
        data["anonymous_role"] = anonymous_role
    if limits:
        data["limits"] = limits
    data.update(extra or {})
    path = project / "serve.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][1]}"}


class Served:
    """One server process. `client(name)` is an httpx client with that token."""

    def __init__(self, project: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.project = project
        self.host = host
        self.port = port or free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **token_env(), "OPSRUN_CANARY": CANARY, **(env or {})}
        self.env.pop("OPSRUN_STATE_DIR", None)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "runner", "serve", "--project", str(self.project), "--host", self.host,
                "--port", str(self.port), "--log-level", "warning", *self.args]

    def start(self, timeout: float = 30.0) -> Served:
        self.proc = subprocess.Popen(self.command(), cwd=self.project, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"opsrun serve exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"opsrun serve did not answer within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def client(self, name: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = auth(name) if name else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as a crash."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sse_events(client: httpx.Client, path: str, *, last_event_id: str | None = None,
               timeout: float = 60.0) -> list[dict[str, Any]]:
    """Read a server-sent event stream to its end: each event's id, event, data (parsed) and
    `at`, when it arrived (time.monotonic)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[dict[str, Any]] = []
    with client.stream("GET", path, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in resp.iter_lines():
            if not line:
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                    current["at"] = time.monotonic()
                    events.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            current[key] = value[1:] if value.startswith(" ") else value
    return events
