"""`--shard I/N`: a stable partition of the selected hosts across parallel workers, from the
flag or the CI engine's environment. Pure (reads only the environment mapping handed in)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner.errors import InvalidInput

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as GitLab's CI_NODE_INDEX and `--shard 1/4`
    total: int
    source: str  # where it came from: "--shard", OPSRUN_SHARD, GitLab CI's or Kubernetes' variables

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"


def parse(text: str, source: str = "--shard") -> Shard:
    m = _SPEC.match(text)
    if not m:
        raise InvalidInput(f"{source}: {text!r} is not I/N", hint="e.g. --shard 2/4 (shards count from 1)")
    index, total = int(m.group(1)), int(m.group(2))
    if not 1 <= total <= MAX_SHARDS:
        raise InvalidInput(f"{source}: {total} shards: between 1 and {MAX_SHARDS}")
    if not 1 <= index <= total:
        raise InvalidInput(f"{source}: shard {index} of {total} does not exist",
                           hint=f"shards count from 1 to {total}")
    return Shard(index, total, source)


def from_env(env: Mapping[str, str]) -> Shard | None:
    """The shard the engine running us assigns: GitLab CI `parallel:` (CI_NODE_INDEX and
    CI_NODE_TOTAL, 1-based) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, 0-based, with
    the total in OPSRUN_SHARD_TOTAL since the pod is not told it). None when neither is set."""
    if env.get("OPSRUN_SHARD"):
        return parse(env["OPSRUN_SHARD"], "OPSRUN_SHARD")
    if env.get("CI_NODE_INDEX") and env.get("CI_NODE_TOTAL"):
        return parse(f"{env['CI_NODE_INDEX']}/{env['CI_NODE_TOTAL']}", "GitLab CI's CI_NODE_INDEX/CI_NODE_TOTAL")
    if env.get("JOB_COMPLETION_INDEX") is not None and env.get("JOB_COMPLETION_INDEX") != "":
        total = env.get("OPSRUN_SHARD_TOTAL")
        if not total:
            raise InvalidInput(
                "JOB_COMPLETION_INDEX is set but the number of shards is not",
                hint="set OPSRUN_SHARD_TOTAL to the Job's completions (or pass --shard I/N)",
            )
        raw = env["JOB_COMPLETION_INDEX"].strip()
        if not raw.isdigit():
            raise InvalidInput(f"JOB_COMPLETION_INDEX={raw!r} is not a number")
        return parse(f"{int(raw) + 1}/{total}", "the Kubernetes Indexed Job's JOB_COMPLETION_INDEX")
    return None


def resolve(flag: str | None, env: Mapping[str, str]) -> Shard | None:
    """The flag wins over the environment; None means no sharding."""
    return parse(flag) if flag else from_env(env)


_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def run_group(flag: str | None, env: Mapping[str, str]) -> str | None:
    """The run id the shards of one run share (`runs merge` checks it): `--run-id`, else
    OPSRUN_RUN_ID, else the CI pipeline's id (GitHub Actions GITHUB_RUN_ID[-attempt],
    GitLab CI_PIPELINE_ID); None outside CI without a flag."""
    value = flag or env.get("OPSRUN_RUN_ID")
    source = "--run-id" if flag else "OPSRUN_RUN_ID"
    if not value and env.get("GITHUB_RUN_ID"):
        value, source = f"gh-{env['GITHUB_RUN_ID']}-{env.get('GITHUB_RUN_ATTEMPT') or '1'}", "GITHUB_RUN_ID"
    if not value and env.get("CI_PIPELINE_ID"):
        value, source = f"gl-{env['CI_PIPELINE_ID']}", "CI_PIPELINE_ID"
    if not value:
        return None
    if not _GROUP.match(value):
        raise InvalidInput(f"{source}: {value!r} is not a run id",
                           hint="letters, digits and . _ : - (at most 128), starting with a letter or digit")
    return value


def bucket(name: str, total: int) -> int:
    """The 0-based shard of host `name`: jump consistent hashing (Lamping & Veach) of the
    name's SHA-256, so growing N moves only 1/N of the hosts and adding a host moves none."""
    key = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    b, j = -1, 0
    while j < total:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def select(hosts: Iterable[str], shard: Shard | None) -> list[str]:
    """The hosts of this shard, in their order."""
    if shard is None or shard.total == 1:
        return list(hosts)
    return [h for h in hosts if bucket(h, shard.total) == shard.index - 1]


def note(shard: Shard, hosts: list[str], selected: list[str]) -> str:
    """The console line: `shard 2/4: 3 of 10 hosts`."""
    via = "" if shard.source == "--shard" else f" (from {shard.source})"
    return f"shard {shard}: {len(hosts)} of {len(selected)} host{'s' if len(selected) != 1 else ''}{via}"
