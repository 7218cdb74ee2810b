"""`opsrun gateway check|bench|ask`: the LLM gateway (runner.gateway) from the terminal, a typer
sub-app. Importing it must not import litellm (the gateway loads inside the commands).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from runner.cli.options import GatewayOpt
from runner.cli.output import console, err, markup_escape, out, user_errors
from runner.errors import EXIT_ERROR
from runner.secrets import redact

app = typer.Typer(
    help="Check, measure and ask the LLM providers configured in gateway.yaml.",
    no_args_is_help=True,
    add_completion=False,
)

ProviderOpt = Annotated[
    list[str] | None,
    typer.Option("--provider", "-p", show_default=False,
                 help="only this provider (repeatable; the order given is the order tried)"),
]


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


@app.command()
def check(gateway: GatewayOpt = None, provider: ProviderOpt = None) -> None:
    """Each provider's health: key, reachable, model present, latency of a tiny request.
    Exit 1 when no provider is healthy."""
    with user_errors(prefix=""):
        from runner.gateway import Gateway

        gw = Gateway.from_file(gateway)
        results = gw.check(provider)
    from rich.table import Table

    table = Table(title=f"LLM providers ({gw.config.source})")
    for column in ("provider", "model", "key", "reachable", "model listed", "latency", "status"):
        table.add_column(column, overflow="fold")
    for h in results:
        latency = f"{h.latency_s:.2f}s" if h.latency_s is not None else "-"
        status = "[green]ok[/green]" if h.ok else f"[red]{markup_escape(h.error or 'failed')}[/red]"
        table.add_row(markup_escape(h.label), markup_escape(h.model), markup_escape(h.key), _mark(h.reachable),
                      _mark(h.model_present), latency, status)
    console().print(table)
    healthy = sum(h.ok for h in results)
    if not healthy:
        err("no provider is healthy; see docs/llm.md (start Ollama or set an API key)")
        raise typer.Exit(EXIT_ERROR)


@app.command()
def bench(
    gateway: GatewayOpt = None,
    provider: ProviderOpt = None,
    runs: Annotated[int, typer.Option(min=1, max=20, help="requests per provider")] = 3,
    task: Annotated[
        str | None, typer.Option("--task", help="Measure the providers and models this task uses (tasks.<task>).")
    ] = None,
) -> None:
    """Measure latency, tokens in/out and tokens per second per provider and model; store them
    in .opsrun/gateway-bench.json (routing.max_latency_ms uses them)."""
    with user_errors(prefix=""):
        from runner.gateway import Gateway

        gw = Gateway.from_file(gateway)
        results = gw.bench(provider, runs=runs, task=task)
    from rich.table import Table

    table = Table(title=f"LLM bench ({runs} run{'s' if runs != 1 else ''} each)")
    for column in ("provider", "model", "latency (median)", "tokens in/out", "tokens/s", "status"):
        table.add_column(column, overflow="fold")
    for m in results:
        table.add_row(
            markup_escape(m.provider), markup_escape(m.model),
            f"{m.latency_ms:.0f} ms" if m.latency_ms is not None else "-",
            f"{m.tokens_in:.0f}/{m.tokens_out:.0f}" if m.tokens_in is not None and m.tokens_out is not None else "-",
            f"{m.tokens_per_s:.1f}" if m.tokens_per_s is not None else "-",
            "[green]ok[/green]" if m.ok else f"[red]{markup_escape(m.error)}[/red]",
        )
    console().print(table)
    err(f"stored in {gw.bench_path}")
    if not any(m.ok for m in results):
        raise typer.Exit(EXIT_ERROR)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="what to ask")],
    gateway: GatewayOpt = None,
    provider: ProviderOpt = None,
    task: Annotated[str, typer.Option(help="task settings to use: ask, author or fix")] = "ask",
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="neither read nor write the cache")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer and its attempts as JSON")] = False,
) -> None:
    """Ask a question; print the answer, then `-- answered by PROVIDER (MODEL) in 1.23s`
    (on stderr, so the answer alone can be piped)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}]
    with user_errors(prefix=""):
        from runner.gateway import Gateway

        gw = Gateway.from_file(gateway)
        answer = gw.complete(messages, task=task, use_cache=not no_cache, providers=provider)
    if as_json:
        out(redact(json.dumps(asdict(answer), indent=2, default=str)) + "\n")
        return
    out(redact(answer.text) + "\n")
    how = "from the cache" if answer.cached else f"in {answer.latency_s:.2f}s"
    tries = [a for a in answer.attempts if not a.ok]
    note = f" after {len(tries)} failed attempt{'s' if len(tries) != 1 else ''}" if tries else ""
    err(f"-- answered by {answer.provider} ({answer.model}) {how}{note}")


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="gateway")
