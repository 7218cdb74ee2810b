"""Variable values for one host: templated values (`a: "{{ b }}-x"`) rendered lazily, in
dependency order, cycles reported as a chain. Imports render, secrets, fact_names; no host, no I/O.

A value is rendered when it is first read, after the names it reads; a value that cannot be
rendered (cycle, undefined name, unset secret) fails only where it is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined

from runner import fact_names, render, secrets
from runner.errors import InvalidInput

# read only while the run goes: playbook vars cannot use them (they are set before any step)
RUNTIME_NAMES = frozenset({"steps", "item", "loop_index"})


class VarError(Exception):
    """A variable could not be rendered; `name` is the variable, `chain` the cycle if any."""

    def __init__(self, name: str, message: str, chain: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.chain = chain


class Broken(StrictUndefined):
    """Stands for a variable that could not be rendered: any use of it fails with the reason
    (as VarUnavailable, which the renderer reports without "undefined variable:")."""

    __slots__ = ()


class VarUnavailable(InvalidInput):
    """Raised where a template uses a Broken variable."""


def template_names(value: Any) -> set[str]:
    """The variables that the templates inside `value` (nested lists/dicts too) read."""
    out: set[str] = set()
    if isinstance(value, str):
        if render.has_template(value):
            out.update(_names(value))
    elif isinstance(value, dict):
        for v in value.values():
            out |= template_names(v)
    elif isinstance(value, list | tuple):
        for v in value:
            out |= template_names(v)
    return out


def _names(source: str) -> set[str]:
    from jinja2 import TemplateSyntaxError, nodes

    try:
        ast = render.ENV_TEXT.parse(source)
    except TemplateSyntaxError:
        return set()  # rendering reports it
    stored = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load" and n.name not in stored}


def _undefined_name(message: str) -> str | None:
    m = re.search(r"'(\w+)' is undefined", message)
    return m.group(1) if m else None


class Resolver:
    """Renders the templated values of `raw` on demand. `literal` names are taken as they are
    (--var values, magic names). `secret` replaces the secret() function (validate passes a
    placeholder so that it reads no secret)."""

    def __init__(self, raw: Mapping[str, Any], literal: frozenset[str] | set[str] = frozenset(),
                 secret: Callable[[str], Any] | None = None) -> None:
        self.raw = dict(raw)
        self.literal = set(literal)
        self.secret = secret
        self.done: dict[str, Any] = {}
        self.failed: dict[str, VarError] = {}
        self._stack: list[str] = []

    def get(self, name: str) -> Any:
        """The rendered value of `name`; raises VarError (KeyError when it is not defined)."""
        if name in self.done:
            return self.done[name]
        if name in self.failed:
            raise self.failed[name]
        if name not in self.raw:
            raise KeyError(name)
        value = self.raw[name]
        if name in self.literal or not render.holds_template(value):
            self.done[name] = value
            return value
        if name in self._stack:
            chain = (*self._stack[self._stack.index(name):], name)
            raise VarError(name, "variable cycle: " + " -> ".join(chain), chain)
        self._stack.append(name)
        try:
            rendered = self._render(name, value)
        except VarError as exc:
            if not exc.chain or name == exc.chain[0]:
                self.failed[name] = exc
            raise
        finally:
            self._stack.pop()
        self.done[name] = rendered
        return rendered

    def _render(self, name: str, value: Any) -> Any:
        context: dict[str, Any] = {}
        for dep in sorted(template_names(value)):
            if dep in RUNTIME_NAMES and dep not in self.raw:
                raise VarError(name, f"reads {dep}, which is known only while the run goes "
                                     "(vars are rendered before any step runs)")
            if dep in self.raw:
                try:
                    context[dep] = self.get(dep)
                except VarError as exc:
                    if exc.chain:
                        raise
                    raise VarError(name, f"reads '{dep}', which cannot be rendered: {exc.message}") from None
        if self.secret is not None:
            context["secret"] = self.secret
        try:
            return _marked(render.render_value(value, context))
        except render.PendingResult as exc:  # a host fact not known yet: the var waits for it too
            return fact_names.FactPending(exc.step_id)
        except render.RenderError as exc:
            missing = _undefined_name(exc.message)
            if missing:
                raise VarError(name, f"reads '{missing}', which is not defined") from None
            raise VarError(name, exc.message) from None

    def resolve_all(self) -> dict[str, Any]:
        """Every name; a value that cannot be rendered becomes a Broken that fails when used."""
        out: dict[str, Any] = {}
        for name in self.raw:
            try:
                out[name] = self.get(name)
            except VarError as exc:
                out[name] = Broken(hint=f"'{name}' cannot be rendered: {exc.message}", name=name,
                                   exc=VarUnavailable)  # type: ignore[arg-type]  # any exception type works
        return out



def _marked(value: Any) -> Any:
    """A rendered string that holds a secret's value is itself marked secret."""
    if isinstance(value, secrets.Secret):
        return value
    if isinstance(value, str):
        text = str(value)  # a plain str: a fact's stand-in (runner/fact_names.py) compares as one
        return secrets.mark(value) if secrets.redact(text) != text else value
    if isinstance(value, dict):
        return {k: _marked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_marked(v) for v in value]
    return value
