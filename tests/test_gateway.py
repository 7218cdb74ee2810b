"""The LLM gateway against the fake OpenAI/Ollama server on loopback: litellm makes real HTTP
calls; faults are injected by the server. Covers routing, fallback under a deadline, the
circuit breaker, keys, 429, schema answers, cache, rate limit, redaction, check/bench and the CLI.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from runner.errors import InvalidInput, OpsrunError
from runner.gateway import Gateway, GatewayError
from runner.gateway import config as gwconfig
from runner.gateway.store import AnswerCache, RateLimiter
from tests.peers import fake_llm as F

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("network_audit")]

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
          "additionalProperties": False}
Q = [{"role": "user", "content": "what is one plus one?"}]


class FakeClock:
    """A clock that moves only when told (or when someone sleeps on it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def openai(fake: F.FakeLLM, model: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "openai", "model": model, "api_base": fake.url + "/v1", **extra}


def ollama(base: str, model: str = "qwen2.5-coder:7b", **extra: Any) -> dict[str, Any]:
    return {"kind": "ollama", "model": model, "api_base": base, **extra}


# -- which provider answered ----------------------------------------------------------------
def test_answer_says_which_provider_and_sends_the_key(fake_llm, make_gateway, monkeypatch,
                                                      network_audit):
    monkeypatch.setenv("FAKE_KEY", "sk-fake-0123456789")
    fake_llm.script("fake-model", "two")
    gw = make_gateway({"fake": openai(fake_llm, "fake-model", api_key="env:FAKE_KEY")})
    answer = gw.complete(Q)
    assert (answer.text, answer.provider, answer.model, answer.cached) == ("two", "fake", "fake-model", False)
    assert [a.ok for a in answer.attempts] == [True]
    assert answer.usage["completion_tokens"] == 1
    (req,) = fake_llm.chats()
    assert req.path == "/v1/chat/completions"
    assert req.authorization == "Bearer sk-fake-0123456789"
    assert req.body["messages"] == Q and req.body["model"] == "fake-model"
    assert "max_retries" not in req.body and "num_retries" not in req.body
    # the audit saw the call (so it would see one going elsewhere)
    assert ("socket.connect", ("127.0.0.1", fake_llm.port)) in network_audit


@pytest.mark.parametrize(("kind", "prefix", "path"), [
    ("openai", "/v1", "/v1/chat/completions"),
    ("openrouter", "/or/v1", "/or/v1/chat/completions"),
    ("huggingface", "/hf/v1", "/hf/v1/chat/completions"),
    ("litellm", "/raw/v1", "/raw/v1/chat/completions"),
    ("ollama", "", "/api/chat"),
])
def test_every_kind_reaches_its_api_once_per_try(fake_llm, make_gateway, monkeypatch, kind, prefix, path):
    monkeypatch.setenv("SOME_KEY", "sk-some-key-123456")
    model = "openai/fake-model" if kind == "litellm" else "fake-model"
    fake_llm.script("fake-model", F.server_error(500), "second try")
    gw = make_gateway({"p": {"kind": kind, "model": model, "api_base": fake_llm.url + prefix,
                             "api_key": "env:SOME_KEY"}}, routing={"retries_per_provider": 1})
    answer = gw.complete(Q)
    assert answer.text == "second try"
    reqs = fake_llm.chats("fake-model")
    assert len(reqs) == 2  # our one retry; litellm's own retries are off
    assert all(r.path == path for r in reqs)
    assert all("max_retries" not in r.body and "num_retries" not in r.body for r in reqs)
    assert all(r.authorization == "Bearer sk-some-key-123456" for r in reqs)


def test_ollama_gets_the_schema_as_format(fake_llm, make_gateway):
    fake_llm.script("qwen2.5-coder:7b", '{"a": 2}', api="ollama")
    gw = make_gateway({"local": ollama(fake_llm.url)})
    answer = gw.complete(Q, schema=SCHEMA, temperature=0.1)
    assert answer.data == {"a": 2} and answer.provider == "local"
    (req,) = fake_llm.chats()
    assert req.path == "/api/chat" and req.api == "ollama"
    assert req.body["format"] == SCHEMA
    assert req.body["stream"] is False
    assert req.body["options"]["temperature"] == 0.1
    assert req.authorization is None


def test_openai_gets_response_format_and_a_schema_violation_is_retried(fake_llm, make_gateway):
    fake_llm.script("fake-model", '{"a": "two"}', '```json\n{"a": 2}\n```')
    gw = make_gateway(routing={"retries_per_provider": 1})
    answer = gw.complete(Q, schema=SCHEMA, task="author")
    assert answer.data == {"a": 2} and answer.text == '{"a": 2}'
    first, _ = fake_llm.chats()
    assert first.body["response_format"]["type"] == "json_schema"
    assert first.body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert [a.ok for a in answer.attempts] == [False, True]
    assert "does not match the schema" in answer.attempts[0].error


def test_malformed_json_answer_moves_to_the_next_provider(fake_llm, make_gateway):
    fake_llm.script("fake-model", '{"a": 1,,')
    fake_llm.script("second-model", '{"a": 1}')
    gw = make_gateway({"one": openai(fake_llm, "fake-model"), "two": openai(fake_llm, "second-model")})
    answer = gw.complete(Q, schema=SCHEMA)
    assert answer.provider == "two" and answer.data == {"a": 1}
    assert "answer is not valid JSON" in answer.attempts[0].error
    # a bad answer is the model's fault, not the server's: the breaker stays closed
    fake_llm.script("fake-model", '{"a": 3}')
    assert gw.complete(Q, schema=SCHEMA).provider == "one"


def test_malformed_http_body_is_a_failed_attempt(fake_llm, make_gateway):
    fake_llm.script("fake-model", F.malformed())
    gw = make_gateway({"one": openai(fake_llm, "fake-model"), "two": openai(fake_llm, "second-model")})
    answer = gw.complete(Q)
    assert answer.provider == "two"
    assert answer.attempts[0].error == "malformed response from the server (not JSON)"


# -- deadline, fallback, breaker ------------------------------------------------------------
def test_fallback_from_a_hanging_provider_within_the_deadline(fake_llm, make_gateway):
    fake_llm.script("fake-model", F.hang(30))
    fake_llm.script("second-model", "from the second")
    gw = make_gateway({"hangs": openai(fake_llm, "fake-model", timeout_s=1),
                       "works": openai(fake_llm, "second-model", timeout_s=1)},
                      routing={"deadline_s": 2})
    t0 = time.monotonic()
    answer = gw.complete(Q)
    elapsed = time.monotonic() - t0
    assert answer.provider == "works" and answer.text == "from the second"
    assert elapsed < 3, elapsed
    assert answer.attempts[0].error == "no answer within 1s (timeout_s)"


def test_deadline_is_wall_clock_even_when_the_body_trickles(fake_llm, make_gateway):
    # each piece arrives well within the read timeout, so litellm alone would wait ~4 s
    fake_llm.script("fake-model", F.slow("a slow answer", pieces=8, delay=0.5))
    gw = make_gateway({"slow": openai(fake_llm, "fake-model", timeout_s=5)},
                      routing={"deadline_s": 1.5})
    t0 = time.monotonic()
    with pytest.raises(GatewayError) as info:
        gw.complete(Q)
    assert time.monotonic() - t0 < 2.5
    assert "stopped waiting at the deadline" in info.value.message


def test_every_provider_failing_names_every_attempt(fake_llm, make_gateway, closed_port, monkeypatch):
    fake_llm.script("fake-model", F.unauthorized())
    gw = make_gateway({
        "ollama": ollama(f"http://127.0.0.1:{closed_port}"),
        "openrouter": {"kind": "openrouter", "model": "x/y", "api_key": "env:OPENROUTER_API_KEY",
                       "api_base": fake_llm.url + "/or/v1"},
        "openai": openai(fake_llm, "fake-model", api_key="env:FAKE_KEY"),
    })
    monkeypatch.setenv("FAKE_KEY", "sk-test-key-abcdef")
    with pytest.raises(GatewayError) as info:
        gw.complete(Q)
    err = info.value
    assert isinstance(err, OpsrunError) and err.exit_code == 1
    msg = err.message
    assert f"ollama (127.0.0.1:{closed_port}): connection refused" in msg
    assert "openrouter (127.0.0.1:" in msg and "key not set (OPENROUTER_API_KEY)" in msg
    assert re.search(r"openai \(127\.0\.0\.1:\d+\): 401 unauthorized", msg), msg
    assert [a.provider for a in err.attempts] == ["ollama", "openrouter", "openai"]
    assert "gateway check" in err.render()


def test_circuit_breaker_skips_a_dead_provider_on_later_calls(fake_llm, make_gateway):
    fake_llm.script("fake-model", F.server_error(500))
    gw = make_gateway({"flaky": openai(fake_llm, "fake-model"), "backup": openai(fake_llm, "second-model")})
    assert gw.complete(Q).provider == "backup"
    second = gw.complete([{"role": "user", "content": "another question"}])
    assert second.provider == "backup"
    assert len(fake_llm.chats("fake-model")) == 1  # the dead one was not asked again
    assert second.attempts[0].skipped and "cooling down" in second.attempts[0].error
    gw.reset_breaker()
    assert gw.complete(Q).provider == "flaky"


def test_breaker_reopens_after_the_cooldown(fake_llm, make_gateway):
    clock = FakeClock()
    fake_llm.script("fake-model", F.server_error(503))
    gw = make_gateway({"flaky": openai(fake_llm, "fake-model"), "backup": openai(fake_llm, "second-model")},
                      routing={"cooldown_s": 30, "deadline_s": 1e9}, clock=clock, sleep=clock.sleep)
    assert gw.complete(Q).provider == "backup"
    clock.now += 29
    assert gw.complete(Q).provider == "backup"
    clock.now += 2
    assert gw.complete(Q).provider == "flaky"
    assert len(fake_llm.chats("fake-model")) == 2


def test_context_too_long_and_model_not_found_move_on(fake_llm, make_gateway):
    fake_llm.script("fake-model", F.context_too_long())
    fake_llm.script("second-model", F.model_not_found("second-model"))
    gw = make_gateway({"a": openai(fake_llm, "fake-model"), "b": openai(fake_llm, "second-model"),
                       "c": openai(fake_llm, "third-model")}, routing={"retries_per_provider": 2})
    answer = gw.complete(Q)
    assert answer.provider == "c"
    errors = [a.error for a in answer.attempts]
    assert errors[0].startswith("400 context too long") and errors[1].startswith("404 model not found")
    assert len(fake_llm.chats()) == 3  # neither is retried on the same provider
    # too long is about the request, not the provider: it is asked again next time
    assert gw.complete(Q).provider == "a"


def test_retries_on_a_server_error_then_answers(fake_llm, make_gateway):
    clock = FakeClock()
    fake_llm.script("fake-model", F.server_error(502), "fine")
    gw = make_gateway(routing={"retries_per_provider": 1}, sleep=clock.sleep)
    answer = gw.complete(Q)
    assert answer.text == "fine" and len(answer.attempts) == 2
    assert answer.attempts[0].error.startswith("502 server error")
    assert clock.sleeps == [0.25]  # a short backoff


# -- keys -------------------------------------------------------------------------------------
def test_a_provider_without_its_key_is_skipped_and_never_called(fake_llm, make_gateway, monkeypatch):
    monkeypatch.setenv("EMPTY_KEY", "")
    gw = make_gateway({"nokey": openai(fake_llm, "fake-model", api_key="env:MISSING_KEY"),
                       "empty": openai(fake_llm, "third-model", api_key="env:EMPTY_KEY"),
                       "nofile": openai(fake_llm, "third-model", api_key="file:missing.key"),
                       "ok": openai(fake_llm, "second-model")})
    answer = gw.complete(Q)
    assert answer.provider == "ok"
    assert fake_llm.chats("fake-model") == [] and fake_llm.chats("third-model") == []
    assert [a.error for a in answer.attempts[:3]] == [
        "key not set (MISSING_KEY)", "key not set (EMPTY_KEY is empty)",
        "key file not readable (missing.key)"]


def test_a_key_from_a_file(fake_llm, make_gateway, tmp_path):
    (tmp_path / "secret.key").write_text("sk-from-file-987654\n")
    gw = make_gateway({"f": openai(fake_llm, "fake-model", api_key="file:secret.key")})
    gw.complete(Q)
    assert fake_llm.chats()[0].authorization == "Bearer sk-from-file-987654"


def test_no_key_value_in_errors_logs_or_requests(fake_llm, make_gateway, monkeypatch, caplog):
    key = "sk-canary-5f2b9c1e7d"
    monkeypatch.setenv("CANARY_KEY", key)
    # a server that echoes the key back in its error, like some do
    fake_llm.script("fake-model", F.unauthorized(f"Incorrect API key provided: {key}"))
    fake_llm.script("second-model", F.server_error(500, f"upstream said {key}"))
    gw = make_gateway({"a": openai(fake_llm, "fake-model", api_key="env:CANARY_KEY"),
                       "b": openai(fake_llm, "second-model", api_key="env:CANARY_KEY")})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GatewayError) as info:
        gw.complete([{"role": "user", "content": f"my key is {key}"}])
    err = info.value
    assert key not in err.message and key not in err.render() and key not in str(err)
    assert all(key not in a.error for a in err.attempts)
    assert "***" in err.message
    assert key not in caplog.text
    for req in fake_llm.requests:
        assert req.authorization == f"Bearer {key}"
        assert key not in req.raw and key not in req.path  # the prompt was redacted too
        assert key not in json.dumps(req.headers)


