"""`opsrun gateway check|bench|ask`: the LLM gateway from the terminal (a typer sub-app).

A thin layer over runner.gateway: it renders results and maps OpsrunError to exit codes.
Importing it must not import litellm (the gateway imports it inside a call).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

from runner.errors import EXIT_ERROR, OpsrunError
from runner.secrets import redact

app = typer.Typer(
    help="Check, measure and ask the LLM providers configured in gateway.yaml.",
    no_args_is_help=True,
    add_completion=False,
)

GatewayOption = Annotated[
    Path | None,
    typer.Option("--gateway", "-g", envvar="OPSRUN_GATEWAY", show_default=False,
                 help="gateway file [default: ./gateway.yaml if present, else the packaged one]"),
]
ProviderOption = Annotated[
    list[str] | None,
    typer.Option("--provider", "-p", show_default=False,
                 help="only this provider (repeatable; the order given is the order tried)"),
]


def _out() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """An OpsrunError becomes a message on stderr and its exit code, never a traceback."""
    try:
        yield
    except OpsrunError as exc:
        _err().print(redact(exc.render()), markup=False)
        raise typer.Exit(exc.exit_code) from None


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


@app.command()
def check(gateway: GatewayOption = None, provider: ProviderOption = None) -> None:
    """Each provider's health: key, reachable, model present, latency of a tiny request.
    Exit 1 when no provider is healthy."""
    with _user_errors():
        from runner.gateway import Gateway

        gw = Gateway.from_file(gateway)
        results = gw.check(provider)
    from rich.table import Table

    table = Table(title=f"LLM providers ({gw.config.source})")
    for column in ("provider", "model", "key", "reachable", "model listed", "latency", "status"):
        table.add_column(column, overflow="fold")
    for h in results:
        latency = f"{h.latency_s:.2f}s" if h.latency_s is not None else "-"
        status = "[green]ok[/green]" if h.ok else f"[red]{_escape(h.error or 'failed')}[/red]"
        table.add_row(_escape(h.label), _escape(h.model), _escape(h.key), _mark(h.reachable),
                      _mark(h.model_present), latency, status)
    _out().print(table)
    healthy = sum(h.ok for h in results)
    if not healthy:
        _err().print("no provider is healthy; see docs/llm.md (start Ollama or set an API key)",
                     markup=False)
        raise typer.Exit(EXIT_ERROR)


@app.command()
def bench(
    gateway: GatewayOption = None,
    provider: ProviderOption = None,
    runs: Annotated[int, typer.Option(min=1, max=20, help="requests per provider")] = 3,
) -> None:
    """Measure latency and tokens per second per provider; store them in
    .opsrun/gateway-bench.json (routing.max_latency_ms uses them)."""
    with _user_errors():
        from runner.gateway import Gateway

        gw = Gateway.from_file(gateway)
        results = gw.bench(provider, runs=runs)
    from rich.table import Table

    table = Table(title=f"LLM bench ({runs} run{'s' if runs != 1 else ''} each)")
    for column in ("provider", "model", "latency (median)", "tokens/s", "status"):
        table.add_column(column, overflow="fold")
    for m in results:
        table.add_row(
            _escape(m.provider), _escape(m.model),
            f"{m.latency_ms:.0f} ms" if m.latency_ms is not None else "-",
            f"{m.tokens_per_s:.1f}" if m.tokens_per_s is not None else "-",
            "[green]ok[/green]" if m.ok else f"[red]{_escape(m.error)}[/red]",
        )
    _out().print(table)
    _err().print(f"stored in {gw.bench_path}", markup=False)
    if not any(m.ok for m in results):
        raise typer.Exit(EXIT_ERROR)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="what to ask")],
    gateway: GatewayOption = None,
    provider: ProviderOption = None,
    task: Annotated[str, typer.Option(help="task settings to use: ask, author or fix")] = "ask",
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="neither read nor write the cache")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer and its attempts as JSON")] = False,
) -> None:
    """Ask a question; print the answer, then `-- answered by PROVIDER (MODEL) in 1.23s`
    (on stderr, so the answer alone can be piped)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}]
    with _user_errors():
        from runner.gateway import Gateway

        gw = Gateway.from_file(gateway)
        answer = gw.complete(messages, task=task, use_cache=not no_cache, providers=provider)
    if as_json:
        typer.echo(redact(json.dumps(asdict(answer), indent=2, default=str)))
        return
    typer.echo(redact(answer.text))
    how = "from the cache" if answer.cached else f"in {answer.latency_s:.2f}s"
    tries = [a for a in answer.attempts if not a.ok]
    note = f" after {len(tries)} failed attempt{'s' if len(tries) != 1 else ''}" if tries else ""
    typer.echo(f"-- answered by {answer.provider} ({answer.model}) {how}{note}", err=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(redact(text))
