"""Safety rule checks on file trees: rm-root (rm, find, wipe), chmod-root, chown-root.
Pure; imports .paths, .options and .wrappers only.
"""

from __future__ import annotations

import re

from runner.safety.options import _base, _Item
from runner.safety.paths import _MERGED_USR, _comps, _match, _protected, _resolve, _system
from runner.safety.wrappers import _unwrap


def _r_rm(name: str, args: list[str]) -> list[_Item]:
    recursive = nopreserve = done = False
    targets: list[str] = []
    for a in args:
        if not done and a == "--":
            done = True
        elif not done and a.startswith("--"):
            key = a[2:].split("=", 1)[0]
            if key and "recursive".startswith(key):
                recursive = True
            elif len(key) >= 2 and "no-preserve-root".startswith(key):
                nopreserve = True
        elif not done and len(a) > 1 and a[0] == "-":
            recursive = recursive or "r" in a or "R" in a
        else:
            targets.append(a)
    if recursive and (nopreserve or any(_protected(t, home=True) for t in targets)):
        return [("rule", "rm-root")]
    for t in targets:  # rm -f /* or rm /bin: the merged-/usr symlinks hold the system up
        comps = _comps(t)
        if comps is not None and len(comps) == 1 and _match(comps[0], _MERGED_USR):
            return [("rule", "rm-root")]
    return []


_FIND_NEUTRAL = frozenset({"-depth", "-d", "-xdev", "-mount", "-noleaf", "-daystart", "-follow",
                           "-ignore_readdir_race", "-noignore_readdir_race", "-print", "-print0",
                           "-warn", "-nowarn"})  # fmt: skip
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
# programs that destroy or take over the files find hands them
_DESTROYERS = frozenset({"rm", "unlink", "rmdir", "shred", "truncate", "srm", "wipe", "chmod", "chown",
                         "chgrp", "mv", "dd", "setfacl", "chattr"})  # fmt: skip
_DESTROYER_WORD = re.compile(r"(?<![\w.-])(?:" + "|".join(sorted(_DESTROYERS)) + r")(?![\w.-])")


def _destroys(cmd: list[str]) -> bool:
    """Does an -exec command (through wrappers and sh -c scripts) destroy the files it gets?"""
    stages, script = _unwrap(cmd, [])
    if any(_base(st[0]) in _DESTROYERS for st in stages if st):
        return True
    return script is not None and any(_DESTROYER_WORD.search(t) for t in script.texts)


def _r_find(name: str, args: list[str]) -> list[_Item]:
    """rm-root: find from /, a system directory or a home with a destructive action anywhere in
    its expression (-delete, -exec/-execdir/-ok rm ...). From / or a system directory filters
    do not help (`find / -name core -delete` is refused); from a home they do."""
    i, n = 0, len(args)
    while i < n and (args[i] in ("-H", "-L", "-P", "-D") or args[i].startswith("-O")):
        i += 2 if args[i] == "-D" else 1
    starts: list[str] = []
    while i < n and not args[i].startswith(("-", "(", "!", ")")):
        starts.append(args[i])
        i += 1
    items: list[_Item] = []
    filtering = destroys = False
    expr = args[i:]
    j = 0
    while j < len(expr):
        a = expr[j]
        if a in _FIND_EXEC:
            k = j + 1
            cmd: list[str] = []
            while k < len(expr) and expr[k] not in (";", "+"):
                cmd.append(expr[k])
                k += 1
            if cmd:
                items.append(("argv", cmd))
                destroys = destroys or _destroys(cmd)
            j = k + 1
            continue
        if a == "-delete":
            destroys = True
        elif a in ("-maxdepth", "-mindepth"):
            j += 1
        elif a not in _FIND_NEUTRAL:
            filtering = True
        j += 1
    if destroys and starts:
        system = any(_system(c) for s in starts for c in _resolve(s))
        if system or (not filtering and any(_protected(s, home=True) for s in starts)):
            items.insert(0, ("rule", "rm-root"))
    return items


def _world_writable(mode: str) -> bool:
    if re.fullmatch(r"[0-7]{1,4}", mode):
        return int(mode[-1]) & 2 != 0 or int(mode, 8) == 0
    return any(re.fullmatch(r"[ao]*[+=][rwxXst]*w[rwxXst]*", part) for part in mode.split(","))


def _r_chmod(name: str, args: list[str]) -> list[_Item]:
    recursive = reference = done = False
    ops: list[str] = []
    for a in args:
        if not done and a == "--":
            done = True
        elif not done and a.startswith("--"):
            key = a[2:].split("=", 1)[0]
            recursive = recursive or (len(key) >= 3 and "recursive".startswith(key))
            reference = reference or key.startswith("reference")
        elif not done and len(a) > 1 and a[0] == "-" and set(a[1:]) <= set("cfvR"):
            recursive = recursive or "R" in a
        else:
            ops.append(a)  # includes modes such as -x or -rwx
    mode, targets = (None, ops) if reference else ((ops[0] if ops else None), ops[1:])
    comps = [c for t in targets for c in _resolve(t)]
    if recursive and any(_system(c) for c in comps):
        return [("rule", "chmod-root")]
    if mode is not None and _world_writable(mode) and any(c in ([], ["*"]) for c in comps):
        return [("rule", "chmod-root")]
    return []


def _r_chown(name: str, args: list[str]) -> list[_Item]:
    recursive = reference = done = False
    ops: list[str] = []
    for a in args:
        if not done and a == "--":
            done = True
        elif not done and a.startswith("--"):
            key = a[2:].split("=", 1)[0]
            recursive = recursive or (len(key) >= 3 and "recursive".startswith(key))
            reference = reference or key.startswith("reference")
        elif not done and len(a) > 1 and a[0] == "-":
            recursive = recursive or "R" in a
        else:
            ops.append(a)
    targets = ops if reference else ops[1:]
    comps = [c for t in targets for c in _resolve(t)]
    if any(c == [] for c in comps) or (recursive and any(_system(c) for c in comps)):
        return [("rule", "chown-root")]
    return []
