"""runner/schema.py: the schemas themselves, the malformed corpus (tests/malformed/) and
valid playbooks/inventories that must validate clean."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from runner import load, schema
from runner.errors import Diagnostic, InvalidInput

HERE = Path(__file__).parent
CORPUS = sorted((HERE / "malformed").glob("*.yaml"))
SCHEMAS = HERE.parent / "schemas"

# "# expect: LINE:COL message || hint", or "# expect: FILE:LINE:COL ..." for a diagnostic located
# in another file (a template file, relative to the playbook's folder)
EXPECT = re.compile(r"^#\s*expect:\s*(?:([^\s:]+):)?(\d+):(\d+)\s+(.*?)(?:\s+\|\|\s+(.*))?\s*$")
HEADER = re.compile(r"^#\s*(kind|hosts|groups|offline):\s*(.*?)\s*$")


# ---------------------------------------------------------------- helpers


def check_text(text: str, file: str = "t.yaml", **kw: Any) -> list[Diagnostic]:
    """Parse + validate like `opsrun validate`: YAML errors come from load.parse."""
    try:
        doc = load.parse(text, file)
    except InvalidInput as exc:
        return exc.diagnostics
    kind = kw.pop("kind", None) or schema.detect(doc)
    if kind == "inventory":
        return schema.validate_inventory(doc)
    if kind == "playbook":
        return schema.validate_playbook(doc, **kw)
    return schema.validate(doc, **kw)


def check_corpus_file(path: Path) -> list[Diagnostic]:
    """`# offline: none|<inventory file>` runs validate's full check (runner/offline.py)
    without or with that inventory; other files get the schema and semantic checks."""
    text = path.read_text()
    kw: dict[str, Any] = {}
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            key, value = m.groups()
            kw[key] = value if key in ("kind", "offline") else set(value.split())
    if "offline" in kw:
        from runner import config, offline

        inv = None
        if kw["offline"] != "none":
            inv = config.build_inventory(load.read(path.parent / kw["offline"]))
        return offline.validate_playbook(load.parse(text, str(path)), inv, {})
    return check_text(text, str(path), **kw)


def expectations(path: Path) -> list[tuple[str, int, int, str, str | None]]:
    out = []
    for line in path.read_text().splitlines():
        m = EXPECT.match(line)
        if m:
            file = str(path.parent / m.group(1)) if m.group(1) else str(path)
            out.append((file, int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)))
    return out


def messages(diags: list[Diagnostic]) -> str:
    return "\n".join(d.render() for d in diags)


# ---------------------------------------------------------------- the corpus


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 20
    for path in CORPUS:
        assert expectations(path), f"{path.name} has no '# expect:' lines"


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_malformed_corpus(path: Path) -> None:
    diags = check_corpus_file(path)  # no exception may escape
    expected = expectations(path)
    got = [(d.file, d.line, d.col, d.message, d.hint) for d in diags]
    for file, line, col, fragment, hint in expected:
        matches = [g for g in got if g[:3] == (file, line, col) and fragment in g[3]
                   and (hint is None or hint in g[4])]
        assert matches, f"{path.name}: expected {file}:{line}:{col} {fragment!r}" + (
            f" (hint {hint!r})" if hint else "") + f"\ngot:\n{messages(diags)}"
    # exactly one diagnostic per expected mistake: nothing extra, nothing twice
    assert len(diags) == len(expected), f"{path.name}: got\n{messages(diags)}"
    for d in diags:
        assert d.file == str(path) or d.file.startswith(str(path.parent / "data"))
        assert d.message and "\n" not in d.message
        assert "is not valid under any of the given schemas" not in d.message
        assert "Additional properties" not in d.message


def test_secret_literals_never_appear_in_diagnostics() -> None:
    path = HERE / "malformed" / "inventory_secrets.yaml"
    text = messages(check_corpus_file(path))
    for secret in ("hunter2-secret", "123456789", "8a7f-very-secret-token"):
        assert secret not in text
    assert "never put secrets in git" in text


def test_secret_of_wrong_type_is_not_echoed() -> None:
    diags = check_text("opsrun: 1\nhosts:\n  h:\n    password: 987654321\n")
    assert len(diags) == 1
    assert "987654321" not in messages(diags)
    assert (diags[0].line, diags[0].col) == (4, 15)


# ---------------------------------------------------------------- valid documents

GOOD_PLAYBOOKS = [
    """\
