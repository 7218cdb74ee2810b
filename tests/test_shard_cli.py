"""Sharding through the real CLI on `local` hosts: `--shard I/N` and the CI engines' variables
split the selected hosts the same way, two shards in separate state folders apply every host
exactly once, `runs merge` makes one recap (and JUnit) of them; saved plans and resumed runs
keep their shard's hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from junitparser import Error, JUnitXml

from runner import shard

HOSTS = [f"h{i}" for i in range(1, 7)]


def opsrun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("OPSRUN_STATE_DIR", "CI_NODE_INDEX", "CI_NODE_TOTAL", "JOB_COMPLETION_INDEX",
                         "OPSRUN_SHARD", "OPSRUN_SHARD_TOTAL", "GITHUB_ACTIONS", "GITHUB_RUN_ID",
                         "GITHUB_RUN_ATTEMPT", "CI_PIPELINE_ID", "OPSRUN_RUN_ID")}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=90, env={**base, **(env or {})}, stdin=subprocess.DEVNULL)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def events(state: Path) -> list[dict[str, object]]:
    (run,) = sorted((state / "runs").iterdir())
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    write(tmp_path / "inv.yaml", "opsrun: 1\nhosts:\n" + "".join(f"  {h}: {{transport: local}}\n" for h in HOSTS))
    write(tmp_path / "pb.yaml", f"""\
        opsrun: 1
        name: fleet
        hosts: all
        steps:
          - id: mark
            run: echo {{{{ inventory_hostname }}}} >> {tmp_path}/applied.log
          - id: note
            file: {{path: "{tmp_path}/out/{{{{ inventory_hostname }}}}", content: "x\\n"}}
        """)
    (tmp_path / "out").mkdir()
    return tmp_path


def plan_hosts(fleet: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    p = opsrun("plan", "pb.yaml", "-i", "inv.yaml", "--json", *args, cwd=fleet, env=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    return list(doc["hosts"])


def test_engines_variables_give_the_flags_partition(fleet: Path) -> None:
    parts = [plan_hosts(fleet, "--shard", f"{i}/2") for i in (1, 2)]
    assert sorted(parts[0] + parts[1]) == HOSTS and parts[0] and parts[1]
    for i in (1, 2):
        assert plan_hosts(fleet, env={"CI_NODE_INDEX": str(i), "CI_NODE_TOTAL": "2"}) == parts[i - 1]
        assert plan_hosts(fleet, env={"JOB_COMPLETION_INDEX": str(i - 1), "OPSRUN_SHARD_TOTAL": "2"}) == parts[i - 1]
    # the flag wins over the environment
    assert plan_hosts(fleet, "--shard", "1/2", env={"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}) == parts[0]
    # applied after --limit, on the hosts it leaves
    limited = ["h1", "h2", "h3"]
    assert plan_hosts(fleet, "--limit", ",".join(limited), "--shard", "2/2") == shard.select(
        limited, shard.parse("2/2"))
    p = opsrun("plan", "pb.yaml", "-i", "inv.yaml", "--shard", "1/2", cwd=fleet)
    assert f"shard 1/2: {len(parts[0])} of 6 hosts" in p.stderr
    assert "[shard 1/2]" in p.stdout


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--shard", "3/2"], {}, "does not exist"),
    (["--shard", "x"], {}, "is not I/N"),
    ([], {"JOB_COMPLETION_INDEX": "1"}, "OPSRUN_SHARD_TOTAL"),
])
def test_bad_shards_are_invalid_input(fleet: Path, args: list[str], env: dict[str, str], says: str) -> None:
    for command in ("plan", "apply"):
        p = opsrun(command, "pb.yaml", "-i", "inv.yaml", "--yes", *args, cwd=fleet, env=env) if command == "apply" \
            else opsrun(command, "pb.yaml", "-i", "inv.yaml", *args, cwd=fleet, env=env)
        assert p.returncode == 4 and says in p.stderr, (command, p.stderr)
    assert not (fleet / "applied.log").exists()


def test_two_shards_apply_every_host_once_and_merge(fleet: Path) -> None:
    one = opsrun("apply", str(fleet / "pb.yaml"), "-i", str(fleet / "inv.yaml"), "--yes", "--shard", "1/2",
                 cwd=fleet, env={"OPSRUN_STATE_DIR": str(fleet / "state1")})
    assert one.returncode == 0, one.stderr
    worker2 = fleet / "worker2"  # the other shard runs elsewhere: its own folder, its .opsrun there
    worker2.mkdir()
    two = opsrun("apply", str(fleet / "pb.yaml"), "-i", str(fleet / "inv.yaml"), "--yes", cwd=worker2,
                 env={"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"})
    assert two.returncode == 0, two.stderr
    assert "shard 1/2: " in one.stderr and "shard 2/2: " in two.stderr
    applied = (fleet / "applied.log").read_text().split()
    assert sorted(applied) == HOSTS  # every host exactly once
    starts = [events(fleet / "state1")[0], events(worker2 / ".opsrun")[0]]
    assert [s["shard"] for s in starts] == ["1/2", "2/2"]
    assert sorted(h for s in starts for h in s["hosts"]) == HOSTS  # type: ignore[attr-defined]

    m = opsrun("runs", "merge", "state1", "worker2", "--junit", "merged.xml", cwd=fleet)
    assert m.returncode == 0, m.stderr
    assert "Merged 2 run(s): ok 0, changed 12, failed 0" in m.stdout
    for h in HOSTS:
        assert f"| {h} " in m.stdout
    doc = json.loads(opsrun("runs", "merge", "state1", "worker2", "--json", cwd=fleet).stdout)
    assert doc["ok"] is True and sorted(doc["hosts"]) == HOSTS and doc["missing_shards"] == []
    assert {doc["hosts"][h]["shard"] for h in HOSTS} == {"1/2", "2/2"}
    md = opsrun("runs", "merge", "state1", "worker2", "--format", "markdown", cwd=fleet)
    assert md.stdout.startswith("### opsrun apply: 2 shard runs merged, ok")
    junit = JUnitXml.fromfile(str(fleet / "merged.xml"))
    got = {(c.classname, c.name) for suite in junit for c in suite}
    assert got == {(f"apply.{h}", s) for h in HOSTS for s in ("mark", "note")}
    assert junit.failures == 0 and junit.errors == 0

    alone = opsrun("runs", "merge", "state1", "--junit", "alone.xml", cwd=fleet)
    assert alone.returncode == 1 and "missing shards: 2/2" in alone.stdout
    shards_suite = [c for suite in JUnitXml.fromfile(str(fleet / "alone.xml")) for c in suite
                    if c.classname == "shards"]
    assert [(c.name, [type(r) for r in c.result]) for c in shards_suite] == [("shard 2/2", [Error])]
    twice = opsrun("runs", "merge", "state1", "state1", "--json", cwd=fleet)
    assert twice.returncode == 4 and json.loads(twice.stdout)["ok"] is False
    nothing = opsrun("runs", "merge", "out", cwd=fleet)
    assert nothing.returncode == 4 and "no opsrun run here" in nothing.stderr


def test_a_saved_plan_keeps_its_shards_hosts(fleet: Path) -> None:
    p = opsrun("plan", "pb.yaml", "-i", "inv.yaml", "--shard", "1/2", "-o", "p1.json", cwd=fleet)
    assert p.returncode == 0, p.stderr
    saved = json.loads((fleet / "p1.json").read_text())
    assert saved["shard"] == "1/2"
    refused = opsrun("apply", "p1.json", "--shard", "2/2", cwd=fleet)
    assert refused.returncode == 4 and "--shard" in refused.stderr
    # applied in a job whose environment names another shard: still the plan's hosts
    a = opsrun("apply", "p1.json", cwd=fleet, env={"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"})
    assert a.returncode == 0, a.stderr
    assert sorted((fleet / "applied.log").read_text().split()) == sorted(saved["hosts"])
    start = events(fleet / ".opsrun")[0]
    assert start["shard"] == "1/2" and start["hosts"] == saved["hosts"]


def test_an_empty_shard_runs_and_merges(tmp_path: Path) -> None:
    hosts = ["a", "b"]
    write(tmp_path / "inv.yaml", "opsrun: 1\nhosts:\n  a: {transport: local}\n  b: {transport: local}\n")
    write(tmp_path / "pb.yaml", f"""\
        opsrun: 1
        name: two
        hosts: all
        steps:
          - id: mark
            run: echo {{{{ inventory_hostname }}}} >> {tmp_path}/applied.log
        """)
    n = 3
    empty = next(i for i in range(1, n + 1) if not shard.select(hosts, shard.Shard(i, n, "t")))
    dirs = []
    for i in range(1, n + 1):
        d = tmp_path / f"w{i}"
        r = opsrun("apply", "pb.yaml", "-i", "inv.yaml", "--yes", "--shard", f"{i}/{n}", cwd=tmp_path,
                   env={"OPSRUN_STATE_DIR": str(d)})
        assert r.returncode == 0, r.stderr
        if i == empty:
            assert f"shard {i}/{n}: 0 of 2 hosts" in r.stderr
        dirs.append(str(d))
    assert sorted((tmp_path / "applied.log").read_text().split()) == hosts
    m = opsrun("runs", "merge", *dirs, "--json", cwd=tmp_path)
    assert m.returncode == 0, m.stderr
    assert sorted(json.loads(m.stdout)["hosts"]) == hosts


def test_a_resumed_shard_keeps_its_hosts(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    write(tmp_path / "inv.yaml", "opsrun: 1\nhosts:\n" + "".join(f"  {h}: {{transport: local}}\n" for h in HOSTS))
    write(tmp_path / "pb.yaml", f"""\
        opsrun: 1
        name: wait
        hosts: all
        policy:
          retry: {{attempts: 1}}
          escalate: [human]
        steps:
          - id: gate
            run: test -f {marker} && echo {{{{ inventory_hostname }}}} >> {tmp_path}/applied.log
        """)
    p = opsrun("apply", "pb.yaml", "-i", "inv.yaml", "--yes", "--shard", "2/2", cwd=tmp_path)
    assert p.returncode == 3, p.stdout + p.stderr
    run_id = events(tmp_path / ".opsrun")[0]["run_id"]
    mine = shard.select(HOSTS, shard.parse("2/2"))
    marker.write_text("ok")
    again = opsrun("apply", "--resume", str(run_id), "--shard", "1/2", "--yes", cwd=tmp_path)
    assert again.returncode == 4  # a resumed run keeps its own shard
    r = opsrun("apply", "--resume", str(run_id), "--yes", cwd=tmp_path, env={"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "2"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "shard 2/2: " in r.stderr
    assert sorted((tmp_path / "applied.log").read_text().split()) == sorted(mine)


def test_shards_share_the_pipelines_run_id_and_merge_refuses_another_run(fleet: Path) -> None:
    def shard(i: int, where: str, **env: str) -> subprocess.CompletedProcess[str]:
        return opsrun("apply", str(fleet / "pb.yaml"), "-i", str(fleet / "inv.yaml"), "--yes", "--shard", f"{i}/2",
                      cwd=fleet, env={"OPSRUN_STATE_DIR": str(fleet / where), **env})

    assert shard(1, "a", CI_PIPELINE_ID="77").returncode == 0
    assert shard(2, "b", CI_PIPELINE_ID="77").returncode == 0
    assert shard(2, "c", GITHUB_RUN_ID="5", GITHUB_RUN_ATTEMPT="2").returncode == 0
    assert events(fleet / "a")[0]["group"] == "gl-77" and events(fleet / "c")[0]["group"] == "gh-5-2"
    doc = json.loads(opsrun("runs", "merge", "a", "b", "--json", cwd=fleet).stdout)
    assert doc["run_id"] == "gl-77" and doc["ok"] is True
    other = opsrun("runs", "merge", "a", "c", cwd=fleet)
    assert other.returncode == 4 and "belong to different runs" in other.stderr
    named = opsrun("apply", str(fleet / "pb.yaml"), "-i", str(fleet / "inv.yaml"), "--yes", "--run-id", "bad id!",
                   cwd=fleet, env={"OPSRUN_STATE_DIR": str(fleet / "d")})
    assert named.returncode == 4 and "--run-id" in named.stderr
