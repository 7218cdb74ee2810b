"""Forbidden-command rules: decides whether one shell command may be sent to a target.

Pure: no I/O, no subprocess, no logging. A small shell lexer splits the command into simple
commands (quotes, operators, substitutions, heredocs), wrappers such as sudo/env/nohup are
stripped and nested scripts (sh -c, eval, su -c, ssh) are read too. A guard rail against
mistakes and LLM slips, not a sandbox: see docs/safety.md for what it cannot see.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase, translate
from typing import Any

from runner.errors import InvalidInput

__all__ = [
    "BUILTIN_RULES",
    "DEFAULT_RULES",
    "Finding",
    "ParseError",
    "Rules",
    "check",
    "split_commands",
    "validate_entry",
]

BUILTIN_RULES: dict[str, str] = {
    "rm-root": "recursive delete of /, a top-level system directory (/etc, /usr, /home, ...), "
    "a whole /usr/* or /var/lib directory, or a home directory (~, $HOME)",
    "mkfs": "making a file system or swap on a device: mkfs*, mke2fs, mkswap, mkdosfs, "
    "cryptsetup luksFormat on /dev/... or on a target only known at run time",
    "dd-device": "dd writing to a block device (of=/dev/sda, /dev/nvme0n1, /dev/disk/..., LVM volumes)",
    "write-block-device": "tee, cp, mv, ddrescue or bmaptool writing to a block device",
    "redirect-block-device": "a shell redirection (>, >>, &>, <>) into a block device",
    "wipe-device": "shred, wipefs -a, blkdiscard, hdparm --security-erase, nvme format/sanitize "
    "on a device",
    "partition-table": "fdisk, gdisk, cfdisk, sfdisk, sgdisk or parted changing a device's "
    "partition table",
    "fork-bomb": "a shell function that runs itself in a pipe or in the background "
    "(:(){ :|:& };:), or fork in a loop in perl/python/ruby/php",
    "chmod-root": "recursive chmod of / or a system directory, or making / world-writable",
    "chown-root": "recursive chown/chgrp of / or a system directory, or chown of / itself",
    "power": "shutdown, reboot, poweroff, halt, init/telinit 0|1|6, systemctl reboot|poweroff|"
    "halt|suspend|..., kexec -e, writes to /proc/sysrq-trigger, adb reboot, svc power",
    "kill-all": "kill -1 (every process), kill 1 (init) or killall5",
}


class ParseError(ValueError):
    """The text is not valid shell: an unbalanced quote or an unterminated substitution."""


# ================================================================ lexer

_OPERATORS = (
    "<<<", "<<-", ";;&", "&>>", "&&", "||", ";;", ";&", "|&", "<<", ">>", ">&", "<&", "<>",
    ">|", "&>", "|", "&", ";", "(", ")", "<", ">", "\n",
)  # fmt: skip
_REDIRECTS = frozenset({"<", ">", ">>", "<<", "<<-", "<<<", ">&", "<&", "<>", ">|", "&>", "&>>"})
_WRITE_REDIRECTS = frozenset({">", ">>", ">|", "<>", "&>", "&>>", ">&"})
_OP_CHARS = frozenset("|&;()<>\n")
_OP_RE = re.compile("|".join(re.escape(o) for o in _OPERATORS))
_PLAIN = re.compile(r"[^\s|&;()<>\\'\"$`]+")  # a run of word characters with no quoting
_BLANKS = re.compile(r"[ \t\r]+")
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=")
_RESERVED = frozenset({"{", "}", "!", "if", "then", "else", "elif", "fi", "do", "done", "while",
                       "until", "time", "esac", "coproc"})  # fmt: skip
_ANSI = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|U[0-9A-Fa-f]{1,8}|[0-7]{1,3}|c.|.)", re.S)
_ANSI_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b",
                "f": "\f", "v": "\v"}  # fmt: skip


@dataclass
class _Tok:
    kind: str  # "word" or "op"
    text: str  # a word's value after quote removal, or the operator
    raw: str = ""
    quoted: bool = False
    end: int = 0
    body: str | None = None  # heredoc body, on << and <<- operators


def _ansi_c(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "xuU":
            return chr(min(int(e[1:], 16), 0x10FFFF)) if len(e) > 1 else "\\" + e
        if e[0] in "01234567":
            return chr(int(e, 8))
        if e[0] == "c" and len(e) == 2:
            return chr(ord(e[1]) & 0x1F)
        return _ANSI_SIMPLE.get(e, e)

    return _ANSI.sub(one, body)


def _skip_squote(s: str, i: int) -> int:
    """Index just after the single quote closing a string opened before `i`."""
    j = s.find("'", i)
    if j < 0:
        raise ParseError("unbalanced single quote")
    return j + 1


def _skip_backtick(s: str, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "`":
            return i + 1
        i += 1
    raise ParseError("unterminated backquote")


def _skip_dquote(s: str, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        elif c == "$" and s.startswith("(", i + 1):
            i = _match_paren(s, i + 2) + 1
        elif c == "`":
            i = _skip_backtick(s, i + 1)
        else:
            i += 1
    raise ParseError("unbalanced double quote")


def _match_close(s: str, i: int, opener: str, closer: str, *, comments: bool, what: str) -> int:
    """Index of the `closer` matching an `opener` just before `i` (quotes and nesting respected)."""
    depth, n = 1, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = _skip_squote(s, i + 1)
            continue
        if c == '"':
            i = _skip_dquote(s, i + 1)
            continue
        if comments and c == "`":
            i = _skip_backtick(s, i + 1)
            continue
        if comments and c == "#" and (i == 0 or s[i - 1] in " \t\n;&|("):
            j = s.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ParseError(f"unterminated {what}")


def _match_paren(s: str, i: int) -> int:
    """Index of the ')' closing a '(' opened just before `i`."""
    return _match_close(s, i, "(", ")", comments=True, what="$( or (")


def _match_brace(s: str, i: int) -> int:
    """Index of the '}' closing a '${' opened just before `i`."""
    return _match_close(s, i, "{", "}", comments=False, what="${")


class _Lexer:
    """Shell text -> tokens, plus the texts of command substitutions found on the way."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0
        self.toks: list[_Tok] = []
        self.subs: list[str] = []
        self.pending: list[tuple[_Tok, str, bool, bool]] = []  # heredoc op, delimiter, strip, expand
        self.want_delim: _Tok | None = None

    def run(self) -> tuple[list[_Tok], list[str]]:
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c in " \t\r":
                m = _BLANKS.match(s, self.i)
                self.i = m.end() if m else self.i + 1
            elif c == "\\" and s.startswith("\\\n", self.i):
                self.i += 2
            elif c == "#":
                j = s.find("\n", self.i)
                self.i = n if j < 0 else j
            elif c in "<>" and s.startswith("(", self.i + 1):
                self._word()
            elif c in _OP_CHARS:
                self._op()
            else:
                self._word()
        for tok, *_ in self.pending:  # no newline after the heredoc operator: empty body
            tok.body = ""
        return self.toks, self.subs

    def _op(self) -> None:
        s, i = self.s, self.i
        m = _OP_RE.match(s, i)
        assert m is not None
        op = m.group(0)
        last = self.toks[-1] if self.toks else None
        if op in _REDIRECTS and last and last.kind == "word" and last.end == i and last.raw.isdigit():
            self.toks.pop()  # "2>file": the number is a file descriptor, not an argument
        tok = _Tok("op", op, op, end=i + len(op))
        self.toks.append(tok)
        self.i = i + len(op)
        if op in ("<<", "<<-"):
            self.want_delim = tok
        elif op == "\n" and self.pending:
            self._heredocs()

    def _heredocs(self) -> None:
        s, n = self.s, len(self.s)
        for tok, delim, strip, expand in self.pending:
            lines: list[str] = []
            while self.i < n:
                j = s.find("\n", self.i)
                end = n if j < 0 else j
                line = s[self.i : end]
                self.i = n if j < 0 else j + 1
                if (line.lstrip("\t") if strip else line) == delim:
                    break
                lines.append(line)
            tok.body = "\n".join(lines)
            if expand:
                self._expansions(tok.body)
        self.pending = []

    def _expansions(self, text: str) -> None:
        """Command substitutions in an unquoted heredoc body run too."""
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
            elif c == "$" and text.startswith("(", i + 1):
                j = _match_paren(text, i + 2)
                if not text.startswith("((", i + 1):
                    self.subs.append(text[i + 2 : j])
                i = j + 1
            elif c == "`":
                j = _skip_backtick(text, i + 1)
                self.subs.append(text[i + 1 : j - 1].replace("\\`", "`"))
                i = j
            else:
                i += 1

    def _dollar(self, i: int, buf: list[str]) -> int | None:
        """$( $(( ${ at `i`: append the raw text, note a substitution; None if not one."""
        s = self.s
        if s.startswith("(", i + 1):
            j = _match_paren(s, i + 2)
            if not s.startswith("((", i + 1):
                self.subs.append(s[i + 2 : j])
            buf.append(s[i : j + 1])
            return j + 1
        if s.startswith("{", i + 1):
            j = _match_brace(s, i + 2)
            buf.append(s[i : j + 1])
            return j + 1
        return None

    def _backtick(self, i: int, buf: list[str]) -> int:
        j = _skip_backtick(self.s, i + 1)
        self.subs.append(self.s[i + 1 : j - 1].replace("\\`", "`"))
        buf.append(self.s[i:j])
        return j

    def _dquote(self, i: int, buf: list[str]) -> int:
        s, n = self.s, len(self.s)
        while i < n:
            c = s[i]
            if c == '"':
                return i + 1
            if c == "\\" and i + 1 < n and s[i + 1] in '$`"\\\n':
                if s[i + 1] != "\n":
                    buf.append(s[i + 1])
                i += 2
                continue
            if c == "$":
                j = self._dollar(i, buf)
                if j is not None:
                    i = j
                    continue
            if c == "`":
                i = self._backtick(i, buf)
                continue
            buf.append(c)
            i += 1
        raise ParseError("unbalanced double quote")

    def _word(self) -> None:
        s, n = self.s, len(self.s)
        i = start = self.i
        buf: list[str] = []
        quoted = False
        while i < n:
            m = _PLAIN.match(s, i)
            if m:
                buf.append(m.group(0))
                i = m.end()
                if i >= n:
                    break
            c = s[i]
            if c in " \t\r\n":
                break
            if c in "<>" and s.startswith("(", i + 1):  # process substitution <(...) >(...)
                j = _match_paren(s, i + 2)
                self.subs.append(s[i + 2 : j])
                buf.append(s[i : j + 1])
                i = j + 1
                continue
            if c in _OP_CHARS:
                break
            if c == "\\":
                if i + 1 < n and s[i + 1] != "\n":
                    buf.append(s[i + 1])
                quoted = True
                i += 2
                continue
            if c == "'":
                j = _skip_squote(s, i + 1)
                buf.append(s[i + 1 : j - 1])
                quoted = True
                i = j
                continue
            if c == '"':
                i = self._dquote(i + 1, buf)
                quoted = True
                continue
            if c == "$" and s.startswith("'", i + 1):  # $'...' ANSI-C quoting
                j = i + 2
                while j < n and s[j] != "'":
                    j += 2 if s[j] == "\\" else 1
                if j >= n:
                    raise ParseError("unbalanced $' quote")
                buf.append(_ansi_c(s[i + 2 : j]))
                quoted = True
                i = j + 1
                continue
            if c == "$" and s.startswith('"', i + 1):
                i = self._dquote(i + 2, buf)
                quoted = True
                continue
            if c == "$":
                nxt = self._dollar(i, buf)
                if nxt is not None:
                    i = nxt
                    continue
            if c == "`":
                i = self._backtick(i, buf)
                continue
            buf.append(c)
            i += 1
        self.i = i
        tok = _Tok("word", "".join(buf), s[start:i], quoted, i)
        self.toks.append(tok)
        if self.want_delim is not None:
            op = self.want_delim
            self.want_delim = None
            self.pending.append((op, tok.text, op.text == "<<-", not quoted))