# -- 429 ----------------------------------------------------------------------------------------
def test_429_retry_after_is_respected(fake_llm, make_gateway):
    clock = FakeClock()
    fake_llm.script("fake-model", F.rate_limited(retry_after=2), "after the wait")
    gw = make_gateway(routing={"retries_per_provider": 1}, sleep=clock.sleep)
    answer = gw.complete(Q)
    assert answer.text == "after the wait" and answer.provider == "fake"
    assert clock.sleeps == [2.0]
    assert "429 rate limited (Retry-After 2s)" in answer.attempts[0].error


def test_429_retry_after_beyond_the_deadline_moves_on(fake_llm, make_gateway):
    clock = FakeClock()
    fake_llm.script("fake-model", F.rate_limited(retry_after=60))
    gw = make_gateway({"limited": openai(fake_llm, "fake-model"), "other": openai(fake_llm, "second-model")},
                      routing={"retries_per_provider": 3, "deadline_s": 5, "cooldown_s": 1},
                      sleep=clock.sleep)
    answer = gw.complete(Q)
    assert answer.provider == "other" and clock.sleeps == []
    assert "does not fit in the deadline" in answer.attempts[0].error
    # the breaker holds it for the Retry-After (60 s), longer than cooldown_s (1 s)
    assert gw.complete(Q).attempts[0].skipped


