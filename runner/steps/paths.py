"""Paths through the overlay: the probe answers a path's probes would give once the steps
planned before have run (synthesised from runner.overlay states), and the planned effects
of the path step kinds. Pure; imports only model, overlay, the step base and facts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from runner.model import Change, ProbeResult
from runner.overlay import ABSENT, Effect, Overlay, PathState, Unknown, norm_path, parents
from runner.steps.base import Facts, OverlayUnknown
from runner.steps.facts import MAX_CONTENT, read_stat, stat_text


def _real_type(facts: Facts, stat_key: str) -> str:
    answer = facts.get(stat_key)
    if answer is None:
        return "absent"
    return (answer.text.split() or ["absent"])[0]


def _parent_flag(path: str, overlay: Overlay, real: str) -> str:
    """`noparent`, `notdir X` or "" for an absent path, once the earlier steps ran (`real`:
    what the host says now, for what no earlier step touched)."""
    flag = ""
    for folder in parents(norm_path(path)):
        st = overlay.path(folder)
        if st is None:
            return flag or real
        if isinstance(st, Unknown):
            raise OverlayUnknown(st.reason)
        if st.type == "directory":
            return flag
        if st.type == "absent":
            flag = "noparent"
            continue
        return f"notdir {folder}"
    return flag


def view_path(
    path: str,
    facts: Facts,
    overlay: Overlay,
    *,
    stat: str = "stat",
    content: str = "content",
    sha: str = "sha256",
    exists: tuple[str, ...] = (),
) -> Facts:
    """`facts` as they will be once the earlier steps ran. `exists` names `test -e` probes."""
    state = overlay.path(path)
    real_flag = ""
    if stat in facts and _real_type(facts, stat) == "absent":
        real_flag = facts[stat].text.strip().partition(" ")[2]
    if state is None:
        if stat in facts and _real_type(facts, stat) == "absent":
            flag = _parent_flag(path, overlay, real_flag)
            if flag != real_flag:
                return {**facts, stat: ProbeResult(0, stat_text(ABSENT, flag=flag))}
        return facts
    if isinstance(state, Unknown):
        raise OverlayUnknown(state.reason)
    assert isinstance(state, PathState)
    if state.implied and _real_type(facts, stat) != "absent":
        return facts  # a parent folder that already exists keeps its real attributes
    out = dict(facts)
    for key in exists:
        if key in facts:
            out[key] = ProbeResult(0 if state.type != "absent" else 1)
    if state.type == "exists":
        wanted = [k for k in (stat, content, sha) if k in facts]
        if wanted:
            raise OverlayUnknown(f"{path} is made by step '{overlay.by(('path', norm_path(path)))}' "
                                 "(a command): its type and content are not known before it runs")
        return out
    if stat in facts:
        flag = _parent_flag(path, overlay, real_flag) if state.type == "absent" else ""
        out[stat] = ProbeResult(0, stat_text(state, flag=flag))
    is_file = state.type == "file"
    if content in facts:
        if is_file and state.content is not None and len(state.content) <= MAX_CONTENT:
            out[content] = ProbeResult(0, state.content)
        elif is_file and state.content is None and state.sha256 is None and state.host_content:
            out[content] = facts[content]  # the plan did not change it: the host's answer holds
        elif is_file and state.content is None and state.sha256 is None:
            raise OverlayUnknown(f"the content of {path} after step '{overlay.by(('path', norm_path(path)))}' "
                                 "is not known")
        else:
            out[content] = ProbeResult(1)
    if sha in facts and is_file and state.content is None and state.sha256 is None and state.host_content:
        out[sha] = facts[sha]
    elif sha in facts:
        digest = state.sha256 or (hashlib.sha256(state.content).hexdigest() if state.content is not None else None)
        out[sha] = ProbeResult(0, (digest + "\n").encode()) if is_file and digest else ProbeResult(1)
    return out


# ---------------------------------------------------------------- effects


def _parse(facts: Facts) -> PathState:
    """The path as the (viewed) stat/content/sha256 answers describe it."""
    info = read_stat(facts.get("stat"))
    typ = info.type or "absent"
    if typ == "absent":
        return ABSENT
    content = None
    c = facts.get("content")
    if c is not None and c.rc == 0:
        content = c.stdout
    sha = facts.get("sha256")
    digest = sha.text.strip() if sha is not None and sha.rc == 0 else None
    return PathState(
        typ,
        content=content if typ == "file" else None,
        sha256=digest if typ == "file" else None,
        host_content=typ == "file" and content is None and digest is None and "content" not in facts,
        size=info.size or 0,
        mode=info.mode,
        owner=info.owner,
        group=info.group,
        link_target=(info.link_target or None) if typ == "link" else None,
    )


def _put_content(change: Change) -> bytes | None:
    for a in change.actions:
        if a.kind == "put":
            return a.content
    return None


def _norm_mode(mode: Any) -> str | None:
    return None if mode is None else format(int(str(mode), 8), "04o")


def file_effects(
    path: str,
    change: Change,
    facts: Facts,
    overlay: Overlay,
    *,
    state: str,
    mode: Any = None,
    owner: str | None = None,
    group: str | None = None,
    link_target: str | None = None,
    exact: bool = True,
    goal: Callable[[Any], bool] | None = None,
) -> list[Effect]:
    """The state `path` is left in by a file/line/template/copy change (facts: as viewed)."""
    key = ("path", path)
    if change.status == "unknown":
        return [Effect(key, Unknown(""), exact=False)]
    if change.status in ("blocked", "skip"):
        return []
    before = _parse(facts)
    earlier = overlay.path(path)
    if before.host_content and isinstance(earlier, PathState) and earlier.type == "file":
        # the step did not ask for the content: what an earlier step left is what it has
        before = replace(before, content=earlier.content, sha256=earlier.sha256, size=earlier.size,
                         host_content=earlier.host_content)
    identity = overlay.identity
    if change.status == "noop":  # as it is: recorded, so a later step that undoes it is seen
        return [Effect(key, before, exact=exact, goal=goal)]
    if state == "absent":
        return [Effect(key, ABSENT, tree=True, exact=exact, goal=goal)]
    new_owner = identity.user if identity else None
    new_group = identity.group if identity else None

    def attrs(st: PathState) -> PathState:
        return replace(st, mode=_norm_mode(mode) or st.mode, owner=owner or st.owner, group=group or st.group)

    if state == "directory":
        if before.type == "directory":
            return [Effect(key, attrs(before), exact=exact, goal=goal)]
        made = PathState("directory", mode=identity.new_dir_mode() if identity else None,
                         owner=new_owner, group=new_group, fresh=True)
        return [Effect(key, attrs(made), exact=exact, goal=goal)]
    if state == "link":
        return [Effect(key, PathState("link", link_target=link_target, mode="0777", owner=new_owner,
                                      group=new_group), exact=exact, goal=goal)]
    content = _put_content(change)
    if content is None:
        if before.type == "absent":  # touch
            base = PathState("file", content=b"", size=0, mode=identity.new_file_mode() if identity else None,
                             owner=new_owner, group=new_group)
        else:
            base = before
        return [Effect(key, attrs(base), exact=exact, goal=goal)]
    if before.type == "file":
        base = replace(before, content=content, sha256=None, size=len(content))
    else:
        base = PathState("file", content=content, size=len(content),
                         mode=identity.new_file_mode() if identity else None, owner=new_owner, group=new_group)
    return [Effect(key, attrs(base), exact=exact, goal=goal)]