# ================================================================ splitter


@dataclass
class _Cmd:
    words: list[str] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)
    stdin: list[str] = field(default_factory=list)  # heredoc bodies and here-strings


@dataclass
class _Parsed:
    pipelines: list[list[_Cmd]]
    subs: list[str]
    bombs: list[str]


def _brace_expand(word: str, limit: int = 64) -> list[str]:
    """Bash brace expansion of an unquoted word ({a,b} lists only; no ranges)."""
    if word.count("{") > 16:
        return [word]
    depth, start = 0, -1
    for i, c in enumerate(word):
        if c == "{" and (i == 0 or word[i - 1] != "$"):
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                inner = word[start + 1 : i]
                parts, d, last = [], 0, 0
                for k, ch in enumerate(inner):
                    if ch == "{":
                        d += 1
                    elif ch == "}":
                        d -= 1
                    elif ch == "," and d == 0:
                        parts.append(inner[last:k])
                        last = k + 1
                if not parts:
                    continue
                parts.append(inner[last:])
                out: list[str] = []
                for p in parts:
                    out.extend(_brace_expand(word[:start] + p + word[i + 1 :], limit))
                    if len(out) >= limit:
                        return out[:limit]
                return out
    return [word]


def _expand(tok: _Tok) -> list[str]:
    if tok.quoted:
        return [tok.text]
    words = [tok.text]
    if "IFS" in tok.text:  # rm${IFS}-rf${IFS}/ : the unquoted expansion splits words
        words = [w for w in re.split(r"\$\{IFS\}|\$IFS\b", tok.text) if w]
    if "{" in tok.text and "," in tok.text:
        words = [x for w in words for x in _brace_expand(w)]
    return words


