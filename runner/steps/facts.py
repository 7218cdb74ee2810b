"""Facts: the named read-only questions step kinds ask (stat(path), package(manager, name),
identity, setting(ns, key), an API GET...), each asked per shell family or API and read back;
HostFacts asks one host's facts once per plan, identical asks shared, in one round trip.
Path facts and the identity are also answered from a transport's file access (SFTP, os calls:
file_facts.py) where it has one, in the same form, with no process started on the host.

Imports only model, overlay and file_facts: never a step kind, a transport, the planner, apply or cli.
"""

from __future__ import annotations

import copy
import functools
import shlex
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from runner.model import Host, Probe, ProbeResult
from runner.overlay import Identity, PathState, parents
from runner.steps.file_facts import (
    MAX_CONTENT as _MAX_CONTENT,
)
from runner.steps.file_facts import (
    PLAIN_SHELLS,
    content_answer,
    exists_answer,
    identity_answer,
    sha256_answer,
    stat_answer,
)

q = shlex.quote
NO_ANSWER = ProbeResult(1)
MAX_CONTENT = _MAX_CONTENT  # bigger files are compared by sha256, without a diff
HOST_PREFIX = "@host/"  # keys of facts about the host itself ("@": no step id can clash)


class Where(Protocol):
    """Where a fact is asked: a step's context (runner.steps.base.StepContext)."""

    @property
    def host(self) -> Host: ...


# ---------------------------------------------------------------- shell families


@dataclass(frozen=True)
class Shell:
    """A shell family: the tools its hosts have and how they report a path."""

    name: str
    lstat: bool  # a symlink reads `link TARGET` (else the test follows it)
    why_absent: bool  # an absent path says why nothing can be made there (noparent, notdir X)
    other: str  # an existing path that is neither folder nor regular file reads as this
    end_opts: str  # "-- " where the tools take it before operands
    digests: tuple[str, ...]  # digest tools by preference: "sha256" (sha256sum), "md5" (md5sum)


POSIX = Shell("posix", lstat=True, why_absent=True, other="file", end_opts="-- ", digests=("sha256",))
TOYBOX = Shell("toybox", lstat=False, why_absent=False, other="other", end_opts="", digests=("sha256", "md5"))
SHELLS = {"local": POSIX, "ssh": POSIX, "adb": TOYBOX}


def shell_of(where: Where | Host) -> Shell:
    host = where if isinstance(where, Host) else where.host
    return SHELLS.get(host.transport, POSIX)


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Fact:
    """What a probe asks: a named fact and its arguments."""

    name: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class FactProbe(Probe):
    """A Probe that knows the fact it asks (transports read only key, command and api)."""

    fact: Fact | None = None


@dataclass(frozen=True)
class Definition:
    name: str
    doc: str
    build: Callable[..., Any]  # (shell, *args) -> a command, or (method, path, params) for API facts
    api: bool = False
    shared: bool = True  # identical asks on one host get one answer (False: a user's own check)
    blank: ProbeResult = NO_ANSWER  # what a host with nothing on it answers (validate)
    # (file access, *args) -> the POSIX shell's very answer, or None: ask the shell (file_facts.py)
    files: Callable[..., ProbeResult | None] | None = None


FACTS: dict[str, Definition] = {}


