"""ADB step kinds for the shell and files: adb.shell, adb.push, adb.pull, adb.screenshot, and
the helpers every ADB kind shares. Imports no adbutils and no transport; no ADB kind module.

The other kinds are in adb_apps.py (install, uninstall, app) and adb_device.py (input,
setting, prop, wait). Each kind asks read-only probes in the device's shell (mksh + toybox;
every value quoted for it) and decides purely from the answers. Nothing here talks to a
device or imports adbutils; prepare() may read local files (APKs, push sources, pull
destinations), and outcome() writes what a step brings back (pulled files, screenshots) on
this machine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from runner.files import write_atomic
from runner.model import Action, Change, CommandResult, Probe, ProbeResult
from runner.overlay import Effect, Overlay
from runner.steps import adb_overlay as ao
from runner.steps import facts as F
from runner.steps import names
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.shell import PrepareError, Run, read_source

ADB = frozenset({"android"})  # the capability ADB kinds need (transports.CAPABILITIES)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_DEVICE_FILE = 1024**3  # APKs, pushed and pulled files: more than the 16 MiB of copy/template
q = shlex.quote


def _refuse(*problems: str | None) -> None:
    """PrepareError at the first failed name check (runner/steps/names.py): never sent."""
    problem = names.first_problem(*problems)
    if problem:
        raise PrepareError(problem)


def _tail(r: CommandResult) -> str:
    lines = (r.err or r.out).strip().splitlines()
    return lines[-1] if lines else ""


def _failed(results: list[CommandResult]) -> tuple[str, str] | None:
    """('failed', why) at the first non-zero exit code, else None."""
    for r in results:
        if r.rc != 0:
            tail = _tail(r)
            return "failed", f"rc {r.rc}" + (f": {tail}" if tail else "")
    return None


def _text(facts: Facts, key: str) -> str:
    r = facts.get(key)
    return r.text.strip() if r is not None else ""


# ---------------------------------------------------------------- adb.shell


class AdbShell(Run):
    """`run` on the device: same guards (creates/removes/unless/only_if) and changed_when /
    failed_when; the command runs in the device's shell (mksh on Android)."""

    name: ClassVar[str] = "adb.shell"
    needs = ADB


# ---------------------------------------------------------------- adb.push / adb.pull


class RemoteFile:
    """A device file as the `stat` fact (with its digest) answers: type, size, mode, digest."""

    def __init__(self, result: ProbeResult | None) -> None:
        info = F.read_stat(result)
        self.type = info.type
        self.size: int | None = info.size
        self.mode: str | None = info.mode
        self.algo, self.digest = info.algo, info.digest

    def same_as(self, content_size: int, sha256: str, md5: str) -> bool:
        if self.type != "file" or self.size != content_size:
            return False
        return self.digest == (sha256 if self.algo == "sha256" else md5)


def _local_digests(data: bytes) -> tuple[str, str]:
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest()