def _is_bomb(toks: list[_Tok], k: int, name: str) -> bool:
    """Does the function body starting at toks[k] run `name` in a pipe or the background?"""
    if k >= len(toks):
        return False
    first = toks[k]
    if first.kind == "word" and first.text == "{" and not first.quoted:
        opener, closer, kind = "{", "}", "word"
    elif first.kind == "op" and first.text == "(":
        opener, closer, kind = "(", ")", "op"
    else:
        return False
    depth, j = 0, k
    body: list[_Tok] = []
    while j < len(toks):
        t = toks[j]
        if t.kind == kind and t.text == opener:
            depth += 1
        elif t.kind == kind and t.text == closer:
            depth -= 1
            if depth == 0:
                break
        body.append(t)
        j += 1
    pipe_ops = ("|", "&", "|&")
    for i, t in enumerate(body):
        if t.kind == "word" and t.text == name:
            nxt = body[i + 1] if i + 1 < len(body) else None
            prev = body[i - 1] if i else None
            if (nxt and nxt.kind == "op" and nxt.text in pipe_ops) or (
                prev and prev.kind == "op" and prev.text in ("|", "|&")
            ):
                return True
    return False


def _parse(text: str) -> _Parsed:
    try:
        toks, subs = _Lexer(text).run()
    except RecursionError:
        raise ParseError("quotes and substitutions nested too deeply") from None
    pipelines: list[list[_Cmd]] = []
    pipe: list[_Cmd] = []
    cmd = _Cmd()
    bombs: list[str] = []
    skip = False  # inside a for/select/case header: its words are data

    def end_cmd() -> None:
        nonlocal cmd, skip
        if cmd.words or cmd.redirects or cmd.stdin:
            pipe.append(cmd)
        cmd = _Cmd()
        skip = False

    def end_pipe() -> None:
        nonlocal pipe
        end_cmd()
        if pipe:
            pipelines.append(pipe)
        pipe = []

    k, n = 0, len(toks)
    while k < n:
        t = toks[k]
        if t.kind == "op":
            op = t.text
            if op in _REDIRECTS:
                nxt = toks[k + 1] if k + 1 < n and toks[k + 1].kind == "word" else None
                if nxt is None:
                    raise ParseError(f"redirection {op!r} without a target")
                if op in ("<<", "<<-"):
                    cmd.stdin.append(t.body or "")
                elif op == "<<<":
                    cmd.stdin.append(nxt.text)
                else:
                    cmd.redirects.append((op, nxt.text))
                k += 2
                continue
            if op in ("|", "|&"):
                end_cmd()
            elif (
                op == "(" and len(cmd.words) == 1 and k + 1 < n
                and toks[k + 1].kind == "op" and toks[k + 1].text == ")"
            ):  # fmt: skip
                name = cmd.words.pop()  # a function definition, not a call
                if _is_bomb(toks, k + 2, name):
                    bombs.append(name)
                k += 2
                continue
            else:
                end_pipe()
            k += 1
            continue
        if skip:
            k += 1
            continue
        if not cmd.words and _ASSIGN.match(t.raw):  # NAME=value before the command
            k += 1
            continue
        if not cmd.words and not t.quoted:
            w = t.text
            if w in _RESERVED:
                k += 1
                continue
            if w in ("for", "select", "case"):
                skip = True
                k += 1
                continue
            if w == "function" and k + 1 < n and toks[k + 1].kind == "word":
                name = toks[k + 1].text
                k += 2
                if k + 1 < n and toks[k].text == "(" and toks[k + 1].text == ")":
                    k += 2
                if _is_bomb(toks, k, name):
                    bombs.append(name)
                continue
        cmd.words.extend(_expand(t))
        k += 1
    end_pipe()
    return _Parsed(pipelines, subs, bombs)


