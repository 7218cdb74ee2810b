"""Step kinds for a host's system state over a POSIX shell: package (apt, dnf, yum, apk) and
service (systemd), deciding purely from the facts they ask (runner/steps/facts.py).

Nothing here talks to a host; imports no transport, planner or apply.
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar

from runner.model import Action, Change, Probe, ProbeResult, Status
from runner.overlay import Effect, Overlay, Unknown
from runner.steps import facts as F
from runner.steps import names
from runner.steps.base import Facts, OverlayUnknown, StepContext, StepKind, register
from runner.steps.shell import POSIX, PrepareError

q = shlex.quote


# ---------------------------------------------------------------- package

_PKG_CMD = {
    "apt": {
        "present": "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -- {ps}",
        "latest": "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -- {ps}",
        "absent": "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -- {ps}",
        "update": "apt-get update -q",
    },
    "dnf": {
        "present": "dnf install -y -q -- {ps}",
        "latest": "dnf upgrade -y -q -- {ps}",
        "absent": "dnf remove -y -q -- {ps}",
        "update": "dnf makecache -q",
    },
    "yum": {
        "present": "yum install -y -q -- {ps}",
        "latest": "yum update -y -q -- {ps}",
        "absent": "yum remove -y -q -- {ps}",
        "update": "yum makecache -q",
    },
    "apk": {
        "present": "apk add -q -- {ps}",
        "latest": "apk add -q --upgrade -- {ps}",
        "absent": "apk del -q -- {ps}",
        "update": "apk update -q",
    },
}


class Package(StepKind):
    name: ClassVar[str] = "package"
    needs = POSIX

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return _package_view(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        if change.status in ("blocked", "unknown", "skip"):
            return []
        state = params.get("state", "present")
        value = "absent" if state == "absent" else ("latest" if state == "latest" else "present")
        out = [Effect(("pkg", n), value) for n in params["name"]]
        if change.changes:  # installing or removing packages may start, stop or enable services
            out.append(Effect(("svc", "*"), Unknown(f"an earlier step {'removes' if state == 'absent' else 'installs'} "
                                                   "packages, which may start, stop or enable services"),
                              exact=False))
        return out

    def normalize(self, params: Any) -> dict[str, Any]:
        out = dict(params)
        names = out.get("name")
        out["name"] = [names] if isinstance(names, str) else list(names or [])
        return out

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        manager = str(params.get("manager", "auto"))
        for name in params["name"]:
            problem = names.package(name, manager)
            if problem:
                raise PrepareError(problem)
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        out = [F.ask(ctx, "package_manager", str(params.get("manager", "auto")), key="manager")]
        for i, name in enumerate(params["name"]):
            # one round trip: ask in every manager's form; plan() reads the detected one's
            for m in F.PACKAGE_FAMILIES:
                out.append(F.ask(ctx, "package", m, name, key=f"{m}.{i}"))
                if params.get("state") == "latest":
                    out.append(F.ask(ctx, "package_candidate", m, name, key=f"cand.{m}.{i}"))
        return out

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        if facts["manager"].rc != 0 or not facts["manager"].text.strip():
            return Change(
                "unknown", "no supported package manager", reason="found none of apt-get, dnf, yum, apk on the host"
            )
        manager = facts["manager"].text.strip()
        fam = "dnf" if manager == "yum" else manager
        state = params.get("state", "present")
        names: list[str] = params["name"]
        todo: list[str] = []
        notes: list[str] = []
        for i, name in enumerate(names):
            ans = facts.get(f"{fam}.{i}")
            installed = ans is not None and ans.rc == 0 and bool(ans.text.strip())
            version = ans.text.strip() if installed and ans is not None else ""
            if state == "absent" and installed:
                todo.append(name)
                notes.append(f"{name} {version}")
            elif state == "present" and not installed:
                todo.append(name)
                notes.append(name)
            elif state == "latest":
                cand = facts.get(f"cand.{fam}.{i}")
                # first word: dnf answers once per architecture
                candidate = next(iter(cand.text.split()), "") if cand is not None and cand.rc == 0 else ""
                if not installed:
                    todo.append(name)
                    notes.append(f"{name} (new)")
                elif not candidate:
                    return Change(
                        "unknown",
                        f"cannot tell the newest {name}",
                        reason=f"{manager} gave no candidate version for {name}",
                    )
                elif candidate != version and candidate not in version:
                    todo.append(name)
                    notes.append(f"{name} {version} -> {candidate}")
        if not todo:
            return Change("noop", f"packages {', '.join(names)} are {state}")
        cmds = _PKG_CMD[manager]
        actions = []
        if params.get("update_cache") and state != "absent":
            actions.append(Action("cmd", command=cmds["update"]))
        actions.append(Action("cmd", command=cmds[state].format(ps=" ".join(q(n) for n in todo))))
        verb = {"present": "install", "absent": "remove", "latest": "upgrade"}[state]
        status: Status = "delete" if state == "absent" else ("update" if state == "latest" else "create")
        return Change(status, f"{verb} {', '.join(notes)} ({manager})", tuple(actions))


def _package_view(params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
    out = dict(facts)
    for i, name in enumerate(params["name"]):
        state = overlay.get(("pkg", name))
        if state is None:
            continue
        if isinstance(state, Unknown):
            raise OverlayUnknown(state.reason)
        for m in F.PACKAGE_FAMILIES:
            if f"{m}.{i}" not in facts:
                continue
            if state == "absent":
                out[f"{m}.{i}"] = ProbeResult(1)
            else:
                cand = facts.get(f"cand.{m}.{i}")
                version = cand.text.split()[0] if cand is not None and cand.rc == 0 and cand.text.split() else ""
                ans = facts[f"{m}.{i}"]
                have = ans.text.strip() if ans.rc == 0 else ""
                now = have if have and state == "present" else version or "planned"
                out[f"{m}.{i}"] = ProbeResult(0, now.encode())
    return out


# ---------------------------------------------------------------- service


class Service(StepKind):
    name: ClassVar[str] = "service"
    needs = POSIX

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        name = str(params["name"])
        state = overlay.get(("svc", name))
        if state is None:
            state = overlay.get(("svc", "*"))
        if state is None:
            return facts
        if isinstance(state, Unknown):
            by = overlay.by(("svc", name)) or overlay.by(("svc", "*"))
            raise OverlayUnknown(f"{state.reason} (step '{by}')")
        out = dict(facts)
        active, enabled = state
        if active is not None and "active" in facts:
            out["active"] = ProbeResult(0 if active == "active" else 3, f"{active}\n".encode())
        if enabled is not None and "enabled" in facts:
            out["enabled"] = ProbeResult(0 if enabled == "enabled" else 1, f"{enabled}\n".encode())
        return out

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        if change.status in ("blocked", "unknown", "skip"):
            return []
        state = params.get("state")
        active = facts["active"].text.strip() if "active" in facts else None
        enabled = facts["enabled"].text.strip() if "enabled" in facts else None
        if state in ("started", "restarted", "reloaded"):
            active = "active"
        elif state == "stopped":
            active = "inactive"
        if params.get("enabled") is True and enabled not in ("enabled", "enabled-runtime", "static", "alias"):
            enabled = "enabled"
        elif params.get("enabled") is False and enabled in ("enabled", "enabled-runtime"):
            enabled = "disabled"
        return [Effect(("svc", str(params["name"])), (active, enabled), exact=state not in ("restarted", "reloaded"))]

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        problem = names.unit(params["name"])
        if problem:
            raise PrepareError(problem)
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        name = str(params["name"])
        return [
            F.ask(ctx, "systemd"),
            F.ask(ctx, "service_active", name, key="active"),
            F.ask(ctx, "service_enabled", name, key="enabled"),
        ]

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        name = str(params["name"])
        if facts["systemd"].rc != 0:
            return Change(
                "unknown",
                f"cannot manage service {name}",
                reason="systemd is not running on this host (no /run/systemd/system)",
            )
        active = facts["active"].text.strip()
        enabled = facts["enabled"].text.strip()
        state = params.get("state")
        actions: list[Action] = []
        notes: list[str] = []
        status: Status = "update"
        n = q(name)
        if state == "started" and active != "active":
            actions.append(Action("cmd", command=f"systemctl start -- {n}"))
            notes.append(f"start ({active or 'unknown'} -> active)")
        elif state == "stopped" and active in ("active", "activating", "reloading"):
            actions.append(Action("cmd", command=f"systemctl stop -- {n}"))
            notes.append(f"stop ({active} -> inactive)")
        elif state in ("restarted", "reloaded"):
            verb = "restart" if state == "restarted" else "reload"
            actions.append(Action("cmd", command=f"systemctl {verb} -- {n}"))
            notes.append(f"{verb} (always: not idempotent)")
            status = "run"
        want = params.get("enabled")
        if want is True and enabled not in ("enabled", "enabled-runtime", "static", "alias"):
            actions.append(Action("cmd", command=f"systemctl enable -- {n}"))
            notes.append(f"enable ({enabled or 'unknown'} -> enabled)")
        elif want is False and enabled in ("enabled", "enabled-runtime"):
            actions.append(Action("cmd", command=f"systemctl disable -- {n}"))
            notes.append("disable")
        if not actions:
            return Change("noop", f"service {name} is {active}" + (f", {enabled}" if want is not None else ""))
        return Change(status, f"service {name}: {'; '.join(notes)}", tuple(actions))


for _kind in (Package(), Service()):
    register(_kind)