class Push(StepKind):
    name: ClassVar[str] = "adb.push"
    needs = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        out = dict(params)
        dest = str(out.get("dest", ""))
        if dest.endswith("/") and out.get("src"):
            out["dest"] = dest + os.path.basename(str(out["src"]))
        return out

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return {**params, "_bytes": read_source(ctx, params, "push source", MAX_DEVICE_FILE, contain=False).data}

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "stat", str(params["dest"]), digest=True, key="file")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_file(str(params["dest"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        mode = format(int(str(params["mode"]), 8), "04o") if params.get("mode") is not None else None
        return ao.push_effects(str(params["dest"]), params["_bytes"], mode, change, RemoteFile(facts.get("file")).mode)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        dest = str(params["dest"])
        data: bytes = params["_bytes"]
        mode = format(int(str(params["mode"]), 8), "04o") if params.get("mode") is not None else None
        st = RemoteFile(facts.get("file"))
        if st.type == "directory":
            return Change(
                "blocked",
                f"{dest} is a directory",
                reason=f"{dest} is a directory on the device: give the file's full path (or end dest with /)",
            )
        if st.type == "other":
            return Change("blocked", f"{dest} is not a regular file", reason=f"{dest} exists and is not a file")
        sha, md5 = _local_digests(data)
        put = Action("put", path=dest, content=data, mode=mode)
        if st.type == "absent":
            return Change("create", f"push {params['src']} to {dest} ({len(data)} bytes)", (put,))
        if st.same_as(len(data), sha, md5):
            if mode and st.mode != mode:
                return Change(
                    "update", f"chmod {dest}: {st.mode} -> {mode}", (Action("cmd", command=f"chmod {mode} {q(dest)}"),)
                )
            return Change("noop", f"{dest} is up to date ({len(data)} bytes, {st.algo} matches)")
        return Change(
            "update",
            f"push {params['src']} to {dest} (size {st.size} -> {len(data)} bytes, content differs)",
            (put,),
            diff=f"{st.algo} {st.digest} -> {sha if st.algo == 'sha256' else md5}\n",
        )


class Pull(StepKind):
    """A device file to this machine (dest relative to the playbook's folder). The bytes come
    back base64-encoded through the device shell, so keep it to files of modest size."""

    name: ClassVar[str] = "adb.pull"
    needs = ADB

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        dest = Path(ctx.playbook_dir) / str(params["dest"])
        if str(params["dest"]).endswith("/") or dest.is_dir():
            dest = dest / os.path.basename(str(params["src"]))
        local: dict[str, Any] | None = None
        try:  # the file there now (for its digest): a regular file of bounded size, or none
            here = {"src": os.path.abspath(dest)}
            data = read_source(ctx, here, "pull destination", MAX_DEVICE_FILE, contain=False).data
        except PrepareError:
            if os.path.lexists(dest):
                raise
        else:
            sha, md5 = _local_digests(data)
            local = {"size": len(data), "sha256": sha, "md5": md5}
        return {**params, "_dest": str(dest), "_local": local}

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return [F.ask(ctx, "stat", str(params["src"]), digest=True, key="file")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return ao.view_file(str(params["src"]), facts, overlay)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        src, dest = str(params["src"]), str(params["_dest"])
        st = RemoteFile(facts.get("file"))
        if st.type == "absent":
            return Change(
                "unknown",
                f"{src} does not exist on the device",
                reason=f"{src} does not exist on the device (yet: an earlier step may make it)",
            )
        if st.type != "file":
            return Change("blocked", f"{src} is a {st.type}", reason="adb.pull copies one regular file")
        local = params.get("_local")
        action = Action("cmd", command=f"base64 < {q(src)}")
        data = {"dest": dest, "size": st.size, "algo": st.algo, "digest": st.digest, "quiet_output": True}
        if local is None:
            return Change("create", f"pull {src} to {dest} ({st.size} bytes)", (action,), data=data)
        if st.size == local["size"] and st.digest == local.get(st.algo):
            return Change("noop", f"{dest} is up to date ({st.size} bytes, {st.algo} matches)")
        return Change("update", f"pull {src} to {dest} (content differs)", (action,), data=data)

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
        try:
            content = base64.b64decode(b"".join(results[-1].stdout.split()), validate=True)
        except (binascii.Error, IndexError) as exc:
            return "failed", f"the device sent no valid base64 ({exc})"
        dest = Path(str(change.data["dest"]))
        try:
            write_atomic(dest, content, make_parents=True)
        except OSError as exc:
            return "failed", f"cannot write {dest}: {exc.strerror or exc}"
        return "changed", f"{len(content)} bytes to {dest}"


# ---------------------------------------------------------------- adb.screenshot


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "device"


class Screenshot(StepKind):
    """screencap -p, saved as a PNG in the run folder: artifacts/<host>/<name>. Read-only."""

    name: ClassVar[str] = "adb.screenshot"
    needs = ADB

    def normalize(self, params: Any) -> dict[str, Any]:
        if isinstance(params, str):
            return {"name": params}
        return dict(params) if isinstance(params, dict) else {}

    def read_only(self, params: dict[str, Any]) -> bool:
        return True

    @staticmethod
    def artifact(params: dict[str, Any], ctx: StepContext) -> str:
        name = _safe_name(str(params.get("name") or "screenshot.png"))
        if not name.lower().endswith(".png"):
            name += ".png"
        return str(Path(ctx.run_dir or ".") / "artifacts" / _safe_name(ctx.host.name) / name)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        display = f" -d {int(params['display'])}" if params.get("display") is not None else ""
        path = self.artifact(params, ctx)
        where = path if ctx.run_dir else f"the run folder ({Path(path).relative_to(Path(path).parents[2])})"
        return Change(
            "run",
            f"save a screenshot to {where}",
            (Action("cmd", command=f"screencap -p{display} | base64"),),
            data={"read_only": True, "artifact": path, "artifacts": [path], "quiet_output": True},
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
        try:
            png = base64.b64decode(b"".join(results[-1].stdout.split()), validate=True)
        except (binascii.Error, IndexError) as exc:
            return "failed", f"screencap sent no valid base64 ({exc})"
        if not png.startswith(PNG_MAGIC):
            return "failed", "screencap gave no PNG image" + (f": {_tail(results[-1])}" if results else "")
        dest = Path(str(change.data["artifact"]))  # a retry or a same-named shot replaces it
        try:
            write_atomic(dest, png, mode=0o600, make_parents=True)  # under the private .opsrun/
        except OSError as exc:
            return "failed", f"cannot save the screenshot to {dest}: {exc.strerror or exc}"
        return "ok", f"screenshot saved: {dest} ({len(png)} bytes)"


for _kind in (AdbShell(), Push(), Pull(), Screenshot()):
    register(_kind)
