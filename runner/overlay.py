"""Planned state per host: what the steps planned so far will have left on the host, so
every later step plans, diffs and fingerprints against the state it will really find.

Pure data and rules: no I/O, imports only runner.model. Step kinds say what their change
does (`effects`) and read their facts through the overlay (`view`); the planner owns one
Overlay per host and threads it through the steps in order.
"""

from __future__ import annotations

import bisect
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, ...]


@dataclass(frozen=True)
class Unknown:
    """The state of a resource after an earlier step cannot be known offline."""

    reason: str


@dataclass(frozen=True)
class Identity:
    """Who writes new files on the host, and with which default permissions."""

    user: str
    group: str
    umask: int = 0o022

    def new_file_mode(self) -> str:
        return format(0o666 & ~self.umask, "04o")

    def new_dir_mode(self) -> str:
        return format(0o777 & ~self.umask, "04o")


@dataclass(frozen=True)
class PathState:
    """A path as a planned step leaves it."""

    type: str  # absent | file | directory | link | exists (made by an opaque command)
    content: bytes | None = None  # file: the bytes, when known
    sha256: str | None = None  # file: when only the digest is known
    size: int = 0
    mode: str | None = None  # "0644"
    owner: str | None = None
    group: str | None = None
    link_target: str | None = None
    fresh: bool = False  # directory: made by the plan, holds only what the overlay says
    implied: bool = False  # directory made as a parent (mkdir -p): real state wins if it exists
    host_content: bool = False  # file whose content the plan did not touch: the host's answer holds


ABSENT = PathState("absent")


@dataclass(frozen=True)
class Effect:
    """One planned effect: `key` will be in `state` (a PathState, Unknown, or any value)."""

    key: Key
    state: Any
    tree: bool = False  # path keys: the state covers everything below the path too
    exact: bool = True  # the step manages this state exactly (a later change fights it)
    # what the step wants of the state, when less than all of it (a line in a file): a later
    # step fights it only when the state it leaves no longer holds this
    goal: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Conflict:
    """Two steps manage one thing so that the playbook can never converge."""

    first: str  # step instance key
    second: str
    what: str


@dataclass
class _Entry:
    state: Any
    by: str  # the step instance whose effect this is
    exact: bool
    goal: Callable[[Any], bool] | None = None


def norm_path(path: str) -> str:
    p = posixpath.normpath(path) if path else path
    return "/" + p.lstrip("/") if p.startswith("//") else p


def parents(path: str) -> list[str]:
    """The folders above `path`, nearest first, without `/` (which always exists)."""
    out: list[str] = []
    p = posixpath.normpath(path) if path else path
    while True:
        parent = posixpath.dirname(p)
        if not parent or parent in (p, "/"):
            return out
        out.append(parent)
        p = parent


