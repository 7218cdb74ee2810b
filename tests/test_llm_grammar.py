"""Prompts and schemas for small models: the flattened model schema (one object per step kind,
each requiring `id` and that kind, no `allow`, only kinds the inventory can run) has nothing
llama.cpp's schema-to-grammar conversion drops; the prompt renders it compactly and fits a
4,096-token context with room for repairs; repair feedback names only usable kinds, and an
answer that is not JSON is repaired like any other mistake (fake LLM server on loopback).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from runner import config, load, schema
from runner.gateway import Gateway, tokens
from runner.gateway import config as gwconfig
from runner.llm import author as author_mod
from runner.llm import grammar
from runner.llm.author import Author
from runner.llm.fixer import fix_schema
from runner.llm.gates import usable_kinds
from runner.schema import load_schema

FAMILIES = {"ssh": {"ssh", "local"}, "adb": {"adb"}, "proxmox": {"proxmox"}}
INVENTORY = """\
opsrun: 1
hosts:
  web1: {transport: ssh, address: 127.0.0.1, port: 1, user: nobody}
  web2: {transport: ssh, address: 127.0.0.1, port: 1, user: nobody}
groups:
  web: {hosts: [web1, web2]}
"""
GOOD: dict[str, Any] = {"opsrun": 1, "name": "motd", "hosts": "web", "steps": [
    {"id": "motd", "name": "Message of the day", "file": {"path": "/etc/motd", "content": "hi\n", "mode": "0644"}},
    {"id": "check", "run": {"command": "grep -q hi /etc/motd", "changed_when": "false"}}]}


def inventory(tmp_path: Path, text: str = INVENTORY) -> Any:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return config.load_inventory(str(path))


def gateway(tmp_path: Path, providers: dict[str, Any], **tasks: Any) -> Gateway:
    return Gateway(gwconfig.from_data({"opsrun": 1, "providers": providers, "tasks": tasks or {"author": {}},
                                       "routing": {"retries_per_provider": 0, "deadline_s": 20},
                                       "cache": {"enabled": False}}), state_dir=tmp_path)


# ---------------------------------------------------------------- the flattened schema


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_model_schema_has_nothing_a_grammar_drops(family):
    kinds = usable_kinds(FAMILIES[family])
    model = grammar.model_schema(kinds)
    assert grammar.grammar_problems(model) == []
    assert grammar.grammar_problems(fix_schema(sorted(FAMILIES[family])[0])) == []
    jsonschema.Draft202012Validator.check_schema(model)
    assert "allow" not in model["properties"] and "policy" not in model["properties"]
    defs = model["$defs"]
    variants = [r["$ref"].rsplit("/", 1)[-1] for r in defs["step"]["anyOf"]]
    assert sorted(v[len("step_"):] for v in variants) == sorted(kinds)
    for v in variants:  # one object per kind, requiring id and that kind, nothing else beside
        kind = v[len("step_"):]
        assert defs[v]["required"] == ["id", kind] and defs[v]["additionalProperties"] is False
        assert list(defs[v]["properties"])[:2] == ["id", kind]
    text = json.dumps(model)
    others = set(schema.kind_names()) - kinds
    assert not [k for k in others if f'"step_{k}"' in text or f'"kind_{k}"' in text]
    assert '"allOf"' not in text and '"oneOf"' not in text and '"not"' not in text


def test_the_lint_finds_what_the_full_schema_would_lose():
    problems = "\n".join(grammar.grammar_problems(load_schema("playbook")))
    # the step's `required: [id]` stands beside if/then/else (handlers and steps share it): lost
    assert "#/$defs/step: required keys without a property: id" in problems
    assert "#/$defs/step: ignored by the grammar:" in problems and "if, then" in problems
    assert "#/$defs/step_body: dropped beside oneOf" in problems  # "exactly one kind"
    assert "#/$defs/templated: pattern '\\\\{\\\\{|\\\\{%' is not anchored" in problems
    assert "dropped beside $ref" in problems


def test_what_the_prompt_shows_passes_the_model_schema_and_our_validator(tmp_path):
    for family, transports in FAMILIES.items():
        model = grammar.model_schema(usable_kinds(transports))
        for example in author_mod.EXAMPLES:
            kinds = {k for s in example["steps"] for k in s if k not in ("id", "name")}
            if kinds <= usable_kinds(transports):
                jsonschema.validate(example, model)
                doc = load.parse(yaml.safe_dump(example), f"{family}.yaml")
                assert not schema.validate_playbook(doc), (family, example["name"])
    jsonschema.validate(GOOD, grammar.model_schema(usable_kinds({"ssh"})))
    with pytest.raises(jsonschema.ValidationError):  # a step without a kind: the grammar cannot write it
        jsonschema.validate({**GOOD, "steps": [{"id": "x"}]}, grammar.model_schema(usable_kinds({"ssh"})))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, "allow": ["rm-root"]}, grammar.model_schema(usable_kinds({"ssh"})))


def test_the_compact_rendering():
    text = grammar.compact(grammar.model_schema(usable_kinds({"ssh"})))
    lines = text.splitlines()
    assert lines[0].startswith("Playbook: {opsrun*: 1, name*: str,") and "steps*: [step]" in lines[0]
    assert lines[1].startswith("step: {id*: name, <one kind>*: ..., name: str,")
    assert "- package: {name*: str | [str], state: present|absent|latest," in text
    assert '- file: {path*: str, state: file|directory|absent|link|touch, content: str, src: str, mode: "0644"' in text
    assert "proxmox" not in text and "adb." not in text and "show_diff" not in text and "policy" not in text


# ---------------------------------------------------------------- the prompt and its budget


def test_the_author_prompt_fits_a_4k_context_with_room_for_repairs(tmp_path):
    inv = inventory(tmp_path)
    gw = gateway(tmp_path, {"small": {"kind": "openai", "model": "m", "api_base": "http://127.0.0.1:9/v1",
                                      "context_tokens": 4096}})
    a = Author(gw, inv, file=str(tmp_path / "p.yaml"))
    msgs = a.messages("install nginx and put a home page on the web group")
    system = msgs[0]["content"]
    prompt = tokens.message_tokens(msgs)
    assert prompt <= 1400, prompt  # was ~6,800 with the whole JSON Schema in it
    cap = a.budget(msgs)
    assert cap is not None and cap >= 600
    assert "Hosts (ssh): web1, web2" in system and "Groups: web (web1, web2)" in system
    assert '"hosts":"web"' in system  # the example targets this inventory's first group
    assert "$defs" not in system and "additionalProperties" not in system
    # the grammar may write only names of this inventory for hosts
    assert a.schema["properties"]["hosts"]["anyOf"][0] == {"enum": ["all", "web", "web1", "web2", "local"]}


def test_a_large_inventory_keeps_the_prompt_bounded(tmp_path):
    hosts = "\n".join(f"  h{i:03}: {{transport: ssh, address: 127.0.0.1, port: 1, user: x}}" for i in range(300))
    groups = "\n".join(f"  g{i}: {{hosts: [{', '.join(f'h{j:03}' for j in range(i, i + 20))}]}}" for i in range(40))
    inv = inventory(tmp_path, f"opsrun: 1\nhosts:\n{hosts}\ngroups:\n{groups}\n")
    a = Author(gateway(tmp_path, {"m": {"kind": "ollama", "model": "m"}}), inv)
    msgs = a.messages("x")
    assert tokens.message_tokens(msgs) < 1800
    assert "h019, ... (280 more)" in msgs[0]["content"] and "h299" not in msgs[0]["content"]
    assert "g0 (20 hosts)" in msgs[0]["content"] and "(20 more)" in msgs[0]["content"]
    assert "hosts" in a.schema["properties"] and "enum" not in json.dumps(a.schema["properties"]["hosts"])


def test_examples_follow_the_inventory_transports(tmp_path):
    adb = inventory(tmp_path, "opsrun: 1\nhosts:\n  tab: {transport: adb, address: '127.0.0.1:5555'}\n"
                              "groups:\n  kiosks: {hosts: [tab]}\n")
    a = Author(gateway(tmp_path, {"m": {"kind": "ollama", "model": "m"}}), adb)
    system = a.messages("keep the screen on")[0]["content"]
    assert '"adb.setting"' in system and '"hosts":"kiosks"' in system and "- adb.shell:" in system
    assert "- proxmox.lxc" not in system  # the implicit local host keeps the shell kinds


# ---------------------------------------------------------------- feedback through the fake server




@pytest.mark.peer
@pytest.mark.usefixtures("network_audit")
def test_repair_feedback_names_only_usable_kinds_and_a_non_json_answer_is_repaired(fake_llm, tmp_path):
    nokind = {**GOOD, "steps": [{"id": "motd", "name": "no kind here"}, GOOD["steps"][1]]}
    fake_llm.script("fake-model", "Here is your playbook: opsrun: 1", json.dumps(nokind), json.dumps(GOOD))
    gw = gateway(tmp_path, {"fake": {"kind": "openai", "model": "fake-model", "api_base": fake_llm.url + "/v1"}})
    draft = Author(gw, inventory(tmp_path), file=str(tmp_path / "p.yaml"), max_repairs=2).write("motd")
    assert draft.tries == 3 and yaml.safe_load(draft.body) == GOOD
    first, second, third = fake_llm.chats()
    not_json = second.body["messages"][-1]["content"]
    assert "the answer is not valid JSON (Expecting value at line 1 column 1)" in not_json
    no_kind = third.body["messages"][-1]["content"]
    assert "has no step kind" in no_kind
    assert "add exactly one of: copy, file, line, llm.ask, package, run, service, template" in no_kind
    assert "proxmox" not in no_kind and "adb." not in no_kind
    # one deadline for the run, and max_tokens fitted by the author's budget (no context: the task's)
    assert "max_tokens" not in first.body


@pytest.mark.peer
@pytest.mark.usefixtures("network_audit")
def test_a_kind_the_inventory_cannot_run_is_refused(fake_llm, tmp_path):
    adb_step = {**GOOD, "steps": [{"id": "tap", "adb.input": {"tap": [10, 10]}}]}
    fake_llm.script("fake-model", json.dumps(adb_step))
    gw = gateway(tmp_path, {"fake": {"kind": "openai", "model": "fake-model", "api_base": fake_llm.url + "/v1"}})
    with pytest.raises(author_mod.AuthorError) as info:
        Author(gw, inventory(tmp_path), file=str(tmp_path / "p.yaml"), max_repairs=0).write("tap")
    text = info.value.render()
    assert "step kind 'adb.input' cannot run on the hosts of this inventory" in text
    assert "step kinds here are: copy, file, line, llm.ask, package, run, service, template" in text
