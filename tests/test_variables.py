"""runner/variables.py (templated vars: lazy, dependency order, cycles, secrets), the vars
pipeline in config.host_vars, and runner/params.py (enum and list fields after rendering)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import config, load, params, render, schema, secrets
from runner.model import Inventory, Playbook
from runner.variables import Broken, Resolver, VarError


def inventory(text: str) -> Inventory:
    return config.build_inventory(load.parse(text, "inv.yaml"))


INV = """\
opsrun: 1
vars: {domain: example.org, port: 80}
hosts:
  web1: {transport: local, vars: {port: 8080, site: "{{ name }}.{{ domain }}"}}
groups:
  web: {hosts: [web1], vars: {root: "/srv/{{ name }}"}}
"""


def playbook(vars: dict[str, object]) -> Playbook:
    return Playbook("t", "web", (), vars=vars, dir=".")


def test_vars_reference_each_other_in_dependency_order() -> None:
    r = Resolver({"c": "{{ b }}/c", "b": "{{ a }}/b", "a": "{{ 1 + 1 }}"})
    assert r.get("c") == "2/b/c"
    assert r.get("a") == 2  # a lone expression keeps its type


def test_cycle_is_reported_with_its_chain() -> None:
    r = Resolver({"a": "{{ b }}", "b": "x{{ c }}", "c": "{{ a }}", "ok": "fine"})
    with pytest.raises(VarError) as exc:
        r.get("a")
    assert exc.value.chain == ("a", "b", "c", "a")
    assert "variable cycle: a -> b -> c -> a" in exc.value.message
    assert r.get("ok") == "fine"


def test_rendering_is_lazy_a_broken_var_fails_only_where_read() -> None:
    r = Resolver({"bad": "{{ nowhere }}", "loop": "{{ loop }}", "good": "{{ 'g' }}"})
    values = r.resolve_all()
    assert values["good"] == "g"
    assert isinstance(values["bad"], Broken) and isinstance(values["loop"], Broken)
    assert render.render_text("{{ good }}", values) == "g"
    with pytest.raises(render.RenderError, match=r"^'bad' cannot be rendered: reads 'nowhere', which is not defined"):
        render.render_text("{{ bad }}", values)
    with pytest.raises(render.RenderError, match="variable cycle: loop -> loop"):
        render.render_text("{{ loop }}", values)


def test_vars_cannot_read_step_results() -> None:
    with pytest.raises(VarError, match="reads steps, which is known only while the run goes"):
        Resolver({"out": "{{ steps.a.stdout }}"}).get("out")


def test_host_vars_render_every_layer_with_precedence() -> None:
    inv = inventory(INV)
    pb = playbook({"name": "shop", "url": "http://{{ site }}:{{ port }}/"})
    values = config.host_vars(inv, inv.hosts["web1"], pb, {})
    assert values["site"] == "shop.example.org"  # a host var reading a playbook var
    assert values["root"] == "/srv/shop"  # a group var too
    assert values["url"] == "http://shop.example.org:8080/"  # host port wins over inventory
    cli = config.host_vars(inv, inv.hosts["web1"], pb, {"name": "{{ not rendered }}", "port": 1})
    assert cli["name"] == "{{ not rendered }}"  # --var values are taken literally
    assert cli["url"] == "http://{{ not rendered }}.example.org:1/"


def test_secret_in_vars_stays_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_SECRET_VT_TOKEN", "tok-98765-secret")
    inv = inventory(INV)
    pb = playbook({"token": "{{ secret('VT_TOKEN') }}", "header": "Bearer {{ token }}", "nested": ["{{ token }}"]})
    values = config.host_vars(inv, inv.hosts["web1"], pb, {})
    assert isinstance(values["token"], secrets.Secret)
    assert isinstance(values["header"], secrets.Secret) and values["header"] == "Bearer tok-98765-secret"
    assert isinstance(values["nested"][0], secrets.Secret)
    assert "tok-98765-secret" not in repr(values)
    assert secrets.redact(render.render_text("x {{ header }}", values)) == "x ***"  # marked whole


def test_unset_secret_in_an_unread_var_does_not_fail() -> None:
    inv = inventory(INV)
    values = config.host_vars(inv, inv.hosts["web1"], playbook({"t": "{{ secret('VT_NOT_SET_ANYWHERE') }}"}), {})
    assert isinstance(values["t"], Broken)
    with pytest.raises(render.RenderError, match="VT_NOT_SET_ANYWHERE"):
        render.render_text("{{ t }}", values)


# ---------------------------------------------------------------- params after rendering


def test_enum_fields_accept_a_template_in_the_schema() -> None:
    text = "opsrun: 1\nname: t\nhosts: local\nsteps:\n  - id: a\n    service: {name: x, state: \"{{ st }}\"}\n"
    assert schema.validate_playbook(load.parse(text, "t.yaml")) == []
    bad = text.replace('"{{ st }}"', "begun")
    (d,) = schema.validate_playbook(load.parse(bad, "t.yaml"))
    assert d.message == "state must be one of: started, stopped, restarted, reloaded (got 'begun')"


def test_coerce_params_checks_enums_after_rendering() -> None:
    assert params.coerce_params("service", {"name": "x", "state": "started"})["state"] == "started"
    with pytest.raises(params.ParamError) as exc:
        params.coerce_params("service", {"name": "x", "state": "begun"})
    assert exc.value.field == "state"
    assert exc.value.message == "state must be one of: started, stopped, restarted, reloaded (got 'begun')"
    assert isinstance(exc.value, render.RenderError)  # the planner reports it like a render error


def test_coerce_params_list_fields() -> None:
    # package normalizes `name: "{{ pkgs }}"` to a list before rendering: [[a, b]] after it
    assert params.coerce_params("package", {"name": [["nginx", "curl"]]})["name"] == ["nginx", "curl"]
    assert params.coerce_params("package", {"name": ["a", ["b", "c"]]})["name"] == ["a", "b", "c"]
    assert params.coerce_params("package", {"name": "nginx"})["name"] == "nginx"
    for bad, word in (({"nginx": 1}, "a mapping"), (5, "a number"), ([["a", 3]], "a number"), ([""], "empty")):
        with pytest.raises(params.ParamError, match=word):
            params.coerce_params("package", {"name": bad})


def test_package_name_template_renders_like_the_planner() -> None:
    from runner.steps import base

    kind = base.get("package")
    for value, want in ((["a", "b"], ["a", "b"]), ("one", ["one"])):
        raw = kind.normalize({"name": "{{ pkgs }}"})
        rendered = render.render_params(raw, {"pkgs": value}, kind.shell_fields)
        assert params.coerce_params("package", rendered)["name"] == want


def test_params_fields_come_from_the_schema() -> None:
    enums, lists = params.fields("package")
    assert enums["state"] == ("present", "absent", "latest") and "manager" in enums
    assert "name" in lists
    assert Path(schema.schema_file("playbook") or "").is_file()
