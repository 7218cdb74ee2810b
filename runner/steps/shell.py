"""Step kinds for any host with a POSIX shell: run, file, line, template, copy, package, service.

Each kind asks read-only probes and decides, purely from their answers, what would change
and the exact commands. Nothing here talks to a host; prepare() may read local files.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Any, ClassVar

from runner import render, secrets
from runner.model import Action, Change, CommandResult, Probe, ProbeResult, ShellCommand, Status, command_env
from runner.overlay import ABSENT, Effect, Overlay, PathState, Unknown
from runner.steps import facts as F
from runner.steps import names, sources
from runner.steps.base import Facts, OverlayUnknown, StepContext, StepKind, register
from runner.steps.paths import file_effects, view_path

SHELL_TRANSPORTS = frozenset({"local", "ssh"})
MAX_CONTENT_PROBE = F.MAX_CONTENT  # bigger files are compared by sha256, without a diff
q = shlex.quote
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _norm_mode(mode: Any) -> str | None:
    if mode is None:
        return None
    return format(int(str(mode), 8), "04o")


# ---------------------------------------------------------------- the facts a path step asks


def path_facts(ctx: StepContext, path: str, content: bool = True) -> list[Probe]:
    """`stat` of the path, and (content) its bytes and sha256 (runner/steps/facts.py)."""
    out = [F.ask(ctx, "stat", path)]
    if content:
        out += [F.ask(ctx, "content", path), F.ask(ctx, "sha256", path)]
    return out


class FileState:
    """The parsed answers of path_facts."""

    def __init__(self, facts: Facts) -> None:
        info = F.read_stat(facts.get("stat"))
        self.type, self.link_target = info.type, info.link_target
        # absent: "" (its folder exists), "noparent" or "notdir X" (X above it is not a folder)
        self.parent_problem = info.parent_problem
        self.mode, self.owner, self.group = info.mode, info.owner, info.group
        self.size = info.size or 0
        self.content: bytes | None = None
        c = facts.get("content")
        if c is not None and c.rc == 0:
            self.content = c.stdout
        sha = facts.get("sha256")
        self.sha256 = sha.text.strip() if sha is not None and sha.rc == 0 else None

    @property
    def exists(self) -> bool:
        return self.type != "absent"

    def cannot_make(self, path: str, *, needs_folder: bool) -> Change | None:
        """Blocked when `path` cannot be made: an ancestor is not a folder, or (needs_folder:
        the command does not make folders, like touch and ln) its folder is missing."""
        if self.parent_problem.startswith("notdir"):
            above = self.parent_problem.partition(" ")[2]
            return Change("blocked", f"cannot make {path}: {above} is not a folder",
                          reason=f"{above} is not a folder, so nothing can be made below it")
        if needs_folder and self.parent_problem == "noparent":
            folder = posixpath.dirname(path)
            return Change("blocked", f"cannot make {path}: folder {folder} does not exist",
                          reason=f"{folder} does not exist; make it first (file: state: directory)")
        return None


def attr_actions(
    path: str, st: FileState | None, mode: str | None, owner: str | None, group: str | None
) -> tuple[list[Action], list[str]]:
    """chmod/chown actions for attributes that differ (all of them when st is None)."""
    actions: list[Action] = []
    notes: list[str] = []
    want_mode = _norm_mode(mode)
    if want_mode and (st is None or st.mode != want_mode):
        actions.append(Action("cmd", command=f"chmod {want_mode} -- {q(path)}"))
        if st is not None:
            notes.append(f"mode {st.mode} -> {want_mode}")
    o_diff = owner and (st is None or st.owner != owner)
    g_diff = group and (st is None or st.group != group)
    if o_diff or g_diff:
        spec = f"{owner or ''}:{group}" if group else str(owner)
        actions.append(Action("cmd", command=f"chown {q(spec)} -- {q(path)}"))
        if st is not None:
            if o_diff:
                notes.append(f"owner {st.owner} -> {owner}")
            if g_diff:
                notes.append(f"group {st.group} -> {group}")
    return actions, notes


def text_diff(path: str, old: bytes | None, new: bytes) -> str:
    try:
        a = _split_lines((old or b"").decode("utf-8"), keepends=True)
        b = _split_lines(new.decode("utf-8"), keepends=True)
    except UnicodeDecodeError:
        return f"Binary content differs ({len(old or b'')} -> {len(new)} bytes)\n"
    lines = list(
        difflib.unified_diff(a, b, f"{path} (current)" if old is not None else "/dev/null", f"{path} (planned)", n=3)
    )
    return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines)


def _split_lines(text: str, keepends: bool = False) -> list[str]:
    """Lines split at "\n" only: str.splitlines() also splits at \r, \f, \x1c.., which
    would rewrite those characters in lines that are not ours."""
    parts = text.split("\n")
    last = parts.pop()
    out = [p + "\n" for p in parts] if keepends else parts
    return [*out, last] if last else out


def hidden_diff_reason(path: str, st: FileState, mode: str | None, source_private: bool = False) -> str | None:
    """Why the diff of `path` must not be shown (its content may be a secret), or None."""
    planned = _norm_mode(mode) or (st.mode if st.type == "file" else None)
    if st.type == "file" and st.mode is None:
        return f"the mode of {path} is unknown"
    if st.type == "file" and st.mode is not None and not int(st.mode, 8) & 0o004:
        return f"{path} is not world-readable (mode {st.mode})"
    if planned is not None and not int(planned, 8) & 0o004:
        return f"{path} will not be world-readable (mode {planned})"
    if source_private:
        return "the local source file is not world-readable"
    return None


def content_change(
    path: str,
    content: bytes,
    st: FileState,
    mode: str | None,
    owner: str | None,
    group: str | None,
    what: str = "file",
    show_diff: bool = False,
    source_private: bool = False,
) -> Change:
    """Plan for `path` to hold exactly `content` with the given attributes. The diff is
    masked when the old or new content is not world-readable, unless show_diff."""
    change = _content_change(path, content, st, mode, owner, group, what)
    hidden = None if show_diff or not change.diff else hidden_diff_reason(path, st, mode, source_private)
    if hidden is None:
        return change
    old = f"{st.size} -> " if st.exists and st.type == "file" else ""
    masked = f"diff hidden: {hidden} ({old}{len(content)} bytes); set show_diff: true to show it\n"
    return dataclasses.replace(change, diff=masked)


def _content_change(
    path: str, content: bytes, st: FileState, mode: str | None, owner: str | None, group: str | None, what: str
) -> Change:
    if st.type == "directory":
        return Change("blocked", f"{path} is a directory", reason=f"{path} is a directory, not a file")
    if not st.exists or st.type == "link":
        blocked = st.cannot_make(path, needs_folder=False)
        if blocked is not None:
            return blocked
        put = Action("put", path=path, content=content, mode=_norm_mode(mode))
        extra, _ = attr_actions(path, None, None, owner, group)
        return Change(
            "create", f"create {what} {path} ({len(content)} bytes)", (put, *extra), diff=text_diff(path, None, content)
        )
    same = (st.content == content) if st.content is not None else (st.sha256 == hashlib.sha256(content).hexdigest())
    actions: list[Action] = []
    notes: list[str] = []
    diff = ""
    if not same:
        actions.append(Action("put", path=path, content=content, mode=_norm_mode(mode) or st.mode))
        notes.append("content")
        diff = (
            text_diff(path, st.content, content)
            if st.content is not None
            else (f"content differs (sha256 {st.sha256} -> {hashlib.sha256(content).hexdigest()})\n")
        )
        attrs, attr_notes = attr_actions(path, st, None, owner, group)
        if _norm_mode(mode) and st.mode != _norm_mode(mode):
            attr_notes.insert(0, f"mode {st.mode} -> {_norm_mode(mode)}")
    else:
        attrs, attr_notes = attr_actions(path, st, mode, owner, group)
    actions += attrs
    notes += attr_notes
    if not actions:
        return Change("noop", f"{what} {path} is up to date")
    return Change("update", f"update {what} {path} ({', '.join(notes)})", tuple(actions), diff=diff)


# ---------------------------------------------------------------- run


class Run(StepKind):
    name: ClassVar[str] = "run"
    transports = SHELL_TRANSPORTS
    shell_fields = frozenset({"command", "unless", "only_if"})
    late_fields = frozenset({"changed_when", "failed_when"})

    def normalize(self, params: Any) -> dict[str, Any]:
        out = {"command": params} if isinstance(params, str) else dict(params)
        for key in ("changed_when", "failed_when"):  # `changed_when: false`, as Ansible users write it
            if isinstance(out.get(key), bool):
                out[key] = "true" if out[key] else "false"
        return out

    def read_only(self, params: dict[str, Any]) -> bool:
        flag = params.get("changed_when")
        return flag is False or (isinstance(flag, str) and flag.strip().lower() == "false")

    def probes(self, params: dict[str, Any], ctx: StepContext) -> list[Probe]:
        out = []
        for key in ("creates", "removes"):
            if params.get(key):
                out.append(F.ask(ctx, "exists", str(params[key]), key=key))
        for key in ("unless", "only_if"):
            if params.get(key):
                out.append(F.ask(ctx, "check", self._wrap(params[key], params, stdin=False), key=key))
        return out

    @staticmethod
    def _wrap(command: str, params: dict[str, Any], stdin: bool = True) -> str:
        """`cd` and `export` ahead of the command; a secret env value is exported from the
        variable the transport fills from stdin, so it never shows in argv."""
        prefix = []
        secret_env: list[Any] = [command]
        if params.get("chdir"):
            prefix.append(f"cd -- {q(str(params['chdir']))} || exit 1")
        env = params.get("env") or {}
        if env:
            bad = [k for k in env if not _ENV_NAME.match(str(k))]
            if bad:
                raise PrepareError(f"env: {bad[0]!r} is not an environment variable name")
            words = []
            for k, v in env.items():
                value = v if isinstance(v, secrets.Secret) else "" if v is None else str(v)
                word = render.shell_word(value)
                secret_env.append(word)
                words.append(f"{k}={word}")
            prefix.append("export " + " ".join(words))
        return ShellCommand("; ".join([*prefix, command]), command_env(*secret_env))

    def plan(self, params: dict[str, Any], facts: Facts, ctx: StepContext) -> Change:
        command = self._wrap(params["command"], params)
        stdin = params.get("stdin")
        action = Action("cmd", command=command, stdin=stdin.encode() if isinstance(stdin, str) else None)
        if params.get("creates") and facts["creates"].rc == 0:
            return Change("noop", f"skip: {params['creates']} exists")
        if params.get("removes") and facts["removes"].rc != 0:
            return Change("noop", f"skip: {params['removes']} does not exist")
        if params.get("unless") and facts["unless"].rc == 0:
            return Change("noop", "skip: the 'unless' check succeeded")
        if params.get("only_if") and facts["only_if"].rc != 0:
            return Change("noop", f"skip: the 'only_if' check failed (rc {facts['only_if'].rc})")
        if self.read_only(params):
            return Change("run", "will run (read-only: changed_when is false)", (action,), data={"read_only": True})
        guarded = any(params.get(k) for k in ("creates", "removes", "unless", "only_if"))
        summary = "will run" if guarded else "will run (no guard: not idempotent)"
        return Change("run", summary, (action,))

    def view(self, params: dict[str, Any], facts: Facts, overlay: Overlay) -> Facts:
        for key in ("creates", "removes"):
            if params.get(key):
                facts = view_path(str(params[key]), facts, overlay, exists=(key,))
        checks = [k for k in ("unless", "only_if") if params.get(k)]
        if checks and overlay.changes:
            raise OverlayUnknown(
                f"its '{checks[0]}' check runs after step '{overlay.changes[-1]}' changes the host; "
                "its answer then cannot be known now"
            )
        return facts

    def effects(self, params: dict[str, Any], change: Change, facts: Facts, overlay: Overlay) -> list[Effect]:
        if change.status != "run" or self.read_only(params):
            return []  # a command is opaque: only what it declares is known
        out = []
        if params.get("creates"):
            out.append(Effect(("path", str(params["creates"])), PathState("exists"), exact=False))
        if params.get("removes"):
            out.append(Effect(("path", str(params["removes"])), ABSENT, tree=True, exact=False))
        return out

    def outcome(
        self,
        params: dict[str, Any],
        change: Change,
        results: list[CommandResult],
        evaluate: Callable[[str, dict[str, Any]], Any],
    ) -> tuple[str, str]:
        r = results[-1] if results else CommandResult(0)
        names = {
            "rc": r.rc,
            "stdout": r.out.rstrip("\r\n"),
            "stderr": r.err.rstrip("\r\n"),
            "stdout_lines": r.out.splitlines(),
        }
        failed = r.rc != 0
        if params.get("failed_when") is not None:
            failed = bool(evaluate(str(params["failed_when"]), names))
        if failed:
            tail = (r.err or r.out).strip().splitlines()
            return "failed", f"rc {r.rc}" + (f": {tail[-1]}" if tail else "")
        changed = True
        if params.get("changed_when") is not None:
            changed = bool(evaluate(str(params["changed_when"]), names))
        return ("changed" if changed else "ok"), ""


# ---------------------------------------------------------------- file


class File(StepKind):
    name: ClassVar[str] = "file"
    transports = SHELL_TRANSPORTS
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
        if state == "absent":
            if not st.exists:
                return Change("noop", f"{path} is absent")
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
                extra, _ = attr_actions(path, None, mode, owner, group)
                return Change(
                    "create", f"create directory {path}", (Action("cmd", command=f"mkdir -p -- {q(path)}"), *extra)
                )
            acts, notes = attr_actions(path, st, mode, owner, group)
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
            return content_change(path, content, st, mode, owner, group, show_diff=bool(params.get("show_diff")))
        if st.type == "directory":
            return Change("blocked", f"{path} is a directory", reason=f"{path} is a directory, not a file")
        if not st.exists:
            blocked = st.cannot_make(path, needs_folder=True)
            if blocked is not None:
                return blocked
            acts, _ = attr_actions(path, None, mode, owner, group)
            return Change("create", f"create empty file {path}", (Action("cmd", command=f"touch -- {q(path)}"), *acts))
        acts, notes = attr_actions(path, st, mode, owner, group)
        if not acts:
            return Change("noop", f"file {path} is up to date")
        return Change("update", f"update file {path} ({', '.join(notes)})", tuple(acts))


# ---------------------------------------------------------------- line


class Line(StepKind):
    name: ClassVar[str] = "line"
    transports = SHELL_TRANSPORTS
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
                "unknown", f"{path} is too large to edit", reason=f"{path} is larger than {MAX_CONTENT_PROBE} bytes"
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
        change = content_change(path, new, st, params.get("mode"), None, None, show_diff=bool(params.get("show_diff")))
        return Change("create" if not st.exists else "update", f"{verb} {path}", change.actions, diff=change.diff)


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
    transports = SHELL_TRANSPORTS
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
        )


class PrepareError(Exception):
    """A local input of a step (template, source file) could not be read."""


def read_source(
    ctx: StepContext,
    params: dict[str, Any],
    what: str,
    default_limit: int = sources.DEFAULT_MAX_SIZE,
    contain: bool = True,
) -> sources.Source:
    """The step's `src`, contained and bounded (runner/steps/sources.py); PrepareError if not."""
    try:
        return sources.read_source(ctx.playbook_dir, str(params["src"]), what, default_limit, contain)
    except sources.SourceError as exc:
        raise PrepareError(str(exc)) from None


def check_accounts(params: dict[str, Any]) -> None:
    """owner / group are user and group names (or ids), never options to chown."""
    for key in ("owner", "group"):
        if params.get(key) is not None:
            problem = names.account(params[key], key)
            if problem:
                raise PrepareError(problem)


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
    transports = SHELL_TRANSPORTS

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
    transports = SHELL_TRANSPORTS

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


for _kind in (Run(), File(), Line(), Template(), Copy(), Package(), Service()):
    register(_kind)
