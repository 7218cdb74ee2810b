"""ADB step kinds through the overlay: the probe answers a device would give once the steps
planned before have run (settings, props, packages, apps, files), and the planned effects.

Pure; imports only model, overlay, the step base and facts (adb.py calls in, never the reverse).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from runner.model import Change, ProbeResult
from runner.overlay import Effect, Overlay, PathState, Unknown, norm_path
from runner.steps.base import Facts, OverlayUnknown
from runner.steps.facts import TOYBOX, read_stat, stat_text

FRONT: tuple[str, ...] = ("adb.front",)  # the package in the foreground
PLANNED_PID = "planned"  # what a synthesised `pidof` says of an app a planned step starts


def _known(overlay: Overlay, key: tuple[str, ...]) -> Any:
    """The planned state of `key` (None: as on the device); Unknown raises."""
    state = overlay.get(key)
    if isinstance(state, Unknown):
        by = overlay.by(key)
        raise OverlayUnknown(state.reason + (f" (step '{by}')" if by and by not in state.reason else ""))
    return state


def _answer(text: str, rc: int = 0) -> ProbeResult:
    return ProbeResult(rc, text.encode())


def _no_effect(change: Change) -> bool:
    return change.status in ("blocked", "skip")


# ---------------------------------------------------------------- settings and props


def setting_key(params: dict[str, Any]) -> tuple[str, ...]:
    return ("adb.setting", str(params["namespace"]), str(params["key"]))


def view_setting(params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
    """`settings get` prints the value and a newline, `null` when the key is not set."""
    value = _known(overlay, setting_key(params))
    if value is None or "value" not in facts:
        return facts
    return {**facts, "value": _answer(f"{value}\n")}


def setting_effects(params: dict[str, Any], change: Change, want: str | None) -> list[Effect]:
    key = setting_key(params)
    if change.status == "unknown":
        return [Effect(key, Unknown(""), exact=False)]
    if _no_effect(change):
        return []
    if params.get("state", "present") == "absent":
        return [Effect(key, "null")]
    return [Effect(key, want)]


def view_prop(params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
    """`getprop NAME` prints the value and a newline (an empty line when unset)."""
    value = _known(overlay, ("adb.prop", str(params["name"])))
    if value is None or "value" not in facts:
        return facts
    return {**facts, "value": _answer(f"{value}\n")}


def prop_effects(params: dict[str, Any], change: Change, want: str | None) -> list[Effect]:
    """Only a setprop (assert: false) changes the property; a check reads it."""
    if want is None or params.get("assert", True) is not False or _no_effect(change):
        return []
    key = ("adb.prop", str(params["name"]))
    if change.status == "unknown":
        return [Effect(key, Unknown(""), exact=False)]
    return [Effect(key, want)]


# ---------------------------------------------------------------- packages


def pkg_state(overlay: Overlay, package: str) -> tuple[str, int | None] | None:
    """("installed", versionCode) or ("absent", None) as planned; None: as on the device."""
    state = _known(overlay, ("adb.pkg", package))
    return state if state is None else (str(state[0]), state[1])


def _other_lines(answer: ProbeResult | None, package: str) -> list[str]:
    """`pm list packages P` matches by substring: keep the lines of the other packages."""
    if answer is None or answer.rc != 0:
        return []
    out = []
    for line in answer.text.splitlines():
        name = line.strip().removeprefix("package:").split()[0] if line.strip() else ""
        if line.strip() and name != package:
            out.append(line.strip())
    return out


def _list_answer(facts: Facts, key: str, package: str, state: tuple[str, int | None], versions: bool) -> ProbeResult:
    lines = _other_lines(facts.get(key), package)
    if state[0] == "installed":
        vc = state[1]
        lines.append(f"package:{package}" + (f" versionCode:{vc}" if versions and vc is not None else ""))
    return _answer("".join(f"{line}\n" for line in lines))


def view_install(package: str, facts: Facts, overlay: Overlay) -> Facts:
    state = pkg_state(overlay, package)
    if state is None:
        return facts
    out = dict(facts)
    if "list" in facts:
        out["list"] = _list_answer(facts, "list", package, state, versions=True)
    if "dumpsys" in facts:
        if state[0] == "installed":
            out["dumpsys"] = _answer(f"  Package [{package}] (planned):\n    versionCode={state[1]}\n")
        else:
            out["dumpsys"] = _answer("", 1)  # grep found nothing
    return out


def view_uninstall(package: str, facts: Facts, overlay: Overlay) -> Facts:
    state = pkg_state(overlay, package)
    if state is None or "list" not in facts:
        return facts
    return {**facts, "list": _list_answer(facts, "list", package, state, versions=False)}


def _app_stopped_by(package: str, overlay: Overlay, reason: str) -> list[Effect]:
    """The app's process ends (reinstall, uninstall, force-stop, clear). What comes to the
    front then is not known, unless another package is known to be there."""
    out = [Effect(("adb.app", package), "stopped", exact=False)]
    front = overlay.get(FRONT)
    if not (isinstance(front, str) and front and front != package):
        out.append(Effect(FRONT, Unknown(f"{reason} {package}: what is in the foreground then is not known"),
                          exact=False))
    return out


def install_effects(package: str, version_code: int, change: Change, overlay: Overlay) -> list[Effect]:
    key = ("adb.pkg", package)
    if change.status == "unknown":
        return [Effect(key, Unknown(""), exact=False), Effect(("adb.app", package), Unknown(""), exact=False)]
    if _no_effect(change):
        return []
    out = [Effect(key, ("installed", version_code))]
    if change.status == "update":  # pm install -r ends the running app
        out += _app_stopped_by(package, overlay, "a step reinstalls")
    elif change.status == "create":
        out.append(Effect(("adb.app", package), "stopped", exact=False))
    return out


def uninstall_effects(package: str, change: Change, overlay: Overlay) -> list[Effect]:
    key = ("adb.pkg", package)
    if _no_effect(change):
        return []
    out = [Effect(key, ("absent", None))]
    if change.status == "delete":
        out += _app_stopped_by(package, overlay, "a step uninstalls")
    return out


# ---------------------------------------------------------------- apps


def view_app(params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
    package = str(params["package"])
    out = dict(facts)
    pkg = pkg_state(overlay, package)
    if pkg is not None and "path" in facts:
        installed = pkg[0] == "installed"
        out["path"] = _answer(f"package:/data/app/{package}/base.apk\n") if installed else _answer("", 1)
    app = _known(overlay, ("adb.app", package))
    if app is not None and "pid" in facts:
        out["pid"] = _answer(f"{PLANNED_PID}\n") if app == "running" else _answer("", 1)
    if "front" in facts:
        front = _known(overlay, FRONT)
        if front is not None:
            line = f"  mResumedActivity: ActivityRecord{{planned u0 {front}/.Planned t0}}\n"
            out["front"] = _answer(line) if front else _answer("", 1)
    return out


def app_effects(params: dict[str, Any], change: Change, overlay: Overlay) -> list[Effect]:
    package = str(params["package"])
    state = params.get("state", "started")
    key = ("adb.app", package)
    if change.status == "unknown":
        return [Effect(key, Unknown(""), exact=False), Effect(FRONT, Unknown(""), exact=False)]
    if _no_effect(change):
        return []
    if state == "stopped":
        if change.status == "noop":
            return [Effect(key, "stopped")]
        return [Effect(key, "stopped"), *_app_stopped_by(package, overlay, "a step stops")[1:]]
    if state == "cleared":
        return _app_stopped_by(package, overlay, "a step clears the data of")
    out = [Effect(key, "running")]
    if change.status != "noop" or params.get("foreground"):
        out.append(Effect(FRONT, package, exact=bool(params.get("foreground"))))
    return out


def input_effects(change: Change) -> list[Effect]:
    """Taps, keys and text may open or close any app: the foreground is not known after."""
    if change.status != "run":
        return []
    return [Effect(FRONT, Unknown("an earlier adb.input step may change the app in the foreground"), exact=False)]


def view_wait(params: dict[str, Any], value: str, facts: Facts, overlay: Overlay) -> Facts:
    """adb.wait for a package or a property a planned step installs or sets: already so,
    or not (then it waits for something else to make it so)."""
    what = params.get("for", "boot_completed")
    if "now" not in facts or what not in ("package", "property"):
        return facts
    if what == "package":
        pkg = pkg_state(overlay, str(params["package"]))
        met = None if pkg is None else pkg[0] == "installed"
    else:
        planned = _known(overlay, ("adb.prop", str(params["property"])))
        met = None if planned is None else planned == value
    if met is None:
        return facts
    return {**facts, "now": _answer("", 0 if met else 1)}


# ---------------------------------------------------------------- device files


def _file_text(state: PathState, algo: str, path: str) -> bytes:
    if state.type != "file":
        return stat_text(state, TOYBOX)
    if state.content is not None:
        data = state.content
        digest = hashlib.sha256(data).hexdigest() if algo == "sha256" else \
            hashlib.md5(data, usedforsecurity=False).hexdigest()
        state = replace(state, size=len(data))
    elif state.sha256 and algo == "sha256":
        digest = state.sha256
    else:
        raise OverlayUnknown(f"the content of {path} after an earlier step is not known")
    return stat_text(state, TOYBOX, digest=(algo, digest), mode_if_unknown="644")


def view_file(path: str, facts: Facts, overlay: Overlay, key: str = "file") -> Facts:
    """The answer of the `stat` fact (with its digest) once the earlier steps ran."""
    state = overlay.path(path)
    if state is None or key not in facts:
        return facts
    if isinstance(state, Unknown):
        raise OverlayUnknown(state.reason)
    assert isinstance(state, PathState)
    if state.type == "exists":
        by = overlay.by(("path", norm_path(path)))
        raise OverlayUnknown(f"{path} is made by step '{by}' (a command): its type and content are not known "
                             "before it runs")
    algo = read_stat(facts[key]).algo or "sha256"
    return {**facts, key: ProbeResult(0, _file_text(state, algo, path))}


def push_effects(dest: str, data: bytes, mode: str | None, change: Change, before_mode: str | None) -> list[Effect]:
    """A push writes a temporary file (mode given, else 0644) and renames it over `dest`."""
    key = ("path", dest)
    if change.status == "unknown":
        return [Effect(key, Unknown(""), exact=False)]
    if _no_effect(change):
        return []
    if change.status == "noop" or (change.status == "update" and not any(a.kind == "put" for a in change.actions)):
        new_mode = mode or before_mode
    else:
        new_mode = mode or "0644"
    return [Effect(key, PathState("file", content=data, size=len(data), mode=new_mode))]

