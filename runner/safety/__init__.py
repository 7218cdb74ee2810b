"""Forbidden-command rules: decides whether one shell command may be sent to a target.

Pure: no I/O, no subprocess, no logging; imports nothing above runner.errors. A small shell
lexer (lexer.py, parse.py) splits the command into simple commands (quotes, operators,
substitutions, heredocs), wrappers such as sudo/env/nohup are stripped and nested scripts
(sh -c, eval, su -c, ssh) are read too (wrappers.py); rule checks live in fs.py, disk.py and
system.py, the guard in rules.py. A guard rail against mistakes and LLM slips, not a sandbox:
see docs/safety.md for what it cannot see.
"""

from __future__ import annotations

from runner.safety.lexer import ParseError
from runner.safety.parse import split_commands
from runner.safety.rules import BUILTIN_RULES, DEFAULT_RULES, Finding, Rules, check, validate_entry

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