def define(
    name: str, doc: str, *, api: bool = False, shared: bool = True, blank: ProbeResult = NO_ANSWER,
    files: Callable[..., ProbeResult | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(build: Callable[..., Any]) -> Callable[..., Any]:
        FACTS[name] = Definition(name, doc, build, api, shared, blank, files)
        return build

    return register


def _by_files(host: Host, shell: Shell) -> bool:
    """Whether this host's path facts may come from its file access: a POSIX host probed
    through the plain sh (a `shell:` of its own may see other files)."""
    return shell is POSIX and str(host.settings.get("shell") or "") in PLAIN_SHELLS


def ask(where: Where | Host, name: str, *args: Any, key: str | None = None, **options: Any) -> Probe:
    """The probe asking fact `name(*args)` on `where`'s host, under `key` (default: the name)."""
    d = FACTS[name]
    shell = shell_of(where)
    made = d.build(shell, *args, **options)
    fact = Fact(name, args + tuple(sorted(options.items())))
    if d.api:
        return FactProbe(key or name, api=made, fact=fact)
    host = where if isinstance(where, Host) else where.host
    by_files = None
    if d.files is not None and _by_files(host, shell):
        answer = d.files
        by_files = functools.partial(_files_answer, answer, args, options)
    return FactProbe(key or name, made, fact=fact, files=by_files)


def _files_answer(answer: Callable[..., ProbeResult | None], args: tuple[Any, ...], options: dict[str, Any],
                  fs: Any) -> ProbeResult | None:
    return answer(fs, *args, **options)


def ask_host(where: Where | Host, name: str, *args: Any) -> Probe:
    """A fact about the host itself, asked once per host under `@host/NAME`."""
    return ask(where, name, *args, key=HOST_PREFIX + name)


def blank_answer(probe: Probe) -> ProbeResult:
    fact = getattr(probe, "fact", None)
    return FACTS[fact.name].blank if isinstance(fact, Fact) else NO_ANSWER


# ---------------------------------------------------------------- paths


@define("stat", "a path's type, `MODE OWNER GROUP SIZE` and (digest=True, regular files) `ALGO HEX`",
        blank=ProbeResult(0, b"absent\n"), files=stat_answer)
def _stat(shell: Shell, path: str, digest: bool = False) -> str:
    """Line 1: `link TARGET`, `directory`, `file`, `other` (toybox) or, for an absent path,
    `absent`, `absent noparent` (its folder is missing) or `absent notdir X` (an ancestor X
    is not a folder, so nothing can be made there; POSIX). Shell builtins besides stat."""
    o = shell.end_opts
    ancestors = " ".join(q(a) for a in parents(path)) if shell.why_absent else ""
    absent = (
        f'r=absent; for d in {ancestors}; do if [ -d "$d" ]; then break; '
        'elif [ -e "$d" ] || [ -L "$d" ]; then r="absent notdir $d"; break; else r="absent noparent"; fi; done; '
        'echo "$r"; exit 0'
        if ancestors
        else "echo absent; exit 0"
    )
    kind = f'if [ -L "$p" ]; then printf \'link %s\\n\' "$(readlink {o}"$p")"; el' if shell.lstat else ""
    kind += 'if [ -d "$p" ]; then echo directory; '
    if shell.other != "file":
        kind += f'elif [ -f "$p" ]; then echo file; elif [ -e "$p" ]; then echo {shell.other}; '
    else:
        kind += 'elif [ -e "$p" ]; then echo file; '
    out = f"p={q(path)}; {kind}else {absent}; fi; stat -c '%a %U %G %s' {o}\"$p\""
    if digest:
        out += f'; if [ -f "$p" ]; then {_digest(shell)}; fi'
    return out


def _digest(shell: Shell) -> str:
    """`ALGO HEX` of "$p" with the first digest tool the host has."""
    *first, last = shell.digests

    def line(algo: str) -> str:
        return f'echo "{algo} $({algo}sum {shell.end_opts}"$p" | cut -d\' \' -f1)"'

    if not first:
        return line(last)
    out = "".join(f"if command -v {a}sum >/dev/null 2>&1; then {line(a)}; el" for a in first)
    return out + f"se {line(last)}; fi"


@dataclass(frozen=True)
class PathInfo:
    """The parsed answer of a `stat` fact."""

    type: str  # absent | file | directory | link | other
    link_target: str = ""
    parent_problem: str = ""  # absent: "" (its folder exists), "noparent" or "notdir X"
    mode: str | None = None  # "0644"
    owner: str | None = None
    group: str | None = None
    size: int | None = None
    algo: str = ""  # sha256 | md5, when the digest was asked
    digest: str = ""


def read_stat(answer: ProbeResult | None) -> PathInfo:
    lines = answer.text.splitlines() if answer is not None else []
    typ, _, rest = (lines[0] if lines else "absent").partition(" ")
    mode = owner = group = None
    size = None
    if len(lines) > 1:
        parts = lines[1].split()
        if len(parts) == 4:
            mode, owner, group, size = format(int(parts[0], 8), "04o"), parts[1], parts[2], int(parts[3])
    algo = digest = ""
    if len(lines) > 2 and len(lines[2].split()) == 2:
        algo, digest = lines[2].split()
    return PathInfo(typ, rest if typ != "absent" else "", rest if typ == "absent" else "", mode, owner, group,
                    size, algo, digest)


def stat_text(
    state: PathState, shell: Shell = POSIX, *, flag: str = "", digest: tuple[str, str] | None = None,
    mode_if_unknown: str = "0",
) -> bytes:
    """What the `stat` fact answers for a path in `state` (an absent one with `flag`:
    noparent, notdir X); `digest` (algo, hex) for a regular file when it was asked."""
    if state.type == "absent":
        return f"absent {flag}\n".encode() if flag else b"absent\n"
    typ = state.type
    if (typ == "link" and not shell.lstat) or typ not in ("file", "directory", "link"):
        typ = shell.other
    head = f"link {state.link_target}" if typ == "link" else typ
    mode = format(int(state.mode, 8), "o") if state.mode else mode_if_unknown
    size = state.size if typ == "file" else (len(state.link_target or "") if typ == "link" else 4096)
    text = f"{head}\n{mode} {state.owner or '?'} {state.group or '?'} {size}\n"
    if digest is not None and typ == "file":
        text += f"{digest[0]} {digest[1]}\n"
    return text.encode()


@define("content", f"a regular file's bytes (rc 1 when over {MAX_CONTENT} bytes or not a file)",
        files=content_answer)
def _content(shell: Shell, path: str) -> str:
    p = q(path)
    return f'[ -f {p} ] && [ "$(wc -c < {p})" -le {MAX_CONTENT} ] && cat {shell.end_opts}{p}'


@define("sha256", "a regular file's sha256 (rc 1 when not a file)", files=sha256_answer)
def _sha256(shell: Shell, path: str) -> str:
    p = q(path)
    return f"[ -f {p} ] && sha256sum {shell.end_opts}{p} | cut -d' ' -f1"


@define("exists", "rc 0 when the path exists", files=exists_answer)
def _exists(shell: Shell, path: str) -> str:
    return f"test -e {q(path)}"


@define("check", "a command of the playbook's own (unless, only_if): its rc; never shared", shared=False)
def _check(shell: Shell, command: str) -> str:
    return command  # a ShellCommand keeps the secrets it reads


@define("condition", "rc 0 when a shell condition holds now (built by a step kind)")
def _condition(shell: Shell, command: str) -> str:
    return command


# ---------------------------------------------------------------- the host


IDENTITY_COMMAND = "id -un; id -gn; umask"
IDENTITY_KEY = HOST_PREFIX + "identity"


@define("identity", "who writes new files: `USER`, `GROUP`, `UMASK` on three lines",
        blank=ProbeResult(0, b"user\ngroup\n0022\n"), files=identity_answer)
def _identity(shell: Shell) -> str:
    return IDENTITY_COMMAND


def read_identity(answer: ProbeResult | None) -> Identity | None:
    if answer is None or answer.rc != 0:
        return None
    parts = answer.text.split()
    if len(parts) < 3:
        return None
    try:
        return Identity(parts[0], parts[1], int(parts[2], 8))
    except ValueError:
        return None


# ---------------------------------------------------------------- packages and services

PACKAGE_FAMILIES = ("apt", "dnf", "apk")  # yum hosts answer in dnf's (rpm) form
_PKG_QUERY = {
    "apt": (
        "dpkg-query -W -f='${{Status}}|${{Version}}' -- {p} 2>/dev/null | grep -q '^install ok installed' "
        "&& dpkg-query -W -f='${{Version}}' -- {p}"
    ),
    "dnf": "rpm -q --qf '%{{VERSION}}-%{{RELEASE}}' -- {p}",
    "yum": "rpm -q --qf '%{{VERSION}}-%{{RELEASE}}' -- {p}",
    "apk": "apk info -e -- {p} >/dev/null && apk info -v -- {p} 2>/dev/null | head -n1",
}
_PKG_CANDIDATE = {
    "apt": "apt-cache policy -- {p} 2>/dev/null | awk '/Candidate:/{{print $2}}'",
    "dnf": "dnf -q repoquery --latest-limit 1 --qf '%{{version}}-%{{release}}' -- {p} 2>/dev/null",
    "yum": "repoquery --qf '%{{version}}-%{{release}}' -- {p} 2>/dev/null | tail -n1",
    "apk": "apk policy -- {p} 2>/dev/null | sed -n 2p | tr -d ' :'",
}


def _guarded(manager: str, command: str) -> str:
    binary = {"apt": "dpkg-query", "dnf": "rpm", "yum": "rpm", "apk": "apk"}[manager]
    return f"command -v {binary} >/dev/null 2>&1 || exit 127; {command}"


@define("package_manager", "the package manager (`apt`, `dnf`, `yum`, `apk`; rc 1: none), or the one given")
def _package_manager(shell: Shell, manager: str = "auto") -> str:
    if manager != "auto":
        return f"echo {q(manager)}"
    return "for m in apt-get dnf yum apk; do command -v $m >/dev/null 2>&1 && { echo ${m%-get}; exit 0; }; done; exit 1"


@define("package", "the installed version of a package in one manager's form (rc != 0: not installed)")
def _package(shell: Shell, manager: str, name: str) -> str:
    return _guarded(manager, _PKG_QUERY[manager].format(p=q(name)))


@define("package_candidate", "the version a package would be upgraded to, in one manager's form")
def _package_candidate(shell: Shell, manager: str, name: str) -> str:
    p = q(name)
    cand = _PKG_CANDIDATE[manager].format(p=p)
    if manager == "dnf":  # a yum-only host (no dnf) answers with yum's repoquery
        yum = _PKG_CANDIDATE["yum"].format(p=p)
        cand = f"if command -v dnf >/dev/null 2>&1; then {cand}; else {yum}; fi"
    return _guarded(manager, cand)


@define("systemd", "rc 0 when systemd runs the host")
def _systemd(shell: Shell) -> str:
    return "[ -d /run/systemd/system ] && command -v systemctl"


@define("service_active", "`systemctl is-active` of a unit")
def _service_active(shell: Shell, name: str) -> str:
    return f"systemctl is-active -- {q(name)}"


@define("service_enabled", "`systemctl is-enabled` of a unit")
def _service_enabled(shell: Shell, name: str) -> str:
    return f"systemctl is-enabled -- {q(name)}"


# ---------------------------------------------------------------- Android (toybox shell)


@define("pm_list", "`pm list packages` lines matching a package (versions=True: with versionCode, Android 9+)")
def _pm_list(shell: Shell, package: str, versions: bool = False) -> str:
    if versions:
        return f"pm list packages --show-versioncode {q(package)}"
    return f"pm list packages -- {q(package)}"


@define("pm_dumpsys", "a package's `Package [..]` and `versionCode=` lines from dumpsys (Android < 9)")
def _pm_dumpsys(shell: Shell, package: str) -> str:
    return f"dumpsys package {q(package)} | grep -E '^ *(Package \\[|versionCode=)'"


@define("pm_path", "`pm path` of a package (`package:...` when installed)")
def _pm_path(shell: Shell, package: str) -> str:
    return f"pm path -- {q(package)}"


@define("pid", "the pids of a package's process")
def _pid(shell: Shell, package: str) -> str:
    return f"pidof -- {q(package)}"


@define("front_activity", "the resumed (foreground) activity lines of dumpsys")
def _front_activity(shell: Shell) -> str:
    return "dumpsys activity activities | grep -E 'mResumedActivity|topResumedActivity'"


@define("setting", "`settings get NAMESPACE KEY` (`null`: not set)")
def _setting(shell: Shell, namespace: str, key: str) -> str:
    return f"settings get {q(namespace)} {q(key)}"


@define("prop", "`getprop NAME`")
def _prop(shell: Shell, name: str) -> str:
    return f"getprop {q(name)}"


# ---------------------------------------------------------------- API hosts (Proxmox)


@define("api", "a read-only API GET (volatile usage figures dropped)", api=True)
def _api(shell: Shell, path: str, params: tuple[tuple[str, Any], ...] = ()) -> tuple[str, str, tuple[Any, ...]]:
    return ("GET", path, params)


@define("api_live", "a read-only API GET with its live figures (key `live:...`)", api=True)
def _api_live(shell: Shell, path: str, params: tuple[tuple[str, Any], ...] = ()) -> tuple[str, str, tuple[Any, ...]]:
    return ("GET", path, params)


# ---------------------------------------------------------------- one host's facts


def _identity_of(probe: Probe) -> Hashable:
    """Probes with the same identity get one answer: a shared fact asked the same way."""
    fact = getattr(probe, "fact", None)
    if isinstance(fact, Fact) and FACTS[fact.name].shared:  # a step's own sudo asks it another way
        return ("fact", fact.name, str(probe.command), repr(probe.api), probe.sudo)
    return ("key", probe.key, str(probe.command), repr(probe.api), probe.sudo)  # asked again otherwise: a new question


@dataclass
class HostFacts:
    """One host's facts for one planning pass: every key a step asked, each distinct fact
    sent once (under the first asker's key), answered in one round trip and then kept."""

    _asked: dict[str, Hashable] = field(default_factory=dict)  # key -> identity
    _wire: dict[Hashable, Probe] = field(default_factory=dict)  # identity -> the probe sent
    _answers: dict[Hashable, ProbeResult] = field(default_factory=dict)

    def want(self, probes: Iterable[Probe]) -> None:
        for p in probes:
            ident = _identity_of(p)
            self._asked[p.key] = ident
            self._wire.setdefault(ident, p)

    def __len__(self) -> int:
        return len(self._asked)

    def restart(self) -> None:
        """A new pass over the host (the planner's, once host facts are known): what is asked
        starts again; answers are kept, so a question asked again is not sent again."""
        self._asked.clear()

    def pending(self) -> list[Probe]:
        """The probes to send: one per distinct fact not answered yet."""
        return [p for ident, p in self._wire.items() if ident not in self._answers]

    def answer(self, send: Callable[[Sequence[Probe]], dict[str, ProbeResult]]) -> dict[str, ProbeResult]:
        """Send what is pending in one call (one round trip), then every asked key's answer."""
        todo = self.pending()
        if todo:
            got = send(todo)
            for p in todo:
                if p.key in got:
                    self._answers[_identity_of(p)] = got[p.key]
        return self.answers()

    def answers(self) -> dict[str, ProbeResult]:
        out: dict[str, ProbeResult] = {}
        given: set[Hashable] = set()
        for key, ident in self._asked.items():
            r = self._answers.get(ident)
            if r is None:
                continue
            # each step gets its own decoded API data (a kind may read it as it likes)
            out[key] = replace(r, data=copy.deepcopy(r.data)) if ident in given and r.data is not None else r
            given.add(ident)
        return out