# -- cache ----------------------------------------------------------------------------------------
def test_cache_hit_miss_and_expiry(fake_llm, make_gateway, tmp_path):
    wall = FakeClock()
    fake_llm.script("fake-model", "first", "second", "third")
    gw = make_gateway(cache={"enabled": True, "ttl_s": 100}, now=wall)
    assert gw.complete(Q).text == "first"
    hit = gw.complete(Q)
    assert hit.cached and hit.text == "first" and hit.provider == "fake" and hit.attempts == []
    assert len(fake_llm.chats()) == 1
    assert gw.complete(Q, temperature=0.9).text == "second"  # another key: a miss
    wall.now += 101
    assert gw.complete(Q).text == "third"  # expired
    assert len(fake_llm.chats()) == 3
    stored = list((tmp_path / "cache").glob("*.json"))
    assert stored and "what is one plus one" not in stored[0].read_text()  # no prompt on disk


def test_an_answer_the_caller_rejects_is_not_cached(fake_llm, make_gateway):
    fake_llm.script("fake-model", "bad answer", "good answer")
    gw = make_gateway(cache={"enabled": True})
    assert gw.complete(Q, accept=lambda text: "good" in text).text == "bad answer"
    assert gw.complete(Q, accept=lambda text: "good" in text).text == "good answer"
    third = gw.complete(Q)
    assert third.cached and third.text == "good answer"
    assert len(fake_llm.chats()) == 2