def split_commands(text: str) -> list[list[str]]:
    """The simple commands of `text` as word lists (for tests and plan output).

    Raises ParseError on unbalanced quotes. Substitutions are not included.
    """
    return [c.words for p in _parse(text).pipelines for c in p if c.words]


# ================================================================ paths and devices

_ROOT_DIRS = frozenset({
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt",
    "opt", "proc", "root", "run", "sbin", "snap", "srv", "sys", "usr", "var",
    "data", "system", "vendor", "sdcard", "storage",  # Android
})  # fmt: skip
_SECOND_DIRS = frozenset({
    ("usr", d) for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "libexec", "local",
                         "share", "include", "src")
} | {("var", "lib")})  # fmt: skip
_MERGED_USR = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32"})
_HOME = re.compile(r"(?:~[\w.-]*|\$HOME|\$\{HOME\})(?:/+\.?)*(?:/\*)?/*")
_GLOB_CHARS = frozenset("*?[")
_BLOCK = re.compile(
    r"(?:s|h|v|xv)d[a-z]+\d*|nvme\d+n\d+(?:p\d+)?|mmcblk\d+(?:p\d+|boot\d+)?|md\d+(?:p\d+)?"
    r"|dm-\d+|loop\d+|nbd\d+(?:p\d+)?|rbd\d+|zd\d+|zram\d+|ram\d+|pmem\d+|bcache\d+|drbd\d+"
    r"|sr\d+|sg\d+|mtd\d+|mtdblock\d+|ubi\d+(?:_\d+)?|ubiblock\d+(?:_\d+)?|mem|kmem|port|root"
    r"|(?:disk|mapper|block|zvol|md|bcache|drbd|rbd)/.+"
)
_BLOCK_SAMPLES = ("sda", "sda1", "hda", "vda", "xvda", "nvme0n1", "mmcblk0", "md0", "dm-0", "loop0")
_DEV_SAFE_DIRS = frozenset({
    "pts", "fd", "shm", "mqueue", "hugepages", "snd", "input", "net", "bus", "char", "cpu",
    "dri", "serial", "v4l", "usb", "vfio", "tcp", "udp", "dma_heap", "cpu_dma_latency",
})  # fmt: skip
_SYSRQ = ["proc", "sysrq-trigger"]


def _comps(path: str) -> list[str] | None:
    """An absolute path's components, '.' and '..' resolved lexically; None if relative."""
    if not path.startswith("/"):
        return None
    out: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if out:
                out.pop()
            continue
        out.append(c)
    return out


def _match(comp: str, names: Iterable[str]) -> bool:
    if _GLOB_CHARS.isdisjoint(comp):
        return comp in names
    return any(fnmatchcase(nm, comp) for nm in names)


def _whole(comp: str) -> bool:
    """A glob that matches every entry of a directory (*, **, *?)."""
    return "*" in comp and set(comp) <= {"*", "?"}


def _system(comps: list[str]) -> bool:
    """/, a top-level system directory, a whole /usr/<x> or /var/lib, or all of their content."""
    n = len(comps)
    if n == 0:
        return True
    if n == 1:
        return _match(comps[0], _ROOT_DIRS)
    second = any(_match(comps[0], (a,)) and _match(comps[1], (b,)) for a, b in _SECOND_DIRS)
    if n == 2:
        return second or (_whole(comps[1]) and _match(comps[0], _ROOT_DIRS))
    return n == 3 and _whole(comps[2]) and second


def _protected(word: str, *, home: bool) -> bool:
    if home and _HOME.fullmatch(word):
        return True
    comps = _comps(word)
    return comps is not None and _system(comps)


def _is_block(path: str) -> bool:
    comps = _comps(path)
    if not comps or comps[0] != "dev" or len(comps) < 2:
        return False
    rest = comps[1:]
    if len(rest) == 1 and not _GLOB_CHARS.isdisjoint(rest[0]):
        return any(fnmatchcase(d, rest[0]) for d in _BLOCK_SAMPLES)
    if _BLOCK.fullmatch("/".join(rest)):
        return True
    return len(rest) == 2 and rest[0] not in _DEV_SAFE_DIRS  # LVM: /dev/<vg>/<lv>


def _is_sysrq(path: str) -> bool:
    return _comps(path) == _SYSRQ


def _unknown(word: str) -> bool:
    """A word whose value is only known at run time ($VAR, $(...), `...`)."""
    return "$" in word or "`" in word


def _operands(args: Sequence[str]) -> list[str]:
    """Arguments that are not options (everything after --; '-' alone is an operand)."""
    out, done = [], False
    for a in args:
        if not done and a == "--":
            done = True
        elif done or not a.startswith("-") or a == "-":
            out.append(a)
    return out


def _short_flags(args: Sequence[str]) -> set[str]:
    return {ch for a in args if a.startswith("-") and not a.startswith("--") for ch in a[1:]}


# ================================================================ option parsing


def _opts(
    args: Sequence[str], short_arg: str = "", long_arg: Iterable[str] = ()
) -> tuple[list[tuple[str, str | None]], int]:
    """Leading options as (flag, value) pairs, and the index of the first operand."""
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(args)
    long_set = set(long_arg)
    while i < n:
        a = args[i]
        if a == "--":
            return out, i + 1
        if a.startswith("--"):
            key, eq, val = a.partition("=")
            if not eq and key[2:] in long_set and i + 1 < n:
                i += 1
                out.append((key, args[i]))
            else:
                out.append((key, val if eq else None))
            i += 1
            continue
        if len(a) > 1 and a[0] == "-":
            for pos in range(1, len(a)):
                ch = a[pos]
                if ch in short_arg:
                    rest: str | None = a[pos + 1 :]
                    if not rest and i + 1 < n:
                        i += 1
                        rest = args[i]
                    out.append(("-" + ch, rest))
                    break
                out.append(("-" + ch, None))
            i += 1
            continue
        break
    return out, i


def _keys(opts: list[tuple[str, str | None]]) -> set[str]:
    return {k for k, _ in opts}