# yaml-language-server: $schema=../schemas/playbook.schema.json
opsrun: 1
name: hello on this machine
hosts: local
steps:
  - id: hello
    run: echo hello
""",
    """\
opsrun: 1
name: web servers
description: nginx with a custom index page
hosts: [web, "!web3"]
strategy: free
serial: "30%"
forks: 10
max_fail_percentage: 25.5
on_failure: rollback
forbid: ["glob:curl * | sh", "re:^shutdown"]
allow: ["systemctl restart nginx"]
vars:
  packages: [nginx, curl]
  port: 8080
policy:
  timeout: 60
  retry:
    attempts: 3
    delay: 2
    backoff: 2
    max_delay: 30
    jitter: 0.2
    "on": [nonzero, timeout, connection, {rc: [75, 111]}, {stderr: "Could not get lock"}]
  escalate: [llm, human]
  max_llm_fixes: 2
  human_after_failures: 5
  auto_fix: false
  notify: {webhook: env:OPSRUN_WEBHOOK}
steps:
  - id: packages
    name: install packages
    package: {name: "{{ packages }}", state: present, manager: auto, update_cache: true}
  - id: conf_dir
    file: {path: /etc/nginx/conf.d, state: directory, mode: "0755", owner: root, group: root}
  - id: site
    template:
      src: templates/site.conf.j2
      dest: /etc/nginx/conf.d/site.conf
      mode: "644"
      vars: {listen: "{{ port }}"}
  - id: index
    copy: {src: files/index.html, dest: /var/www/html/index.html, mode: "0644"}
  - id: limits
    line:
      path: /etc/security/limits.conf
      regexp: "^www-data\\\\s+soft\\\\s+nofile"
      line: "www-data soft nofile 65536"
      insertafter: EOF
      create: true
      mode: "0644"
  - id: old_line
    line: {path: /etc/hosts, regexp: "^10\\\\.0\\\\.0\\\\.9 ", state: absent}
  - id: link
    file: {path: /etc/nginx/sites-enabled/site, state: link, src: /etc/nginx/conf.d/site.conf}
  - id: check
    run:
      command: nginx -t
      changed_when: "false"
      failed_when: rc != 0 or 'emerg' in stderr
      env: {LANG: C}
      chdir: /etc/nginx
  - id: reload
    when: steps.site.changed or steps.index.changed
    service: {name: nginx, state: reloaded, enabled: true}
    verify:
      command: "curl -fsS http://127.0.0.1:{{ port }}/"
      retries: 5
      delay: 1
    undo: systemctl restart nginx
    timeout: 30
    tags: [nginx, reload]
  - id: greet
    hosts: web1
    loop: "{{ packages }}"
    register: greeting
    run: "echo {{ item }} {{ steps.check.stdout_lines | length }} {{ secret('TOKEN') | raw }}"
    sensitive: true
    undo:
      name: remove marker
      file: {path: /tmp/marker, state: absent}
    policy:
      retry: {attempts: 1}
""",
    """\
opsrun: 1
name: guards and loops
hosts: all
steps:
  - id: marker
    run:
      command: touch /tmp/opsrun-marker
      creates: /tmp/opsrun-marker
  - id: cleanup
    run:
      command: rm -f /tmp/opsrun-old
      removes: /tmp/opsrun-old
      unless: test -f /tmp/keep
      only_if: test -d /tmp
      stdin: "yes\\n"
    when: steps.marker.rc == 0 and steps['marker'].changed
    loop: [1, 2, 3]
  - id: report
    run: |
      {% for line in steps.cleanup.stdout_lines %}
      echo {{ line }}
      {% endfor %}
    verify: test -f /tmp/opsrun-marker
