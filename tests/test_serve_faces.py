"""`opsrun serve` without the job queue: serve.yaml (tokens by reference, roles), the bind
refusal, the request limits (413, 429 + Retry-After) and the gateway's OpenAI-compatible /v1
face against the fake LLM server, with one rate limit shared by every client. A live uvicorn
subprocess on 127.0.0.1, real HTTP clients (httpx, the openai SDK)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from runner.errors import InvalidInput
from runner.serve.config import Principal, ServeConfig, from_data, rank
from runner.serve.limits import TokenBucket
from tests.peers import fake_llm as fl
from tests.serve_peer import ROOT, TOKENS, Served, auth, serve_yaml, token_env

pytestmark = pytest.mark.peer


# -- configuration (pure) ------------------------------------------------------------------------
def test_tokens_are_references_with_roles_each_implying_the_lower(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    for k, v in token_env().items():
        monkeypatch.setenv(k, v)
    (tmp_path / "ops.token").write_text("file-token-0123456789abcdef\n")
    cfg = from_data({"tokens": {"reader": {"token": "env:OPSRUN_TEST_TOKEN_READER", "role": "read"},
                                "ops": {"token": "file:ops.token", "role": "apply"}}}, base_dir=tmp_path)
    assert cfg.principal(TOKENS["reader"][1]) == Principal("reader", "read")
    ops = cfg.principal("file-token-0123456789abcdef")
    assert ops == Principal("ops", "apply")
    assert ops.can("approve") and ops.can("read") and not Principal("reader", "read").can("plan")
    assert rank("read") < rank("plan") < rank("approve") < rank("apply")
    assert cfg.principal("nope") is None
    assert cfg.principal(None) is None  # tokens configured: no anonymous access by default
    assert "0123456789" not in repr(cfg)
    with pytest.raises(InvalidInput, match="reference"):
        from_data({"tokens": {"x": {"token": "literal-token-0123456789", "role": "read"}}})
    with pytest.raises(InvalidInput, match="shorter"):
        monkeypatch.setenv("SHORT_TOKEN", "abc")
        from_data({"tokens": {"x": {"token": "env:SHORT_TOKEN", "role": "read"}}})
    with pytest.raises(InvalidInput, match="not a role"):
        from_data({"tokens": {"x": {"token": "env:OPSRUN_TEST_TOKEN_READER", "role": "admin"}}})
    with pytest.raises(InvalidInput, match="unknown key"):
        from_data({"token": {}})


def test_a_non_loopback_bind_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServeConfig().for_bind("127.0.0.1").anonymous_role == "plan"
    assert ServeConfig().for_bind("::1").anonymous_role == "plan"
    with pytest.raises(InvalidInput, match="without a token"):
        ServeConfig().for_bind("0.0.0.0")
    monkeypatch.setenv("OPSRUN_TEST_TOKEN_X", "x" * 20)
    cfg = from_data({"tokens": {"x": {"token": "env:OPSRUN_TEST_TOKEN_X", "role": "read"}},
                     "anonymous_role": "read"})
    assert cfg.principal(None) == Principal("anonymous", "read")  # asked for, on loopback
    public = cfg.for_bind("0.0.0.0")
    assert public.principal(None) is None  # never off loopback
    assert public.principal("x" * 20) == Principal("x", "read")


def test_opsrun_serve_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "runner", "serve", "--project", str(tmp_path), "--host",
                          "0.0.0.0", "--port", "9"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 4, res.stderr
    assert "refusing to listen on 0.0.0.0 without a token" in res.stderr
    assert "Traceback" not in res.stderr


def test_token_bucket_refuses_with_the_wait() -> None:
    now = [0.0]
    bucket = TokenBucket(60, 2, clock=lambda: now[0])
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)
    now[0] += 0.5
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0.0


# -- a live server: auth, limits -------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Served:
    project = tmp_path_factory.mktemp("limited")
    (project / "inventory.yaml").write_text("opsrun: 1\nhosts:\n  local:\n    transport: local\n")
    serve_yaml(project, limits={"max_body_bytes": 2048, "requests_per_minute": 6, "burst": 13},
               extra={"cors_origins": ["http://localhost:3000"]})
    with Served(project) as served:
        yield served


def test_auth_limits_and_problem_documents(limited: Served) -> None:
    with limited.client() as anon, limited.client("reader") as reader, limited.client("planner") as planner:
        r = anon.get("/inventory")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401
        r = anon.get("/inventory", headers={"Authorization": "Bearer not-a-known-token-at-all"})
        assert r.status_code == 401
        r = reader.post("/validate", json={"text": "opsrun: 1\n"})
        assert r.status_code == 403 and "reader" in r.json()["detail"]
        big = {"text": "x" * 4096}
        r = planner.post("/validate", json=big)
        assert r.status_code == 413 and r.json()["title"] == "Request body too large"

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(8):
                yield b" " * 512

        r = planner.post("/validate", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = planner.post("/validate", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert "Traceback" not in r.text
        r = planner.post("/validate", json={"text": "a", "path": "b"})
        assert r.status_code == 422 and "exactly one" in r.text
        r = reader.get("/nowhere")
        assert r.status_code == 404 and r.json()["status"] == 404
        preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"}
        r = anon.options("/plans", headers=preflight)  # Open WebUI's origin (a user tool server) may call
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = anon.options("/plans", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        # the bucket (12, refilled at 6/min) is shared: drain it from two clients
        codes = [c.get("/inventory").status_code for _ in range(8) for c in (reader, anon)]
        assert 429 in codes
        r = planner.get("/plans")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"] == "application/problem+json"
        assert limited.client().get("/health").status_code == 200  # not limited
    for name, (_, value) in TOKENS.items():
        assert value not in limited.output(), name


# -- the OpenAI-compatible face -------------------------------------------------------------------
@pytest.fixture
def llm_served(fake_llm: fl.FakeLLM, tmp_path: Path) -> Served:
    gateway = {
        "opsrun": 1,
        "providers": {
            "fake": {"kind": "openai", "model": "fake-model", "api_base": fake_llm.url + "/v1"},
            "second": {"kind": "openai", "model": "second-model", "api_base": fake_llm.url + "/v1"},
        },
        "routing": {"retries_per_provider": 0, "deadline_s": 10, "cooldown_s": 60},
        "cache": {"enabled": True, "dir": str(tmp_path / "cache")},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    serve_yaml(tmp_path, limits={"llm_requests_per_minute": 1, "llm_burst": 7})
    with Served(tmp_path) as served:
        yield served


def test_the_v1_face_routes_through_the_gateway_with_one_shared_rate_limit(
        llm_served: Served, fake_llm: fl.FakeLLM, network_audit: list) -> None:
    import openai

    a = openai.OpenAI(base_url=llm_served.url + "/v1", api_key=TOKENS["planner"][1], max_retries=0)
    b = openai.OpenAI(base_url=llm_served.url + "/v1", api_key=TOKENS["operator"][1], max_retries=0)
    models = [m.id for m in a.models.list()]
    assert models[:1] == ["opsrun"] and {"opsrun:author", "fake", "second"} <= set(models)

    fake_llm.script("fake-model", "hello from the fake")
    r1 = a.chat.completions.create(model="opsrun", messages=[{"role": "user", "content": "hi"}])  # 1
    assert r1.choices[0].message.content.startswith("hello from the fake")
    assert fake_llm.chats("fake-model")[-1].body["messages"][-1]["content"] == "hi"

    r2 = a.chat.completions.create(model="opsrun", messages=[{"role": "user", "content": "hi"}])  # 2: cached
    assert r2.choices[0].message.content == r1.choices[0].message.content
    assert len(fake_llm.chats("fake-model")) == 1  # the gateway's answer cache

    fake_llm.script("second-model", "from the second")
    stream = b.chat.completions.create(model="second", stream=True,  # 3: one provider, streamed
                                       messages=[{"role": "user", "content": "stream please"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "from the second"

    fake_llm.script("fake-model", fl.server_error(500))
    with pytest.raises(openai.APIStatusError) as failed:  # 4: the provider fails -> 502, breaker opens
        b.chat.completions.create(model="fake", messages=[{"role": "user", "content": "again"}])
    assert failed.value.status_code == 502 and "500" in str(failed.value.body)
    asked = len(fake_llm.chats("fake-model"))
    with pytest.raises(openai.APIStatusError) as cooling:  # 5: the circuit breaker: not even asked
        b.chat.completions.create(model="fake", messages=[{"role": "user", "content": "and again"}])
    assert cooling.value.status_code == 502 and "cooling down" in str(cooling.value.body)
    assert len(fake_llm.chats("fake-model")) == asked

    with httpx.Client(base_url=llm_served.url) as raw:
        r = raw.post("/v1/chat/completions", headers=auth("reader"), json={"messages": [
            {"role": "user", "content": "x"}]})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        r = raw.post("/v1/chat/completions", headers=auth("planner"),
                     json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404 and "unknown model" in r.json()["error"]["message"]

    a.chat.completions.create(model="second", messages=[{"role": "user", "content": "six"}])  # 6
    b.chat.completions.create(model="second", messages=[{"role": "user", "content": "seven"}])  # 7
    for client in (a, b):  # the bucket of 7 is empty for both clients
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="second", messages=[{"role": "user", "content": "eight"}])
        assert int(limited.value.response.headers["retry-after"]) >= 1


def test_mcp_is_mounted_at_mcp_behind_the_same_tokens(tmp_path: Path) -> None:
    pytest.importorskip("runner.mcp.http")
    (tmp_path / "inventory.yaml").write_text("opsrun: 1\nhosts:\n  local:\n    transport: local\n")
    serve_yaml(tmp_path)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    with Served(tmp_path) as served, httpx.Client(base_url=served.url, timeout=10) as c:
        assert c.get("/health").json()["mcp"] is True
        assert c.post("/mcp", json=init, headers=accept).status_code == 401
        r = c.post("/mcp", json=init, headers={**accept, **auth("reader")})
        assert r.status_code == 200 and '"serverInfo"' in r.text, r.text
