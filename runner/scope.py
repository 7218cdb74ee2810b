"""Step ids inside includes: `web.conf` is step `conf` of the include (or role) step `web`;
names resolve from the innermost namespace outwards. Pure string logic; imports nothing.

A step's namespace is its id without the last part ("" at the top of the playbook). In the
namespace "web", `steps.conf` means `web.conf` when that exists, else the top-level `conf`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def scope_of(step_id: str) -> str:
    """The namespace a step id lives in: "web" for "web.conf", "" for "conf"."""
    return step_id.rpartition(".")[0]


def join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


def outwards(scope: str) -> Iterator[str]:
    """The namespaces visible from `scope`, innermost first: "a.b", "a", ""."""
    while scope:
        yield scope
        scope = scope_of(scope)
    yield ""


def sees(scope: str, owner: str) -> bool:
    """Whether a template in namespace `scope` sees names (registers) of namespace `owner`:
    its own namespace and every enclosing one."""
    return owner in ("", scope) or scope.startswith(owner + ".")


def depth(scope: str) -> int:
    return 0 if not scope else scope.count(".") + 1


def candidates(scope: str, name: str) -> Iterator[str]:
    """The full ids `name` may stand for in namespace `scope`, in the order they are tried."""
    for outer in outwards(scope):
        yield join(outer, name)


def is_namespace(prefix: str, ids: Iterable[str]) -> bool:
    """Whether some id lies inside namespace `prefix` (an include step's id)."""
    head = prefix + "."
    return any(i.startswith(head) for i in ids)


def relative_names(step_id: str, scope: str) -> list[str]:
    """The names by which a template in `scope` may reach step `step_id` (its full id first)."""
    out = [step_id]
    for outer in outwards(scope):
        if outer and step_id.startswith(outer + "."):
            out.append(step_id[len(outer) + 1:])
    return out
