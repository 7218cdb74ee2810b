"""No run hangs at exit. The cause: an abandoned request thread (the gateway stopped waiting;
litellm's own timeout, the same budget, ends it a moment later) runs litellm's answer or
error path, which imports (on every failure it looks for `fastapi`, absent). If the
interpreter starts finalizing then, the thread is frozen where it stands, holding the import
lock, and the main thread's next import (litellm's AsyncHTTPHandler.__del__ imports
aiohttp_transport while the modules are torn down, in every process that loaded litellm)
waits forever. The gateway warms litellm's lazy imports up front and, at exit, waits
(bounded) for its request threads before the interpreter finalizes. Every subprocess here is
bounded by a timeout; each run must end promptly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.peers import fake_llm as F

pytestmark = [pytest.mark.peer]

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = "opsrun: 1\nhosts:\n  web1: {transport: ssh, address: 127.0.0.1, port: 1, user: nobody}\n"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "NO_PROXY": "127.0.0.1,localhost"}


def python(code: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env(), text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


GATEWAY = """
    import json, sys, threading, atexit
    from runner.gateway import Gateway
    from runner.gateway.config import from_data
    gw = Gateway(from_data({{"opsrun": 1, "providers": {{"fake": {{"kind": "openai", "model": "fake-model",
        "api_base": "{url}/v1", "timeout_s": {timeout}}}}}, "routing": {{"retries_per_provider": 0}},
        "cache": {{"enabled": False}}}}))
"""


def test_requests_import_nothing_the_warm_up_left_out(fake_llm, tmp_path):
    """Success and failure paths of both routes import no module after load_litellm (only
    litellm's lookups of fastapi and starlette, absent, are left, on every failure: that is
    why exit waits for request threads)."""
    code = GATEWAY.format(url=fake_llm.url, timeout=2) + f"""
    from runner.gateway.adapter import load_litellm
    from runner.gateway import GatewayError
    load_litellm()
    seen = []
    def hook(event, args):
        if event == "import" and args[0] not in sys.modules:
            seen.append(args[0])
    sys.addaudithook(hook)
    ollama = Gateway(from_data({{"opsrun": 1, "providers": {{"o": {{"kind": "ollama", "model": "fake-model",
        "api_base": "{fake_llm.url}"}}}}, "routing": {{"retries_per_provider": 0}}, "cache": {{"enabled": False}}}}))
    for g in (gw, ollama):
        for _ in range(5):
            try:
                g.complete([{{"role": "user", "content": "hi"}}], schema={{"type": "object"}})
            except GatewayError:
                pass
    print(json.dumps(sorted({{name for name in seen if name in sys.modules}})))
    print(json.dumps(sorted(set(seen))))
    """
    replies = ["{}", F.server_error(500), F.hang(5), F.unauthorized(), F.truncated("{")]
    fake_llm.script("fake-model", *replies, *replies)  # for each route
    proc = python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded, looked_up = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert loaded == [], loaded  # nothing was imported by a request: the warm-up has it all
    if importlib.util.find_spec("fastapi") is None:  # without the serve extra, what is left is
        assert "fastapi" in looked_up  # litellm looking for a module it never finds


ALIVE_AT_EXIT = """
    import os, sys, threading, atexit, time
    ASKED = [time.monotonic()]
    def last():  # registered first, so it runs after the gateway's exit handler
        alive = [t.name for t in threading.enumerate() if t.name.startswith("opsrun-llm-")]
        print(f"alive at exit: {alive} after {time.monotonic() - ASKED[-1]:.1f}s", flush=True)
    atexit.register(last)
"""
ASK = """
    from runner.gateway import GatewayError
    from runner.gateway.adapter import load_litellm
    load_litellm()
    ASKED.append(time.monotonic())
    try:
        gw.complete([{"role": "user", "content": "hi"}])
    except GatewayError as exc:
        print(exc.message, flush=True)
"""


def test_abandoned_requests_end_before_the_interpreter_finalizes(fake_llm, tmp_path):
    """The gateway stops waiting at 1 s; the answer arrives at 1.8 s (each piece within the read
    timeout, so litellm takes it): the process waits for that thread before finalizing."""
    fake_llm.script("fake-model", F.slow("late answer", pieces=3, delay=0.6))
    proc = python(ALIVE_AT_EXIT + GATEWAY.format(url=fake_llm.url, timeout=1) + ASK, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no answer within 1s (timeout_s)" in proc.stdout
    assert "alive at exit: [] after" in proc.stdout, proc.stdout


def test_waiting_for_abandoned_requests_is_bounded(fake_llm, tmp_path):
    """A body trickling for 8 s: exit waits for it at most its budget plus EXIT_GRACE_S after
    the request started (the thread, blocked in a socket read, is then left alone)."""
    from runner.gateway.adapter import EXIT_GRACE_S

    fake_llm.script("fake-model", F.slow("never mind", pieces=10, delay=0.8))
    t0 = time.monotonic()
    proc = python(ALIVE_AT_EXIT + GATEWAY.format(url=fake_llm.url, timeout=1) + ASK, tmp_path)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert "alive at exit: ['opsrun-llm-fake']" in proc.stdout, proc.stdout
    waited = float(proc.stdout.rsplit("after ", 1)[1].split("s")[0])
    assert 1 + EXIT_GRACE_S - 0.5 < waited < 1 + EXIT_GRACE_S + 1, (waited, elapsed)


def _author_once(fake: F.FakeLLM, folder: Path) -> tuple[int, float, str]:
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "runner", "author", "put hello in /etc/motd",
                               "-i", "inventory.yaml", "--gateway", "gateway.yaml"], cwd=folder, env=env(),
                              text=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return -1, time.monotonic() - t0, "hung: no exit within 60 s"
    return proc.returncode, time.monotonic() - t0, proc.stderr


@pytest.mark.timeout(300)
def test_author_exits_promptly_when_the_model_is_slower_than_its_timeout(fake_llm, tmp_path):
    """8 runs of `opsrun author` against a provider answering after its timeout_s: each ends
    with the error, promptly (two at a time on this 2-core machine; each run loads litellm,
    ~3 s: more runs cost the suite more than they add here)."""
    runs = 8
    for _ in range(runs):
        fake_llm.script("fake-model", F.slow('{"opsrun": 1}', pieces=2, delay=0.6))
    folders = []
    for i in range(runs):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "inventory.yaml").write_text(INVENTORY)
        (folder / "gateway.yaml").write_text(yaml.safe_dump({
            "opsrun": 1, "providers": {"slow": {"kind": "openai", "model": "fake-model",
                                                "api_base": fake_llm.url + "/v1", "timeout_s": 1}},
            "routing": {"retries_per_provider": 0, "deadline_s": 60}, "cache": {"enabled": False}}))
        folders.append(folder)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda f: _author_once(fake_llm, f), folders))
    for code, elapsed, err in results:
        assert code == 1, err
        assert "no answer within 1s (timeout_s)" in err, err
        assert elapsed < 30, (elapsed, err)
