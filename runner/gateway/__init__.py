"""The LLM gateway (litellm behind our own routing): providers tried in order under one
deadline, with a circuit breaker, answer cache and rate limit, configured in gateway.yaml.

    router.py   routing, deadline, retries, breaker                adapter.py  the only litellm importer
    store.py    rate limiter and answer cache                      health.py   Gateway = router + check, bench
    config.py   gateway.yaml -> GatewayConfig                      results.py  Answer, Attempt, GatewayError
    tokens.py   rough token counts for context_tokens

Imports nothing above runner.errors, files, load, secrets (and schema, for gateway.yaml):
steps (llm.ask) and the llm use cases (author, fixer) sit above it. One instance per file
per process (gateway_for), so the circuit breaker and the rate limit span the run.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from runner.gateway import config
from runner.gateway.health import Gateway
from runner.gateway.results import Answer, Attempt, GatewayError, Health, Measurement, describe

__all__ = [
    "Answer",
    "Attempt",
    "Gateway",
    "GatewayError",
    "Health",
    "Measurement",
    "describe",
    "forget_gateways",
    "gateway_for",
    "set_default_gateway",
]

_GATEWAYS: dict[str, Gateway] = {}  # resolved gateway file -> the one instance of this process
_DEFAULT: list[Gateway] = []  # set by apply (set_default_gateway) to share one gateway per run
_LOCK = threading.Lock()


def set_default_gateway(gateway: Gateway | None) -> None:
    """Use this gateway for steps that name no `gateway:` file (None: back to the file lookup)."""
    with _LOCK:
        _DEFAULT.clear()
        if gateway is not None:
            _DEFAULT.append(gateway)


def forget_gateways() -> None:
    """Drop the gateways kept by this process (their circuit breakers start afresh)."""
    with _LOCK:
        _GATEWAYS.clear()
        _DEFAULT.clear()


def gateway_for(path: str | None, base_dir: str = ".") -> Gateway:
    """The gateway for a step: `path` (relative to the playbook's folder), else the default set
    by set_default_gateway, else $OPSRUN_GATEWAY, ./gateway.yaml or the packaged one. One
    instance per file per process, so the circuit breaker and rate limit span the run."""
    if path is None:
        with _LOCK:
            if _DEFAULT:
                return _DEFAULT[0]
        env = os.environ.get("OPSRUN_GATEWAY")
        file = config.find(env or None)
    else:
        p = Path(os.path.expanduser(path))
        file = p if p.is_absolute() else Path(base_dir) / p
    key = str(file.resolve())
    with _LOCK:
        gw = _GATEWAYS.get(key)
    if gw is None:
        gw = Gateway.from_file(file)
        with _LOCK:
            gw = _GATEWAYS.setdefault(key, gw)
    return gw