@dataclass
class Overlay:
    """One host's planned state, keyed by resource: ("path", p), ("pkg", name), ..."""

    identity: Identity | None = None
    _entries: dict[Key, _Entry] = field(default_factory=dict)
    # the path keys by path, and their paths sorted: a folder's subtree is one bisect away
    _by_path: dict[str, set[Key]] = field(default_factory=dict)
    _paths: list[str] = field(default_factory=list)

    def _put(self, key: Key, entry: _Entry) -> None:
        if key[0] == "path" and key not in self._entries:
            keys = self._by_path.get(key[1])
            if keys is None:
                keys = self._by_path[key[1]] = set()
                bisect.insort(self._paths, key[1])
            keys.add(key)
        self._entries[key] = entry

    def _below(self, prefix: str) -> list[Key]:
        out: list[Key] = []
        i = bisect.bisect_left(self._paths, prefix)
        while i < len(self._paths) and self._paths[i].startswith(prefix):
            out += self._by_path[self._paths[i]]
            i += 1
        return out

    def _drop(self, key: Key) -> None:
        del self._entries[key]
        keys = self._by_path[key[1]]
        keys.discard(key)
        if not keys:
            del self._by_path[key[1]]
            self._paths.pop(bisect.bisect_left(self._paths, key[1]))
    conflicts: list[Conflict] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # instances planned to change the host, in order

    # ------------------------------------------------------------ reading
    def get(self, key: Key) -> Any:
        """The planned state of `key`: a value, Unknown, or None when no step touched it.
        For paths, a removed or freshly made folder decides the state of what is below."""
        entry = self._entries.get(key)
        if entry is not None:
            return entry.state
        if key[0] != "path":
            return None
        for parent in parents(key[1]):
            up = self._entries.get(("path", parent))
            if up is None:
                continue
            st = up.state
            if isinstance(st, Unknown):
                return st
            if st.type in ("absent", "file"):
                return ABSENT
            if st.type == "directory" and st.fresh:
                return ABSENT
            if st.type == "link":
                return Unknown(f"{parent} is a link made by step '{up.by}'")
            if st.type == "exists":
                return Unknown(f"{parent} is made by step '{up.by}' (a command): what is below it is not known")
            return None
        return None

    def path(self, path: str) -> Any:
        return self.get(("path", norm_path(path)))

    def by(self, key: Key) -> str:
        entry = self._entries.get(key)
        return entry.by if entry else ""

    # ------------------------------------------------------------ writing
    def record(self, by: str, effects: list[Effect], *, uncertain: str = "") -> None:
        """Record the effects of step instance `by`. `uncertain`: the step may or may not
        run (its `when` waits for a result), so what it touches becomes Unknown."""
        for eff in effects:
            key = (eff.key[0], norm_path(eff.key[1]), *eff.key[2:]) if eff.key[0] == "path" else eff.key
            state = Unknown(uncertain) if uncertain else eff.state
            if isinstance(state, Unknown) and not state.reason:
                state = Unknown(f"step '{by}' before it is decided at apply")
            self._check_conflict(by, key, state)
            if key[0] == "path" and (eff.tree or isinstance(state, Unknown)):
                prefix = key[1].rstrip("/") + "/"
                for k in self._below(prefix):
                    if not isinstance(state, Unknown):  # what a step made below goes with the folder
                        self._check_conflict(by, k, ABSENT)
                    self._drop(k)
            if key[0] == "path" and isinstance(state, PathState) and state.type != "absent":
                self._imply_parents(by, key[1])
            self._put(key, _Entry(state, by, eff.exact, eff.goal))

    def _imply_parents(self, by: str, path: str) -> None:
        for parent in parents(path):
            current = self.get(("path", parent))
            if isinstance(current, PathState) and current.type == "directory":
                return
            if current is None:
                if self.identity is None:
                    return
                self._put(("path", parent), _Entry(
                    PathState(
                        "directory",
                        mode=self.identity.new_dir_mode(),
                        owner=self.identity.user,
                        group=self.identity.group,
                        implied=True,
                    ),
                    by,
                    False,
                ))
                continue
            # absent (removed or below a removed folder): made again, empty
            self._check_conflict(by, ("path", parent), PathState("directory"))
            ident = self.identity
            self._put(("path", parent), _Entry(
                PathState(
                    "directory",
                    mode=ident.new_dir_mode() if ident else None,
                    owner=ident.user if ident else None,
                    group=ident.group if ident else None,
                    fresh=True,
                ),
                by,
                False,
            ))

    def _check_conflict(self, by: str, key: Key, state: Any) -> None:
        entry = self._entries.get(key)
        if entry is None or not (entry.exact or entry.goal) or _same_step(entry.by, by):
            return
        if isinstance(state, Unknown) or isinstance(entry.state, Unknown):
            return
        fights = not entry.goal(state) if entry.goal is not None else _differs(entry.state, state)
        if fights:
            what = f"{key[1]}" if key[0] == "path" else " ".join(key)
            self.conflicts.append(Conflict(entry.by, by, what))


def _same_step(a: str, b: str) -> bool:
    return a.split("[", 1)[0] == b.split("[", 1)[0]


def _differs(before: Any, after: Any) -> bool:
    if isinstance(before, PathState) and isinstance(after, PathState):
        if before.type != after.type:
            return True
        if before.type == "file":
            if before.content is not None and after.content is not None:
                return before.content != after.content
            return bool(before.sha256 and after.sha256 and before.sha256 != after.sha256)
        if before.type == "link":
            return before.link_target != after.link_target
        return False
    return bool(before != after)
