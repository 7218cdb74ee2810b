"""Plans across steps on Proxmox: later steps on the same guest or snapshot plan against the
existence, config and power state the earlier ones leave (runner/steps/pve_overlay.py).

Table tests run step sequences through the real planner pieces (expand, StepDecider, an
Overlay) with API answers shaped as fakepve gives them; an end-to-end test plans, applies and
re-plans a multi-step playbook on one guest against the fakepve peer process and checks, per
step, that apply did what the plan said.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner import config
from runner.errors import Diagnostic
from runner.model import ProbeResult, StepPlan
from runner.overlay import Overlay
from runner.planner import StepDecider, conflict_warnings, expand_host
from runner.session import Session
from tests.fixtures_pve import TEMPLATE, PveProcess

INVENTORY = {"opsrun": 1, "hosts": {"pve": {"transport": "proxmox", "api": "https://127.0.0.1:8006",
                                            "token_id": "root@pam!opsrun", "token_secret": "env:NO_SUCH_TOKEN",
                                            "node": "pve1"}}}
NODES = ProbeResult(0, data=[{"node": "pve1", "status": "online", "type": "node"}])


def A(data: Any) -> ProbeResult:
    return ProbeResult(0, data=data)


def missing(what: str = "container 101") -> ProbeResult:
    return ProbeResult(1, data={"error": {"status": 404, "message": f"no {what} in the cluster", "fields": {},
                                          "reason": "missing"}})


NOTHING = {"guest": A([]), "nodes": NODES, "config": missing(), "pending": missing(), "status": missing()}


def existing(vmid: int = 101, status: str = "running", **config: Any) -> dict[str, ProbeResult]:
    """A container as fakepve answers for it."""
    cfg = {"hostname": "web1", "cores": 1, "memory": 512, "swap": 256, "rootfs": f"local-lvm:vm-{vmid}-disk-0,size=8G",
           "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:FB:A9:EE,ip=dhcp,type=veth", "ostype": "debian",
           "unprivileged": 1, **config}
    row = {"id": f"lxc/{vmid}", "type": "lxc", "node": "pve1", "name": cfg["hostname"], "vmid": vmid,
           "status": status, "template": 0}
    return {"guest": A([row]), "nodes": NODES, "config": A({**cfg, "digest": "d1gest"}),
            "pending": A([{"key": k, "value": v} for k, v in sorted(cfg.items())]),
            "status": A({"vmid": vmid, "status": status, "name": cfg["hostname"]})}


def plan_sequence(tmp_path: Path, steps: str, facts: dict[str, dict[str, ProbeResult]]
                  ) -> tuple[dict[str, StepPlan], Overlay]:
    """Plan `steps` on one Proxmox host as `opsrun plan` does, with these API answers
    (instance key -> probe key -> answer; unanswered probes say 'missing')."""
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(INVENTORY))
    (tmp_path / "site.yaml").write_text("opsrun: 1\nname: t\nhosts: pve\nsteps:\n" + textwrap.indent(
        textwrap.dedent(steps), "  "))
    inv = config.load_inventory(str(tmp_path / "inventory.yaml"))
    session = Session(inv, config.load_playbook(str(tmp_path / "site.yaml"), inv))
    errors: list[Diagnostic] = []
    instances = expand_host(session, "pve", list(session.playbook.steps), {}, errors)
    assert not errors, errors
    overlay = Overlay()
    decider = StepDecider(session, "pve", overlay)
    out = {}
    for inst in instances:
        asked = {p.key for p in inst.kind.probes(inst.params, inst.ctx)} if inst.params is not None else set()
        given = facts.get(inst.key, {})
        assert set(given) <= asked, (inst.key, set(given) - asked)
        out[inst.key] = decider.decide(inst, {k: given.get(k, missing()) for k in asked})
    return out, overlay


def calls(sp: StepPlan) -> list[str]:
    return [a.display() for a in sp.change.actions]


CT = f"""\
  vmid: 101
  hostname: web1
  ostemplate: {TEMPLATE}
  cores: 1
  memory: 512
  rootfs: local-lvm:8
  net0: name=eth0,bridge=vmbr0,ip=dhcp