def _value(opts: list[tuple[str, str | None]], *keys: str) -> str | None:
    for k, v in opts:
        if k in keys:
            return v if v is not None else ""
    return None


# ================================================================ wrappers

# A wrapper turns its arguments into the command it runs: a new argv, a _Script (text run
# by a shell), or None (it runs nothing we can see).


@dataclass(frozen=True)
class _Script:
    texts: tuple[str, ...]


_Next = list[str] | _Script | None


def _stdin_script(stdin: Sequence[str]) -> _Script | None:
    return _Script(tuple(stdin)) if stdin else None


def _w_shell(args: list[str], stdin: list[str]) -> _Next:
    i, n = 0, len(args)
    has_c = has_s = False
    while i < n:
        a = args[i]
        if a in ("--", "-"):
            i += 1
            break
        if a in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            i += 2
            continue
        if a.startswith("--"):
            i += 1
            continue
        if len(a) > 1 and a[0] in "-+":
            if a[0] == "-":
                has_c = has_c or "c" in a[1:]
                has_s = has_s or "s" in a[1:]
            i += 1
            continue
        break
    rest = args[i:]
    if has_c:
        return _Script((rest[0],)) if rest else None
    if rest and not has_s:
        return None  # runs a script file: not visible from here
    return _stdin_script(stdin)


def _w_sudo(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "ugCDprtTUR", ("user", "group", "close-from", "chdir", "host",
                                         "prompt", "role", "type", "command-timeout",
                                         "other-user", "chroot"))  # fmt: skip
    keys = _keys(opts)
    if keys & {"-l", "--list", "-V", "--version", "-K", "--remove-timestamp", "-e", "--edit",
               "-v", "--validate"}:  # fmt: skip
        return None
    rest = args[i:]
    while rest and _ASSIGN.match(rest[0]):
        rest = rest[1:]
    if keys & {"-s", "--shell", "-i", "--login"}:
        return _Script((" ".join(rest),)) if rest else _stdin_script(stdin)
    return rest or None


def _w_doas(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "uC")
    keys = _keys(opts)
    if "-C" in keys:
        return None
    if "-s" in keys:
        return _stdin_script(stdin)
    return args[i:] or None


def _w_env(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "uCSP", ("unset", "chdir", "split-string"))
    split = _value(opts, "-S", "--split-string")
    if split is not None:
        return _Script((" ".join([split, *args[i:]]),))
    rest = args[i:]
    while rest and _ASSIGN.match(rest[0]):
        rest = rest[1:]
    return rest or None


def _w_generic(short_arg: str = "", long_arg: Iterable[str] = (), *, skip: int = 0,
               none_if: Iterable[str] = ()) -> Callable[[list[str], list[str]], _Next]:  # fmt: skip
    """A wrapper: options (some with a value), `skip` operands, then the command."""
    stop = set(none_if)

    def unwrap(args: list[str], stdin: list[str]) -> _Next:
        opts, i = _opts(args, short_arg, long_arg)
        if _keys(opts) & stop:
            return None
        return args[i + skip :] or None

    return unwrap


def _w_command(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args)
    if _keys(opts) & {"-v", "-V"}:
        return None  # command -v NAME only looks the name up
    return args[i:] or None


def _w_xargs(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "adEILnPs", ("arg-file", "delimiter", "eof", "replace", "max-lines",
                                       "max-args", "max-procs", "max-chars", "process-slot-var"))  # fmt: skip
    rest = args[i:]
    if not rest:
        return None
    data = " ".join(stdin).split()
    repl = _value(opts, "-I", "--replace")
    if repl and data:
        return [w.replace(repl, data[0]) for w in rest]
    return rest + data


def _w_watch(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "n", ("interval",))
    rest = args[i:]
    if not rest:
        return None
    if _keys(opts) & {"-x", "--exec"}:
        return rest
    return _Script((" ".join(rest),))


def _w_flock(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "wEc", ("timeout", "conflict-exit-code", "command"))
    script = _value(opts, "-c", "--command")
    if script is not None:
        return _Script((script,))
    return args[i + 1 :] or None


def _w_su(args: list[str], stdin: list[str]) -> _Next:
    script: str | None = None
    positional: list[str] = []
    i, n = 0, len(args)
    while i < n:  # su permutes its options: `su - root -c CMD`
        a = args[i]
        if a in ("-c", "--command", "--session-command") or (
            len(a) > 2 and a[0] == "-" and a[1] != "-" and a.endswith("c")
        ):
            script = args[i + 1] if i + 1 < n else ""
            i += 2
            continue
        if a.startswith(("--command=", "--session-command=")):
            script = a.split("=", 1)[1]
        elif a in ("-s", "--shell", "-g", "--group", "-G", "--supp-group", "-w",
                   "--whitelist-environment"):  # fmt: skip
            i += 1
        elif not a.startswith("-"):
            positional.append(a)
        i += 1
    if script is not None:
        return _Script((script,))
    if len(positional) > 1:  # Android-style `su 0 reboot`; GNU su hands them to the shell
        return _Script((" ".join(positional[1:]),))
    return _stdin_script(stdin)


def _w_runuser(args: list[str], stdin: list[str]) -> _Next:
    opts, i = _opts(args, "ugGcsw", ("user", "group", "supp-group", "command", "shell",
                                     "whitelist-environment"))  # fmt: skip
    script = _value(opts, "-c", "--command")
    if script is not None:
        return _Script((script,))
    if _keys(opts) & {"-u", "--user"}:
        return args[i:] or None
    return _w_su(args, stdin)


def _w_ssh(args: list[str], stdin: list[str]) -> _Next:
    _, i = _opts(args, "BbcDEeFIiJLlmOopQRSWw")
    rest = args[i:]
    if not rest:
        return None
    if rest[1:]:
        return _Script((" ".join(rest[1:]),))
    return _stdin_script(stdin)


