"""Sandboxed Jinja2 rendering of step parameters, with context-aware shell quoting.

Values inserted into shell-command fields are escaped for the quoting context they land in
(runner.shellquote), secrets become variable references, `| raw` opts out; undefined names
are errors (StrictUndefined). No I/O; never executes commands.
"""

from __future__ import annotations

import contextvars
import re
import secrets as _random
import shlex
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, UndefinedError, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runner import scope as scopes
from runner import secrets, shellquote
from runner.errors import InvalidInput
from runner.model import ShellCommand

# Bounds on one render (docs/playbooks.md, "Input limits"): a template cannot hang a plan
# or fill memory. range() items are counted per render (nested loops multiply).
MAX_RANGE = 100_000  # items of one range() (as Jinja's own sandbox)
MAX_RANGE_ITEMS = 1_000_000  # range() items per render, all calls together
MAX_OUTPUT = 8 * 1024 * 1024  # characters one render may produce (also `*` on text/lists)
MAX_RENDER_S = 10.0  # wall time one render may take
MAX_POWER_BITS = 4096  # bits of an integer `**` may produce

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*\Z", re.S)


class Raw(str):
    """A string the shell finalizer leaves as it is (`{{ x | raw }}`)."""

    __slots__ = ()


class PendingResult(Exception):
    """Raised when a template reads an earlier step's result that is not known yet (plan time)."""

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self.step_id = step_id


class RenderError(Exception):
    """A template failed to render; `message` is for people."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PendingRef:
    """A registered name (`register: x`) whose step has not run yet: any use of it means
    the value is decided at apply, after that step (PendingResult)."""

    __slots__ = ("step_id",)

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id

    def _pending(self, *_: Any) -> Any:
        raise PendingResult(self.step_id)

    __str__ = __getattr__ = __getitem__ = __iter__ = __len__ = __bool__ = __eq__ = _pending
    __hash__ = None  # type: ignore[assignment]


class StepResults(Mapping[str, Any]):
    """`steps.<id>` in templates: known results, plus ids whose results are pending.

    `scope` is the include namespace of the template (runner/scope.py): `steps.conf` in "web"
    is `web.conf` when that exists. An include's id gives its namespace (`steps.web.conf`),
    whose `changed`, `failed` and `skipped` sum up its steps (when no step is named so)."""

    def __init__(self, known: dict[str, Any], pending: set[str], scope: str = "", *, root: str | None = None) -> None:
        self._known = known
        self._pending = pending
        self._scope = scope
        self._root = root  # a namespace view: names are looked up inside it only

    def __getitem__(self, key: str) -> Any:
        tries = [scopes.join(self._root, key)] if self._root is not None else scopes.candidates(self._scope, key)
        for full in tries:
            if full in self._known:
                return self._known[full]
            if full in self._pending:
                raise PendingResult(full)
            if scopes.is_namespace(full, self._known) or scopes.is_namespace(full, self._pending):
                return StepResults(self._known, self._pending, root=full)
        if self._root and key in ("changed", "failed", "skipped"):
            return self._summary(key)
        raise KeyError(key)

    def _summary(self, key: str) -> bool:
        head = f"{self._root}."
        if any(sid.startswith(head) for sid in self._pending):
            raise PendingResult(str(self._root))  # decided once the include's steps ran
        results = [v for k, v in self._known.items() if k.startswith(head) and isinstance(v, dict)]
        if key == "skipped":
            return bool(results) and all(bool(r.get("skipped")) for r in results)
        return any(bool(r.get(key)) for r in results)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        if self._root is None:
            return iter(self._known)
        head = f"{self._root}."
        return iter(sorted({k[len(head):].partition(".")[0] for k in self._known if k.startswith(head)}))

    def __len__(self) -> int:
        return len(self._known) if self._root is None else sum(1 for _ in self)


def quote(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "''"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(quote(v) for v in value)
    return shlex.quote(str(value))


# The values of the current shell render: (nonce, values). The finalizer puts a placeholder
# into Jinja's output for each value; render_text then lexes the literal text around the
# placeholders and escapes each value for the context it landed in.
_SLOTS: contextvars.ContextVar[tuple[str, list[Any]] | None] = contextvars.ContextVar("opsrun_slots", default=None)
_SLOT_SIZE: contextvars.ContextVar[int] = contextvars.ContextVar("opsrun_slot_size", default=0)
_MARK = "\ue000"
_END = "\ue001"


@pass_context
def _shell_finalize(context: Context, value: Any) -> Any:
    if isinstance(value, Raw):
        return str(value)
    slots = _SLOTS.get()
    if slots is None:  # pragma: no cover - shell templates are only rendered by render_text
        return quote(value)
    nonce, values = slots
    values.append(value)
    # the values are escaped and put in place after Jinja has run: bound what they add up to now,
    # so a loop inserting 100 MB stops at the limit instead of after escaping all of it
    size = len(value) if isinstance(value, str) else sum(len(str(v)) for v in value) \
        if isinstance(value, list | tuple) else len(str(value))
    total = _SLOT_SIZE.get() + size
    if total > MAX_OUTPUT:
        raise SecurityError(f"template output larger than {MAX_OUTPUT // (1024 * 1024)} MiB")
    _SLOT_SIZE.set(total)
    return f"{_MARK}{nonce}:{len(values) - 1}{_END}"


def _words(value: Any) -> list[list[shellquote.Segment]]:
    """A value as shell words (a list is one word per item), each split at secrets."""
    if isinstance(value, list | tuple):
        return [seg for v in value for seg in _words(v)]
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if "\0" in text:
        raise RenderError("a value inserted into a shell command contains a NUL byte")
    pieces = secrets.split(value if isinstance(value, secrets.Secret) else text)
    return [[shellquote.Ref(p) if is_ref else p for p, is_ref in pieces]]


def shell_word(value: Any) -> ShellCommand:
    """`value` as one shell word (an unquoted-context insertion), secrets as references."""
    segments = _words("" if value is None else value if isinstance(value, secrets.Secret) else str(value))[0]
    env = {seg.name: secrets.value_of(seg.name) for seg in segments if isinstance(seg, shellquote.Ref)}
    return ShellCommand(shellquote.encode(segments, shellquote.Context("word")), tuple(sorted(env.items())))


def shell_problems(source: str) -> list[tuple[int, str, str]]:
    """Insertion points of a shell-field template that no escaping can make safe, found
    without rendering: (line in the template, reason, hint). Every branch of {% if %} and
    {% for %} is read as if it were there once. Syntax errors are the caller's to report."""
    if not has_template(source):
        return []
    parts: list[str | int] = []
    lines: list[int] = []
    try:
        tokens = list(ENV_SHELL.lex(source))
    except TemplateError:
        return []
    k = 0
    while k < len(tokens):
        lineno, kind, value = tokens[k]
        if kind == "data":
            parts.append(value)
        elif kind == "variable_begin":
            names: list[str] = []
            while k < len(tokens) and tokens[k][1] != "variable_end":
                if tokens[k][1] in ("name", "operator"):
                    names.append(tokens[k][2])
                k += 1
            if names[-2:] == ["|", "raw"]:
                parts.append("RAW")  # trusted code: the lexer reads it as some word
            else:
                parts.append(len(lines))
                lines.append(lineno)
        k += 1
    analysis = shellquote.analyse(tuple(parts))
    return [(lines[slot], reason, hint) for slot, (reason, hint) in sorted(analysis.refused.items())]


