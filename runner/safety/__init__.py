"""Forbidden-command rules: decides whether one shell command may be sent to a target.

Pure: no I/O, no subprocess, no logging; imports nothing above runner.errors. A small shell
lexer (lexer.py, parse.py) splits the command into simple commands (quotes, operators,
substitutions, heredocs), wrappers such as sudo/env/nohup are stripped and nested scripts
(sh -c, eval, su -c, ssh) are read too (wrappers.py, runners.py); rule checks live in fs.py,
disk.py, storage.py, power.py, system.py and android.py, the guard in rules.py (also file
destinations, checked at plan time). A guard rail against mistakes and LLM slips, not a sandbox:
see docs/safety.md for what it cannot see.
"""

from __future__ import annotations

from runner.safety.lexer import ParseError
from runner.safety.parse import split_commands
from runner.safety.rules import (
    BUILTIN_RULES,
    DEFAULT_RULES,
    DESTINATION_RULES,
    Finding,
    Lift,
    Rules,
    check,
    check_destination,
    validate_entry,
)

__all__ = [
    "BUILTIN_RULES",
    "DEFAULT_RULES",
    "DESTINATION_RULES",
    "Finding",
    "Lift",
    "ParseError",
    "Rules",
    "check",
    "check_destination",
    "split_commands",
    "validate_entry",
]