def _w_adb(args: list[str], stdin: list[str]) -> _Next:
    _, i = _opts(args, "stHPL")
    rest = args[i:]
    if not rest:
        return None
    sub = rest[0]
    if sub in ("shell", "exec-out"):
        _, j = _opts(rest[1:], "e")
        cmd = rest[1 + j :]
        return _Script((" ".join(cmd),)) if cmd else _stdin_script(stdin)
    if sub in ("reboot", "reboot-bootloader"):
        return ["reboot", *rest[1:]]
    return None


def _w_busybox(args: list[str], stdin: list[str]) -> _Next:
    return args if args and not args[0].startswith("-") else None


def _w_eval(args: list[str], stdin: list[str]) -> _Next:
    return _Script((" ".join(args),)) if args else None


_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "rbash", "fish", "lksh", "yash")
_WRAPPERS: dict[str, Callable[[list[str], list[str]], _Next]] = {
    **dict.fromkeys(_SHELLS, _w_shell),
    "sudo": _w_sudo,
    "doas": _w_doas,
    "env": _w_env,
    "nohup": _w_generic(),
    "builtin": _w_generic(),
    "exec": _w_generic("a"),
    "command": _w_command,
    "nice": _w_generic("n", ("adjustment",)),
    "ionice": _w_generic("cnpPu", ("class", "classdata", "pid", "pgid", "uid"),
                         none_if=("-p", "-P", "-u", "--pid", "--pgid", "--uid")),
    "timeout": _w_generic("sk", ("signal", "kill-after"), skip=1),
    "stdbuf": _w_generic("ioe", ("input", "output", "error")),
    "setsid": _w_generic(),
    "time": _w_generic("of", ("output", "format")),
    "chroot": _w_generic("", ("userspec", "groups"), skip=1),
    "taskset": _w_generic("", (), skip=1, none_if=("-p", "--pid")),
    "unbuffer": _w_generic(),
    "xargs": _w_xargs,
    "watch": _w_watch,
    "flock": _w_flock,
    "su": _w_su,
    "runuser": _w_runuser,
    "ssh": _w_ssh,
    "adb": _w_adb,
    "busybox": _w_busybox,
    "toybox": _w_busybox,
    "eval": _w_eval,
}  # fmt: skip


def _base(word: str) -> str:
    return word.rsplit("/", 1)[-1] if "/" in word else word


def _unwrap(argv: list[str], stdin: list[str]) -> tuple[list[list[str]], _Script | None]:
    """Peel wrappers: every level's argv (outermost first) and the script the last one runs."""
    stages: list[list[str]] = []
    for _ in range(16):
        if not argv:
            break
        stages.append(argv)
        wrap = _WRAPPERS.get(_base(argv[0]))
        if wrap is None:
            break
        nxt = wrap(argv[1:], stdin)
        if nxt is None:
            break
        if isinstance(nxt, _Script):
            return stages, nxt
        argv = nxt
    return stages, None


def _join(argv: Sequence[str]) -> str:
    return " ".join(" ".join([_base(argv[0]), *argv[1:]]).split()) if argv else ""


# ================================================================ built-in rule checks

_Item = tuple[str, Any]  # ("rule", name) or ("argv", list[str]): a command run by this one


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


def _r_find(name: str, args: list[str]) -> list[_Item]:
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
        if a in ("-exec", "-execdir", "-ok", "-okdir"):
            k = j + 1
            cmd: list[str] = []
            while k < len(expr) and expr[k] not in (";", "+"):
                cmd.append(expr[k])
                k += 1
            if cmd:
                items.append(("argv", cmd))
                if _base(cmd[0]) == "rm" and any(
                    x.startswith("-") and ("r" in x or "R" in x) for x in cmd[1:]
                ):
                    destroys = True
            j = k + 1
            continue
        if a == "-delete":
            destroys = True
        elif a in ("-maxdepth", "-mindepth"):
            j += 1
        elif a not in _FIND_NEUTRAL:
            filtering = True
        j += 1
    if destroys and not filtering and any(_protected(s, home=True) for s in starts):
        items.insert(0, ("rule", "rm-root"))
    return items


def _r_mkfs(name: str, args: list[str]) -> list[_Item]:
    if any(a.startswith("/dev/") or _unknown(a) for a in _operands(args)):
        return [("rule", "mkfs")]
    return []


def _r_cryptsetup(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    if ops and ops[0] in ("luksFormat", "luksErase", "erase") and (
        any(a.startswith("/dev/") or _unknown(a) for a in ops[1:])
    ):
        return [("rule", "mkfs")]
    return []


def _r_dd(name: str, args: list[str]) -> list[_Item]:
    for a in args:
        if a.startswith("of="):
            if _is_block(a[3:]):
                return [("rule", "dd-device")]
            if _is_sysrq(a[3:]):
                return [("rule", "power")]
    return []


def _r_tee(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    if any(_is_block(o) for o in ops):
        return [("rule", "write-block-device")]
    if any(_is_sysrq(o) for o in ops):
        return [("rule", "power")]
    return []


def _r_copy(name: str, args: list[str]) -> list[_Item]:
    target: str | None = None
    ops: list[str] = []
    it = iter(args)
    done = False
    for a in it:
        if not done and a == "--":
            done = True
        elif not done and a in ("-t", "--target-directory", "-S", "--suffix"):
            value = next(it, "")
            target = value if a in ("-t", "--target-directory") else target
        elif not done and a.startswith("--target-directory="):
            target = a.split("=", 1)[1]
        elif not done and a.startswith("-t") and len(a) > 2:
            target = a[2:]
        elif done or not a.startswith("-") or a == "-":
            ops.append(a)
    if name == "ddrescue":
        dest = ops[1] if len(ops) > 1 else None
    elif name == "bmaptool":
        dest = ops[-1] if len(ops) > 2 and ops[0] == "copy" else None
    else:
        dest = target or (ops[-1] if len(ops) >= 2 else None)
    return [("rule", "write-block-device")] if dest and _is_block(dest) else []


def _r_shred(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "wipe-device")] if any(_is_block(o) for o in _operands(args)) else []


def _r_wipefs(name: str, args: list[str]) -> list[_Item]:
    flags = _short_flags(args)
    longs = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    erase = "a" in flags or "o" in flags or bool(longs & {"--all", "--offset"})
    if not erase or "n" in flags or "--no-act" in longs:
        return []
    if any(o.startswith("/dev/") or _unknown(o) for o in _operands(args)):
        return [("rule", "wipe-device")]
    return []


def _r_blkdiscard(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "wipe-device")] if _operands(args) else []