def _assemble(output: str, nonce: str, values: list[Any]) -> ShellCommand:
    pieces = re.split(f"{_MARK}{nonce}:(\\d+){_END}", output)
    parts: list[str | int] = [int(p) if i % 2 else p for i, p in enumerate(pieces) if i % 2 or p]
    words: dict[int, list[list[shellquote.Segment]]] = {}
    env: dict[str, str] = {}
    for slot, value in enumerate(values):
        text = value if isinstance(value, str) else ""
        if _MARK in text:
            raise RenderError(
                "shell fields cannot capture rendered output ({% set %}…{% endset %}, macros, {% filter %})"
            )
        words[slot] = _words(value)
        for word in words[slot]:
            for seg in word:
                if isinstance(seg, shellquote.Ref):
                    env[seg.name] = secrets.value_of(seg.name)
    try:
        command = shellquote.assemble(parts, words)
    except shellquote.Refused as exc:
        raise RenderError(f"value {exc.slot + 1} of the command would land {exc.reason}; hint: {exc.hint}") from None
    return ShellCommand(command, tuple(sorted(env.items())))


def _text_finalize(value: Any) -> Any:
    return "" if value is None else value


class _Budget:
    """What one render (one Jinja context) has spent: range() items and wall time."""

    __slots__ = ("deadline", "items")

    def __init__(self) -> None:
        self.items = 0
        self.deadline = time.monotonic() + MAX_RENDER_S

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"template took longer than {MAX_RENDER_S:g}s to render")