def test_cache_keeps_at_most_max_entries_oldest_out(tmp_path):
    wall = FakeClock()
    cache = AnswerCache(tmp_path / "c", ttl_s=1000, max_entries=2, now=wall)
    for i in range(3):
        cache.put(f"k{i}", {"text": f"t{i}"})
        wall.now += 1
    assert len(cache) == 2
    assert cache.get("k0") is None and cache.get("k2")["text"] == "t2"
    (tmp_path / "c" / "k1.json").write_text("{broken")
    assert cache.get("k1") is None and len(cache) == 1


# -- rate limit ----------------------------------------------------------------------------------
def test_rate_limiter_waits_and_never_fails():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(2)] == [0.0, 0.0]  # the bucket starts full
    assert limiter.acquire() == pytest.approx(30.0)  # 2/min: one token every 30 s
    assert clock.sleeps == [pytest.approx(30.0)]
    clock.now += 60
    assert limiter.acquire() == 0.0 and limiter.acquire() == 0.0
    assert RateLimiter(None, clock=clock, sleep=clock.sleep).acquire() == 0.0


def test_gateway_calls_wait_for_the_rate_limiter(fake_llm, make_gateway):
    clock = FakeClock()
    gw = make_gateway(rate_limit={"requests_per_minute": 1},
                      limiter=RateLimiter(1, clock=clock, sleep=clock.sleep))
    for i in range(3):
        gw.complete([{"role": "user", "content": f"q{i}"}])
    assert len(fake_llm.chats()) == 3
    assert clock.sleeps == [pytest.approx(60.0), pytest.approx(60.0)]


