"""Sharding: every host in exactly one shard, stable under growth, read from the engines'
environments (GitLab CI, Kubernetes Indexed Jobs) with clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import shard
from runner.errors import InvalidInput

names = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=60, unique=True)


@given(names, st.integers(1, 40))
@settings(max_examples=60, deadline=None)
def test_every_host_is_in_exactly_one_shard(hosts: list[str], total: int) -> None:
    parts = [shard.select(hosts, shard.Shard(i, total, "t")) for i in range(1, total + 1)]
    assert sorted(h for p in parts for h in p) == sorted(hosts)
    for p in parts:  # each keeps the inventory's order
        assert p == [h for h in hosts if h in set(p)]


def test_adding_a_host_moves_none_and_growing_n_moves_few() -> None:
    hosts = [f"web{i:03}" for i in range(1000)]
    before = {h: shard.bucket(h, 10) for h in hosts}
    assert all(shard.bucket(h, 10) == before[h] for h in hosts)  # a new host changes nobody's bucket
    moved = sum(shard.bucket(h, 11) != before[h] for h in hosts)
    assert 40 < moved < 160  # about 1/11 of 1000, where modulo would move ~90%
    sizes = [sum(1 for b in before.values() if b == i) for i in range(10)]
    assert min(sizes) > 70 and max(sizes) < 130


@pytest.mark.parametrize(("env", "want"), [
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"}, "2/4"),
    ({"JOB_COMPLETION_INDEX": "0", "OPSRUN_SHARD_TOTAL": "3"}, "1/3"),
    ({"OPSRUN_SHARD": "3/5", "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "2"}, "3/5"),
    ({}, None),
])
def test_engines_environment(env: dict[str, str], want: str | None) -> None:
    got = shard.from_env(env)
    assert (str(got) if got else None) == want


def test_flag_wins_over_environment() -> None:
    assert str(shard.resolve("1/2", {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"})) == "1/2"


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "x", "1/4/2", "-1/3"])
def test_bad_specs_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidInput):
        shard.parse(text)


def test_kubernetes_index_needs_the_total() -> None:
    with pytest.raises(InvalidInput) as exc:
        shard.from_env({"JOB_COMPLETION_INDEX": "1"})
    assert "OPSRUN_SHARD_TOTAL" in exc.value.hint