def _budget(context: Context) -> _Budget:
    b = context.__dict__.get("_opsrun_budget")
    if b is None:
        b = context.__dict__["_opsrun_budget"] = _Budget()
    return b


def _bounded_concat(chunks: Any) -> str:
    """Template.render's join, with the output size and render time bounded."""
    out: list[str] = []
    size = 0
    deadline = time.monotonic() + MAX_RENDER_S
    try:
        for n, chunk in enumerate(chunks):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"template output larger than {MAX_OUTPUT // (1024 * 1024)} MiB")
            if not n % 256 and time.monotonic() > deadline:
                raise SecurityError(f"template took longer than {MAX_RENDER_S:g}s to render")
            out.append(chunk)
    except MemoryError:
        raise SecurityError("template needed more memory than there is") from None
    return "".join(out)


# a width or precision in a %-format or {}-format spec, longer than the output limit
_HUGE_SPEC = re.compile(r"(%[-+ #0]*|\{[^{}]*:[^{}]*?)\.?\d{" + str(len(str(MAX_OUTPUT))) + ",}")


def _check_widths(*args: Any, spec: Any = None) -> None:
    """Refuse widths beyond the output limit (`center(10**9)`, `'%999999999s' % x`)."""
    if isinstance(spec, str) and _HUGE_SPEC.search(spec):
        raise SecurityError(f"a format width larger than the {MAX_OUTPUT // (1024 * 1024)} MiB output limit")
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and a > MAX_OUTPUT:
            raise SecurityError(f"a width larger than the {MAX_OUTPUT // (1024 * 1024)} MiB output limit")


def _width_checked(fn: Any) -> Any:
    """A filter whose arguments after the value are checked (`format`: the value is the spec)."""

    def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_widths(*args, *kwargs.values(), spec=value if fn.__name__.startswith("do_format") else None)
        return fn(value, *args, **kwargs)

    return checked


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


class _Environment(ImmutableSandboxedEnvironment):
    """`steps.<id>` reads the step's result even when the id is also a Mapping method
    name (`steps.items`, `steps.get`); range() items, `*` and `**` results, output size
    and render time are bounded; everything else is the stock sandbox."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(__context)
        budget.check_time()
        if __obj is _range:
            rng = range(*args)  # Jinja's own _loop_vars/_block_vars keywords are not for range()
            if len(rng) > MAX_RANGE:
                raise SecurityError(f"range() of more than {MAX_RANGE:,} items")
            budget.items += len(rng)
            if budget.items > MAX_RANGE_ITEMS:
                raise SecurityError(
                    f"range() used for more than {MAX_RANGE_ITEMS:,} items in one template (nested loops?)"
                )
            return rng
        if getattr(__obj, "__name__", "") in ("format", "format_map", "center", "ljust", "rjust", "zfill",
                                               "expandtabs"):
            method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
            _check_widths(*args, *kwargs.values(), spec=getattr(method, "__self__", None))
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _budget(context).check_time()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _sized(seq) and isinstance(times, int) and _sized(seq) * times > MAX_OUTPUT:
                    raise SecurityError(f"'*' would make a value larger than {MAX_OUTPUT // (1024 * 1024)} MiB")
        elif operator == "%":
            _check_widths(spec=left)
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > 0
            and right * abs(left).bit_length() > MAX_POWER_BITS
        ):
            raise SecurityError(f"'**' would make a number larger than {MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, PendingRef):
            raise PendingResult(obj.step_id)
        if isinstance(obj, StepResults) and not attribute.startswith("_"):
            try:
                return obj[attribute]
            except KeyError:
                where = f"{obj._root}." if obj._root else ""
                return self.undefined(
                    hint=f"steps.{where}{attribute} is undefined: no step with id '{where}{attribute}' "
                         "ran before this one",
                    obj=obj,
                    name=attribute,
                )
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, PendingRef):
            raise PendingResult(obj.step_id)
        return super().getitem(obj, argument)


def _range(*args: int) -> range:
    """The templates' range(); _Environment.call counts its items against the budget."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:  # reached some other way than a call in a template
        raise SecurityError(f"range() of more than {MAX_RANGE:,} items")
    return rng


def _make_env(shell: bool) -> ImmutableSandboxedEnvironment:
    env = _Environment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_shell_finalize if shell else _text_finalize,
    )
    env.concat = _bounded_concat  # type: ignore[method-assign]
    env.globals["range"] = _range
    for name in ("center", "indent", "wordwrap", "format", "truncate", "filesizeformat"):
        env.filters[name] = _width_checked(env.filters[name])
    env.filters["raw"] = lambda v: Raw("" if v is None else str(v))
    # in shell fields every value is already escaped for its context: `quote` changes nothing
    env.filters["quote"] = (lambda v: v) if shell else (lambda v: Raw(quote(v)))
    env.filters["bool"] = _to_bool
    env.globals["secret"] = secrets.lookup
    return env


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y")
    return bool(value)


