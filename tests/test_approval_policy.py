"""The pure approval rules: the plan digest and the limits of an automatic approval."""

from runner.approval_policy import AutoLimits, auto_refusals, plan_digest


def _doc(*statuses: str, warnings: tuple[str, ...] = (), unreachable: dict | None = None) -> dict:
    steps = [{"host": "h", "instance": f"s{i}", "status": st, "read_only": False} for i, st in enumerate(statuses)]
    return {"steps": steps, "warnings": list(warnings), "unreachable": unreachable or {}}


def test_digest_is_canonical_and_sensitive():
    a = {"b": 1, "a": [1, 2]}
    assert plan_digest(a) == plan_digest({"a": [1, 2], "b": 1})
    assert plan_digest(a) != plan_digest({"a": [1, 2], "b": 2})
    assert plan_digest(a).startswith("sha256:")


def test_small_clean_plan_is_auto_approvable():
    assert auto_refusals(_doc("create", "noop", "update"), AutoLimits(max_changes=2)) == []


def test_blocked_lifted_and_too_many_are_refused_with_reasons():
    why = auto_refusals(_doc("blocked", "create", "create", "unknown"), AutoLimits(max_changes=2))
    assert any("blocked" in w and "h/s0" in w for w in why)
    assert any("3 step(s)" in w and "limit of 2" in w for w in why)
    lifted = auto_refusals(_doc("noop", warnings=("safety: allow rm-root (on h)",)), AutoLimits())
    assert lifted and "lifts a built-in safety rule" in lifted[0]


def test_unknown_refused_when_limits_say_so_and_unreachable_always():
    assert auto_refusals(_doc("unknown"), AutoLimits(allow_unknown=False))
    assert auto_refusals(_doc("unknown"), AutoLimits(allow_unknown=True)) == []
    assert auto_refusals(_doc("noop", unreachable={"h2": "timeout"}), AutoLimits())


def test_read_only_steps_do_not_count():
    doc = _doc("run", "run")
    for s in doc["steps"]:
        s["read_only"] = True
    assert auto_refusals(doc, AutoLimits(max_changes=0)) == []
