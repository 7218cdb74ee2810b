"""`opsrun serve`: the HTTP API, the OpenAI-compatible face, MCP at /mcp and the job worker in one uvicorn process.
Must not import fastapi, uvicorn or runner.serve.app at module level (only inside the command).
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Annotated

import typer

from runner.cli.output import err, user_errors

HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback needs a token "
                                      "configured (serve.yaml).")]
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
PortOpt = Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on.")]


class RedactingFilter(logging.Filter):
    """Every log record leaves with known secrets masked (its message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from runner.secrets import redact

        if record.name == "uvicorn.access" and isinstance(record.args, tuple):  # its formatter reads the args
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if record.exc_info:  # a traceback's text may quote a value: redacted with the rest
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.args = None
        record.msg = redact(text)
        return True


def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8765,
    project: Annotated[Path, typer.Option("--project", "-C", help="The project folder (playbooks, inventory, "
                                          "gateway.yaml; state in its .opsrun/).")] = Path("."),
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The serve config (default: "
                                                "PROJECT/serve.yaml when present).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run jobs in this process (another "
                                            "runs `opsrun jobs work`).")] = False,
) -> None:
    """Serve the HTTP API: validate, plans, approvals, jobs (with server-sent events), runs,
    inventory, the gateway's OpenAI-compatible /v1 face and MCP at /mcp; the OpenAPI document is
    at /openapi.json. Binds 127.0.0.1 unless --host says otherwise (then a token is required).
    See docs/serve.md."""
    from runner.errors import InvalidInput
    from runner.serve.config import load_file

    with user_errors():
        if log_level not in LOG_LEVELS:
            raise InvalidInput(f"--log-level {log_level!r} is not a level", hint=f"one of: {', '.join(LOG_LEVELS)}")
        cfg = load_file(project.resolve(), config).for_bind(host)  # refuses before importing the server
    with user_errors():
        try:
            import uvicorn

            from runner.serve.app import create_app
        except ImportError as exc:
            from runner.errors import MissingExtra

            raise MissingExtra("serve", f"`opsrun serve` ({exc.name})") from None
        app = create_app(project.resolve(), cfg, host=host, worker=not no_worker)
    redacting = RedactingFilter()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "opsrun.serve", "opsrun.llm"):
        logging.getLogger(name).addFilter(redacting)
    if not logging.getLogger("opsrun.serve").handlers:
        handler = logging.StreamHandler()
        handler.addFilter(redacting)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logging.getLogger("opsrun.serve").addHandler(handler)
        logging.getLogger("opsrun.serve").setLevel(logging.INFO)
    tokens = ", ".join(f"{t.name} ({t.role})" for t in cfg.tokens) or "none"
    err(f"opsrun serve: project {project.resolve()}, config {cfg.source}, tokens: {tokens}, "
        f"anonymous: {cfg.anonymous_role}")
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False,
                timeout_graceful_shutdown=10)


def register(app: typer.Typer) -> None:
    app.command()(serve)
