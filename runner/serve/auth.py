"""Bearer tokens for `opsrun serve`: a FastAPI dependency per role (read < plan < approve < apply) giving the Principal.
Must not import runner.service (who is asking, not what they may touch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runner.serve.config import Principal, ServeConfig
from runner.serve.problems import ApiProblem

bearer = HTTPBearer(auto_error=False, description="A token from serve.yaml (tokens.NAME.token); "
                    "its role (read < plan < approve < apply) decides what it may call.")

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="opsrun"'}


def config_of(request: Request) -> ServeConfig:
    cfg: ServeConfig = request.app.state.serve_config
    return cfg


def principal(request: Request,
              creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """Who is asking: a known token, or the anonymous principal where allowed; else 401."""
    cfg = config_of(request)
    header = request.headers.get("authorization")
    if header is not None and creds is None:
        raise ApiProblem(401, "the Authorization header must be 'Bearer TOKEN'", headers=CHALLENGE)
    who = cfg.principal(creds.credentials if creds else None)
    if who is None:
        detail = "unknown bearer token" if creds else "a bearer token is required"
        raise ApiProblem(401, detail, hint="send Authorization: Bearer TOKEN (docs/serve.md, Tokens and roles)",
                         headers=CHALLENGE)
    return who


def require(role: str) -> Callable[..., Principal]:
    """A dependency: the principal, if its role is at least `role`; else 403."""

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.can(role):
            raise ApiProblem(403, f"{who.name} has the role {who.role!r}; this needs {role!r} or higher",
                             hint="use a token with that role (serve.yaml tokens)")
        return who

    check.__name__ = f"require_{role}"
    return check


Reader = Annotated[Principal, Depends(require("read"))]
Planner = Annotated[Principal, Depends(require("plan"))]
Approver = Annotated[Principal, Depends(require("approve"))]
Operator = Annotated[Principal, Depends(require("apply"))]
