"""ADB step kinds for device state: adb.input, adb.setting, adb.prop and adb.wait (boot, a
package, a property). Pure plans from probe answers: imports no adbutils and no transport.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

from runner.model import Action, Change, CommandResult, Probe, Status
from runner.overlay import Effect, Overlay
from runner.steps import adb_overlay as ao
from runner.steps import facts as F
from runner.steps import names
from runner.steps.adb import ADB, _failed, _refuse, q
from runner.steps.base import Facts, StepContext, StepKind, register

# ---------------------------------------------------------------- adb.input


class Input(StepKind):
    """Key presses, taps, swipes and text. The device cannot tell whether input was already
    given, so this always runs: it is never idempotent."""

    name: ClassVar[str] = "adb.input"
    needs = ADB

    @staticmethod
    def command(params: dict[str, Any]) -> tuple[str, str]:
        if "keyevent" in params:
            keys = params["keyevent"]
            keys = keys if isinstance(keys, list) else [keys]
            words = " ".join(q(str(k)) for k in keys)
            return f"input keyevent {words}", f"press {', '.join(str(k) for k in keys)}"
        if "tap" in params:
            t = params["tap"]
            x, y = (t["x"], t["y"]) if isinstance(t, dict) else (t[0], t[1])
            return f"input tap {int(x)} {int(y)}", f"tap at {int(x)},{int(y)}"
        if "swipe" in params:
            s = params["swipe"]
            nums = [int(s[k]) for k in ("x1", "y1", "x2", "y2")]
            if s.get("duration_ms") is not None:
                nums.append(int(s["duration_ms"]))
            return "input swipe " + " ".join(map(str, nums)), f"swipe {nums[0]},{nums[1]} -> {nums[2]},{nums[3]}"
        text = str(params["text"])
        return f"input text {q(text.replace(' ', '%s'))}", f"type {len(text)} characters"

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        keys = params.get("keyevent")
        if keys is not None:
            _refuse(*(names.keyevent(k) for k in (keys if isinstance(keys, list) else [keys])))
        return params

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.input_effects(change)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        command, what = self.command(params)
        return Change("run", f"{what} (always: input is not idempotent)", (Action("cmd", command=command),))


# ---------------------------------------------------------------- adb.setting


def setting_value(value: Any) -> str:
    """YAML value -> the text `settings put` stores (booleans as 1/0, like Android)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


SETTING_NAMESPACES = ("system", "secure", "global")