ENV_TEXT = _make_env(shell=False)
ENV_SHELL = _make_env(shell=True)


@lru_cache(maxsize=4096)
def _template(source: str, shell: bool) -> Any:
    return (ENV_SHELL if shell else ENV_TEXT).from_string(source)


@lru_cache(maxsize=4096)
def _expression(source: str) -> Any:
    return ENV_TEXT.compile_expression(source, undefined_to_none=False)


def has_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def holds_template(value: Any) -> bool:
    """Whether a string anywhere in nested data (mappings, lists) is a template."""
    if isinstance(value, str):
        return has_template(value)
    if isinstance(value, dict):
        return any(holds_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(holds_template(v) for v in value)
    return False


def render_text(source: str, variables: dict[str, Any], *, shell: bool = False) -> str:
    """Render a template string. shell=True escapes every inserted value for its quoting
    context and returns a ShellCommand (secrets as variable references, values in .env)."""
    if not has_template(source):
        return source
    token = size_token = None
    try:
        if not shell:
            return str(_template(source, shell).render(variables))
        nonce = _random.token_hex(4)
        values: list[Any] = []
        token = _SLOTS.set((nonce, values))
        size_token = _SLOT_SIZE.set(0)
        output = str(_template(source, shell).render(variables))
        command = _assemble(output, nonce, values)
        if len(command) > MAX_OUTPUT:  # the escaped values are inserted after Jinja's own bound
            raise RenderError(f"template output larger than {MAX_OUTPUT // (1024 * 1024)} MiB")
        return command
    except (PendingResult, RenderError):
        raise
    except UndefinedError as exc:
        raise RenderError(f"undefined variable: {exc.message}") from None
    except TemplateError as exc:
        raise RenderError(f"template error: {exc}") from None
    except InvalidInput as exc:
        raise RenderError(exc.message) from None
    except Exception as exc:  # a user template may raise anything (1/0, 'a' + 1)
        raise RenderError(f"template failed: {type(exc).__name__}: {exc}") from None
    finally:
        if token is not None:
            _SLOTS.reset(token)
        if size_token is not None:
            _SLOT_SIZE.reset(size_token)


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a bare Jinja2 expression (`when`, `changed_when`) to a Python value."""
    try:
        value = _expression(expression)(**variables)
        if isinstance(value, Undefined):  # a bare undefined name (or unsafe attribute) is an error
            value._fail_with_undefined_error()
        return value
    except PendingResult:
        raise
    except UndefinedError as exc:
        raise RenderError(f"undefined variable in '{expression}': {exc.message}") from None
    except TemplateError as exc:
        raise RenderError(f"bad expression '{expression}': {exc}") from None
    except InvalidInput as exc:
        raise RenderError(exc.message) from None
    except Exception as exc:  # a user expression may raise anything (1/0, bad index)
        raise RenderError(f"expression '{expression}' failed: {type(exc).__name__}: {exc}") from None


def render_value(value: Any, variables: dict[str, Any], *, shell: bool = False) -> Any:
    """Render nested data. A string that is exactly `{{ expr }}` keeps the native type
    (a list stays a list) unless it is a shell field; a text result keeps the whitespace
    written around it."""
    if isinstance(value, str):
        if not has_template(value):
            return value
        if not shell:
            m = _SINGLE_EXPR.match(value)
            if m:
                result = evaluate(m.group("expr").strip(), variables)
                if not (isinstance(result, str) and value != value.strip()):
                    return result
                # text with whitespace around (`content: "{{ motd }}\n"`, a `|` block): kept as written
        return render_text(value, variables, shell=shell)
    if isinstance(value, dict):
        return {k: render_value(v, variables, shell=shell) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, variables, shell=shell) for v in value]
    return value


def render_params(
    params: dict[str, Any],
    variables: dict[str, Any],
    shell_fields: frozenset[str],
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Render a step's parameters; values in `shell_fields` are escaped for their quoting
    context (those fields come back as ShellCommand), `skip` is left as is."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in skip:
            out[key] = value
        else:
            out[key] = render_value(value, variables, shell=key in shell_fields)
    return out


def truthy(value: Any) -> bool:
    return _to_bool(value)
