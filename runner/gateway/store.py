"""The gateway's rate limiter (a waiting token bucket) and its on-disk answer cache.
No network; imports only runner.files and runner.secrets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.files import write_atomic
from runner.secrets import redact

log = logging.getLogger("opsrun.llm")
Message = dict[str, Any]
Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimiter:
    """Token bucket: up to `per_minute` requests at once, refilled at per_minute/60 a second.
    `acquire()` waits for a token (with the injected sleep) and never fails."""

    def __init__(self, per_minute: float | None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._capacity = max(1.0, float(per_minute or 1))
        self._tokens = self._capacity
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token; return how long it waited (seconds)."""
        if not self.per_minute:
            return 0.0
        rate = self.per_minute / 60.0
        waited = 0.0
        with self._lock:  # waiters queue on the lock: first come, first served
            while True:
                now = self._clock()
                self._tokens = min(self._capacity, self._tokens + (now - self._last) * rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                wait = (1.0 - self._tokens) / rate
                self._sleep(wait)
                waited += wait


class AnswerCache:
    """One JSON file per answer under `directory`; entries older than ttl_s are misses; beyond
    max_entries the oldest go. It stores the answer text, never the prompt."""

    def __init__(self, directory: str | Path, *, ttl_s: float, max_entries: int,
                 now: Clock = time.time) -> None:
        self.dir = Path(directory)
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._now = now
        self._lock = threading.Lock()

    @staticmethod
    def key(provider: str, model: str, messages: list[Message], schema: dict[str, Any] | None,
            temperature: float | None, max_tokens: int | None) -> str:
        blob = json.dumps([provider, model, messages, schema, temperature, max_tokens],
                          sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            created = float(entry["created"])
            str(entry["text"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()  # unreadable entry: drop it
            return None
        if self._now() - created > self.ttl_s:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return dict(entry)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        created = self._now()
        data = json.dumps({**entry, "created": created, "version": 1}, sort_keys=True)
        with self._lock:
            try:
                # private; its mtime is the cache's clock, which orders eviction
                write_atomic(self._path(key), redact(data).encode(), mode=0o600, mtime=created,
                             fsync=False, make_parents=True)
                self._evict()
            except OSError as exc:  # a cache that cannot write is not worth failing the call
                log.warning("LLM cache %s not written: %s", self.dir, exc)

    def _evict(self) -> None:
        files = [p for p in self.dir.glob("*.json") if p.is_file()]
        if len(files) <= self.max_entries:
            return
        files.sort(key=lambda p: p.stat().st_mtime)
        for p in files[: len(files) - self.max_entries]:
            with contextlib.suppress(OSError):
                p.unlink()

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*.json")) if self.dir.is_dir() else 0