class Setting(StepKind):
    name: ClassVar[str] = "adb.setting"
    needs = ADB

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        # `settings` has no "--": it reads --user anywhere, so no word of its line may start with --
        _refuse(
            None if str(params["namespace"]) in SETTING_NAMESPACES else
            f"setting namespace {params['namespace']!r} is not one of {', '.join(SETTING_NAMESPACES)}",
            names.setting_key(params["key"]),
            names.setting_value(setting_value(params["value"])) if params.get("value") is not None else None,
        )
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "setting", str(params["namespace"]), str(params["key"]), key="value")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_setting(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        want = setting_value(params["value"]) if params.get("value") is not None else None
        return ao.setting_effects(params, change, want)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        ns, key = str(params["namespace"]), str(params["key"])
        r = facts.get("value")
        if r is None or r.rc != 0:
            why = (r.stderr or r.stdout).decode("utf-8", "replace").strip() if r is not None else "no answer"
            return Change("unknown", f"cannot read setting {ns} {key}", reason=f"settings get failed: {why}")
        current = r.text.rstrip("\n")
        unset = current == "null"
        where = f"{ns} {key}"
        if params.get("state", "present") == "absent":
            if unset:
                return Change("noop", f"setting {where} is not set")
            return Change(
                "delete",
                f"delete setting {where} (now {current!r})",
                (Action("cmd", command=f"settings delete {q(ns)} {q(key)}"),),
            )
        want = setting_value(params["value"])
        if current == want:
            return Change("noop", f"setting {where} is {want!r}")
        action = Action("cmd", command=f"settings put {q(ns)} {q(key)} {q(want)}")
        if unset:
            return Change("create", f"set {where} = {want!r} (not set now)", (action,))
        return Change("update", f"set {where}: {current!r} -> {want!r}", (action,), diff=f"-{current}\n+{want}\n")


# ---------------------------------------------------------------- adb.prop


class Prop(StepKind):
    """Read a system property, assert its value, or (assert: false) set it with setprop."""

    name: ClassVar[str] = "adb.prop"
    needs = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"name": params} if isinstance(params, str) else dict(params)

    def read_only(self, params: dict[str, Any]) -> bool:
        return params.get("value") is None or params.get("assert", True) is not False

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        _refuse(names.property_name(params["name"]))
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "prop", str(params["name"]), key="value")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_prop(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        want = setting_value(params["value"]) if params.get("value") is not None else None
        return ao.prop_effects(params, change, want)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        name = str(params["name"])
        current = facts["value"].text.rstrip("\n") if "value" in facts else ""
        if params.get("value") is None:
            return Change("noop", f"{name} = {current!r}", data={"name": name, "value": current})
        want = setting_value(params["value"])
        data = {"name": name, "value": current, "expected": want}
        if current == want:
            return Change("noop", f"{name} is {want!r}", data=data)
        if params.get("assert", True) is not False:
            check = (
                f'v=$(getprop {q(name)}); [ "$v" = {q(want)} ] || '
                f"{{ printf \"%s is '%s', expected '%s'\\n\" {q(name)} \"$v\" {q(want)} >&2; exit 1; }}"
            )
            return Change(
                "run",
                f"check {name} == {want!r} (now {current!r}: this step will fail)",
                (Action("cmd", command=check),),
                data={**data, "read_only": True},
            )
        if name.startswith("ro.") and current:
            return Change(
                "blocked", f"{name} is read-only", reason=f"{name} is a read-only property (ro.*), already {current!r}"
            )
        verb: Status = "update" if current else "create"
        return Change(
            verb,
            f"setprop {name}: {current!r} -> {want!r}",
            (Action("cmd", command=f"setprop {q(name)} {q(want)}"),),
            data=data,
        )

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        failed = _failed(results)
        if failed:
            return failed
        return ("ok" if change.read_only else "changed"), ""


# ---------------------------------------------------------------- adb.wait


class Wait(StepKind):
    """Wait (bounded) for boot completed, a package, or a property value: one polling loop
    in the device shell. Read-only."""

    name: ClassVar[str] = "adb.wait"
    needs = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"for": params} if isinstance(params, str) else dict(params)

    def read_only(self, params: dict[str, Any]) -> bool:
        return True

    @staticmethod
    def condition(params: dict[str, Any]) -> tuple[str, str]:
        what = params.get("for", "boot_completed")
        if what == "package":
            pkg = str(params["package"])
            return f"pm list packages -- {q(pkg)} 2>/dev/null | grep -qxF {q('package:' + pkg)}", f"package {pkg}"
        if what == "property":
            name, value = str(params["property"]), setting_value(params.get("value", ""))
            return f'[ "$(getprop {q(name)})" = {q(value)} ]', f"{name} = {value!r}"
        return '[ "$(getprop sys.boot_completed)" = 1 ]', "boot completed"

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        what = params.get("for", "boot_completed")
        if what == "package":
            _refuse(names.android_package(params["package"]))
        elif what == "property":
            _refuse(names.property_name(params["property"], "property"))
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "condition", self.condition(params)[0], key="now")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_wait(params, setting_value(params.get("value", "")), facts, overlay)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        cond, what = self.condition(params)
        if facts.get("now") is not None and facts["now"].rc == 0:
            return Change("noop", f"{what}: already so")
        timeout = float(params.get("timeout", 120))
        interval = float(params.get("interval", 2))
        tries = max(1, math.ceil(timeout / interval))
        step = f"{interval:g}"
        loop = (
            f"n=0; until {cond}; do n=$((n+1)); if [ $n -ge {tries} ]; then "
            f"echo {q(f'opsrun: gave up after {timeout:g}s waiting for {what}')} >&2; exit 1; fi; "
            f"sleep {step}; done"
        )
        return Change(
            "run", f"wait up to {timeout:g}s for {what}", (Action("cmd", command=loop),), data={"read_only": True}
        )

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        return _failed(results) or ("ok", "")


for _kind in (Input(), Setting(), Prop(), Wait()):
    register(_kind)
