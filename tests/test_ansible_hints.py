"""Ansible keys in a playbook get a hint naming the opsrun way, with an example that is
itself valid opsrun (the example of every step hint is validated as a step)."""

from __future__ import annotations

import pytest
import yaml

from runner import ansible_hints, load, schema


def _diags(text: str) -> list:
    return schema.validate_playbook(load.parse(text, "pb.yaml"))


STEP_HINTS = {**ansible_hints.STEP_KINDS, **ansible_hints.STEP_KEYS}


@pytest.mark.parametrize("key", sorted(STEP_HINTS))
def test_every_ansible_step_key_gets_its_hint_at_its_line(key: str) -> None:
    text = f"opsrun: 1\nname: t\nhosts: local\nsteps:\n  - id: a\n    {key}: x\n"
    found = [d for d in _diags(text) if key in d.message]
    assert found, f"no diagnostic names {key!r}"
    assert found[0].line == 6 and f"'{key}' is Ansible's" in found[0].hint


@pytest.mark.parametrize("key", sorted(STEP_HINTS))
def test_step_examples_are_valid_opsrun(key: str) -> None:
    example = STEP_HINTS[key][1]
    if example.startswith("opsrun "):  # a command line, not a step
        return
    if example.startswith("inventory.yaml: "):
        inv = {"opsrun": 1, **yaml.safe_load(example.removeprefix("inventory.yaml: "))}
        assert not schema.validate_inventory(load.parse(yaml.safe_dump(inv), "inventory.yaml"))
        return
    step = yaml.safe_load(example)
    if isinstance(step, list):
        step = step[0]
    assert isinstance(step, dict), example
    body = {"id": "a", **step}
    kinds = ("run", "file", "line", "template", "copy", "package", "service", "include", "role", "flush_handlers")
    if not any(k in body for k in kinds):
        body["run"] = "true"  # a key-only example (loop:, hosts:) beside a kind
    pb = {"opsrun": 1, "name": "t", "hosts": "local", "steps": [body]}
    # an include or role example names files this test does not write: only their absence may show
    diags = [d for d in _diags(yaml.safe_dump(pb)) if d.severity == "error" and "not found" not in d.message]
    assert not diags, (example, [d.message for d in diags])


@pytest.mark.parametrize("key", sorted(ansible_hints.PLAYBOOK))
def test_every_ansible_playbook_key_gets_its_hint(key: str) -> None:
    text = f"opsrun: 1\nname: t\nhosts: local\n{key}: x\nsteps:\n  - id: a\n    run: 'true'\n"
    found = [d for d in _diags(text) if key in d.message]
    assert found and found[0].line == 4 and "Ansible's" in found[0].hint


def test_a_typo_that_is_not_ansible_still_gets_did_you_mean() -> None:
    found = [d for d in _diags("opsrun: 1\nname: t\nhosts: local\nsteps:\n  - id: a\n    rn: 'true'\n")]
    assert any("did you mean 'run'" in d.hint for d in found)


@pytest.mark.parametrize("key", sorted(ansible_hints.PLAYBOOK))
def test_playbook_examples_are_valid_opsrun(key: str) -> None:
    example = ansible_hints.PLAYBOOK[key][1]
    if example.startswith(("opsrun ", "inventory.yaml: ")):
        return
    loaded = yaml.safe_load(example)
    pb: dict = {"opsrun": 1, "name": "t", "hosts": "local", "steps": [{"id": "conf", "run": "true"}]}
    if isinstance(loaded, list):
        pb["steps"] += loaded
    else:
        pb.update(loaded)
    diags = [d for d in _diags(yaml.safe_dump(pb)) if d.severity == "error" and "not found" not in d.message]
    assert not diags, (example, [d.message for d in diags])


def test_gather_facts_says_facts_are_gathered_when_read() -> None:
    found = [d for d in _diags("opsrun: 1\nname: t\nhosts: local\ngather_facts: true\nsteps:\n  - {id: a, run: 'true'}\n")
             if "gather_facts" in d.message]
    assert found and "gathered when a template reads them" in found[0].hint and "facts.os.family" in found[0].hint
