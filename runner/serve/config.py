"""`opsrun serve` configuration (serve.yaml): tokens by `env:`/`file:` reference with roles, anonymous role, limits.
Pure: must not import fastapi, starlette, uvicorn or runner.service.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runner import load
from runner.errors import InvalidInput
from runner.secrets import is_ref, resolve

ROLES = ("read", "plan", "approve", "apply")  # each implies the ones before it
NONE = "none"
MIN_TOKEN_LEN = 16
DEFAULT_PORT = 8765
CONFIG_NAME = "serve.yaml"


def rank(role: str) -> int:
    """read 0 < plan 1 < approve 2 < apply 3; "none" -1."""
    return ROLES.index(role) if role in ROLES else -1


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name (the audit actor) and its role."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        return rank(self.role) >= rank(role)


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    value: str = field(repr=False)  # a runner.secrets.Secret: redacted in every output


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # 413 above this
    requests_per_minute: float = 600.0  # every client of the server together (429 above)
    burst: int = 60
    llm_requests_per_minute: float | None = None  # /v1/chat/completions; None: gateway.yaml's, else 60
    llm_burst: int = 10
    sse_poll_s: float = 0.25


@dataclass(frozen=True)
class ServeConfig:
    tokens: tuple[Token, ...] = ()
    anonymous_role: str = "plan"  # requests without a token, loopback only; "none" refuses them
    # (the default: "plan" without tokens configured, "none" with tokens)
    limits: Limits = field(default_factory=Limits)
    gateway: str | None = None  # gateway.yaml for the /v1 face (relative to the config's folder)
    source: str = "<defaults>"
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call (Open WebUI user tool servers)

    def principal(self, bearer: str | None) -> Principal | None:
        """The principal a bearer token names; without a token, the anonymous one (role
        anonymous_role). None: the token is unknown (or anonymous access is off)."""
        if bearer is None:
            return Principal("anonymous", self.anonymous_role) if self.anonymous_role != NONE else None
        found: Token | None = None
        for t in self.tokens:  # compare with every token in constant time
            if hmac.compare_digest(t.value.encode(), bearer.encode()):
                found = t
        return Principal(found.name, found.role) if found else None

    def for_bind(self, host: str) -> ServeConfig:
        """The config for a server bound to `host`: refused on a non-loopback address without
        a token; there, requests without a token are refused too (no anonymous role)."""
        if is_loopback(host):
            return self
        if not self.tokens:
            raise InvalidInput(
                f"refusing to listen on {host} without a token: anyone who reaches it could use the API",
                hint=f"configure tokens in {CONFIG_NAME} (docs/serve.md, Tokens and roles), or bind 127.0.0.1",
            )
        return replace(self, anonymous_role=NONE)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def find(project: Path, path: str | Path | None) -> Path | None:
    """The config file: `path` when given (must exist), else project/serve.yaml if present."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InvalidInput(f"serve config {p} not found", hint="pass --config PATH to an existing file")
        return p
    default = project / CONFIG_NAME
    return default if default.is_file() else None


def load_file(project: Path, path: str | Path | None = None) -> ServeConfig:
    """Read serve.yaml (or the defaults when there is none); resolve every token reference."""
    p = find(project, path)
    if p is None:
        return ServeConfig()
    doc = load.read(p)
    return from_data(doc.data, source=str(p), base_dir=p.resolve().parent)


def _bad(source: str, message: str, hint: str = "") -> InvalidInput:
    return InvalidInput(f"{source}: {message}", hint=hint or "see docs/serve.md, Configuration")


KEYS = {"opsrun", "tokens", "anonymous_role", "limits", "gateway", "cors_origins"}
LIMIT_KEYS = {"max_body_bytes", "requests_per_minute", "burst", "llm_requests_per_minute", "llm_burst"}


def from_data(data: Any, *, source: str = "<serve>", base_dir: str | Path = ".") -> ServeConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _bad(source, "must be a mapping")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise _bad(source, f"unknown key {unknown[0]!r}", f"keys are: {', '.join(sorted(KEYS))}")
    if data.get("opsrun", 1) != 1:
        raise _bad(source, "opsrun: must be 1")
    tokens = _tokens(data.get("tokens") or {}, source, base_dir)
    anon = data.get("anonymous_role", NONE if tokens else "plan")
    if anon not in (NONE, *ROLES):
        raise _bad(source, f"anonymous_role {anon!r} is not a role", f"one of: none, {', '.join(ROLES)}")
    limits = _limits(data.get("limits") or {}, source)
    gateway = data.get("gateway")
    if gateway is not None:
        if not isinstance(gateway, str):
            raise _bad(source, "gateway: must be a path")
        g = Path(gateway).expanduser()
        gateway = str(g if g.is_absolute() else Path(base_dir) / g)
    origins = data.get("cors_origins") or []
    if not isinstance(origins, list) or not all(isinstance(o, str) and o.startswith(("http://", "https://"))
                                                for o in origins):
        raise _bad(source, "cors_origins: must list origins like http://localhost:3000")
    return ServeConfig(tokens, str(anon), limits, gateway, source, tuple(origins))


def _tokens(raw: Any, source: str, base_dir: str | Path) -> tuple[Token, ...]:
    if not isinstance(raw, dict):
        raise _bad(source, "tokens: must map a name to {token: env:NAME|file:PATH, role: ROLE}")
    out: list[Token] = []
    for name, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) - {"token", "role"}:
            raise _bad(source, f"tokens.{name}: must be {{token: env:NAME|file:PATH, role: ROLE}}")
        ref, role = entry.get("token"), entry.get("role")
        if role not in ROLES:
            raise _bad(source, f"tokens.{name}.role {role!r} is not a role", f"one of: {', '.join(ROLES)}")
        if not is_ref(ref):
            raise _bad(source, f"tokens.{name}.token must be a reference, never the token itself",
                       "write env:NAME or file:PATH")
        value = resolve(str(ref), base_dir=base_dir, where=f"tokens.{name}")
        if len(value.strip()) < MIN_TOKEN_LEN:
            raise _bad(source, f"tokens.{name}: the token is shorter than {MIN_TOKEN_LEN} characters",
                       "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        if any(hmac.compare_digest(value, t.value) for t in out):
            raise _bad(source, f"tokens.{name}: the same token as another name (the audit could not tell them apart)")
        out.append(Token(str(name), str(role), value))
    return tuple(out)


def _limits(raw: Any, source: str) -> Limits:
    if not isinstance(raw, dict):
        raise _bad(source, "limits: must be a mapping")
    unknown = sorted(set(raw) - LIMIT_KEYS)
    if unknown:
        raise _bad(source, f"unknown key limits.{unknown[0]}", f"keys are: {', '.join(sorted(LIMIT_KEYS))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None and key == "llm_requests_per_minute":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise _bad(source, f"limits.{key} must be a positive number")
        values[key] = int(value) if key in ("max_body_bytes", "burst", "llm_burst") else float(value)
    return Limits(**values)