_HDPARM_WIPE = ("--security-erase", "--trim-sector-ranges", "--write-sector", "--make-bad-sector",
                "--fwdownload", "--dco-restore")  # fmt: skip


def _r_hdparm(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "wipe-device")] if any(a.startswith(_HDPARM_WIPE) for a in args) else []


def _r_nvme(name: str, args: list[str]) -> list[_Item]:
    if args and args[0] in ("format", "sanitize", "delete-ns"):
        return [("rule", "wipe-device")]
    return []


_FDISK_READ = frozenset({"-l", "--list", "-x", "--list-details", "-s", "--getsz", "-h", "--help",
                         "-V", "--version", "-v"})  # fmt: skip
_SFDISK_READ = frozenset({"-l", "--list", "-d", "--dump", "-s", "--show-size", "-g",
                          "--show-geometry", "-J", "--json", "-V", "--verify", "-F",
                          "--list-free", "-T", "--list-types", "-h", "--help", "-v", "--version",
                          "-n", "--no-act"})  # fmt: skip
_SGDISK_WRITE_SHORT = frozenset("ZzondtcgGRlNemrsUuAhC")
_SGDISK_WRITE_LONG = frozenset({"--zap-all", "--zap", "--clear", "--new", "--delete", "--typecode",
                                "--change-name", "--mbrtogpt", "--randomize-guids", "--replicate",
                                "--load-backup", "--largest-new", "--move-second-header",
                                "--gpttombr", "--transpose", "--sort", "--disk-guid",
                                "--partition-guid", "--attributes", "--hybrid",
                                "--recompute-chs"})  # fmt: skip
_PARTED_WRITE = frozenset({"mklabel", "mktable", "mkpart", "mkpartfs", "rm", "resize", "resizepart",
                           "rescue", "name", "set", "toggle", "disk_set", "disk_toggle", "move",
                           "cp", "mkfs", "type"})  # fmt: skip


