"""Safety, step 1: a small shell lexer (quotes, operators, substitutions, heredocs) -> tokens.
Pure: imports only the standard library; nothing from runner above runner.errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ParseError(ValueError):
    """The text is not valid shell: an unbalanced quote or an unterminated substitution."""


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
