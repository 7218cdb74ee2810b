"""gateway.yaml -> GatewayConfig: validated against schemas/gateway.schema.json (via
runner.schema) plus cross checks (provider names in orders), with located errors.
Pure loading: no network, no litellm; API keys stay references (`env:NAME`, `file:PATH`)
until a provider is about to be called.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runner import load
from runner.errors import Diagnostic, InvalidInput

KINDS = ("ollama", "openai", "openrouter", "huggingface", "litellm")
TASKS = ("author", "fix", "ask")
DEFAULT_BASES = {
    "ollama": "http://127.0.0.1:11434",
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
}
_PKG = Path(__file__).resolve().parent.parent  # runner/


@dataclass(frozen=True)
class ProviderConfig:
    """One model behind one API. `api_key` is the reference text, never the value."""

    name: str
    kind: str
    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    max_concurrency: int = 4
    local: bool = False
    context_tokens: int | None = None  # the model's context window as the server runs it

    @property
    def route(self) -> str:
        """The API actually spoken. A huggingface endpoint with an api_base (TGI, Inference
        Endpoints) speaks the OpenAI chat API and is called as such: litellm's huggingface
        route would fetch the model's config.json from huggingface.co on every request."""
        if self.kind == "huggingface" and self.api_base:
            return "openai"
        return self.kind

    @property
    def litellm_model(self) -> str:
        """The model string litellm routes on."""
        prefix = {"ollama": "ollama_chat/", "openai": "openai/", "openrouter": "openrouter/",
                  "huggingface": "huggingface/", "litellm": ""}[self.route]
        return prefix + self.model

    @property
    def base_url(self) -> str | None:
        """The API base in use: the configured one, else the provider's public default."""
        return (self.api_base or DEFAULT_BASES.get(self.kind, "") or None)

    @property
    def label(self) -> str:
        """How messages name it: `ollama (127.0.0.1:11434)` when an address is configured."""
        if self.api_base or self.kind == "ollama":
            netloc = urlsplit(self.base_url or "").netloc
            if netloc:
                return f"{self.name} ({netloc})"
        return self.name

    @property
    def key_source(self) -> str:
        """`OPENAI_API_KEY` for env:OPENAI_API_KEY, the path for file:PATH, '' without a key."""
        if not self.api_key:
            return ""
        return self.api_key.split(":", 1)[1]


@dataclass(frozen=True)
class RoutingConfig:
    order: tuple[str, ...] = ()
    prefer_local: bool = False
    force_cloud: bool = False
    max_latency_ms: int | None = None
    retries_per_provider: int = 1
    deadline_s: float = 120.0
    cooldown_s: float = 60.0


