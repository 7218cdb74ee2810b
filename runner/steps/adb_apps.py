"""ADB step kinds for packages and apps: adb.install, adb.uninstall and adb.app (start, stop,
clear). Pure plans from probe answers: imports no adbutils and no transport.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from runner.apk import apk_info
from runner.model import Action, Change, CommandResult, Probe, Status
from runner.overlay import Effect, Overlay
from runner.steps import adb_overlay as ao
from runner.steps import facts as F
from runner.steps import names
from runner.steps.adb import ADB, MAX_DEVICE_FILE, _failed, _refuse, _tail, _text, q
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.shell import PrepareError, read_source

APK_TMP = "/data/local/tmp"  # where an APK waits for pm install


# ---------------------------------------------------------------- adb.install / adb.uninstall


def _list_versions(text: str) -> dict[str, int | None]:
    """`pm list packages [--show-versioncode]` -> package -> versionCode (None: not shown)."""
    out: dict[str, int | None] = {}
    for line in text.splitlines():
        m = re.match(r"^package:(\S+)(?:\s+versionCode:(\d+))?", line.strip())
        if m:
            out[m.group(1)] = int(m.group(2)) if m.group(2) else None
    return out


class Install(StepKind):
    name: ClassVar[str] = "adb.install"
    needs = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"src": params} if isinstance(params, str) else dict(params)

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        if params.get("package"):
            _refuse(names.android_package(params["package"]))
        src = params["src"]
        data = read_source(ctx, params, "APK", MAX_DEVICE_FILE, contain=False).data
        try:
            info = apk_info(data)
        except ValueError as exc:
            info = {"package": None, "version_code": None, "version_name": None, "error": str(exc)}
        package = str(params.get("package") or info["package"] or "")
        given_vc = params.get("version_code")
        version_code = int(str(given_vc)) if given_vc is not None else info["version_code"]
        if params.get("package") and info["package"] and info["package"] != params["package"]:
            raise PrepareError(f"APK {src} is package {info['package']}, not {params['package']} as the step says")
        if given_vc is not None and info["version_code"] is not None and info["version_code"] != version_code:
            raise PrepareError(f"APK {src} has versionCode {info['version_code']}, not {version_code} as the step says")
        if not package or version_code is None:
            why = info.get("error") or "its manifest does not say"
            raise PrepareError(
                f"APK {src}: cannot read its package name and versionCode ({why}); "
                "set `package:` and `version_code:` in the step"
            )
        _refuse(names.android_package(package, f"APK {src}: package"))
        return {
            **params,
            "_apk": data,
            "_package": package,
            "_version_code": version_code,
            "_version_name": info.get("version_name"),
        }

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        pkg = str(params["_package"])
        return [
            F.ask(ctx, "pm_list", pkg, versions=True, key="list"),
            # Android < 9 has no --show-versioncode: dumpsys says it too (only read then)
            F.ask(ctx, "pm_dumpsys", pkg, key="dumpsys"),
        ]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_install(str(params["_package"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.install_effects(str(params["_package"]), int(params["_version_code"]), change, overlay)

    @staticmethod
    def installed_version(package: str, facts: Facts) -> tuple[bool, int | None]:
        """(installed, versionCode) from the probes."""
        listed = facts.get("list")
        if listed is not None and listed.rc == 0 and "versionCode:" in listed.text:
            versions = _list_versions(listed.text)
            return package in versions, versions.get(package)
        if listed is not None and listed.rc == 0 and "package:" in listed.text:
            versions = _list_versions(listed.text)
            if package not in versions:
                return False, None
        dump = _text(facts, "dumpsys")
        if f"Package [{package}]" not in dump:
            return False, None
        m = re.search(r"versionCode=(\d+)", dump)
        return True, int(m.group(1)) if m else None

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        pkg, vc = str(params["_package"]), int(params["_version_code"])
        installed, have = self.installed_version(pkg, facts)
        src = params["src"]
        if installed and have == vc:
            return Change("noop", f"{pkg} versionCode {vc} is installed")
        if installed and have is None:
            return Change(
                "unknown",
                f"cannot tell the installed version of {pkg}",
                reason="neither `pm list packages --show-versioncode` nor `dumpsys package` gave it",
            )
        flags = ["-r"]
        status: Status = "create"
        summary = f"install {pkg} versionCode {vc} from {src}"
        if installed and have is not None:
            status = "update"
            if have > vc:
                if not params.get("downgrade"):
                    return Change(
                        "blocked",
                        f"{pkg}: the device has versionCode {have}, newer than the APK's {vc}",
                        reason=f"{pkg} versionCode {have} is installed, the APK has {vc}: set "
                        "`downgrade: true` to install the older one",
                    )
                flags.append("-d")
                summary = f"downgrade {pkg} versionCode {have} -> {vc}"
            else:
                summary = f"upgrade {pkg} versionCode {have} -> {vc}"
        if params.get("grant_permissions"):
            flags.append("-g")
        remote = f"{APK_TMP}/opsrun-{pkg}.apk"
        r = q(remote)
        command = f"pm install {' '.join(flags)} {r}; rc=$?; rm -f {r}; exit $rc"
        return Change(
            status,
            summary,
            (Action("put", path=remote, content=params["_apk"], mode="0644"), Action("cmd", command=command)),
            data={"package": pkg, "version_code": vc, "previous_version_code": have},
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
        last = results[-1] if results else CommandResult(0)
        if "Success" not in last.out:
            return "failed", f"pm install did not say Success: {_tail(last) or 'no output'}"
        return "changed", ""


class Uninstall(StepKind):
    name: ClassVar[str] = "adb.uninstall"
    needs = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        return {"package": params} if isinstance(params, str) else dict(params)

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "pm_list", str(params["package"]), key="list")]

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        _refuse(names.android_package(params["package"]))
        return params

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_uninstall(str(params["package"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.uninstall_effects(str(params["package"]), change, overlay)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        pkg = str(params["package"])
        if pkg not in _list_versions(_text(facts, "list")):
            return Change("noop", f"{pkg} is not installed")
        keep = " -k" if params.get("keep_data") else ""
        return Change(
            "delete",
            f"uninstall {pkg}" + (" (keeping its data)" if keep else ""),
            (Action("cmd", command=f"pm uninstall{keep} -- {q(pkg)}"),),
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
        if results and "Success" not in results[-1].out:
            return "failed", f"pm uninstall did not say Success: {_tail(results[-1]) or 'no output'}"
        return "changed", ""


# ---------------------------------------------------------------- adb.app


class App(StepKind):
    name: ClassVar[str] = "adb.app"
    needs = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        out = {"package": params} if isinstance(params, str) else dict(params)
        out.setdefault("state", "started")
        return out

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        _refuse(
            names.android_package(params["package"]),
            names.activity(params["activity"]) if params.get("activity") else None,
        )
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        pkg = str(params["package"])
        out = [F.ask(ctx, "pid", pkg), F.ask(ctx, "pm_path", pkg, key="path")]
        if params.get("foreground"):
            out.append(F.ask(ctx, "front_activity", key="front"))
        return out

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_app(params, facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return ao.app_effects(params, change, overlay)

    @staticmethod
    def component(params: dict[str, Any]) -> str | None:
        act = params.get("activity")
        if not act:
            return None
        act = str(act)
        return act if "/" in act else f"{params['package']}/{act}"

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        pkg = str(params["package"])
        state = params.get("state", "started")
        pid = _text(facts, "pid").split()
        running = facts.get("pid") is not None and facts["pid"].rc == 0 and bool(pid)
        installed = facts.get("path") is not None and facts["path"].rc == 0 and "package:" in _text(facts, "path")
        note = "" if installed else " (not installed yet)"
        if state == "stopped":
            if not running:
                return Change("noop", f"{pkg} is not running")
            stop = Action("cmd", command=f"am force-stop -- {q(pkg)}")
            return Change("update", f"stop {pkg} (pid {pid[0]})", (stop,))
        if state == "cleared":
            return Change(
                "run",
                f"clear the data of {pkg}{note} (always: the device cannot tell whether it is clear)",
                (Action("cmd", command=f"pm clear -- {q(pkg)}"),),
            )
        in_front = f" {pkg}/" in _text(facts, "front")
        if running and (not params.get("foreground") or in_front):
            where = " in the foreground" if params.get("foreground") else ""
            return Change("noop", f"{pkg} is running{where} (pid {pid[0]})")
        comp = self.component(params)
        if comp:
            command = f"am start -W -n {q(comp)}"
        else:
            command = f"monkey -p {q(pkg)} -c android.intent.category.LAUNCHER 1"
        what = f"bring {pkg} to the foreground" if running else f"start {pkg}{note}"
        return Change("update" if running else "create", what, (Action("cmd", command=command),))

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
        last = results[-1] if results else CommandResult(0)
        text = last.out + last.err
        state = params.get("state", "started")
        # am and monkey may exit 0 and still say they failed
        if state == "started" and ("Error" in text or "aborted" in text or "No activities" in text):
            return "failed", _tail(last) or "could not start it"
        if state == "cleared" and "Success" not in last.out:
            return "failed", f"pm clear did not say Success: {_tail(last) or 'no output'}"
        return "changed", ""


for _kind in (Install(), Uninstall(), App()):
    register(_kind)
