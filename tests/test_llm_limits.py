"""The gateway's limits against the fake LLM server on loopback: an answer cut at max_tokens is
a failure (never returned, cached or registered), the error says when a provider did answer,
context_tokens fits max_tokens to the prompt and refuses what cannot fit, one deadline spans
the requests of a run, tasks.<task>.model, and bench results (tokens in/out, tokens/s per
provider and model) steering max_latency_ms routing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from runner import config
from runner.errors import InvalidInput
from runner.gateway import Gateway, GatewayError, tokens
from runner.gateway import config as gwconfig
from runner.llm.author import Author, AuthorError
from runner.steps import base
from runner.steps.base import StepContext
from tests.peers import fake_llm as F

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("network_audit")]

Q = [{"role": "user", "content": "what is one plus one?"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
INVENTORY = """\
opsrun: 1
hosts:
  web1: {transport: ssh, address: 127.0.0.1, port: 1, user: nobody}
groups:
  web: {hosts: [web1]}
"""
GOOD = {"opsrun": 1, "name": "a file", "hosts": "web", "steps": [
    {"id": "motd", "file": {"path": "/etc/motd", "content": "hello\n"}}]}


def openai(fake: F.FakeLLM, model: str = "fake-model", **extra: Any) -> dict[str, Any]:
    return {"kind": "openai", "model": model, "api_base": fake.url + "/v1", **extra}


# -- answers cut at max_tokens ------------------------------------------------------------------
@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_a_cut_answer_is_a_failure_never_returned_or_cached(fake_llm, make_gateway, api):
    provider = openai(fake_llm) if api == "openai" else {"kind": "ollama", "model": "fake-model",
                                                         "api_base": fake_llm.url}
    fake_llm.script("fake-model", F.truncated('{"a": 1, "b": "and then the'))
    gw = make_gateway({"fake": provider}, cache={"enabled": True}, tasks={"ask": {"max_tokens": 50}})
    with pytest.raises(GatewayError) as info:
        gw.complete(Q, schema=SCHEMA)
    text = info.value.message
    assert text.startswith("no usable LLM answer (ask): fake (127.0.0.1:")
    assert "the answer was cut at max_tokens=50: raise max_tokens or context_tokens" in text
    assert "not valid JSON" not in text and info.value.answered
    assert gw.cache is not None and len(gw.cache) == 0
    assert len(fake_llm.chats()) == 1  # the same limit would cut it again: not retried
    fake_llm.script("fake-model", '{"a": 1}')
    assert gw.complete(Q, schema=SCHEMA).data == {"a": 1}  # the server works: no breaker


def test_llm_ask_with_a_cut_answer_is_a_failed_step(fake_llm, tmp_path):
    (tmp_path / "gateway.yaml").write_text(json.dumps({
        "opsrun": 1, "providers": {"fake": openai(fake_llm)}, "routing": {"retries_per_provider": 0},
        "tasks": {"ask": {"max_tokens": 20}}, "cache": {"enabled": True, "dir": str(tmp_path / "c")}}))
    from runner import gateway as gateways

    gateways.forget_gateways()
    ask = base.get("llm.ask")
    fake_llm.script("fake-model", F.truncated("The disk is full because"))
    params = {"prompt": "why?", "gateway": "gateway.yaml"}
    result = ask.run_local(params, StepContext(host=config.load_inventory(None).hosts["local"],
                                               playbook_dir=str(tmp_path)))
    gateways.forget_gateways()
    assert result.rc == 1 and result.out == "" and getattr(result, "data", None) is None
    status, message = ask.outcome(params, ask.plan(params, {}, None), [result], lambda e, n: None)  # type: ignore[arg-type]
    assert status == "failed" and "cut at max_tokens=20" in message
    assert not list((tmp_path / "c").glob("*.json"))


def test_an_answer_that_is_not_json_says_the_provider_answered(fake_llm, make_gateway):
    fake_llm.script("fake-model", "Sure! Here is the JSON you asked for:", "a = 1")
    gw = make_gateway(routing={"retries_per_provider": 1})
    with pytest.raises(GatewayError) as info:
        gw.complete(Q, schema=SCHEMA)
    assert info.value.message.startswith("no usable LLM answer (ask): ")
    assert "answer is not valid JSON" in info.value.message
    assert "no LLM provider answered" not in info.value.message


def test_a_provider_down_is_still_no_provider_answered(make_gateway, closed_port):
    gw = make_gateway({"down": {"kind": "openai", "model": "m", "api_base": f"http://127.0.0.1:{closed_port}/v1"}})
    with pytest.raises(GatewayError) as info:
        gw.complete(Q)
    assert info.value.message.startswith("no LLM provider answered (ask): ") and not info.value.answered


# -- context_tokens -----------------------------------------------------------------------------
def test_max_tokens_is_fitted_to_the_context(fake_llm, make_gateway):
    gw = make_gateway({"small": openai(fake_llm, context_tokens=512)}, tasks={"ask": {"max_tokens": 4096}})
    gw.complete(Q)
    (req,) = fake_llm.chats()
    expected = tokens.room(512, tokens.message_tokens(Q))
    assert req.body["max_tokens"] == expected and 400 < expected < 512
    # without context_tokens the task's max_tokens goes as it is
    gw = make_gateway({"big": openai(fake_llm)}, tasks={"ask": {"max_tokens": 4096}})
    gw.complete(Q)
    assert fake_llm.chats()[-1].body["max_tokens"] == 4096


def test_a_prompt_that_cannot_fit_is_refused_naming_the_numbers(fake_llm, make_gateway):
    long = [{"role": "user", "content": "word " * 400}]
    gw = make_gateway({"small": openai(fake_llm, context_tokens=256),
                       "also": openai(fake_llm, "second-model", context_tokens=300)})
    with pytest.raises(GatewayError) as info:
        gw.complete(long, min_answer_tokens=64)
    text = info.value.message
    n = tokens.message_tokens(long)
    assert text.startswith("the prompt fits no LLM provider (ask): ")
    assert f"small (127.0.0.1:{fake_llm.port}): skipped: the prompt (~{n} tokens) and an answer of at least " \
           f"64 tokens do not fit context_tokens=256" in text
    assert "context_tokens=300" in text
    assert not fake_llm.chats()  # never sent, never cut by the server


def test_the_author_budget_leaves_room_for_repairs_or_names_the_numbers(fake_llm, tmp_path):
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text(INVENTORY)
    inv = config.load_inventory(str(inv_file))

    def gateway(context: int) -> Gateway:
        return Gateway(gwconfig.from_data({"opsrun": 1, "providers": {"fake": openai(fake_llm, context_tokens=context)},
                                           "tasks": {"author": {"max_tokens": 4096}}, "cache": {"enabled": False}}),
                       state_dir=tmp_path)

    author = Author(gateway(4096), inv, file=str(tmp_path / "p.yaml"))
    base_msgs = author.messages("put hello in /etc/motd")
    prompt = tokens.message_tokens(base_msgs)
    cap = author.budget(base_msgs)
    assert prompt < 1400 and cap is not None and 600 < cap < 1000  # 4k: the answer, then a repair round
    # the whole repair round fits: prompt + answer + feedback (~1.2 answers) + new answer
    assert prompt + cap * 3.2 + 150 <= 4096 * 0.95
    with pytest.raises(Exception) as info:
        Author(gateway(1024), inv, file=str(tmp_path / "p.yaml")).write("put hello in /etc/motd")
    text = str(info.value)
    assert f"the author prompt (~{prompt} tokens) and an answer of 256 tokens and its repair rounds" in text
    assert "context_tokens=1024 of provider 'fake'" in text and "--max-repairs 0" in info.value.hint
    assert not fake_llm.chats()
    # with no repairs, the same prompt fits 2k and the answer gets the rest
    two_k = Author(gateway(2048), inv, file=str(tmp_path / "p.yaml"), max_repairs=0)
    assert two_k.budget(base_msgs) == tokens.room(2048, prompt)


# -- one deadline for the run -------------------------------------------------------------------
def test_one_deadline_covers_every_request_of_an_author_run(fake_llm, tmp_path):
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text(INVENTORY)
    bad = {**GOOD, "steps": [{"id": "motd", "file": {"path": "/etc/motd", "mode": 644}}]}
    # every answer takes ~1.2 s; four tries would need ~5 s, the run has 2.5 s
    for _ in range(4):
        fake_llm.script("fake-model", F.slow(json.dumps(bad), pieces=4, delay=0.3))
    gw = Gateway(gwconfig.from_data({"opsrun": 1, "providers": {"fake": openai(fake_llm, timeout_s=5)},
                                     "routing": {"deadline_s": 2.5, "retries_per_provider": 0},
                                     "cache": {"enabled": False}}), state_dir=tmp_path)
    t0 = time.monotonic()
    with pytest.raises((AuthorError, GatewayError)) as info:
        Author(gw, config.load_inventory(str(inv_file)), file=str(tmp_path / "p.yaml"), max_repairs=3).write(
            "put hello in /etc/motd")
    elapsed = time.monotonic() - t0
    assert elapsed < 3.5, elapsed
    assert len(fake_llm.chats()) <= 3
    text = str(info.value)
    assert "deadline" in text, text


# -- tasks.<task>.model ---------------------------------------------------------------------------
def test_a_task_can_use_another_model(fake_llm, make_gateway):
    gw = make_gateway({"one": openai(fake_llm), "two": openai(fake_llm, "second-model")},
                      tasks={"fix": {"model": "third-model", "order": ["one"]},
                             "author": {"model": {"two": "qwen2.5-coder:7b"}}})
    gw.complete(Q, task="fix")
    gw.complete(Q, task="ask")
    gw.complete(Q, task="author", providers=["two"])
    assert [r.model for r in fake_llm.chats()] == ["third-model", "fake-model", "qwen2.5-coder:7b"]
    assert [p.model for p in gw.order("author")] == ["fake-model", "qwen2.5-coder:7b"]
    gw.check(["one"])  # check and bench without a task: the provider's own model
    assert fake_llm.chats()[-1].model == "fake-model"


def test_a_task_model_for_an_unknown_provider_is_a_located_error(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("opsrun: 1\nproviders:\n  local: {kind: ollama, model: m}\n"
                    "tasks:\n  fix:\n    model: {locl: small}\n")
    with pytest.raises(InvalidInput) as info:
        gwconfig.load_file(path)
    assert f"{path}:6:13" in info.value.render() and "did you mean 'local'?" in info.value.render()


# -- bench and latency routing ------------------------------------------------------------------
def _bench(tmp_path: Path, providers: dict[str, Any]) -> None:
    (tmp_path / "gateway-bench.json").write_text(json.dumps({"version": 2, "providers": providers}))


def test_latency_routing_predicts_from_tokens_per_second(tmp_path):
    gw = Gateway(gwconfig.from_data({"opsrun": 1, "providers": {
        "fast_start": {"kind": "openai", "model": "m1", "api_base": "http://127.0.0.1:9/v1"},
        "steady": {"kind": "openai", "model": "m2", "api_base": "http://127.0.0.1:9/v1"},
    }, "routing": {"max_latency_ms": 5000}}), state_dir=tmp_path)
    _bench(tmp_path, {
        "fast_start": {"m1": {"ok": True, "latency_ms": 500, "tokens_per_s": 10, "tokens_out": 30}},
        "steady": {"m2": {"ok": True, "latency_ms": 2000, "tokens_per_s": 200, "tokens_out": 30}},
    })
    names = lambda **kw: [p.name for p in gw.order("ask", **kw)]  # noqa: E731
    assert names() == ["fast_start", "steady"]  # a short answer: both within 5 s
    assert gw.predicted_ms(gw.config.providers["fast_start"], 300) == pytest.approx(500 + 270 * 100)
    assert names(answer_tokens=300) == ["steady", "fast_start"]  # 300 tokens at 10/s: 27.5 s


def test_bench_results_are_kept_per_model_and_a_version_1_file_still_reads(fake_llm, make_gateway, tmp_path):
    fake_llm.script("fake-model", F.text("1 2 3", usage=(12, 40)))
    fake_llm.script("third-model", F.text("1 2", usage=(12, 20)))
    gw = make_gateway({"fake": openai(fake_llm)}, tasks={"fix": {"model": "third-model"}})
    gw.bench(runs=1)
    gw.bench(runs=1, task="fix")
    stored = json.loads((tmp_path / ".opsrun" / "gateway-bench.json").read_text())["providers"]["fake"]
    assert set(stored) == {"fake-model", "third-model"}
    assert (stored["third-model"]["tokens_in"], stored["third-model"]["tokens_out"]) == (12, 20)
    old = tmp_path / "old"
    old.mkdir()
    (old / "gateway-bench.json").write_text(json.dumps({"version": 1, "providers": {
        "fake": {"model": "fake-model", "ok": True, "latency_ms": 9000}}}))
    gw = make_gateway({"fake": openai(fake_llm)}, state_dir=old)
    assert gw.measurement(gw.config.providers["fake"]) == {"model": "fake-model", "ok": True, "latency_ms": 9000}