"""


def test_create_then_start_then_change_snapshot_and_delete(tmp_path: Path) -> None:
    steps = f"""\
        - id: create
          proxmox.lxc:
            {{vmid: 101, hostname: web1, ostemplate: "{TEMPLATE}", cores: 1, memory: 512, rootfs: "local-lvm:8",
             net0: "name=eth0,bridge=vmbr0,ip=dhcp"}}
        - id: start
          proxmox.lxc:
            {{vmid: 101, hostname: web1, ostemplate: "{TEMPLATE}", cores: 1, memory: 512, rootfs: "local-lvm:8",
             net0: "name=eth0,bridge=vmbr0,ip=dhcp", state: running}}
        - id: grow
          proxmox.lxc: {{vmid: 101, rootfs: "local-lvm:16"}}
        - id: cores
          proxmox.lxc: {{vmid: 101, cores: 2}}
        - id: snap
          proxmox.snapshot: {{vmid: 101, snapshot: base}}
        - id: snap_again
          proxmox.snapshot: {{vmid: 101, snapshot: base}}
        - id: gone
          proxmox.lxc: {{vmid: 101, state: absent}}
        - id: snap_after
          proxmox.snapshot: {{vmid: 101, snapshot: base}}
        - id: gone_again
          proxmox.lxc: {{vmid: 101, state: absent}}
        - id: report
          proxmox.query: containers
        """
    nothing_snap = {"guest": A([]), "snapshots": missing()}
    plans, overlay = plan_sequence(tmp_path, steps, {
        "create": NOTHING, "start": NOTHING, "grow": NOTHING, "cores": NOTHING, "snap": nothing_snap,
        "snap_again": nothing_snap, "gone": NOTHING, "snap_after": nothing_snap, "gone_again": NOTHING,
        "report": {"live:rows": A([])},
    })
    assert plans["create"].change.status == "create"
    start = plans["start"].change
    assert (start.status, calls(plans["start"])) == ("update", ["POST nodes/pve1/lxc/101/status/start"]), start
    grow = plans["grow"].change
    assert grow.status == "update" and calls(plans["grow"]) == [
        "PUT nodes/pve1/lxc/101/resize disk=rootfs size=16G"], (grow.summary, grow.reason)
    cores = plans["cores"].change
    assert cores.status == "unknown", cores.summary
    assert "step 'grow' changes its config first" in cores.reason and "digest" in cores.reason, cores.reason
    assert calls(plans["snap"]) == ["POST nodes/pve1/lxc/101/snapshot snapname=base"]
    assert plans["snap_again"].change.status == "noop"
    gone = plans["gone"].change
    assert gone.status == "delete" and calls(plans["gone"]) == [
        "POST nodes/pve1/lxc/101/status/stop", "DELETE nodes/pve1/lxc/101 purge=1"], gone.summary
    after = plans["snap_after"].change
    assert after.status == "unknown" and "does not exist yet" in after.reason
    assert plans["gone_again"].change.status == "noop"
    report = plans["report"].change
    assert report.status == "noop" and "before step 'gone' changes the cluster" in report.summary, report.summary
    # create-then-delete fights; so do the two cores values (1, then 2)
    what = {c.what for c in overlay.conflicts}
    assert {"guest 101 existence", "guest 101 field cores", "guest 101 field rootfs"} <= what, what


def test_existing_guest_stopped_then_changed_keeps_the_digest(tmp_path: Path) -> None:
    real = existing(status="running")
    plans, overlay = plan_sequence(tmp_path, """\
        - id: stop
          proxmox.lxc: {vmid: 101, state: stopped}
        - id: swap
          proxmox.lxc: {vmid: 101, swap: 512}
        - id: again
          proxmox.lxc: {vmid: 101, swap: 512, memory: 1024}
        - id: run
          proxmox.lxc: {vmid: 101, state: running}
        """, {"stop": real, "swap": real, "again": real, "run": real})
    assert calls(plans["stop"]) == ["POST nodes/pve1/lxc/101/status/stop"]
    # stopped by the step before: no restart needed, and the digest is still the one read
    assert calls(plans["swap"]) == ["PUT nodes/pve1/lxc/101/config digest=d1gest swap=512"]
    again = plans["again"].change
    assert again.status == "unknown" and "memory would change" in again.reason, again.reason
    assert "step 'swap' changes its config first" in again.reason
    assert calls(plans["run"]) == ["POST nodes/pve1/lxc/101/status/start"]
    assert [(c.first, c.second) for c in overlay.conflicts] == [("stop", "run")]


def test_running_guest_change_needs_restart_after_start(tmp_path: Path) -> None:
    real = existing(status="stopped")
    plans, _ = plan_sequence(tmp_path, """\
        - id: start
          proxmox.lxc: {vmid: 101, state: running}
        - id: rootfs_opts
          proxmox.lxc: {vmid: 101, unprivileged: 0}
        - id: same
          proxmox.lxc: {vmid: 101, cores: 1, state: running}
        """, {"start": real, "rootfs_opts": real, "same": real})
    assert calls(plans["start"]) == ["POST nodes/pve1/lxc/101/status/start"]
    unsafe = plans["rootfs_opts"].change
    assert unsafe.status == "blocked" and "unprivileged" in unsafe.reason
    same = plans["same"].change
    assert same.status == "noop" and "as declared (running)" in same.summary, same.summary


def test_two_creates_from_nextid_do_not_share_an_id(tmp_path: Path) -> None:
    free = {**NOTHING, "nextid": A("100"), "config": missing("container web8")}
    plans, _ = plan_sequence(tmp_path, f"""\
        - id: first
          proxmox.lxc: {{name: web8, ostemplate: "{TEMPLATE}"}}
        - id: second
          proxmox.lxc: {{name: web9, ostemplate: "{TEMPLATE}"}}
        - id: first_again
          proxmox.lxc: {{name: web8, state: running}}
        - id: by_id
          proxmox.lxc: {{vmid: 100, hostname: web8}}
        """, {"first": free, "second": free, "first_again": free, "by_id": NOTHING})
    assert calls(plans["first"]) == [f"POST nodes/pve1/lxc hostname=web8 ostemplate={TEMPLATE} vmid=100"]
    second = plans["second"].change
    assert second.status == "unknown" and "nextid" in second.reason and "step 'first' takes 100" in second.reason
    # the guest made by name is found by its name and by its id afterwards
    assert calls(plans["first_again"]) == ["POST nodes/pve1/lxc/100/status/start"]
    assert plans["by_id"].change.status == "noop", plans["by_id"].change.summary


@pytest.mark.parametrize(("step", "reason"), [
    ("{vmid: 101, swap: 512}", "does not set swap: Proxmox's defaults for them are known only once"),
    ('{vmid: 101, rootfs: "local-lvm:vm-101-disk-0"}', "the volume id Proxmox gives it is known only once"),
])
def test_defaults_of_a_planned_guest_are_unknown(tmp_path: Path, step: str, reason: str) -> None:
    plans, _ = plan_sequence(tmp_path, f"""\
        - id: create
          proxmox.lxc: {{vmid: 101, hostname: web1, ostemplate: "{TEMPLATE}", rootfs: "local-lvm:8"}}
        - id: later
          proxmox.lxc: {step}
        """, {"create": NOTHING, "later": NOTHING})
    later = plans["later"].change
    assert later.status == "unknown" and reason in later.reason, later.reason
    assert "step 'create'" in later.reason


def test_rollback_makes_the_guest_unknown(tmp_path: Path) -> None:
    real = existing(status="running")
    snaps = {"guest": real["guest"], "snapshots": A([{"name": "base", "description": ""},
                                                     {"name": "current", "description": "You are here!"}])}
    plans, _ = plan_sequence(tmp_path, """\
        - id: back
          proxmox.snapshot: {vmid: 101, snapshot: base, state: rollback}
        - id: after
          proxmox.lxc: {vmid: 101, state: running}
        - id: drop
          proxmox.snapshot: {vmid: 101, snapshot: base, state: absent}
        - id: drop_again
          proxmox.snapshot: {vmid: 101, snapshot: base, state: absent}
        """, {"back": snaps, "after": real, "drop": snaps, "drop_again": snaps})
    assert plans["back"].change.status == "run"
    after = plans["after"].change
    assert after.status == "unknown" and "rolls 101 back to snapshot base" in after.reason, after.reason
    assert plans["drop"].change.status == "unknown"  # the guest itself is not known then
    assert plans["drop_again"].change.status == "unknown"


def test_snapshot_taken_then_removed_by_name(tmp_path: Path) -> None:
    real = existing(status="stopped")
    snaps = {"guest": real["guest"], "snapshots": A([{"name": "current", "description": "You are here!"}])}
    plans, overlay = plan_sequence(tmp_path, """\
        - id: take
          proxmox.snapshot: {name: web1, snapshot: pre, description: before}
        - id: describe
          proxmox.snapshot: {vmid: 101, snapshot: pre, description: after}
        - id: drop
          proxmox.snapshot: {vmid: 101, snapshot: pre, state: absent}
        - id: cores
          proxmox.lxc: {vmid: 101, cores: 4}
        """, {"take": snaps, "describe": snaps, "drop": snaps, "cores": real})
    assert calls(plans["take"]) == ["POST nodes/pve1/lxc/101/snapshot description=before snapname=pre"]
    assert calls(plans["describe"]) == ["PUT nodes/pve1/lxc/101/snapshot/pre/config description=after"]
    assert calls(plans["drop"]) == ["DELETE nodes/pve1/lxc/101/snapshot/pre"]
    cores = plans["cores"].change  # snapshots live in the guest's config: its digest moved
    assert cores.status == "unknown" and "digest" in cores.reason, cores.reason
    warnings = conflict_warnings({"pve": overlay})
    assert len(warnings) == 2 and all("pve.snapshot 101 pre" in w for w in warnings), warnings


def test_untouched_guests_plan_as_before(tmp_path: Path) -> None:
    plans, overlay = plan_sequence(tmp_path, """\
        - id: one
          proxmox.lxc: {vmid: 101, cores: 2}
        - id: other
          proxmox.lxc: {vmid: 102, hostname: web2, cores: 2}
        """, {"one": existing(101, status="stopped"),
              "other": existing(102, status="stopped", hostname="web2")})
    assert calls(plans["one"]) == ["PUT nodes/pve1/lxc/101/config cores=2 digest=d1gest"]
    assert calls(plans["other"]) == ["PUT nodes/pve1/lxc/102/config cores=2 digest=d1gest"]
    assert overlay.conflicts == []


def test_vm_cloned_then_stopped_then_snapshotted(tmp_path: Path) -> None:
    template = {"name": "tpl", "memory": "1024", "cores": 1, "scsi0": "local-lvm:base-9000-disk-0,size=8G",
                "ide2": "local:iso/d.iso,media=cdrom", "template": 1, "digest": "t"}
    src = {"clone_guest": A([{"id": "qemu/9000", "type": "qemu", "node": "pve1", "name": "tpl", "vmid": 9000,
                              "status": "stopped", "template": 1}]),
           "clone_config": A(template)}
    absent = {**NOTHING, "config": missing("VM 201"), "pending": missing("VM 201"), "status": missing("VM 201")}
    plans, overlay = plan_sequence(tmp_path, """\
        - id: clone
          proxmox.vm: {vmid: 201, name: db1, clone: 9000, memory: 2048, state: running}
        - id: again
          proxmox.vm: {vmid: 201, name: db1, clone: 9000, memory: 2048, cores: 1}
        - id: bigger
          proxmox.vm: {vmid: 201, scsi0: "local-lvm:16"}
        - id: stop
          proxmox.vm: {vmid: 201, state: stopped}
        - id: snap
          proxmox.snapshot: {vmid: 201, snapshot: first}
        """, {"clone": {**absent, **src}, "again": {**absent, **src}, "bigger": absent, "stop": absent,
              "snap": {"guest": A([]), "snapshots": missing("VM 201")}})
    assert calls(plans["clone"])[0].startswith("POST nodes/pve1/qemu/9000/clone"), calls(plans["clone"])
    assert plans["again"].change.status == "noop", plans["again"].change.summary  # cores copied from the template
    assert calls(plans["bigger"]) == ["PUT nodes/pve1/qemu/201/resize disk=scsi0 size=16G"]
    assert calls(plans["stop"]) == ["POST nodes/pve1/qemu/201/status/stop"]
    assert calls(plans["snap"]) == ["POST nodes/pve1/qemu/201/snapshot snapname=first"]
    assert [(c.first, c.second) for c in overlay.conflicts] == [("clone", "stop")]


# ---------------------------------------------------------------- end to end

E2E = f"""\
opsrun: 1
name: effects
hosts: pve-lab
steps:
  - id: create
    proxmox.lxc:
      vmid: 301
      hostname: fx1
      ostemplate: {TEMPLATE}
      cores: 1
      memory: 512
      swap: 256
      rootfs: local-lvm:10
      net0: name=eth0,bridge=vmbr0,ip=dhcp
  - id: grow
    proxmox.lxc: {{vmid: 301, rootfs: "local-lvm:10"}}
  - id: start
    proxmox.lxc: {{vmid: 301, memory: 512, state: running}}
  - id: describe
    proxmox.lxc: {{vmid: 301, description: made by the effects test}}
  - id: snap
    proxmox.snapshot: {{vmid: 301, snapshot: base, description: fresh}}
  - id: snap_by_name
    proxmox.snapshot: {{name: fx1, snapshot: base}}
  - id: other
    proxmox.lxc: {{name: fx2, ostemplate: "{TEMPLATE}", rootfs: "local-lvm:4"}}
  - id: other_run
    proxmox.lxc: {{name: fx2, state: running}}
  - id: report
    proxmox.query: containers