# -- routing ------------------------------------------------------------------------------------
def _routing_gateway(tmp_path, routing, tasks=None):
    data = {"opsrun": 1, "providers": {
        "remote1": {"kind": "openai", "model": "m1", "api_base": "http://127.0.0.1:9/v1"},
        "local": {"kind": "ollama", "model": "m2"},
        "remote2": {"kind": "openrouter", "model": "m3"},
    }, "routing": routing}
    if tasks:
        data["tasks"] = tasks
    return Gateway(gwconfig.from_data(data), state_dir=tmp_path)


def test_order_from_task_routing_prefer_local_force_cloud_and_latency(tmp_path):
    names = lambda gw, task="ask": [p.name for p in gw.order(task)]  # noqa: E731
    assert names(_routing_gateway(tmp_path, {})) == ["remote1", "local", "remote2"]
    assert names(_routing_gateway(tmp_path, {"prefer_local": True})) == ["local", "remote1", "remote2"]
    assert names(_routing_gateway(tmp_path, {"force_cloud": True, "prefer_local": True})) == ["remote1", "remote2"]
    gw = _routing_gateway(tmp_path, {"order": ["remote2", "local"]}, {"fix": {"order": ["local"]}})
    assert names(gw) == ["remote2", "local"] and names(gw, "fix") == ["local"]
    (tmp_path / "gateway-bench.json").write_text(json.dumps({"version": 1, "providers": {
        "remote1": {"model": "m1", "ok": True, "latency_ms": 900},
        "local": {"model": "m2", "ok": True, "latency_ms": 100}}}))
    assert names(_routing_gateway(tmp_path, {"max_latency_ms": 500})) == ["local", "remote2", "remote1"]


# -- config -------------------------------------------------------------------------------------
def test_shipped_gateway_yaml_is_valid(llm_env):
    cfg = gwconfig.load_file(ROOT / "gateway.yaml")
    assert list(cfg.providers) == ["ollama", "openrouter", "openai"]
    assert cfg.providers["ollama"].local and cfg.providers["ollama"].litellm_model == "ollama_chat/qwen2.5-coder:7b"
    assert cfg.providers["openrouter"].api_key == "env:OPENROUTER_API_KEY"
    assert [p.name for p in Gateway(cfg).order()] == ["ollama", "openrouter", "openai"]
    assert gwconfig.packaged_default().is_file()


