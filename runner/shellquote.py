"""Context-aware insertion of values into sh command templates: a small POSIX sh lexer finds
each insertion's quoting context and the encoder escapes for it. Pure; imports nothing from runner."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox", "su", "runuser"})
ENV_RESET = frozenset({"sudo", "su", "doas", "runuser", "ssh", "env", "pkexec", "setpriv"})
ARITH_OPS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
DECLARE = frozenset({"export", "declare", "typeset", "local", "readonly"})
NAME_ARGS = frozenset({"read", "unset"})  # every argument is a variable name
NAME_OPT = frozenset({"printf", "test", "[", "[["})  # -v NAME
READ_ARGS = frozenset({"-p", "-d", "-t", "-n", "-N", "-u"})  # read's options that take a value
RESET_WORDS = frozenset({"then", "do", "else", "elif", "if", "while", "until", "{", "}", "!", "time", "in"})
SSH_ARG_OPTS = frozenset("bcDEeFIiJLlmOopQRSWwB")
_C_OPTION = re.compile(r"^-[A-Za-z]*c[A-Za-z]*$")


_VAR_HINT = 'put the value in a shell variable first (v={{ x }}; …) and use "$v" there'
# fmt: off
REFUSALS: dict[str, tuple[str, str]] = {  # code -> (where the value would land, what to do)
    "arith": ("in arithmetic ($(( )), (( )), let, [[ -eq ]]), where bash runs $( ) found in array subscripts",
              "check it is a number first: v={{ x }}; case $v in ''|*[!0-9]*) exit 2;; esac; then use $v"),
    "pipe": ("in a pipeline into a shell (… | sh), where the value would become code",
             "hand it to the script as an argument instead: sh -c '… \"$1\" …' sh {{ x }}"),
    "name": ("as a variable name (export, declare, local, read, unset, printf -v...)", "write the name literally"),
    "backslash": ("right after a backslash, which would escape the value's first character",
                  "remove the backslash: the value is escaped for its context already"),
    "dollar": ("right after $, as a variable name", "write the variable name literally"),
    "param": ("inside ${…}, where it would be parameter syntax", _VAR_HINT),
    "subst": ("inside a command substitution whose output becomes a nested script's code",
              "hand it to the nested script as an argument: sh -c '… \"$1\" …' sh {{ x }}"),
    "ansi": ("inside $'…' quoting", "use '…' or \"…\" around it instead"),
    "delim": ("in a heredoc delimiter", "write the delimiter literally"),
    "unknown": ("in a place the quoting lexer cannot classify", _VAR_HINT),
}
# fmt: on


class Ref(NamedTuple):
    """A secret inside a value: reaches the command as the variable `name`, never as text."""

    name: str


Segment = str | Ref


@dataclass(frozen=True)
class Context:
    """Where one insertion lands: its innermost kind, then the quoting levels around it
    (innermost first) that the encoded text must also survive."""

    kind: str  # word | dq | sq | heredoc | heredoc-quoted | comment
    layers: tuple[str, ...] = ()  # word | dq | sq | heredoc | heredoc-quoted | bq
    env_ok: bool = True  # False: an exported variable does not reach this level (sudo, ssh...)


class Refused(Exception):
    """An insertion point no escaping can make safe (or a value that would break out)."""

    def __init__(self, slot: int, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.slot = slot
        self.reason = reason
        self.hint = hint or _VAR_HINT


@dataclass
class Analysis:
    contexts: dict[int, Context] = field(default_factory=dict)
    refused: dict[int, tuple[str, str]] = field(default_factory=dict)
    heredocs: list[tuple[str, bool, list[object], int]] = field(default_factory=list)
    seen: list[Any] = field(default_factory=list)  # slots in the order met (pipelines)


class _Slot(NamedTuple):
    idx: int
    layers: tuple[str, ...]
    env_ok: bool


_OPAQUE = "\ue002"  # an outer expansion inside a collected nested script: some unknown word text
_Item = str | _Slot


class _Lex:
    """Lexes one script (a list of characters and slots) and records each slot's context."""

    def __init__(self, items: list[_Item], out: Analysis, base: int = 0) -> None:
        self.items = items
        self.n = len(items)
        self.i = 0
        self.out = out
        self.base = base  # how many layers the slots of `items` already carry

    def peek(self, k: int = 0) -> _Item | None:
        j = self.i + k
        return self.items[j] if j < self.n else None

    def record(self, s: _Slot, kind: str, env_ok: bool = True) -> None:
        self.out.contexts[s.idx] = Context(kind, s.layers, s.env_ok and env_ok)

    def place(self, c: _Slot, kind: str, collect: list[_Item] | None, env_ok: bool) -> None:
        """A slot met in `kind`: recorded here, or collected for the nested script it is in."""
        self.out.seen.append(c)
        if collect is not None:
            collect.append(_Slot(c.idx, (kind, *c.layers), c.env_ok))
        else:
            self.record(c, kind, env_ok)

    def refuse(self, s: _Slot, code: str) -> None:
        self.out.refused.setdefault(s.idx, REFUSALS[code])

    def refuse_region(self, end: str, code: str, opening: int = 1) -> None:
        """Skip past the `end` closing what is open (`opening` levels deep; `'` does not
        nest), refusing every slot on the way."""
        depth = opening
        start = {")": "(", "}": "{"}.get(end)
        while self.i < self.n:
            c = self.items[self.i]
            self.i += 1
            if isinstance(c, _Slot):
                self.refuse(c, code)
            elif c == "\\":
                self.i += 1
            elif c == start:
                depth += 1
            elif c == end:
                depth -= 1
                if depth <= 0:
                    return

    # ------------------------------------------------------------ scripts
    def script(self, stop: str | None = None, env_ok: bool = True) -> None:
        words: list[str | None] = []
        heredocs: list[tuple[str, bool, bool, bool, bool]] = []
        pipeline_start = len(self.out.seen)
        case_depth = 0
        depth = 0
        while self.i < self.n:
            c = self.items[self.i]
            if isinstance(c, str) and c in " \t":
                self.i += 1
                continue
            if c == "\n":
                self.i += 1
                words = []
                for spec in heredocs:
                    self.heredoc_body(*spec)
                heredocs = []
                pipeline_start = len(self.out.seen)
                continue
            if isinstance(c, str) and c in ";&|":
                self.i += 1
                if c == "|" and self.peek() != "|":
                    self.pipe_check(pipeline_start)
                else:
                    pipeline_start = len(self.out.seen)
                    if self.peek() == c:
                        self.i += 1
                words = []
                continue
            if c == "(":
                self.i += 1
                if not words and self.peek() == "(":  # (( arithmetic ))
                    self.i += 1
                    self.refuse_region(")", "arith", 2)
                    continue
                depth += 1
                words = []
                continue
            if c == ")":
                self.i += 1
                if case_depth and words:  # the end of a case pattern
                    words = []
                elif depth:
                    depth -= 1
                    words = []
                elif stop == ")":
                    return
                continue
            if isinstance(c, str) and c in "<>":
                self.i += 1
                if c == "<" and self.peek() == "<" and self.peek(1) != "<":
                    self.i += 1
                    strip = self.peek() == "-"
                    if strip:
                        self.i += 1
                    heredocs.append(self.heredoc_start(words, strip, env_ok))
                    continue
                while self.peek() in ("<", ">", "&", "|"):  # >>, >&, <<<, >|
                    self.i += 1
                while self.peek() in (" ", "\t"):
                    self.i += 1
                if self.peek() not in (None, "\n", ";", "&", "|", "(", ")", "<", ">"):
                    self.word([], env_ok)  # the target: a file name, not an argument
                continue
            if c == "#":
                self.comment()
                continue
            text = self.word(words, env_ok)
            if text == "case" and not words:
                case_depth += 1
            elif text == "esac" and case_depth:
                case_depth -= 1
            if text in RESET_WORDS and not words:
                continue
            words.append(text)

    def pipe_check(self, start: int) -> None:
        """`… {{ x }} … | sh`: the value becomes the script of a shell reading stdin."""
        j = self.i
        while j < self.n and self.items[j] not in ("\n", ";", "&", "|", ")"):
            j += 1
        rest = "".join(x if isinstance(x, str) else "\0" for x in self.items[self.i : j]).split()
        names = [w.rsplit("/", 1)[-1] for w in rest]
        shells = [k for k, w in enumerate(names) if w in SHELLS - {"su", "runuser"}]
        if shells and all(w.startswith("-") and not _C_OPTION.match(w) for w in rest[shells[0] + 1 :]):
            for s in self.out.seen[start:]:
                self.refuse(s, "pipe")

    def comment(self) -> None:
        while self.i < self.n and self.items[self.i] != "\n":
            if isinstance(c := self.items[self.i], _Slot):
                self.record(c, "comment")
            self.i += 1

    def nested_kind(self, words: list[str | None]) -> str:
        """'one': this word is a nested script (sh -c '…'); 'join': words from here on are
        joined into one script (eval, ssh's remote command); '' otherwise."""
        if not words:
            return ""
        names = [(w or "").rsplit("/", 1)[-1] for w in words]
        if "eval" in names:
            return "join"
        prev = words[-1] or ""
        if (_C_OPTION.match(prev) or prev == "--command") and any(n in SHELLS for n in names[:-1]):
            return "one"
        if "ssh" in names:
            k = names.index("ssh") + 1
            while k < len(words) and (words[k] or "").startswith("-"):  # options, some with an argument
                w = words[k] or ""
                k += 2 if (len(w) == 2 and w[1] in SSH_ARG_OPTS) else 1
                if w == "--":
                    break
            if k < len(words):  # the host is words[k]; what follows is the remote command
                return "join"
        return ""

    def word(self, words: list[str | None], env_ok: bool, into: list[_Item] | None = None) -> str | None:
        """One word at script level; returns its literal text (None if it has slots or
        expansions) and records the contexts of its slots (or collects them into `into`)."""
        nested = "" if into is not None else self.nested_kind(words)
        collect: list[_Item] | None = into if into is not None else ([] if nested else None)
        text: list[str] | None = []
        first = (words[0] or "") if words else ""
        options = [w for w in words[1:] if (w or "").startswith("-")]
        declare = first in DECLARE or (first in NAME_ARGS and words[-1] not in READ_ARGS)
        declare = declare or (words[-1:] == ["-v"] and first in NAME_OPT)
        arith = first == "let" or ("[[" in words and (words[-1] or "") in ARITH_OPS)
        arith = arith or (first in DECLARE and any("i" in (w or "") for w in options))  # declare -i
        seen_eq = False
        while self.i < self.n:
            c = self.items[self.i]
            if isinstance(c, _Slot):
                self.i += 1
                text = None
                if arith or (declare and not seen_eq):
                    self.out.seen.append(c)
                    self.refuse(c, "arith" if arith else "name")
                else:
                    self.place(c, "word", collect, env_ok)
                continue
            if c in (" ", "\t", "\n", ";", "&", "|", "<", ">", "(", ")"):
                break
            self.i += 1
            if c == "'":
                while self.i < self.n and self.items[self.i] != "'":
                    ch = self.items[self.i]
                    self.i += 1
                    if isinstance(ch, _Slot):
                        text = None
                        self.place(ch, "sq", collect, env_ok)
                    else:
                        if text is not None:
                            text.append(ch)
                        if collect is not None:
                            collect.append(ch)
                self.i += 1
            elif c == '"':
                if self.dq(collect, env_ok):
                    text = None
            elif c == "\\":
                nxt = self.peek()
                self.i += 1
                if isinstance(nxt, _Slot):
                    self.refuse(nxt, "backslash")
                    text = None
                elif nxt == "\n":
                    continue
                elif nxt is not None:
                    if text is not None:
                        text.append(nxt)
                    if collect is not None:
                        collect.append(nxt)
            elif c == "$":
                self.dollar(collect, env_ok)
                text = None
            elif c == "`":
                self.backtick(collect, env_ok, False)
                text = None
            else:
                seen_eq = seen_eq or c == "="
                if text is not None:
                    text.append(c)
                if collect is not None:
                    collect.append(c)
        if collect is not None and nested == "join":
            while True:  # eval / ssh host …: the words that follow join this one, with spaces
                while self.peek() in (" ", "\t"):
                    self.i += 1
                nxt = self.peek()
                if nxt is None or nxt in ("\n", ";", "&", "|", ")", "<", ">", "("):
                    break
                collect.append(" ")
                self.word(words, env_ok, into=collect)
        if collect is not None and nested:
            _Lex(collect, self.out, self.base + 1).script(env_ok=env_ok and not self.resets(words))
        return "".join(text) if text is not None else None

    @staticmethod
    def resets(words: list[str | None]) -> bool:
        return any((w or "").rsplit("/", 1)[-1] in ENV_RESET for w in words)

    def dq(self, collect: list[_Item] | None, env_ok: bool, kind: str = "dq") -> bool:
        """Inside "…" (the opening quote read), or an unquoted heredoc body (kind "heredoc":
        to the end, `"` not special). Returns True when something was not literal."""
        dynamic = False
        quote = kind == "dq"
        escapes = ("$", "`", '"', "\\") if quote else ("$", "`", "\\")
        while self.i < self.n:
            c = self.items[self.i]
            self.i += 1
            if c == '"' and quote:
                return dynamic
            if isinstance(c, _Slot):
                dynamic = True
                self.place(c, kind, collect, env_ok)
            elif c == "\\":
                nxt = self.peek()
                self.i += 1
                if isinstance(nxt, _Slot):
                    self.refuse(nxt, "backslash")
                elif nxt in escapes:
                    if collect is not None:
                        collect.append(str(nxt))
                elif nxt != "\n" and nxt is not None and collect is not None:
                    collect.extend(["\\", nxt])
            elif c == "$":
                dynamic = True
                self.dollar(collect, env_ok)
            elif c == "`":
                dynamic = True
                self.backtick(collect, env_ok, quote)
            elif collect is not None:
                collect.append(c)
        return dynamic

    def dollar(self, collect: list[_Item] | None, env_ok: bool) -> None:
        """After a `$`: a parameter, ${…}, $(…), $((…)) or $'…'."""
        nxt = self.peek()
        if isinstance(nxt, _Slot):
            self.refuse(nxt, "dollar")
            return
        if nxt == "{":
            self.i += 1
            self.refuse_region("}", "param")
        elif nxt == "(" and self.peek(1) == "(":
            self.i += 2
            self.refuse_region(")", "arith", 2)
        elif nxt == "(":
            self.i += 1
            if collect is not None:  # its output becomes text of the nested script
                self.refuse_region(")", "subst")
            else:
                self.script(")", env_ok)
        elif nxt == "'":
            self.i += 1
            self.refuse_region("'", "ansi")
        elif isinstance(nxt, str) and (nxt.isalpha() or nxt == "_"):
            while isinstance(self.peek(), str) and (str(self.peek()).isalnum() or self.peek() == "_"):
                self.i += 1
        elif isinstance(nxt, str) and (nxt.isdigit() or nxt in "@*#?$!-"):
            self.i += 1
        else:
            if collect is not None:
                collect.append("$")
            return
        if collect is not None:
            collect.append(_OPAQUE)

    def backtick(self, collect: list[_Item] | None, env_ok: bool, in_dq: bool) -> None:
        inner: list[_Item] = []
        while self.i < self.n:
            c = self.items[self.i]
            self.i += 1
            if c == "`":
                break
            if c == "\\":
                nxt = self.peek()
                if nxt in ("$", "`", "\\") or (in_dq and nxt == '"'):
                    self.i += 1
                    inner.append(str(nxt))
                    continue
                inner.append(c)
            elif isinstance(c, _Slot):
                if collect is not None:
                    self.refuse(c, "subst")
                else:
                    inner.append(_Slot(c.idx, ("bq", *c.layers), c.env_ok))
            else:
                inner.append(c)
        if collect is not None:
            collect.append(_OPAQUE)
            return
        _Lex(inner, self.out, self.base + 1).script(env_ok=env_ok)

    def heredoc_start(self, words: list[str | None], strip: bool, env_ok: bool) -> tuple[str, bool, bool, bool, bool]:
        while self.peek() in (" ", "\t"):
            self.i += 1
        delim: list[str] = []
        quoted = False
        quote = ""  # the quote char the delimiter is inside, if any
        while self.i < self.n:
            c = self.items[self.i]
            if not quote and c in (" ", "\t", "\n", ";", "&", "|", "<", ">", "(", ")"):
                break
            self.i += 1
            if isinstance(c, _Slot):
                self.refuse(c, "delim")
            elif c == quote or (not quote and c in ("'", '"')):
                quoted = True
                quote = "" if quote else c
            elif c == "\\" and not quote:
                quoted = True
                nxt = self.peek()
                self.i += 1
                delim.append(nxt if isinstance(nxt, str) else "")
            else:
                delim.append(c)
        names = [(w or "").rsplit("/", 1)[-1] for w in words]
        shell_at = [k for k, w in enumerate(names) if w in SHELLS]
        script = bool(shell_at) and not any(_C_OPTION.match(w or "") for w in words[shell_at[0] + 1 :])
        if not script and "ssh" in names and self.nested_kind(words[:-1]) != "join":
            script = True  # `ssh host <<EOF`: the body is the remote shell's script
        return "".join(delim), quoted, strip, script, env_ok and not (script and self.resets(words))

    def heredoc_body(self, delim: str, quoted: bool, strip: bool, script: bool, env_ok: bool) -> None:
        body: list[_Item] = []
        while self.i < self.n:
            end = self.i
            while end < self.n and self.items[end] != "\n":
                end += 1
            line, self.i = self.items[self.i : end], end + 1
            text = "".join(x if isinstance(x, str) else "\0" for x in line)  # a slot never ends it
            if (text.lstrip("\t") if strip else text) == delim:
                break
            body.extend(line)
            body.append("\n")
        if not any(isinstance(x, _Slot) for x in body):
            return
        self.out.heredocs.append((delim, strip, list(body), self.base))
        layer = "heredoc-quoted" if quoted else "heredoc"
        collect: list[_Item] | None = [] if script else None
        if quoted:  # read as it is: no expansion, and so no secret variable either
            for x in body:
                if isinstance(x, _Slot):
                    self.place(x, layer, collect, False)
                elif collect is not None:
                    collect.append(x)
        else:
            _Lex(body, self.out, self.base).dq(collect, env_ok, layer)
        if collect is not None:
            _Lex(collect, self.out, self.base + 1).script(env_ok=env_ok)


