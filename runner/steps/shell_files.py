"""Step kinds for files on a host with a POSIX shell: file, line, template, copy.

Each asks the path's facts and decides, purely from their answers, what would change and the
exact commands. Nothing here talks to a host; prepare() may read local files (templates, sources).
"""

from __future__ import annotations

import re
import shlex
from typing import Any, ClassVar

from runner.model import Action, Change, Probe
from runner.overlay import Effect, Overlay, PathState
from runner.steps import facts as F
from runner.steps.base import Facts, StepContext, StepKind, register
from runner.steps.paths import file_effects, view_path
from runner.steps.shell import POSIX, PrepareError, check_accounts, read_source
from runner.steps.shell_content import (
    FileState,
    _split_lines,
    attr_actions,
    by_sftp,
    content_change,
    path_facts,
)

q = shlex.quote


# ---------------------------------------------------------------- file


class File(StepKind):
    name: ClassVar[str] = "file"
    needs = POSIX
    needs_identity = True

    def destinations(self, params: dict[str, Any]) -> list[tuple[str, bool]]:
        return [(str(params["path"]), params.get("state") == "absent")]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return view_path(str(params["path"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        state = params.get("state", "file")
        return file_effects(
            str(params["path"]),
            change,
            facts,
            overlay,
            state="file" if state == "touch" else state,
            mode=params.get("mode"),
            owner=params.get("owner"),
            group=params.get("group"),
            link_target=str(params["src"]) if params.get("src") is not None else None,
        )

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        check_accounts(params)
        return params

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return path_facts(ctx, str(params["path"]), content=params.get("content") is not None)

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        path = str(params["path"])
        state = params.get("state", "file")
        st = FileState(facts)
        mode, owner, group = params.get("mode"), params.get("owner"), params.get("group")
        sftp = by_sftp(ctx)
        if state == "absent":
            if not st.exists:
                return Change("noop", f"{path} is absent")
            if sftp and st.type != "directory":  # a tree stays one `rm -rf`
                return Change("delete", f"remove {st.type} {path}", (Action("sftp", method="remove", path=path),))
            flag = "-rf" if st.type == "directory" else "-f"
            return Change("delete", f"remove {st.type} {path}", (Action("cmd", command=f"rm {flag} -- {q(path)}"),))
        if state == "directory":
            if st.exists and st.type != "directory":
                return Change(
                    "blocked",
                    f"{path} exists as a {st.type}",
                    reason=f"{path} is a {st.type}; remove it first (state: absent)",
                )
            if not st.exists:
                blocked = st.cannot_make(path, needs_folder=False)
                if blocked is not None:
                    return blocked
                # its folder there: one SFTP mkdir (with the mode, then chmod past the umask);
                # folders to make above it: `mkdir -p`
                one = sftp and st.parent_problem == ""
                extra, _ = attr_actions(path, None, mode, owner, group, sftp)
                make = (
                    Action("sftp", method="mkdir", path=path, mode=_mode_or_none(mode))
                    if one
                    else Action("cmd", command=f"mkdir -p -- {q(path)}")
                )
                return Change("create", f"create directory {path}", (make, *extra))
            acts, notes = attr_actions(path, st, mode, owner, group, sftp)
            if not acts:
                return Change("noop", f"directory {path} is up to date")
            return Change("update", f"update directory {path} ({', '.join(notes)})", tuple(acts))
        if state == "link":
            src = str(params["src"])
            if st.type == "link" and st.link_target == src:
                return Change("noop", f"link {path} -> {src} is up to date")
            if st.type == "directory":
                return Change(
                    "blocked", f"{path} is a directory", reason=f"{path} is a directory; remove it first to make a link"
                )
            act = Action("cmd", command=f"ln -sfn -- {q(src)} {q(path)}")
            if st.exists:
                return Change("update", f"relink {path}: {st.link_target or st.type} -> {src}", (act,))
            return st.cannot_make(path, needs_folder=True) or Change("create", f"create link {path} -> {src}", (act,))
        # file / touch
        if params.get("content") is not None:
            content = str(params["content"]).encode()
            return content_change(path, content, st, mode, owner, group, show_diff=bool(params.get("show_diff")),
                                  sftp=sftp)
        if st.type == "directory":
            return Change("blocked", f"{path} is a directory", reason=f"{path} is a directory, not a file")
        if not st.exists:
            blocked = st.cannot_make(path, needs_folder=True)
            if blocked is not None:
                return blocked
            acts, _ = attr_actions(path, None, mode, owner, group)
            return Change("create", f"create empty file {path}", (Action("cmd", command=f"touch -- {q(path)}"), *acts))
        acts, notes = attr_actions(path, st, mode, owner, group, sftp)
        if not acts:
            return Change("noop", f"file {path} is up to date")
        return Change("update", f"update file {path} ({', '.join(notes)})", tuple(acts))


# ---------------------------------------------------------------- line


class Line(StepKind):
    name: ClassVar[str] = "line"
    needs = POSIX
    needs_identity = True

    def destinations(self, params: dict[str, Any]) -> list[tuple[str, bool]]:
        return [(str(params["path"]), False)]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return view_path(str(params["path"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        # a line edit manages one line, not the file: a later step fights it only when the
        # file it leaves no longer has (or lacks) the line
        def holds(st: Any) -> bool:
            if not isinstance(st, PathState) or st.type != "file" or st.content is None:
                return isinstance(st, PathState) and st.type == "absent" and params.get("state") == "absent"
            text = st.content.decode("utf-8", "surrogateescape")
            return edit_lines(text, params) == text

        return file_effects(str(params["path"]), change, facts, overlay, state="file",
                            mode=params.get("mode"), exact=False, goal=holds)

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return path_facts(ctx, str(params["path"]))

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        path = str(params["path"])
        st = FileState(facts)
        state = params.get("state", "present")
        if st.exists and st.type != "file":
            return Change("blocked", f"{path} is a {st.type}", reason=f"{path} is not a regular file")
        if st.exists and st.content is None:
            return Change(
                "unknown", f"{path} is too large to edit", reason=f"{path} is larger than {F.MAX_CONTENT} bytes"
            )
        if not st.exists:
            if state == "absent":
                return Change("noop", f"{path} does not exist")
            if not params.get("create"):
                return Change(
                    "unknown",
                    f"{path} does not exist yet",
                    reason=f"{path} does not exist (an earlier step may create it; set create: true to create it here)",
                )
        old = st.content or b""
        # surrogateescape: bytes that are not UTF-8 (a latin-1 file) come back unchanged
        new = edit_lines(old.decode("utf-8", "surrogateescape"), params).encode("utf-8", "surrogateescape")
        if st.exists and new == old:
            return Change("noop", f"{path} already {'has' if state == 'present' else 'lacks'} the line")
        verb = "add line to" if state == "present" else "remove line from"
        change = content_change(path, new, st, params.get("mode"), None, None, show_diff=bool(params.get("show_diff")),
                                sftp=by_sftp(ctx))
        return Change("create" if not st.exists else "update", f"{verb} {path}", change.actions, diff=change.diff)


def _mode_or_none(mode: Any) -> str | None:
    return None if mode is None else format(int(str(mode), 8), "04o")


def edit_lines(text: str, params: dict[str, Any]) -> str:
    """Pure lineinfile: returns the edited text. Other lines keep their bytes; in a file
    whose lines all end in CRLF the line is compared without, and written with, its \r."""
    lines = _split_lines(text)
    trailing_nl = text.endswith("\n") or not text
    cr = "\r" if lines and all(s.endswith("\r") for s in lines) else ""
    line = params.get("line")
    regexp = re.compile(params["regexp"]) if params.get("regexp") else None
    state = params.get("state", "present")

    def matches(s: str) -> bool:
        s = s.removesuffix(cr) if cr else s
        return bool(regexp.search(s)) if regexp else s == line

    if state == "absent":
        lines = [s for s in lines if not matches(s)]
    else:
        assert line is not None
        hits = [i for i, s in enumerate(lines) if matches(s)]
        if hits:
            lines[hits[-1]] = line + cr
        elif line + cr not in lines:
            lines.insert(_insert_at([s.removesuffix(cr) if cr else s for s in lines], params), line + cr)
    out = "\n".join(lines)
    return out + "\n" if (trailing_nl and lines) else out


def _insert_at(lines: list[str], params: dict[str, Any]) -> int:
    after, before = params.get("insertafter"), params.get("insertbefore")
    if before == "BOF":
        return 0
    if before:
        rx = re.compile(before)
        found = [i for i, s in enumerate(lines) if rx.search(s)]
        if found:
            return found[-1]  # before the last match, as documented (and as Ansible does)
    if after and after != "EOF":
        rx = re.compile(after)
        found = [i for i, s in enumerate(lines) if rx.search(s)]
        if found:
            return found[-1] + 1
    return len(lines)


# ---------------------------------------------------------------- template / copy


class Template(StepKind):
    name: ClassVar[str] = "template"
    needs = POSIX
    needs_identity = True

    def destinations(self, params: dict[str, Any]) -> list[tuple[str, bool]]:
        return [(str(params["dest"]), False)]

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        return view_path(str(params["dest"]), facts, overlay)

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        return file_effects(str(params["dest"]), change, facts, overlay, state="file",
                            mode=params.get("mode"), owner=params.get("owner"), group=params.get("group"))

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        check_accounts(params)
        src = read_source(ctx, params, "template source")
        try:
            source = src.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"{exc.reason} at byte {exc.start}"
            raise PrepareError(f"template source {params['src']}: not UTF-8 text ({where})") from None
        if ctx.render is None:  # pragma: no cover - the planner always gives one
            raise PrepareError("no renderer")
        rendered = ctx.render(source, {**ctx.vars, **(params.get("vars") or {})})
        return {**params, "_content": rendered, "_src_private": src.private}

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        return path_facts(ctx, str(params["dest"]))

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        return content_change(
            str(params["dest"]),
            str(params["_content"]).encode(),
            FileState(facts),
            params.get("mode"),
            params.get("owner"),
            params.get("group"),
            what=self.name,
            show_diff=bool(params.get("show_diff")),
            source_private=bool(params.get("_src_private")),
            sftp=by_sftp(ctx),
        )


class Copy(Template):
    name: ClassVar[str] = "copy"

    def prepare(self, params: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        check_accounts(params)
        src = read_source(ctx, params, "copy source")
        return {**params, "_bytes": src.data, "_src_private": src.private}

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        return content_change(
            str(params["dest"]),
            params["_bytes"],
            FileState(facts),
            params.get("mode"),
            params.get("owner"),
            params.get("group"),
            what="file",
            show_diff=bool(params.get("show_diff")),
            source_private=bool(params.get("_src_private")),
            sftp=by_sftp(ctx),
        )


for _kind in (File(), Line(), Template(), Copy()):
    register(_kind)
