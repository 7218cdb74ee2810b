"""What a path holds, and the plan that makes it hold what a step wants: the facts a path
step asks, their parsed answers (FileState), content and attribute changes, diffs.

Pure helpers for the file kinds (runner/steps/shell_files.py); no step kinds, no host I/O.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import posixpath
import shlex
from typing import Any

from runner.model import Action, Change, Probe
from runner.steps import facts as F
from runner.steps.base import Facts, StepContext
from runner.steps.file_facts import PLAIN_SHELLS
from runner.transports import capabilities

q = shlex.quote


def _norm_mode(mode: Any) -> str | None:
    if mode is None:
        return None
    return format(int(str(mode), 8), "04o")


def by_sftp(ctx: StepContext) -> bool:
    """Whether this host's mkdir, chmod and rm of one path are SFTP requests (no process on
    the host) rather than commands: an SSH host whose commands do not run under sudo (SFTP
    acts as the login user) through the plain sh. The plan shows which, as it is sent. A
    step's own `sudo:` decides over the host's."""
    host = ctx.host
    sudo = host.settings.get("sudo") if ctx.sudo is None else ctx.sudo
    return ("sftp" in capabilities(host.transport) and not sudo
            and str(host.settings.get("shell") or "") in PLAIN_SHELLS)


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
    path: str, st: FileState | None, mode: str | None, owner: str | None, group: str | None, sftp: bool = False
) -> tuple[list[Action], list[str]]:
    """chmod/chown actions for attributes that differ (all of them when st is None); the
    chmod as an SFTP request when `sftp` (chown names accounts: always the command)."""
    actions: list[Action] = []
    notes: list[str] = []
    want_mode = _norm_mode(mode)
    if want_mode and (st is None or st.mode != want_mode):
        if sftp:
            actions.append(Action("sftp", method="chmod", path=path, mode=want_mode))
        else:
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
    sftp: bool = False,
) -> Change:
    """Plan for `path` to hold exactly `content` with the given attributes. The diff is
    masked when the old or new content is not world-readable, unless show_diff."""
    change = _content_change(path, content, st, mode, owner, group, what, sftp)
    hidden = None if show_diff or not change.diff else hidden_diff_reason(path, st, mode, source_private)
    if hidden is None:
        return change
    old = f"{st.size} -> " if st.exists and st.type == "file" else ""
    masked = f"diff hidden: {hidden} ({old}{len(content)} bytes); set show_diff: true to show it\n"
    return dataclasses.replace(change, diff=masked)


def _content_change(
    path: str, content: bytes, st: FileState, mode: str | None, owner: str | None, group: str | None, what: str,
    sftp: bool,
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
        attrs, attr_notes = attr_actions(path, st, mode, owner, group, sftp)
    actions += attrs
    notes += attr_notes
    if not actions:
        return Change("noop", f"{what} {path} is up to date")
    return Change("update", f"update {what} {path} ({', '.join(notes)})", tuple(actions), diff=diff)