""",
]

GOOD_INVENTORY = """\
# yaml-language-server: $schema=../schemas/inventory.schema.json
opsrun: 1
description: lab
vars: {env: lab}
forbid: [no-reboot]
allow: ["re:^reboot --dry-run"]
hosts:
  local:
    transport: local
  web1:
    address: 10.0.0.11
    port: 2222
    user: deploy
    key: keys/id_ed25519
    key_passphrase: env:WEB_KEY_PASS
    known_hosts: accept-new
    known_hosts_file: known_hosts
    connect_timeout: 5
    jump: bastion
    sudo: true
    sudo_password: file:secrets/sudo
    shell: /bin/bash
    vars: {role: web}
  web2:
  bastion:
    address: "2001:db8::1"
    password: env:BASTION_PASS
  pve1:
    transport: proxmox
    api: https://pve1.example.net:8006
    token_id: opsrun@pve!ci
    token_secret: env:PVE_TOKEN
    verify_ssl: false
    ca_file: pve-ca.pem
    node: pve1
    timeout: 30
  pve2:
    transport: proxmox
    api: https://pve2:8006
    user: root@pam
    password: env:PVE_PASS
  tablet:
    transport: adb
    address: 192.168.1.50:5555
    adb_server: 127.0.0.1:5037
    adb_binary: /usr/bin/adb
  phone:
    transport: adb
    serial: emulator-5554
    description: test phone
groups:
  web:
    hosts: [web1, web2]
    vars: {http_port: 80}
    description: web tier
  lab:
    children: [web]
    hosts: [local]
    forbid: [no-dd]
    allow: []