def _r_partition(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    if not any(_is_block(o) for o in ops):
        return []
    if name in ("fdisk", "gdisk", "cfdisk"):
        write = not any(a in _FDISK_READ for a in args)
    elif name == "sfdisk":
        write = not any(a in _SFDISK_READ for a in args)
    elif name == "sgdisk":
        longs = {a.split("=", 1)[0] for a in args if a.startswith("--")}
        if "-P" in args or "--pretend" in longs:
            return []
        write = bool(_short_flags(args) & _SGDISK_WRITE_SHORT) or bool(longs & _SGDISK_WRITE_LONG)
    else:  # parted
        if {"-l", "--list"} & set(args):
            return []
        dev = next(k for k, o in enumerate(ops) if _is_block(o))
        cmds = ops[dev + 1 :]
        write = not cmds or any(c in _PARTED_WRITE for c in cmds)
    return [("rule", "partition-table")] if write else []


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
    comps = [c for t in targets if (c := _comps(t)) is not None]
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
    comps = [c for t in targets if (c := _comps(t)) is not None]
    if any(c == [] for c in comps) or (recursive and any(_system(c) for c in comps)):
        return [("rule", "chown-root")]
    return []


_POWER_VERBS = frozenset({"poweroff", "reboot", "halt", "kexec", "soft-reboot", "emergency",
                          "rescue", "suspend", "hibernate", "hybrid-sleep",
                          "suspend-then-hibernate", "sleep"})  # fmt: skip
_POWER_TARGETS = _POWER_VERBS | {"shutdown", "ctrl-alt-del", "runlevel0", "runlevel1", "runlevel6",
                                 "final", "exit"}  # fmt: skip
_UNIT_VERBS = frozenset({"start", "restart", "isolate", "try-restart", "reload-or-restart",
                         "try-reload-or-restart", "enqueue-marked-jobs"})  # fmt: skip


def _r_systemctl(name: str, args: list[str]) -> list[_Item]:
    _, i = _opts(args, "HMtpnosPl", ("host", "machine", "type", "property", "lines", "output",
                                        "signal", "state", "kill-whom", "message", "when", "root",
                                        "job-mode"))  # fmt: skip
    ops = [a for a in args[i:] if not a.startswith("-")]
    if not ops:
        return []
    verb = ops[0]
    if verb in _POWER_VERBS:
        return [("rule", "power")]
    if verb in _UNIT_VERBS and any(u.removesuffix(".target") in _POWER_TARGETS for u in ops[1:]):
        return [("rule", "power")]
    return []


def _r_shutdown(name: str, args: list[str]) -> list[_Item]:
    harmless = {"--help", "--version"}
    if name == "shutdown":
        harmless |= {"-c", "-k", "--show"}
    else:
        harmless |= {"-w", "--wtmp-only"}
    return [] if harmless & set(args) else [("rule", "power")]


def _r_init(name: str, args: list[str]) -> list[_Item]:
    ops = _operands(args)
    return [("rule", "power")] if ops and ops[0] in ("0", "1", "6", "s", "S", "single") else []


def _r_kexec(name: str, args: list[str]) -> list[_Item]:
    quiet = {"-l", "--load", "-p", "--load-panic", "-u", "--unload", "-h", "--help", "-v",
             "--version", "-S", "--status"}  # fmt: skip
    return [] if quiet & set(args) or not args else [("rule", "power")]


def _r_svc(name: str, args: list[str]) -> list[_Item]:
    if args[:1] == ["power"] and len(args) > 1 and args[1] in ("reboot", "shutdown"):
        return [("rule", "power")]
    return []


def _r_setprop(name: str, args: list[str]) -> list[_Item]:
    return [("rule", "power")] if args[:1] == ["sys.powerctl"] else []


def _r_kill(name: str, args: list[str]) -> list[_Item]:
    if name == "killall5":
        return [] if {"-h", "--help"} & set(args) else [("rule", "kill-all")]
    i = 0
    if args and args[0] in ("-l", "-L", "--list", "--table"):
        return []
    signal = ""
    if args and args[0] in ("-s", "-n", "--signal"):
        signal, i = (args[1] if len(args) > 1 else ""), 2
    elif args and args[0].startswith("-") and args[0] != "--":
        signal, i = args[0][1:], 1
    if i < len(args) and args[i] == "--":
        i += 1
    if signal in ("0", "SIG0"):
        return []
    return [("rule", "kill-all")] if {"1", "-1"} & set(args[i:]) else []


_FORK_LOOP = re.compile(r"\bfork\b.*\b(?:while|until|loop)\b|\b(?:while|until|for|loop)\b.*\bfork\b")


def _r_interpreter(name: str, args: list[str]) -> list[_Item]:
    code = " ".join(args)
    return [("rule", "fork-bomb")] if "fork" in code and _FORK_LOOP.search(code) else []


_Handler = Callable[[str, list[str]], list[_Item]]
_HANDLERS: dict[str, _Handler] = {
    "rm": _r_rm,
    "find": _r_find,
    "mkfs": _r_mkfs,
    "mke2fs": _r_mkfs,
    "mkswap": _r_mkfs,
    "mkdosfs": _r_mkfs,
    "mkntfs": _r_mkfs,
    "mkexfatfs": _r_mkfs,
    "cryptsetup": _r_cryptsetup,
    "dd": _r_dd,
    "dcfldd": _r_dd,
    "tee": _r_tee,
    "cp": _r_copy,
    "mv": _r_copy,
    "install": _r_copy,
    "ddrescue": _r_copy,
    "bmaptool": _r_copy,
    "shred": _r_shred,
    "wipefs": _r_wipefs,
    "blkdiscard": _r_blkdiscard,
    "hdparm": _r_hdparm,
    "nvme": _r_nvme,
    **dict.fromkeys(("fdisk", "gdisk", "cfdisk", "sfdisk", "sgdisk", "parted"), _r_partition),
    "chmod": _r_chmod,
    "chown": _r_chown,
    "chgrp": _r_chown,
    "systemctl": _r_systemctl,
    **dict.fromkeys(("shutdown", "reboot", "poweroff", "halt"), _r_shutdown),
    "init": _r_init,
    "telinit": _r_init,
    "kexec": _r_kexec,
    "svc": _r_svc,
    "setprop": _r_setprop,
    "kill": _r_kill,
    "killall5": _r_kill,
    **dict.fromkeys(("perl", "ruby", "php"), _r_interpreter),
}


def _handler(name: str) -> _Handler | None:
    h = _HANDLERS.get(name)
    if h is None:
        if name.startswith(("mkfs.", "mke2fs.")):
            return _r_mkfs
        if name.startswith("python"):
            return _r_interpreter
    return h


def _redirect_rule(op: str, target: str) -> str | None:
    if op not in _WRITE_REDIRECTS:
        return None
    if _is_block(target):
        return "redirect-block-device"
    if _is_sysrq(target):
        return "power"
    return None


def _piped_data(prev: _Cmd) -> list[str]:
    """What `echo X |`, `printf X |` or `cat <<EOF |` feed to the next command, if literal."""
    stages, _ = _unwrap(prev.words, prev.stdin)
    if not stages:
        return list(prev.stdin)
    argv = stages[-1]
    name, args = _base(argv[0]), argv[1:]
    if name == "echo":
        while args and re.fullmatch(r"-[neE]+", args[0]):
            args = args[1:]
        return [" ".join(args).replace("\\n", "\n")]
    if name == "printf" and args:
        fmt = re.sub(r"%[-+ #0-9.]*[sbdq]", " ", args[0])
        return [" ".join([fmt, *args[1:]]).replace("\\n", "\n")]
    if name == "cat" and len(argv) == 1:
        return list(prev.stdin)
    return []


# ================================================================ user entries


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
    r"rm|delete|/dev|mk(?:fs|e2fs|swap|dosfs|ntfs|exfat)|luks|erase|wipefs|blkdiscard|hdparm|nvme"
    r"|chmod|chown|chgrp|shutdown|reboot|poweroff|halt|init|systemctl|kexec|kill|svc|powerctl"
    r"|sysrq|fork|function|\(\s*\)"
)
_SEGMENTS = re.compile(r"[;&|\n()`{}]|\$\(")
_RAW_REDIRECT = re.compile(r"(?:&>>?|>>?|>\||<>)\s*(\S+)")
_RAW_BOMB = re.compile(r"([^\s(){};|&]+)\s*\(\s*\)\s*\{[^}]*?(?<![\w.:-])\1\s*[|&]")


def _may_trigger(command: str) -> bool:
    """Cheap pre-filter: can any built-in rule fire on this text at all?"""
    if "$'" in command or ("{" in command and "," in command):  # $'\x72m', {r,}m
        return True
    flat = command.replace("\\\n", "").translate(_UNQUOTE)
    return _TRIGGER.search(flat) is not None


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
            rule = _redirect_rule(op, target)
            if rule:
                yield _Event(rule, rtexts[-1], outer + rtexts, redirect=True)
        if stages:
            final = stages[-1]
            handler = _handler(_base(final[0]))
            if handler is not None:
                for kind, value in handler(_base(final[0]), final[1:]):
                    if kind == "rule":
                        yield _Event(value, display, ctx)
                    elif depth < _MAX_DEPTH:
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
                rule = _redirect_rule(">", r.group(1))
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