# ---------------------------------------------------------------- public API


@lru_cache(maxsize=4096)
def analyse(parts: tuple[str | int, ...]) -> Analysis:
    """Contexts of the insertion points of a template: `parts` alternates literal text and
    slot numbers. Cached: a template's skeleton is lexed once."""
    items: list[_Item] = [x for p in parts for x in ([_Slot(p, (), True)] if isinstance(p, int) else p)]
    out = Analysis()
    _Lex(items, out).script()
    for slot in {p for p in parts if isinstance(p, int)} - set(out.contexts) - set(out.refused):
        out.refused[slot] = REFUSALS["unknown"]
    return out


def literal(text: str, kind: str) -> str:
    """`text` escaped so that it reads back as exactly `text` at a level of this kind."""
    if kind == "word":
        return shlex.quote(text)
    if kind == "dq":
        return re.sub(r'([\\$`"])', r"\\\1", text)
    if kind == "sq":
        return text.replace("'", "'\\''")
    if kind in ("heredoc", "bq"):
        return re.sub(r"([\\$`])", r"\\\1", text)
    if kind == "comment":
        return text.replace("\r", " ").replace("\n", " ")
    return text  # heredoc-quoted: read as it is (the delimiter check guards its lines)


def _ref(name: str, kind: str) -> str:
    if kind == "word":
        return f'"${{{name}}}"'
    if kind == "sq":
        return f"'\"${{{name}}}\"'"
    return f"${{{name}}}"


