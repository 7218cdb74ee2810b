"""Safety, step 2: tokens -> pipelines of simple commands (words, redirects, stdin), brace and
IFS expansion, function definitions that are fork bombs. Pure; imports only .lexer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from runner.safety.lexer import _ASSIGN, _REDIRECTS, _RESERVED, ParseError, _Lexer, _Tok


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
                if w == "time" and k < n and toks[k].kind == "word" and toks[k].text == "-p":
                    k += 1  # bash's `time -p CMD`: -p is the keyword's, not a command
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
