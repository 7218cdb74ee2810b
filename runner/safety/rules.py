"""Safety: the built-in rule names, user forbid/allow entries and the Rules guard that walks a
command (nested scripts, pipes, redirects). Pure; imports runner.errors and its siblings only.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

from runner.errors import InvalidInput
from runner.safety.handlers import _handler, _piped_data, _redirect_rule
from runner.safety.lexer import ParseError
from runner.safety.options import _base, _join
from runner.safety.parse import _parse
from runner.safety.paths import _GLOB_CHARS, destination_rule
from runner.safety.wrappers import _unwrap

BUILTIN_RULES: dict[str, str] = {
    "rm-root": "recursive delete of /, a top-level system directory (/etc, /usr, /home, ...), "
    "a whole /usr/* or /var/lib directory, or a home directory (~, $HOME, ~/..); find from / or a "
    "system directory with -delete or -exec rm",
    "mkfs": "making a file system or swap on a device: mkfs*, mke2fs, mkswap, mkdosfs, "
    "cryptsetup luksFormat, bcachefs format on /dev/... or on a target only known at run time",
    "dd-device": "dd (dcfldd, dc3dd, ddpt, sg_dd, qemu-img dd) writing to a block device "
    "(of=/dev/sda, /dev/nvme0n1, /dev/disk/..., LVM volumes)",
    "write-block-device": "tee, cp, mv, ddrescue, bmaptool, qemu-img convert, socat, flashcp or "
    "nandwrite writing to a block device",
    "redirect-block-device": "a shell redirection (>, >>, &>, <>) into a block device",
    "wipe-device": "shred, wipefs -a, blkdiscard, hdparm --security-erase, nvme format/sanitize/"
    "write-zeroes, sg_format, flash_erase on a device",
    "partition-table": "fdisk, gdisk, cfdisk, sfdisk, sgdisk or parted changing a device's "
    "partition table",
    "storage": "volume managers, RAID and pools: pvcreate/vgcreate/vgextend on a device, vgremove, "
    "lvremove, lvreduce; mdadm --create/--zero-superblock; zpool create/add/destroy/labelclear; "
    "zfs destroy of a dataset; btrfs device add, replace start, check --repair, rescue",
    "fork-bomb": "a shell function that runs itself in a pipe or in the background "
    "(:(){ :|:& };:), or fork in a loop in perl/python/ruby/php",
    "chmod-root": "recursive chmod of / or a system directory, or making / world-writable",
    "chown-root": "recursive chown/chgrp of / or a system directory, or chown of / itself",
    "power": "shutdown, reboot, poweroff, halt, init/telinit 0|1|6, systemctl reboot|poweroff|"
    "halt|suspend|... or start|isolate of a power target/unit, loginctl reboot, logind PowerOff/"
    "Reboot over D-Bus, kexec -e, writes to /proc/sysrq-trigger, /sys/power/state or "
    "/dev/watchdog, sysctl kernel.sysrq=N, rtcwake, pm-suspend, adb/fastboot reboot, svc power",
    "kill-all": "a signal to every process or init: kill -1 / kill 1 in any spelling, killall5, "
    "pkill/killall with a pattern matching everything, pkill -v, pkill -u root",
    "factory-reset": "Android factory resets: am broadcast FACTORY_RESET/MASTER_CLEAR, recovery "
    "--wipe_data, fastboot -w/erase/format/flashing unlock, twrp wipe data, cmd testharness enable",
    "kernel-file": "a file step (file, copy, template, line) writing, creating or removing a path "
    "under /proc, /sys or /dev (other than /dev/shm, /dev/mqueue, /dev/hugepages); checked at plan time",
}

# rules that only file destinations can break (not shell commands)
DESTINATION_RULES = frozenset({"kernel-file"})


@dataclass(frozen=True)
class _Entry:
    text: str  # as written; a user forbid entry is reported under this name
    builtin: str | None = None
    rx: re.Pattern[str] | None = None
    search: bool = False  # re: entries search; globs must match the whole text

    def matches(self, text: str) -> bool:
        if self.rx is None:
            return False
        return bool(self.rx.search(text) if self.search else self.rx.match(text))


def _compile(entry: str) -> _Entry:
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError("a safety rule must be a non-empty string")
    e = entry.strip()
    if e.startswith("rule:"):
        name = e[5:].strip()
        if name not in BUILTIN_RULES:
            raise ValueError(f"unknown built-in rule {name!r}" + _suggest(name))
        return _Entry(entry, builtin=name)
    if e.startswith("re:"):
        try:
            return _Entry(entry, rx=re.compile(e[3:]), search=True)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {e[3:]!r}: {exc}") from exc
    if e.startswith("glob:"):
        e = e[5:].strip()
    elif e in BUILTIN_RULES:
        return _Entry(entry, builtin=e)
    elif re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", e) and _suggest(e):
        raise ValueError(
            f"unknown built-in rule {e!r}{_suggest(e)}; to match a command of that name write "
            f"'glob:{e}'"
        )
    if not e:
        raise ValueError("empty glob pattern")
    return _Entry(entry, rx=re.compile(translate(" ".join(e.split()))))


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, BUILTIN_RULES, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_entry(entry: object) -> str | None:
    """Why a forbid/allow entry is invalid, or None; for located load-time diagnostics."""
    try:
        _compile(entry)  # type: ignore[arg-type]
    except ValueError as exc:
        return str(exc)
    return None


# ================================================================ the rules


@dataclass(frozen=True)
class Finding:
    """One rule that fired on one simple command, and whether an allow entry lifted it."""

    command: str  # the simple command, normalized
    rule: str
    blocked: bool
    lifted_by: str | None = None


@dataclass(frozen=True)
class Lift:
    """One `allow:` entry and the built-in rules it lifts, for the plan to show."""

    entry: str  # the allow entry as written
    rules: tuple[str, ...]  # built-in rules it lifts: the one it names, or those its own text fires
    everywhere: bool  # a rule name: lifted for every command; a pattern: only for what it matches
    wide: bool = False  # a glob with wildcards or a regex: may also lift any rule on what it matches
    pinned: tuple[str, ...] = ()  # rules it would lift but a forbid entry pins

    def __str__(self) -> str:
        if not self.rules and not self.wide:
            why = f": forbid pins {', '.join(map(repr, self.pinned))}" if self.pinned else ""
            return f"allow {self.entry!r} lifts no built-in rule{why}"
        names = ", ".join(repr(r) for r in self.rules)
        if self.everywhere:
            return f"allow {self.entry!r} lifts built-in rule {names} everywhere"
        what = (f"{names} and any other built-in rule" if self.rules else "any built-in rule") if self.wide else names
        return f"allow {self.entry!r} lifts {what} for the commands it matches"


@dataclass(frozen=True)
class _Event:
    rule: str
    command: str
    context: tuple[str, ...]  # texts an allow pattern may match to lift the rule
    user: bool = False  # a user forbid entry: final
    redirect: bool = False  # only an allow pattern that spells a redirection lifts it


_MAX_DEPTH = 8
_CACHE_SIZE = 4096
_UNQUOTE = str.maketrans("", "", "'\"\\")
_TRIGGER = re.compile(
    r"rm|delete|/dev|mk(?:fs|e2fs|swap|dosfs|ntfs|exfat)|luks|erase|wipe|blkdiscard|hdparm|nvme"
    r"|chmod|chown|chgrp|shutdown|reboot|poweroff|halt|init|systemctl|kexec|kill|svc|powerctl"
    r"|sysrq|fork|function|\(\s*\)|find|shred|unlink|truncate|pv|vg|lv|mdadm|zpool|zfs|btrfs"
    r"|bcachefs|socat|qemu|flash|nand|mtd|sg_|sysctl|rtcwake|pm-|zzz|busctl|dbus|login|power"
    r"|suspend|hibernat|sleep|/sys|/proc|/cache|recovery|fastboot|twrp|\bam\b|\bcmd\b|factory"
    r"|master|testharness|format",
    re.I,
)
_SEGMENTS = re.compile(r"[;&|\n()`{}]|\$\(")
_RAW_REDIRECT = re.compile(r"(?:&>>?|>>?|>\||<>)\s*(\S+)")
_RAW_BOMB = re.compile(r"([^\s(){};|&]+)\s*\(\s*\)\s*\{[^}]*?(?<![\w.:-])\1\s*[|&]")


# _TRIGGER's alternatives as plain words, for ASCII text (one regex with re.I and 70 branches
# takes ~0.5 ms over a 400-character probe script; these substring tests ~0.05 ms)
_MK = "mk(?:fs|e2fs|swap|dosfs|ntfs|exfat)"
_TRIGGER_REST = re.compile(rf"{_MK}|\(\s*\)|\bam\b|\bcmd\b")
_TRIGGER_WORDS = tuple(w for w in _TRIGGER.pattern.replace(_MK, "").split("|") if re.fullmatch(r"[a-z/_-]+", w))


def _may_trigger(command: str) -> bool:
    """Cheap pre-filter: can any built-in rule fire on this text at all? (_TRIGGER.search, fast)"""
    if "$'" in command or ("{" in command and "," in command):  # $'\x72m', {r,}m
        return True
    flat = command.replace("\\\n", "").translate(_UNQUOTE)
    if not flat.isascii():  # re.I folds some non-ASCII letters (K, ſ) onto ASCII ones
        return _TRIGGER.search(flat) is not None
    low = flat.lower()
    if any(w in low for w in _TRIGGER_WORDS):
        return True
    hinted = "mk" in low or "(" in low or "am" in low or "cmd" in low
    return hinted and _TRIGGER_REST.search(low) is not None


class Rules:
    """Built-in rules plus a user's forbid/allow entries; an instance is a CommandGuard.

    forbid entries are final: nothing lifts them. allow entries lift built-in rules only:
    by name (`power`) for every command, or by pattern for the commands it matches.
    """

    def __init__(self, forbid: Sequence[str] = (), allow: Sequence[str] = ()) -> None:
        for label, seq in (("forbid", forbid), ("allow", allow)):
            if isinstance(seq, str) or not isinstance(seq, Sequence):
                raise InvalidInput(f"safety rules: '{label}' must be a list of strings")
        self.forbid: tuple[str, ...] = tuple(forbid)
        self.allow: tuple[str, ...] = tuple(allow)
        problems: list[str] = []
        fb: list[_Entry] = []
        al: list[_Entry] = []
        for label, seq, out in (("forbid", self.forbid, fb), ("allow", self.allow, al)):
            for e in seq:
                try:
                    out.append(_compile(e))
                except ValueError as exc:
                    problems.append(f"{label} entry {e!r}: {exc}")
        if problems:
            raise InvalidInput(
                "invalid safety rules: " + "; ".join(problems),
                hint="an entry is a built-in rule name, a glob pattern or re:REGEX (docs/safety.md)",
            )
        self._pinned = frozenset(e.builtin for e in fb if e.builtin)
        self._forbid_pats = tuple(e for e in fb if e.rx is not None)
        self._allow_names = frozenset(e.builtin for e in al if e.builtin)
        self._allow_pats = tuple(e for e in al if e.rx is not None)
        self._cache: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"Rules(forbid={list(self.forbid)!r}, allow={list(self.allow)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rules):
            return NotImplemented
        return (self.forbid, self.allow) == (other.forbid, other.allow)

    def __hash__(self) -> int:
        return hash((self.forbid, self.allow))

    # ------------------------------------------------------------ building
    @classmethod
    def merge(cls, *rule_sets: Rules | None) -> Rules:
        """The union of several levels' rules (duplicates dropped, order kept)."""
        forbid: dict[str, None] = {}
        allow: dict[str, None] = {}
        for r in rule_sets:
            if r is not None:
                forbid.update(dict.fromkeys(r.forbid))
                allow.update(dict.fromkeys(r.allow))
        return cls(list(forbid), list(allow))

    @classmethod
    def from_levels(cls, *levels: Any) -> Rules:
        """Rules from several levels (inventory, group, host, playbook): each a mapping or an
        object with `forbid`/`allow` lists, or None."""
        sets: list[Rules] = []
        for lv in levels:
            if lv is None:
                continue
            if isinstance(lv, Mapping):
                f, a = lv.get("forbid") or (), lv.get("allow") or ()
            else:
                f, a = getattr(lv, "forbid", ()) or (), getattr(lv, "allow", ()) or ()
            sets.append(cls(f, a))
        return cls.merge(*sets)

    # ------------------------------------------------------------ checking
    def check(self, command: str) -> str | None:
        """The name of the rule that forbids `command`, or None when it may run."""
        try:
            return self._cache[command]
        except KeyError:
            pass
        result: str | None = None
        if self._forbid_pats or _may_trigger(command):
            try:
                result = self._first_block(self._events(command, 0, ()))
            except Exception:  # a parser bug must not crash a run: use the plain word scan
                result = self._first_block(self._fallback(command, ()))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[command] = result
        return result

    __call__ = check

    def explain(self, command: str) -> list[Finding]:
        """Every rule that fired on `command`, per simple command, and what lifted it."""
        out: dict[tuple[str, str], Finding] = {}
        for ev in self._events(command, 0, ()):
            blocked, by = self._judge(ev)
            out.setdefault((ev.command, ev.rule), Finding(ev.command, ev.rule, blocked, by))
        return list(out.values())

    def lifted(self) -> list[Lift]:
        """What each `allow:` entry lifts among the built-in rules (pinned rules excluded), in order."""
        out: list[Lift] = []
        for text in self.allow:
            e = _compile(text)
            if e.builtin is not None:
                held = e.builtin in self._pinned
                out.append(Lift(text, () if held else (e.builtin,), True, pinned=(e.builtin,) if held else ()))
                continue
            pattern = text.strip()
            regex = pattern.startswith("re:")
            glob = pattern[5:].strip() if pattern.startswith("glob:") else pattern
            fired: dict[str, None] = {}
            if not regex:
                for fill in ("", "x"):
                    sample = glob.replace("*", fill).replace("?", "x")
                    try:
                        fired.update(dict.fromkeys(f.rule for f in DEFAULT_RULES.explain(sample)))
                    except Exception:  # an odd sample must not break the plan
                        pass
            rules = tuple(r for r in fired if r not in self._pinned)
            pinned = tuple(r for r in fired if r in self._pinned)
            wide = regex or not _GLOB_CHARS.isdisjoint(glob)
            out.append(Lift(text, rules, False, wide=wide, pinned=pinned))
        return out

    def check_destination(self, path: str, *, remove: bool = False) -> str | None:
        """The rule that forbids a file step (file, copy, template, line) to write or create
        `path` (or to remove it, with remove=True), or None. Checked at plan time: the write as
        `cat > PATH` (what the transport checks at apply), a removal as `rm -rf -- PATH`, and
        'kernel-file' for /proc, /sys and /dev entries. forbid:/allow: apply as for commands."""
        command = f"rm -rf -- {shlex.quote(path)}" if remove else f"cat > {shlex.quote(path)}"
        rule = self.check(command)
        if rule is not None:
            return rule
        builtin = destination_rule(path)
        if builtin is None:
            return None
        shown = f"rm -rf -- {path}" if remove else f"cat > {path}"
        blocked, _ = self._judge(_Event(builtin, shown, (shown, path)))
        return builtin if blocked else None

    def _first_block(self, events: Iterable[_Event]) -> str | None:
        for ev in events:
            blocked, _ = self._judge(ev)
            if blocked:
                return ev.rule
        return None

    def _judge(self, ev: _Event) -> tuple[bool, str | None]:
        if ev.user or ev.rule in self._pinned:
            return True, None
        if ev.rule in self._allow_names:
            return False, ev.rule
        for e in self._allow_pats:
            if ev.redirect and ">" not in e.text:
                continue
            if any(e.matches(t) for t in ev.context):
                return False, e.text
        return True, None

    # ------------------------------------------------------------ walking the command
    def _forbid_hits(self, texts: Iterable[str], display: str, context: tuple[str, ...]) -> Iterator[_Event]:
        for t in texts:
            for e in self._forbid_pats:
                if e.matches(t):
                    yield _Event(e.text, display or t, context, user=True)

    def _events(self, text: str, depth: int, outer: tuple[str, ...]) -> Iterator[_Event]:
        if depth > _MAX_DEPTH:
            yield from self._fallback(text, outer)
            return
        try:
            parsed = _parse(text)
        except ParseError:
            yield from self._fallback(text, outer)
            return
        for name in parsed.bombs:
            yield _Event("fork-bomb", f"{name}() {{ {name}|{name}& }}", outer)
        for pipe in parsed.pipelines:
            ctx = outer
            if len(pipe) > 1:
                plain = " | ".join(_join(c.words) for c in pipe)
                core = " | ".join(_join((_unwrap(c.words, [])[0] or [[]])[-1]) for c in pipe)
                texts = tuple(dict.fromkeys((plain, core)))
                ctx = outer + texts
                yield from self._forbid_hits(texts, plain, ctx)
            for idx, cmd in enumerate(pipe):
                piped = _piped_data(pipe[idx - 1]) if idx else []
                yield from self._argv_events(cmd.words, [*cmd.stdin, *piped], depth, ctx, cmd.redirects)
        for sub in parsed.subs:
            yield from self._events(sub, depth + 1, outer)

    def _argv_events(
        self,
        argv: list[str],
        stdin: list[str],
        depth: int,
        outer: tuple[str, ...],
        redirects: Sequence[tuple[str, str]] = (),
    ) -> Iterator[_Event]:
        stages, script = _unwrap(argv, stdin)
        texts = tuple(dict.fromkeys(_join(s) for s in stages))
        redir = " ".join(f"{op} {t}" for op, t in redirects)
        rtexts = tuple(f"{t} {redir}" for t in texts) if texts else (redir,)
        display = texts[-1] if texts else redir
        ctx = outer + texts
        yield from self._forbid_hits(texts + (rtexts if redir else ()), display, ctx)
        for op, target in redirects:
            rule = _redirect_rule(op, target, [*(stages[-1] if stages else argv), *stdin])
            if rule:
                yield _Event(rule, rtexts[-1], outer + rtexts, redirect=True)
        if stages:
            final = stages[-1]
            handler = _handler(_base(final[0]))
            if handler is not None:
                for kind, value in handler(_base(final[0]), final[1:]):
                    if kind == "rule":
                        yield _Event(value, display, ctx)
                    elif depth >= _MAX_DEPTH:
                        continue
                    elif kind == "script":
                        yield from self._events(value, depth + 1, ctx)
                    else:
                        yield from self._argv_events(value, [], depth + 1, ctx)
        if script is not None:
            for s in script.texts:
                yield from self._events(s, depth + 1, ctx)

    def _fallback(self, text: str, outer: tuple[str, ...]) -> Iterator[_Event]:
        """Text we cannot parse: quotes ignored, every word that names a command we check is
        checked with the words after it (so `echo 'rm -rf /` is refused, conservatively)."""
        flat = text.replace("\\\n", "").translate(_UNQUOTE)
        m = _RAW_BOMB.search(flat)
        if m:
            yield _Event("fork-bomb", m.group(0), outer)
        norm = " ".join(flat.split())
        yield from self._forbid_hits((norm,), norm, outer)
        for seg in _SEGMENTS.split(flat):
            words = seg.split()
            if not words:
                continue
            seg_text = " ".join(words)
            yield from self._forbid_hits((seg_text,), seg_text, outer)
            for r in _RAW_REDIRECT.finditer(seg):
                rule = _redirect_rule(">", r.group(1), words)
                if rule:
                    yield _Event(rule, seg_text, (*outer, seg_text), redirect=True)
            for i, w in enumerate(words):
                name = _base(w)
                if name == "adb" and "reboot" in words[i + 1 :]:
                    name, i = "reboot", words.index("reboot", i)
                handler = _handler(name)
                if handler is None:
                    continue
                tail = _join(words[i:])
                for kind, value in handler(name, words[i + 1 :]):
                    if kind == "rule":
                        yield _Event(value, tail, (*outer, seg_text, tail))


DEFAULT_RULES = Rules()


def check(command: str) -> str | None:
    """The built-in rules only: the rule that forbids `command`, or None."""
    return DEFAULT_RULES.check(command)


def check_destination(path: str, rules: Rules | None = None, *, remove: bool = False) -> str | None:
    """The rule that forbids writing/creating (or, with remove=True, removing) the file `path`
    under `rules` (the built-in rules when None), or None. See Rules.check_destination."""
    return (rules or DEFAULT_RULES).check_destination(path, remove=remove)