def encode(segments: Sequence[Segment], ctx: Context, slot: int = 0) -> str:
    """The text for one value (literal parts and secret references) in its context."""
    kind = ctx.kind
    if kind != "comment" and (kind == "heredoc-quoted" or not ctx.env_ok) and any(isinstance(x, Ref) for x in segments):
        where = "a quoted heredoc" if kind == "heredoc-quoted" else "a nested script run through sudo/su/ssh/env"
        raise Refused(
            slot,
            f"a secret cannot be inserted into {where}: it would be written into the command line",
            "use an unquoted heredoc, or hand the secret over on stdin (printf '%s' \"$VAR\" | …)",
        )
    return "".join(
        ("***" if kind == "comment" else _ref(x.name, kind)) if isinstance(x, Ref) else literal(x, kind)
        for x in segments
        if x != "" or len(segments) == 1
    )


def wrap(text: str, layers: Sequence[str]) -> str:
    for layer in layers:
        text = literal(text, layer)
    return text


def assemble(parts: Sequence[str | int], values: dict[int, list[list[Segment]]]) -> str:
    """Build the command: literal parts as written, each slot's value (a list of words,
    each a list of segments) escaped for its context. Raises Refused."""
    an = analyse(tuple(parts))
    for slot, (reason, hint) in sorted(an.refused.items()):
        raise Refused(slot, reason, hint)
    inner: dict[int, str] = {}
    for slot, words in values.items():
        ctx = an.contexts[slot]
        texts = [encode(w, ctx, slot) for w in words]
        if ctx.kind == "word" and not texts:
            texts = ["''"]
        inner[slot] = " ".join(texts)
    for delim, strip, body, base in an.heredocs:
        _check_heredoc(delim, strip, body, base, inner, an)
    out = []
    for part in parts:
        if isinstance(part, int):
            ctx = an.contexts[part]
            out.append(wrap(inner[part], ctx.layers))
        else:
            out.append(part)
    return "".join(out)


def _check_heredoc(delim: str, strip: bool, body: list[object], base: int, inner: dict[int, str], an: Analysis) -> None:
    text: list[str] = []
    slots: list[int] = []
    for x in body:
        if isinstance(x, _Slot):
            ctx = an.contexts.get(x.idx)
            if ctx is None:
                continue
            keep = len(ctx.layers) - base
            text.append(wrap(inner[x.idx], ctx.layers[: max(keep, 0)]))
            slots.append(x.idx)
        else:
            text.append(str(x))
    for line in "".join(text).split("\n"):
        if (line.lstrip("\t") if strip else line) == delim:
            raise Refused(
                slots[0],
                f"the value would end the heredoc <<{delim} early (it makes a line '{delim}')",
                "use another heredoc delimiter, or check the value",
            )