"""


@pytest.mark.parametrize("text", GOOD_PLAYBOOKS)
def test_good_playbooks_validate_clean(text: str) -> None:
    doc = load.parse(text, "good.yaml")
    assert schema.detect(doc) == "playbook"
    diags = schema.validate_playbook(doc, hosts={"web1", "web2", "web3"}, groups={"web"})
    assert diags == [], messages(diags)


def test_good_inventory_validates_clean() -> None:
    doc = load.parse(GOOD_INVENTORY, "inventory.yaml")
    assert schema.detect(doc) == "inventory"
    diags = schema.validate_inventory(doc)
    assert diags == [], messages(diags)


def test_good_playbook_skips_host_checks_without_inventory() -> None:
    doc = load.parse(GOOD_PLAYBOOKS[1].replace("[web,", "[nowhere,"), "good.yaml")
    assert schema.validate_playbook(doc) == []
    diags = schema.validate_playbook(doc, hosts={"web1", "web3"}, groups={"web"})
    assert [d.message for d in diags] == ["unknown host or group 'nowhere'"]


# ---------------------------------------------------------------- focused behaviours


def test_every_error_reported_at_once() -> None:
    text = ("opsrun: 1\nname: x\nhosts: all\nsteps:\n"
            "  - id: a\n    run: {comand: x}\n"
            "  - id: b\n    file: {path: /x, mode: 644}\n"
            "  - id: c\n    service: {name: s, state: up}\n")
    diags = check_text(text)
    assert [(d.line, d.path) for d in diags] == [
        (6, "steps[0].run.comand"), (8, "steps[1].file.mode"), (10, "steps[2].service.state")]


def test_misspelt_key_in_required_slot_is_one_diagnostic() -> None:
    diags = check_text("opsrun: 1\nname: x\nhosts: all\nsteps:\n  - id: a\n    run:\n"
                       "      comand: echo\n")
    assert len(diags) == 1
    assert diags[0].message == "unknown key 'comand' in run"
    assert diags[0].hint == "did you mean 'command'?"
    assert (diags[0].line, diags[0].col) == (7, 7)


def test_yaml_dates_are_explained() -> None:
    diags = check_text("opsrun: 1\nname: 2024-01-31\nhosts: all\nsteps:\n  - id: a\n    run: x\n")
    assert [(d.line, d.col, d.message, d.hint) for d in diags] == [
        (2, 7, "name: expected a string, got a date (2024-01-31)", 'quote it: name: "2024-01-31"')]


def test_jinja_error_in_block_scalar_points_at_its_line() -> None:
    text = ("opsrun: 1\nname: x\nhosts: all\nsteps:\n  - id: a\n    run: |\n"
            "      echo one\n      echo {{ two }\n      echo three\n")
    diags = check_text(text)
    assert len(diags) == 1
    assert (diags[0].line, diags[0].col) == (8, 7)
    assert diags[0].message.startswith("template error:")


def test_step_reference_in_verify_may_read_own_result() -> None:
    text = ("opsrun: 1\nname: x\nhosts: all\nsteps:\n  - id: a\n    run: echo\n"
            "    verify: test '{{ steps.a.stdout }}' = ok\n"
            "    undo: echo {{ steps.a.rc }}\n")
    assert check_text(text) == []
    bad = text.replace("    verify:", "    when: steps.a.rc == 0\n    verify:")
    assert [d.message for d in check_text(bad)] == ["step 'a' reads its own result before it runs"]


def test_unknown_filter_in_expression_suggests_the_right_one() -> None:
    text = "opsrun: 1\nname: x\nhosts: all\nsteps:\n  - id: a\n    run: echo\n    when: x | lenght > 0\n"
    diags = check_text(text)
    assert len(diags) == 1
    assert diags[0].hint == "did you mean 'length'?"


def test_render_filters_are_known() -> None:
    # raw, quote and bool come from runner/render.py's environment
    text = ("opsrun: 1\nname: x\nhosts: all\nsteps:\n  - id: a\n"
            "    run: echo {{ x | raw }} {{ y | quote }}\n    when: z | bool\n")
    assert check_text(text) == []


def test_detect() -> None:
    assert schema.detect({"steps": []}) == "playbook"
    assert schema.detect({"name": "x", "step": []}) == "playbook"
    assert schema.detect({"opsrun": 1, "hosts": {"a": {}}}) == "inventory"
    assert schema.detect({"opsrun": 1, "groups": {}}) == "inventory"
    assert schema.detect({"providers": []}) == "gateway"
    assert schema.detect([1, 2]) is None
    assert schema.detect({"foo": 1}) is None
    assert schema.detect(load.parse("steps: []\n", "x.yaml")) == "playbook"


def test_validate_unrecognised_document() -> None:
    diags = schema.validate(load.parse("foo: 1\n", "x.yaml"))
    assert len(diags) == 1 and "not a playbook, inventory or gateway" in diags[0].message


def test_validate_gateway_without_or_with_schema() -> None:
    doc = load.parse("providers: []\n", "gateway.yaml")
    diags = schema.validate_gateway(doc)
    if schema.schema_file("gateway") is None:
        assert diags == []
    else:
        assert all(isinstance(d, Diagnostic) for d in diags)


def test_fuzzed_documents_never_raise() -> None:
    """Replace values of valid documents with values of other types: diagnostics only."""
    rng = random.Random(1234)
    samples: list[Any] = [None, 0, -1, 3.5, True, "", "x", "{{", "{% if %}", [], [1, "a"], {},
                          {"a": 1}, {"run": "x"}, "0644", "env:X", "steps.zz.rc", 70000]
    bases = [load.parse(t, "f.yaml").data for t in [*GOOD_PLAYBOOKS, GOOD_INVENTORY]]
    for _ in range(300):
        data = json.loads(json.dumps(rng.choice(bases)))
        paths = list(_paths(data))
        for _ in range(rng.randint(1, 4)):
            path = rng.choice(paths)
            _set(data, path, rng.choice(samples))
        from yaml import safe_dump

        text = safe_dump(data, sort_keys=False)
        diags = check_text(text, hosts={"web1"}, groups={"web"})
        assert all(isinstance(d, Diagnostic) for d in diags)


def _paths(data: Any, path: tuple[Any, ...] = ()) -> Any:
    if path:
        yield path
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, (*path, i))


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        data[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return


def _doc_yaml_blocks() -> list[str]:
    text = (HERE.parent / "docs" / "playbooks.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def test_docs_examples_validate() -> None:
    """Every YAML example in docs/playbooks.md is valid (snippets are wrapped in a playbook;
    references to steps the snippet does not show are allowed)."""
    blocks = _doc_yaml_blocks()
    assert len(blocks) >= 10
    head = "opsrun: 1\nname: doc example\nhosts: all\n"
    for block in blocks:
        body = "\n".join(line for line in block.splitlines() if not line.startswith("#"))
        if not body.strip():
            continue  # a modeline example
        if body.startswith("opsrun:"):
            text = block
        elif body.startswith("  - id:"):
            text = head + "steps:\n" + block
        elif body.startswith(("policy:", "vars:", "handlers:")):
            text = head + block + ("" if "steps:" in block else "steps:\n  - id: a\n    run: x\n")
        else:
            raise AssertionError(f"unrecognised docs example:\n{block}")
        diags = [d for d in check_text(text, "doc.yaml") if not d.message.startswith("no step")]
        assert diags == [], f"{messages(diags)}\nin:\n{text}"


# ---------------------------------------------------------------- the schemas


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.mark.parametrize("name", ["playbook", "inventory"])
def test_schema_is_valid_2020_12(name: str) -> None:
    from jsonschema import Draft202012Validator

    data = _load(name)
    Draft202012Validator.check_schema(data)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert data["$id"] == f"https://opsrun.dev/schemas/{name}.schema.json"
    assert data["properties"]["opsrun"]["const"] == 1
    assert "opsrun" in data["required"]


def _walk(node: Any, where: str = "#") -> Any:
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from _walk(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}/{i}")


@pytest.mark.parametrize("name", ["playbook", "inventory"])
def test_every_property_is_described(name: str) -> None:
    missing = []
    for where, node in _walk(_load(name)):
        if _in_condition(where):
            continue  # conditions restate properties described elsewhere
        for key, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and not sub.get("description"):
                missing.append(f"{where}/properties/{key}")
    assert not missing, missing


@pytest.mark.parametrize("name", ["playbook", "inventory"])
def test_fixed_objects_refuse_unknown_keys(name: str) -> None:
    loose = []
    for where, node in _walk(_load(name)):
        if _in_condition(where) or where.rsplit("/", 1)[-1] == "properties":
            continue
        closed_by_ref = any("$ref" in sub for sub in node.get("allOf", []))  # e.g. undo_step
        if "properties" in node and node.get("additionalProperties") is not False \
                and not closed_by_ref:
            loose.append(where)
    assert not loose, loose


def _in_condition(where: str) -> bool:
    return any(part in ("if", "then", "else") for part in where.split("/"))


def test_kind_names_come_from_the_schema() -> None:
    data = _load("playbook")
    body = data["$defs"]["step_body"]
    kinds = schema.kind_names()
    assert {"run", "file", "line", "template", "copy", "package", "service"} <= set(kinds)
    assert sorted(kinds) == sorted(b["required"][0] for b in body["oneOf"])
    for kind in kinds:
        assert f"kind_{kind}" in data["$defs"]
        assert body["properties"][kind]["$ref"] == f"#/$defs/kind_{kind}"


def test_inconsistent_kind_lists_are_a_bug() -> None:
    data = _load("playbook")
    data["$defs"]["step_body"]["properties"]["extra.kind"] = {
        "$ref": "#/$defs/kind_extra.kind", "description": "x"}
    with pytest.raises(RuntimeError, match="inconsistent"):
        schema._check_kind_lists(data)


def test_a_new_kind_added_in_the_three_places_is_picked_up() -> None:
    data = _load("playbook")
    body = data["$defs"]["step_body"]
    body["properties"]["demo.kind"] = {"$ref": "#/$defs/kind_demo.kind", "description": "x"}
    body["oneOf"].append({"required": ["demo.kind"]})
    data["$defs"]["kind_demo.kind"] = {"type": "string", "description": "x"}
    schema._check_kind_lists(data)  # consistent: no error
    assert "demo.kind" in schema._kinds_of(body)


def test_gateway_secret_values_are_not_echoed() -> None:
    if schema.schema_file("gateway") is None:
        pytest.skip("gateway.schema.json not written yet")
    text = "opsrun: 1\nproviders:\n  p:\n    kind: openai\n    model: m\n    api_key: sk-live-999999\n"
    diags = schema.validate_gateway(load.parse(text, "gateway.yaml"))
    assert diags and "sk-live-999999" not in messages(diags)


def test_schema_text_and_load_schema() -> None:
    text = schema.schema_text("playbook")
    assert json.loads(text)["title"] == "opsrun playbook"
    assert schema.load_schema("inventory")["title"] == "opsrun inventory"
    with pytest.raises(InvalidInput):
        schema.schema_text("nonsense")