"""


def check_apply_did_what_plan_said(plan_doc: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """Per (host, instance): plan `=` -> ok/skipped, `+ ~ -` -> changed, `>` -> changed/ok,
    `?` carries a reason; apply never journals that it decided otherwise."""
    ends = {(e["host"], e["instance"]): e for e in events if e.get("type") == "step_end"}
    diverged = [e for e in events if e.get("type") == "plan_diverged"]
    assert not diverged, diverged
    for sp in plan_doc["steps"]:
        key = (sp["host"], sp["instance"])
        end = ends.get(key)
        assert end is not None, f"no result for {key}"
        marker = sp["marker"]
        if marker == "=":
            assert end["status"] in ("ok", "skipped"), (key, sp["summary"], end)
        elif marker in "+~-":
            assert end["status"] == "changed", (key, sp["summary"], end)
        elif marker == ">":
            assert end["status"] in ("changed", "ok"), (key, sp["summary"], end)
        elif marker == "?":
            assert sp["reason"], (key, sp)
        else:
            raise AssertionError(f"{key}: planned {marker} {sp['summary']}")


@pytest.mark.peer
def test_multi_step_playbook_on_one_guest_plans_what_apply_does(pve_process: PveProcess, tmp_path: Path) -> None:
    from tests.test_proxmox_cli import inventory, opsrun

    inventory(tmp_path, pve_process.settings())
    (tmp_path / "site.yaml").write_text(E2E)
    env = pve_process.env()
    p = opsrun("plan", "site.yaml", "--json", cwd=tmp_path, env=env)
    assert p.returncode in (0, 2), p.stdout + p.stderr
    plan_doc = json.loads(p.stdout)
    by = {sp["instance"]: sp for sp in plan_doc["steps"]}
    steps = ("create", "grow", "start", "describe", "snap", "snap_by_name", "other", "other_run")
    assert [by[s]["marker"] for s in steps] == ["+", "=", "~", "?", "+", "=", "+", "~"], [(s["instance"], s["marker"], s["summary"], s["reason"])
                                         for s in plan_doc["steps"]]
    assert [a["display"] for a in by["start"]["actions"]] == ["POST nodes/pve1/lxc/301/status/start"]
    assert "does not set description" in by["describe"]["reason"]
    assert [a["display"] for a in by["other_run"]["actions"]] == ["POST nodes/pve1/lxc/100/status/start"]
    assert "before step 'other_run' changes the cluster" in by["report"]["summary"]
    assert plan_doc["warnings"] == []
    saved = tmp_path / "plan.json"
    saved.write_text(p.stdout)

    first = opsrun("apply", str(saved), "--yes", "--json", cwd=tmp_path, env=env)  # strict: as reviewed
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    events = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    check_apply_did_what_plan_said(plan_doc, events)

    again = opsrun("plan", "site.yaml", "--json", "--detailed-exitcode", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert all(sp["marker"] == "=" for sp in json.loads(again.stdout)["steps"]), again.stdout

    # an existing guest stopped, then changed: the change is planned with the digest read
    # before the stop (a start or stop leaves the config as it is), and applies as reviewed
    (tmp_path / "later.yaml").write_text(textwrap.dedent("""\
        opsrun: 1
        name: later
        hosts: pve-lab
        steps:
          - id: stop
            proxmox.lxc: {vmid: 301, state: stopped}
          - id: swap
            proxmox.lxc: {vmid: 301, swap: 512}
        """))
    p2 = opsrun("plan", "later.yaml", "--json", "-o", str(tmp_path / "later.json"), cwd=tmp_path, env=env)
    assert p2.returncode in (0, 2), p2.stdout + p2.stderr
    later = json.loads((tmp_path / "later.json").read_text())
    swap = next(sp for sp in later["steps"] if sp["instance"] == "swap")
    assert swap["marker"] == "~" and "digest" in swap["actions"][0]["params"], swap
    done = opsrun("apply", str(tmp_path / "later.json"), "--yes", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    check_apply_did_what_plan_said(later, [json.loads(line) for line in done.stdout.splitlines()
                                           if line.startswith("{")])