def test_config_errors_are_located_and_never_echo_a_literal_key(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("opsrun: 1\nproviders:\n  a:\n    kind: openai\n    model: m\n"
                    "    api_key: sk-literal-secret-123\n    timeot_s: 3\n"
                    "routing:\n  order: [a, b]\n")
    with pytest.raises(InvalidInput) as info:
        gwconfig.load_file(path)
    text = info.value.render()
    assert "sk-literal-secret-123" not in text
    assert f"{path}:6:" in text and "api_key must be a secret reference" in text
    assert f"{path}:7:5" in text and "did you mean 'timeout_s'?" in text
    assert "unknown provider 'b'" in text


def test_litellm_model_strings():
    p = lambda kind, model: gwconfig.ProviderConfig("x", kind, model).litellm_model  # noqa: E731
    assert p("ollama", "qwen") == "ollama_chat/qwen"
    assert p("openai", "gpt") == "openai/gpt"
    assert p("openrouter", "a/b") == "openrouter/a/b"
    assert p("huggingface", "org/m") == "huggingface/org/m"
    with_base = gwconfig.ProviderConfig("x", "huggingface", "org/m", api_base="http://127.0.0.1:8080/v1")
    assert with_base.litellm_model == "openai/org/m"  # litellm's HF route looks models up online
    assert p("litellm", "anthropic/claude") == "anthropic/claude"


# -- check and bench ----------------------------------------------------------------------------
def test_check_reports_health_per_provider(fake_llm, make_gateway, closed_port):
    gw = make_gateway({
        "local": ollama(fake_llm.url),
        "missing": openai(fake_llm, "not-there"),
        "down": ollama(f"http://127.0.0.1:{closed_port}"),
        "nokey": openai(fake_llm, "fake-model", api_key="env:NOT_SET_KEY"),
    })
    health = {h.provider: h for h in gw.check()}
    assert health["local"].ok and health["local"].reachable and health["local"].model_present
    assert health["local"].latency_s is not None
    assert health["missing"].model_present is False and "not listed" in health["missing"].error
    assert health["down"].reachable is False and health["down"].error == "connection refused"
    assert not health["nokey"].ok and health["nokey"].key == "key not set (NOT_SET_KEY)"
    assert fake_llm.chats("fake-model") == []  # no key: not called


def test_bench_stores_measurements(fake_llm, make_gateway, tmp_path):
    fake_llm.script("fake-model", *[F.text("1 2 3", usage=(5, 30))] * 2)
    gw = make_gateway({"fast": openai(fake_llm, "fake-model"),
                       "nokey": openai(fake_llm, "second-model", api_key="env:NOT_SET_KEY")})
    results = {m.provider: m for m in gw.bench(runs=2)}
    assert results["fast"].ok and results["fast"].runs == 2 and results["fast"].tokens_per_s > 0
    assert not results["nokey"].ok
    assert (results["fast"].tokens_in, results["fast"].tokens_out) == (5, 30)
    stored = json.loads((tmp_path / ".opsrun" / "gateway-bench.json").read_text())
    assert stored["version"] == 2
    entry = stored["providers"]["fast"]["fake-model"]  # per provider and model
    assert entry["latency_ms"] == results["fast"].latency_ms
    assert (entry["tokens_in"], entry["tokens_out"]) == (5, 30)
    assert entry["tokens_per_s"] == results["fast"].tokens_per_s


# -- the CLI ------------------------------------------------------------------------------------
def _write_gateway(path: Path, providers: dict[str, Any]) -> Path:
    data = {"opsrun": 1, "providers": providers, "routing": {"retries_per_provider": 0, "deadline_s": 10},
            "cache": {"enabled": False}}
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_cli_ask_prints_the_answer_and_who_answered(fake_llm, tmp_path, monkeypatch):
    from runner.cli.gateway import app

    monkeypatch.chdir(tmp_path)
    fake_llm.script("fake-model", "forty-two")
    gw = _write_gateway(tmp_path / "gw.yaml", {"fake": openai(fake_llm, "fake-model")})
    result = CliRunner().invoke(app, ["ask", "the question?", "--gateway", str(gw)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "forty-two\n"
    assert re.search(r"-- answered by fake \(fake-model\) in \d+\.\d\ds", result.stderr)


def test_cli_errors_are_messages_with_exit_codes(fake_llm, tmp_path, monkeypatch, closed_port):
    from runner.cli.gateway import app

    monkeypatch.chdir(tmp_path)
    gw = _write_gateway(tmp_path / "gw.yaml", {"down": ollama(f"http://127.0.0.1:{closed_port}")})
    result = CliRunner().invoke(app, ["ask", "hello", "--gateway", str(gw)])
    assert result.exit_code == 1
    assert "connection refused" in result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["check", "--gateway", str(gw)])
    assert result.exit_code == 1 and "no provider is healthy" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("opsrun: 2\nproviders: {}\n")
    result = CliRunner().invoke(app, ["ask", "hello", "--gateway", str(bad)])
    assert result.exit_code == 4 and "bad.yaml" in result.stderr


def test_cli_check_and_bench_succeed_with_a_healthy_provider(fake_llm, tmp_path, monkeypatch):
    from runner.cli.gateway import app

    monkeypatch.chdir(tmp_path)
    gw = _write_gateway(tmp_path / "gw.yaml", {"local": ollama(fake_llm.url)})
    result = CliRunner().invoke(app, ["check", "--gateway", str(gw)])
    assert result.exit_code == 0, result.output
    assert "local" in result.stdout and "ok" in result.stdout
    result = CliRunner().invoke(app, ["bench", "--gateway", str(gw), "--runs", "1"])
    assert result.exit_code == 0, result.output
    assert "tokens in/out" in result.stdout and re.search(r"\d+/\d+", result.stdout), result.stdout
    assert (tmp_path / ".opsrun" / "gateway-bench.json").is_file()
    result = CliRunner().invoke(app, ["bench", "--gateway", str(gw), "--runs", "1", "--task", "author"])
    assert result.exit_code == 0, result.output


def test_the_network_audit_tells_loopback_from_elsewhere():
    from tests.fixtures_llm import is_loopback

    assert is_loopback("socket.connect", ("127.0.0.1", 80)) and is_loopback("socket.connect", ("::1", 80, 0, 0))
    assert not is_loopback("socket.connect", ("10.1.2.3", 443))
    assert not is_loopback("socket.getaddrinfo", "api.openai.com")


def test_fake_server_streams_ndjson_and_sse(fake_llm):
    import urllib.request

    def post(path: str, body: dict[str, Any]) -> str:
        req = urllib.request.Request(fake_llm.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode()

    fake_llm.script("fake-model", "hello there world")
    lines = [json.loads(x) for x in post("/api/chat", {"model": "fake-model", "stream": True,
                                                       "messages": Q}).splitlines()]
    assert "".join(x["message"]["content"] for x in lines) == "hello there world"
    assert lines[-1]["done"] is True and not lines[0]["done"]
    fake_llm.script("fake-model", "a b")
    events = post("/v1/chat/completions", {"model": "fake-model", "stream": True, "messages": Q})
    assert events.strip().endswith("data: [DONE]") and '"content": " b"' in events


# -- import hygiene -------------------------------------------------------------------------------
def test_importing_the_commands_does_not_import_litellm():
    code = "import runner.cli.gateway, sys; assert 'litellm' not in sys.modules, 'litellm imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_missing_litellm_is_a_missing_extra_error():
    code = ("import sys; sys.modules['litellm'] = None\n"
            "from runner.errors import MissingExtra\n"
            "from runner.gateway.adapter import load_litellm as _litellm\n"
            "try:\n    _litellm()\nexcept MissingExtra as e:\n    print(e.render())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    assert "pip install 'opsrun[llm]'" in out
