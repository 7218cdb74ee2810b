"""Safety: argument helpers shared by wrappers and rule checks (options, operands, names).
Pure; imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

_Item = tuple[str, Any]  # ("rule", name) or ("argv", list[str]): a command run by this one
_Handler = Callable[[str, list[str]], list[_Item]]


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


def _base(word: str) -> str:
    return word.rsplit("/", 1)[-1] if "/" in word else word


def _join(argv: Sequence[str]) -> str:
    return " ".join(" ".join([_base(argv[0]), *argv[1:]]).split()) if argv else ""


def _opts_anywhere(
    args: Sequence[str], short_arg: str = "", long_arg: Iterable[str] = ()
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Options and operands of a command whose options may come after operands (GNU getopt
    permutes): every option as (flag, value), and the operands (all words after `--` too)."""
    opts: list[tuple[str, str | None]] = []
    operands: list[str] = []
    long_set = tuple(long_arg)
    i, n = 0, len(args)
    while i < n:
        found, j = _opts(args[i:], short_arg, long_set)
        if j:
            opts += found
            if args[i + j - 1] == "--" and (not found or found[-1][1] != "--"):
                operands += args[i + j :]
                break
            i += j
            continue
        operands.append(args[i])
        i += 1
    return opts, operands