@dataclass(frozen=True)
class TaskConfig:
    order: tuple[str, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    models: dict[str, str] = field(default_factory=dict)  # provider (or "*" for all) -> model

    def model_for(self, provider: str) -> str | None:
        """The model this task asks `provider` for, when it is not the provider's own."""
        return self.models.get(provider) or self.models.get("*")


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    ttl_s: float = 86400.0
    max_entries: int = 500
    dir: str = ".opsrun/cache/llm"


@dataclass(frozen=True)
class RateLimitConfig:
    requests_per_minute: float | None = None


@dataclass(frozen=True)
class DoConfig:
    """`do:`: the limits of `opsrun do` (what --yes may approve, fixes, replans, one deadline)."""

    max_changes: int | None = 10
    allow_unknown: bool = True
    max_replans: int = 2
    max_fixes: int = 1
    auto_fix: bool = True
    deadline_s: float | None = None  # None: routing.deadline_s


@dataclass(frozen=True)
class GatewayConfig:
    """The whole gateway.yaml. `providers` keeps the file's order."""

    providers: dict[str, ProviderConfig]
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    cache: CacheConfig = field(default_factory=CacheConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    do: DoConfig = field(default_factory=DoConfig)
    source: str = "<gateway>"
    base_dir: Path = Path(".")  # file: references are relative to it

    def task(self, name: str) -> TaskConfig:
        return self.tasks.get(name, TaskConfig())


# -- locating files --------------------------------------------------------------------------
def packaged_default() -> Path:
    """The gateway.yaml shipped with opsrun (in the wheel, or at the root of a checkout)."""
    for candidate in (_PKG / "_gateway.yaml", _PKG.parent / "gateway.yaml"):
        if candidate.is_file():
            return candidate
    raise InvalidInput("the default gateway.yaml is missing from this installation",
                       hint="pass --gateway PATH, or reinstall opsrun")


def find(path: str | Path | None = None) -> Path:
    """The file to use: `path` when given, else ./gateway.yaml, else the packaged default."""
    if path is not None:
        return Path(path)
    local = Path("gateway.yaml")
    return local if local.is_file() else packaged_default()


# -- loading ---------------------------------------------------------------------------------
def load_file(path: str | Path | None = None) -> GatewayConfig:
    """Read, validate and convert a gateway.yaml (see `find` for the default)."""
    p = find(path)
    doc = load.read(p)
    return from_document(doc, base_dir=p.resolve().parent)


def from_data(data: Any, *, file: str = "<gateway>", base_dir: str | Path = ".") -> GatewayConfig:
    """Validate and convert already-parsed data (tests, programmatic use)."""
    doc = load.Document(file=file, text="", data=data)
    return from_document(doc, base_dir=Path(base_dir))


def from_document(doc: load.Document, *, base_dir: Path) -> GatewayConfig:
    data = doc.data
    from runner import schema as schemas  # jsonschema loads only when a gateway file does

    diags = schemas.validate_gateway(doc) + cross_errors(doc)
    if diags:
        raise InvalidInput(f"{doc.file} is not a valid gateway file", diags)
    providers: dict[str, ProviderConfig] = {}
    for name, p in data["providers"].items():
        kind = p["kind"]
        providers[name] = ProviderConfig(
            name=name,
            kind=kind,
            model=p["model"],
            api_base=p["api_base"].rstrip("/") if p.get("api_base") else None,
            api_key=p.get("api_key"),
            timeout_s=float(p.get("timeout_s", 60)),
            max_concurrency=int(p.get("max_concurrency", 4)),
            local=bool(p.get("local", kind == "ollama")),
            context_tokens=p.get("context_tokens"),
        )
    r = data.get("routing") or {}
    routing = RoutingConfig(
        order=tuple(r.get("order") or ()),
        prefer_local=bool(r.get("prefer_local", False)),
        force_cloud=bool(r.get("force_cloud", False)),
        max_latency_ms=r.get("max_latency_ms"),
        retries_per_provider=int(r.get("retries_per_provider", 1)),
        deadline_s=float(r.get("deadline_s", 120)),
        cooldown_s=float(r.get("cooldown_s", 60)),
    )
    tasks = {
        name: TaskConfig(order=tuple(t.get("order") or ()), temperature=t.get("temperature"),
                         max_tokens=t.get("max_tokens"), models=_task_models(t.get("model")))
        for name, t in (data.get("tasks") or {}).items()
    }
    c = data.get("cache") or {}
    cache_cfg = CacheConfig(enabled=bool(c.get("enabled", True)), ttl_s=float(c.get("ttl_s", 86400)),
                            max_entries=int(c.get("max_entries", 500)),
                            dir=str(c.get("dir", ".opsrun/cache/llm")))
    rl = data.get("rate_limit") or {}
    rate = RateLimitConfig(requests_per_minute=rl.get("requests_per_minute"))
    d = data.get("do") or {}
    do = DoConfig(max_changes=int(d.get("max_changes", 10)), allow_unknown=bool(d.get("allow_unknown", True)),
                  max_replans=int(d.get("max_replans", 2)), max_fixes=int(d.get("max_fixes", 1)),
                  auto_fix=bool(d.get("auto_fix", True)),
                  deadline_s=float(d["deadline_s"]) if d.get("deadline_s") is not None else None)

    return GatewayConfig(providers=providers, routing=routing, tasks=tasks, cache=cache_cfg,
                         rate_limit=rate, do=do, source=doc.file, base_dir=base_dir)


def _task_models(value: Any) -> dict[str, str]:
    """tasks.T.model: one model for every provider of the task, or provider -> model."""
    if isinstance(value, str):
        return {"*": value}
    return {str(k): str(v) for k, v in (value or {}).items()}


def cross_errors(doc: load.Document) -> list[Diagnostic]:
    """Checks the schema cannot express (run even when it failed, so all errors show at once)."""
    def mapping(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    data = mapping(doc.data)
    providers = mapping(data.get("providers"))
    names = [str(n) for n in providers]
    orders: list[tuple[tuple[str | int, ...], Any]] = []
    models: list[tuple[tuple[str | int, ...], list[Any]]] = []
    routing = mapping(data.get("routing"))
    orders.append((("routing", "order"), routing.get("order")))
    tasks = mapping(data.get("tasks"))
    for t, cfg in tasks.items():
        if isinstance(cfg, dict):
            orders.append((("tasks", t, "order"), cfg.get("order")))
            if isinstance(cfg.get("model"), dict):  # provider names as keys
                models.append((("tasks", t, "model"), list(cfg["model"])))
    out: list[Diagnostic] = []
    for path, order in orders:
        if not isinstance(order, list) or not names:
            continue
        for i, name in enumerate(order):
            if isinstance(name, str) and name not in providers:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"providers are: {', '.join(names)}"
                out.append(doc.diag((*path, i), f"unknown provider '{name}'", hint=hint))
    for path, keys in models:
        for name in keys:
            if isinstance(name, str) and name not in providers and names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"providers are: {', '.join(names)}"
                out.append(doc.diag((*path, name), f"unknown provider '{name}'", hint=hint, key=True))
    if routing.get("force_cloud") is True and names and all(
            isinstance(p, dict) and p.get("local", p.get("kind") == "ollama") for p in providers.values()):
        out.append(doc.diag(("routing", "force_cloud"), "force_cloud is set but every provider is local",
                            hint="add a remote provider or set force_cloud: false"))
    return out
