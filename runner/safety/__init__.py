"""Forbidden-command rules: may this shell command be sent to a target, may a file step write
this path? Pure: no I/O, no subprocess, no logging; imports nothing above runner.errors.

Layout: lexer.py and parse.py read the shell (quotes, operators, substitutions, heredocs);
wrappers.py and runners.py peel wrappers (sudo, env, sh -c, ssh, strace, nsenter, ...); fs.py,
disk.py, storage.py, power.py, system.py and android.py hold the rule checks, handlers.py maps
program names to them, paths.py judges paths; rules.py has the Rules guard. A guard rail against
mistakes and LLM slips, not a sandbox: docs/safety.md says what it cannot see.
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
