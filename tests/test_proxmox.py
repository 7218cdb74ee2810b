"""Proxmox VE support against fakepve: the transport (auth, TLS, errors, tasks) and the
step kinds at the contract level (probes -> transport.probe -> plan -> execute -> re-plan).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from runner.errors import ApiError, AuthError, CommandTimeout, ConnectError, InvalidInput
from runner.model import Action, Change, Host
from runner.secrets import redact
from runner.steps.base import StepContext, get
from runner.transports import transport_for
from runner.transports.proxmox import ProxmoxTransport, resolve_settings
from tests.fixtures_pve import (  # noqa: F401  (fixtures)
    TEMPLATE,
    PveLab,
    PveProcess,
    pve_lab,
    pve_pki,
    pve_process,
)

pytestmark = pytest.mark.peer


# ---------------------------------------------------------------- helpers


@pytest.fixture
def pve(pve_lab: PveLab) -> Iterator[ProxmoxTransport]:  # noqa: F811
    t = transport_for(pve_lab.host())
    assert isinstance(t, ProxmoxTransport)
    with t:
        yield t


def plan(t: ProxmoxTransport, kind_name: str, params: dict[str, Any]) -> Change:
    kind = get(kind_name)
    ctx = StepContext(host=t.host)
    p = kind.prepare(kind.normalize(params), ctx)
    facts = t.probe(kind.probes(p, ctx))
    return kind.plan(p, facts, ctx)


def apply(t: ProxmoxTransport, change: Change) -> list[dict[str, Any]]:
    return [json.loads(t.execute(a, timeout=30).stdout) for a in change.actions]


def converge(t: ProxmoxTransport, kind: str, params: dict[str, Any]) -> Change:
    """Plan, apply, then check that planning again finds nothing to do."""
    first = plan(t, kind, params)
    assert first.status not in ("blocked", "unknown"), (first.summary, first.reason)
    apply(t, first)
    again = plan(t, kind, params)
    assert again.status == "noop", (again.summary, [a.display() for a in again.actions])
    assert again.actions == ()
    return first


def calls(change: Change) -> list[str]:
    return [f"{a.method} {a.path}" for a in change.actions]


CT = {"vmid": 101, "hostname": "web1", "ostemplate": TEMPLATE, "cores": 1, "memory": 512,
      "swap": 256, "net0": "name=eth0,bridge=vmbr0,ip=dhcp", "rootfs": "local-lvm:8",
      "features": "nesting=1", "onboot": True, "tags": ["web", "lab"],
      "description": "managed by opsrun", "password": "hunter2-root",
      "ssh-public-keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests test@opsrun"}


# ---------------------------------------------------------------- LXC life cycle


def test_lxc_full_lifecycle(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    # create with config
    created = converge(pve, "proxmox.lxc", CT)
    assert created.status == "create"
    assert calls(created) == ["POST nodes/pve1/lxc"]
    body = created.actions[0].params
    assert body["vmid"] == 101 and body["cores"] == 1 and body["onboot"] == 1
    assert body["tags"] == "web;lab" and body["rootfs"] == "local-lvm:8"
    assert "hunter2-root" not in redact(created.actions[0].display())
    assert "hunter2-root" not in created.diff and "***" in created.diff
    ct = pve_lab.pve.ct(101)
    assert ct.config["hostname"] == "web1" and ct.status == "stopped"

    # start it
    started = converge(pve, "proxmox.lxc", CT | {"state": "running"})
    assert calls(started) == ["POST nodes/pve1/lxc/101/status/start"]
    assert pve_lab.pve.ct(101).status == "running"

    # change cores and memory: exactly those two fields, with the digest planned against
    params = CT | {"state": "running", "cores": 2, "memory": "1G"}
    changed = plan(pve, "proxmox.lxc", params)
    assert changed.status == "update"
    assert changed.data["fields"] == {"cores": {"old": "1", "new": "2"},
                                      "memory": {"old": "512", "new": "1024"}}
    assert calls(changed) == ["PUT nodes/pve1/lxc/101/config"]
    put = changed.actions[0].params
    assert set(put) == {"cores", "memory", "digest"}
    assert put["digest"] == changed.data["digest"]
    assert "cores 1 -> 2" in changed.summary and "memory 512 -> 1024" in changed.summary
    assert "cores: 1 -> 2" in changed.diff
    apply(pve, changed)
    assert plan(pve, "proxmox.lxc", params).status == "noop"
    assert pve_lab.pve.ct(101).config["cores"] in (2, "2")

    # snapshot, change, roll back
    snap = {"vmid": 101, "snapshot": "before_upgrade", "description": "clean"}
    taken = converge(pve, "proxmox.snapshot", snap)
    assert taken.status == "create"
    assert calls(taken) == ["POST nodes/pve1/lxc/101/snapshot"]
    converge(pve, "proxmox.lxc", params | {"cores": 4})
    rollback = plan(pve, "proxmox.snapshot", snap | {"state": "rollback", "start": True})
    assert rollback.status == "run"
    assert calls(rollback) == ["POST nodes/pve1/lxc/101/snapshot/before_upgrade/rollback"]
    apply(pve, rollback)
    assert str(pve_lab.pve.ct(101).config["cores"]) == "2"
    assert pve_lab.pve.ct(101).status == "running"  # start: true
    # a rollback always runs: the disk state since the snapshot cannot be compared
    assert plan(pve, "proxmox.snapshot", snap | {"state": "rollback"}).status == "run"

    # stop, then remove (the snapshot goes with it)
    stopped = converge(pve, "proxmox.lxc", params | {"state": "stopped"})
    assert calls(stopped) == ["POST nodes/pve1/lxc/101/status/stop"]
    converge(pve, "proxmox.snapshot", snap | {"state": "absent"})
    removed = converge(pve, "proxmox.lxc", {"vmid": 101, "state": "absent"})
    assert removed.status == "delete"
    assert calls(removed) == ["DELETE nodes/pve1/lxc/101"]
    assert pve_lab.pve.ct(101) is None


# ---------------------------------------------------------------- QEMU VM life cycle

VM = {"vmid": 200, "name": "db1", "cores": 1, "sockets": 1, "memory": 1024,
      "net0": "virtio,bridge=vmbr0", "scsi0": "local-lvm:8,discard=on", "scsihw": "virtio-scsi-pci",
      "ostype": "l26", "agent": 1, "onboot": False, "tags": "db", "description": "database"}


def test_vm_full_lifecycle(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    created = converge(pve, "proxmox.vm", VM | {"state": "running"})
    assert created.status == "create"
    assert calls(created) == ["POST nodes/pve1/qemu", "POST nodes/pve1/qemu/200/status/start"]
    vm = pve_lab.pve.vm(200)
    assert vm.status == "running" and vm.config["scsi0"].startswith("local-lvm:vm-200-disk-0")

    # cores and memory wait for a restart on a running VM: refused unless allowed
    params = VM | {"state": "running", "cores": 2, "memory": "2G"}
    refused = plan(pve, "proxmox.vm", params)
    assert refused.status == "blocked"
    assert "cores, memory" in refused.reason and "allow_restart" in refused.reason
    assert refused.actions == ()

    allowed = plan(pve, "proxmox.vm", params | {"allow_restart": True})
    assert allowed.status == "update"
    assert set(allowed.data["fields"]) == {"cores", "memory"}
    assert allowed.data["fields"]["memory"] == {"old": "1024", "new": "2048"}
    assert calls(allowed) == ["PUT nodes/pve1/qemu/200/config",
                              "POST nodes/pve1/qemu/200/status/reboot"]
    apply(pve, allowed)
    assert plan(pve, "proxmox.vm", params | {"allow_restart": True}).status == "noop"
    assert str(pve_lab.pve.vm(200).config["cores"]) == "2"

    # hot fields on a running VM need no restart
    hot = converge(pve, "proxmox.vm", params | {"description": "primary db", "tags": ["db", "prod"]})
    assert calls(hot) == ["PUT nodes/pve1/qemu/200/config"]
    assert set(hot.data["fields"]) == {"description", "tags"}
    params |= {"description": "primary db", "tags": ["db", "prod"]}

    snap = {"name": "db1", "snapshot": "s1"}
    taken = converge(pve, "proxmox.snapshot", snap)
    assert calls(taken) == ["POST nodes/pve1/qemu/200/snapshot"]
    desc = converge(pve, "proxmox.snapshot", snap | {"description": "nightly"})
    assert desc.status == "update"
    assert calls(desc) == ["PUT nodes/pve1/qemu/200/snapshot/s1/config"]
    rollback = plan(pve, "proxmox.snapshot", snap | {"state": "rollback"})
    assert calls(rollback) == ["POST nodes/pve1/qemu/200/snapshot/s1/rollback"]
    apply(pve, rollback)  # PVE stops the VM on a rollback without vmstate
    assert pve_lab.pve.vm(200).status == "stopped"

    stopped = plan(pve, "proxmox.vm", params | {"state": "stopped"})
    assert stopped.status == "noop"
    restarted = plan(pve, "proxmox.vm", params | {"state": "restarted"})
    assert restarted.status == "run" and calls(restarted) == [
        "POST nodes/pve1/qemu/200/status/start"]
    apply(pve, restarted)
    stop = converge(pve, "proxmox.vm", params | {"state": "stopped"})
    assert calls(stop) == ["POST nodes/pve1/qemu/200/status/stop"]

    removed = converge(pve, "proxmox.vm", {"name": "db1", "state": "absent"})
    assert calls(removed) == ["DELETE nodes/pve1/qemu/200"]
    assert removed.actions[0].params == {"purge": 1, "destroy-unreferenced-disks": 1}
    assert pve_lab.pve.vm(200) is None


def test_vm_clone_from_template(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    pve_lab.sync(pve_lab.pve.add_vm, 9000, "tmpl-debian", template=True, config={
        "cores": 1, "memory": "1024", "scsi0": "local-lvm:base-9000-disk-0,size=4G",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "ostype": "l26"})
    params = {"vmid": 210, "name": "app1", "clone": 9000, "cores": 2, "memory": 1024,
              "net0": "virtio,bridge=vmbr0", "state": "running"}
    cloned = converge(pve, "proxmox.vm", params)
    assert cloned.status == "create"
    assert calls(cloned) == ["POST nodes/pve1/qemu/9000/clone", "PUT nodes/pve1/qemu/210/config",
                             "POST nodes/pve1/qemu/210/status/start"]
    # only what differs from the template is set after the clone
    assert cloned.actions[1].params == {"cores": 2}
    assert cloned.actions[0].params == {"newid": 210, "full": 1, "name": "app1"}
    vm = pve_lab.pve.vm(210)
    assert vm.status == "running" and str(vm.config["cores"]) == "2"


def test_name_resolution_and_next_free_id(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    pve_lab.sync(pve_lab.pve.add_ct, 100, "taken")
    params = {"name": "cache1", "ostemplate": TEMPLATE, "rootfs": "local-lvm:4", "memory": 256}
    created = converge(pve, "proxmox.lxc", params)
    assert created.data["vmid"] == 101  # /cluster/nextid
    assert pve_lab.pve.ct(101).config["hostname"] == "cache1"
    moved = plan(pve, "proxmox.lxc", params | {"memory": 512})
    assert calls(moved) == ["PUT nodes/pve1/lxc/101/config"]
    # a vmid used by the other guest type is refused, not overwritten
    clash = plan(pve, "proxmox.vm", {"vmid": 101, "name": "x", "memory": 512})
    assert clash.status == "blocked" and "container" in clash.summary


def test_query_reports_nodes_and_guests(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    pve_lab.sync(pve_lab.pve.add_vm, 300, "vm300", status="running", config={"memory": 2048})
    pve_lab.sync(pve_lab.pve.add_ct, 301, "ct301", config={"tags": "lab"})
    nodes = plan(pve, "proxmox.query", {"what": "nodes"})
    assert nodes.status == "noop" and nodes.actions == ()
    assert nodes.summary == "query nodes (read-only): 1 row"
    assert nodes.data["read_only"] is True and get("proxmox.query").read_only({}) is True
    assert [r["node"] for r in nodes.data["rows"]] == ["pve1"]
    assert "uptime" in nodes.data["rows"][0]  # live figures are kept for queries
    vms = plan(pve, "proxmox.query", {"what": "vms"})
    assert [(r["vmid"], r["name"], r["status"]) for r in vms.data["rows"]] == [
        (300, "vm300", "running")]
    cts = plan(pve, "proxmox.query", "containers")
    assert [r["vmid"] for r in cts.data["rows"]] == [301]
    text = cts.data["table"]
    assert text.splitlines()[0].split()[:4] == ["VMID", "NAME", "NODE", "STATUS"]
    assert "ct301" in text and "512.0 MiB" in text
    for what in ("storage", "cluster_status", "ha_status", "tasks", "backup_jobs"):
        q = plan(pve, "proxmox.query", {"what": what})
        assert q.status == "noop" and isinstance(q.data["rows"], list), what


def test_table_helper() -> None:
    from runner.steps.proxmox_query import table

    rows = [{"vmid": 101, "name": "web1", "maxmem": 536870912, "tags": "a;b"},
            {"vmid": 1000, "name": "x", "maxmem": None}]
    out = table(rows, ["vmid", "name", "maxmem", "missing"])
    assert out.splitlines() == ["VMID  NAME  MAXMEM", "101   web1  512.0 MiB", "1000  x"]
    assert table([], ["a"]) == "(no rows)"


# ---------------------------------------------------------------- faults


def test_rejected_parameter_keeps_pve_message(pve: ProxmoxTransport) -> None:
    change = plan(pve, "proxmox.lxc", CT | {"net0": "name=eth0,bridge=vmbr0,bogus=1", "cores": 0})
    assert change.status == "create"
    with pytest.raises(ApiError) as err:
        apply(pve, change)
    e = err.value
    assert e.status == 400
    assert e.fields["net0"] == "invalid format - invalid key in comma-separated list property: bogus"
    assert e.fields["cores"] == "value must have a minimum value of 1"
    assert "net0: invalid format - invalid key in comma-separated list property: bogus" in e.message
    assert e.message.startswith("pve: POST /nodes/pve1/lxc rejected: ")
    assert "Traceback" not in e.render() and "proxmoxer" not in e.render()


def test_failed_task_raises_with_log_tail(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    missing = plan(pve, "proxmox.lxc", CT | {"ostemplate": "local:vztmpl/nope.tar.zst"})
    with pytest.raises(ApiError) as err:
        apply(pve, missing)
    assert "task vzcreate for 101 on pve1 failed" in err.value.message
    assert "volume 'local:vztmpl/nope.tar.zst' does not exist" in err.value.message
    assert "TASK ERROR" in err.value.message
    assert "/tasks/UPID:pve1:" in err.value.hint

    converge(pve, "proxmox.lxc", CT)
    pve_lab.sync(setattr, pve_lab.pve.ct(101), "start_error", "lxc-start: cgroup setup failed")
    start = plan(pve, "proxmox.lxc", CT | {"state": "running"})
    with pytest.raises(ApiError, match="task vzstart for 101 on pve1 failed: lxc-start: cgroup"):
        apply(pve, start)


def test_task_wait_is_bounded(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    converge(pve, "proxmox.lxc", CT)
    pve_lab.pve.time_scale = 1.0  # real seconds from now on
    pve_lab.sync(setattr, pve_lab.pve.ct(101), "start_secs", 60)
    action = plan(pve, "proxmox.lxc", CT | {"state": "running"}).actions[0]
    with pytest.raises(CommandTimeout, match=r"task vzstart for 101 on pve1 still running after"):
        pve.execute(action, timeout=0.5)


def test_locked_guest(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    converge(pve, "proxmox.lxc", CT)
    update = plan(pve, "proxmox.lxc", CT | {"cores": 3})
    pve_lab.sync(pve_lab.pve.snapshot_lock, 101)
    # planned before the lock appeared: PVE refuses, and we say so plainly
    with pytest.raises(ApiError) as err:
        apply(pve, update)
    assert "CT is locked (snapshot)" in err.value.message
    assert "unlock" in err.value.hint
    # planned now: blocked, with the reason
    blocked = plan(pve, "proxmox.lxc", CT | {"cores": 3})
    assert blocked.status == "blocked" and blocked.actions == ()
    assert "locked (snapshot)" in blocked.reason and "pct unlock 101" in blocked.reason
    # nothing to change: a lock does not matter
    assert plan(pve, "proxmox.lxc", CT).status == "noop"


def test_offline_node(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    pve_lab.sync(pve_lab.pve.add_node, "pve2")
    pve_lab.sync(pve_lab.pve.add_ct, 150, "far", node="pve2", status="running")
    pve_lab.sync(pve_lab.pve.set_node_offline, "pve2")
    change = plan(pve, "proxmox.lxc", {"vmid": 150, "cores": 2})
    assert change.status == "unknown"
    assert "node pve2 is offline" in change.reason
    create = plan(pve, "proxmox.lxc", CT | {"vmid": 151, "node": "pve2"})
    assert create.status == "unknown" and "pve2 is offline" in create.reason
    with pytest.raises(ApiError) as err:
        pve.execute(Action(kind="api", method="POST", path="nodes/pve2/lxc/150/status/stop",
                           wait_task=True))
    assert err.value.status == 595
    assert "node pve2 is offline or unreachable" in err.value.message


def test_concurrent_change_is_detected(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    converge(pve, "proxmox.lxc", CT)
    update = plan(pve, "proxmox.lxc", CT | {"cores": 3})
    pve.call("PUT", "nodes/pve1/lxc/101/config", {"description": "changed by a colleague"})
    with pytest.raises(ApiError, match="detected modified configuration"):
        apply(pve, update)


def test_restart_needed_and_unsafe_changes(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    running = CT | {"state": "running"}
    converge(pve, "proxmox.lxc", running)
    # features wait for the next start of a running container
    feat = plan(pve, "proxmox.lxc", running | {"features": "nesting=1,keyctl=1"})
    assert feat.status == "blocked" and "features" in feat.reason
    ok = converge(pve, "proxmox.lxc", running | {"features": "nesting=1,keyctl=1",
                                                 "allow_restart": True})
    assert calls(ok) == ["PUT nodes/pve1/lxc/101/config", "POST nodes/pve1/lxc/101/status/reboot"]
    running |= {"features": "keyctl=1,nesting=1"}  # same set, other order: no change
    assert plan(pve, "proxmox.lxc", running).status == "noop"

    # growing the root disk is a resize; shrinking or moving it is refused
    grow = converge(pve, "proxmox.lxc", running | {"rootfs": "local-lvm:10"})
    assert calls(grow) == ["PUT nodes/pve1/lxc/101/resize"]
    assert grow.actions[0].params == {"disk": "rootfs", "size": "10G"}
    assert grow.data["resize"] == {"rootfs": {"old": "8G", "new": "10G"}}
    shrink = plan(pve, "proxmox.lxc", running | {"rootfs": "local-lvm:4"})
    assert shrink.status == "blocked"
    assert "rootfs: shrink 10G -> 4G" in shrink.reason and "allow_unsafe" in shrink.reason
    other_os = plan(pve, "proxmox.lxc", running | {
        "rootfs": "local-lvm:10", "ostemplate": "local:vztmpl/alpine-3.20-default_amd64.tar.xz"})
    assert other_os.status == "blocked" and "alpine" in other_os.reason

    # allow_unsafe: destroy and re-create
    pve_lab.sync(pve_lab.pve.store_file, "local", "alpine-3.20-default_amd64.tar.xz", 1000,
                 content="vztmpl")
    new = running | {"rootfs": "local-lvm:4", "allow_unsafe": True,
                     "ostemplate": "local:vztmpl/alpine-3.20-default_amd64.tar.xz"}
    replaced = converge(pve, "proxmox.lxc", new)
    assert replaced.status == "update" and replaced.summary.startswith("REPLACE CT 101")
    assert calls(replaced) == ["POST nodes/pve1/lxc/101/status/stop", "DELETE nodes/pve1/lxc/101",
                               "POST nodes/pve1/lxc", "POST nodes/pve1/lxc/101/status/start"]
    assert pve_lab.pve.ct(101).config["ostype"] == "alpine"


def test_removing_a_field(pve: ProxmoxTransport) -> None:
    converge(pve, "proxmox.lxc", CT)
    gone = converge(pve, "proxmox.lxc", CT | {"description": None})
    assert gone.actions[0].params["delete"] == "description"
    assert gone.data["deletes"] == ["description"]


# ---------------------------------------------------------------- connection and credentials


def test_wrong_token_is_a_clear_auth_error(pve_lab: PveLab) -> None:  # noqa: F811
    t = transport_for(pve_lab.host(token_secret="00000000-0000-0000-0000-000000000000"))
    with pytest.raises(AuthError) as err:
        t.open()
    text = err.value.render()
    assert "token rejected: API token root@pam!opsrun was refused" in text
    assert "401 authentication failure" in text
    assert "00000000-0000-0000-0000-000000000000" not in text
    t.close()


def test_password_login_renews_an_expired_ticket(pve_lab: PveLab) -> None:  # noqa: F811
    host = pve_lab.host(token_id=None, token_secret=None, user="root@pam", password="secret")
    with transport_for(host) as t:
        assert t.call("GET", "nodes")[0]["node"] == "pve1"
        logins = sum(1 for m, p, _ in pve_lab.pve.requests if p.endswith("/access/ticket"))
        pve_lab.sync(pve_lab.pve.revoke_tickets)  # every ticket expires
        assert t.call("GET", "nodes")[0]["node"] == "pve1"
        again = sum(1 for m, p, _ in pve_lab.pve.requests if p.endswith("/access/ticket"))
        assert again == logins + 1
        # expired again, and the password changed meanwhile: a clear error
        pve_lab.sync(pve_lab.pve.revoke_tickets)
        pve_lab.pve.password = "rotated"
        with pytest.raises(AuthError, match="login ticket expired and logging in again as "
                                            "root@pam was refused"):
            t.call("GET", "nodes")


def test_wrong_password(pve_lab: PveLab) -> None:  # noqa: F811
    host = pve_lab.host(token_id=None, token_secret=None, user="root@pam", password="wrong")
    with pytest.raises(AuthError, match="login as root@pam refused"):
        transport_for(host).open()


def test_tls_is_verified_by_default(pve_lab: PveLab) -> None:  # noqa: F811
    t = transport_for(pve_lab.host(ca_file=None))
    with pytest.raises(ConnectError) as err:
        t.open()
    assert "TLS certificate of https://127.0.0.1:" in err.value.message
    assert "ca_file" in err.value.hint
    with transport_for(pve_lab.host(ca_file=None, verify_ssl=False)) as lab:
        assert lab.call("GET", "version")["release"]


def test_unreachable_api(pve_pki: tuple[str, str]) -> None:  # noqa: F811
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = Host("pve", "proxmox", {"api": f"https://127.0.0.1:{port}", "token_id": "a@pam!b",
                                   "token_secret": "x" * 8, "ca_file": pve_pki[0], "timeout": 5})
    with pytest.raises(ConnectError, match=f"cannot reach https://127.0.0.1:{port}: "
                                           "Connection refused"):
        transport_for(host).open()


def test_settings_from_environment(pve_lab: PveLab, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("PROXMOX_HOST", pve_lab.url.removeprefix("https://"))
    monkeypatch.setenv("PROXMOX_USER", pve_lab.token_id)
    monkeypatch.setenv("PROXMOX_TOKEN_VALUE", str(pve_lab.token_secret))
    monkeypatch.setenv("PROXMOX_VERIFY_SSL", "false")
    host = Host("pve", "proxmox", {})
    st = resolve_settings(host)
    assert (st.user, st.token_name, st.verify, st.url) == ("root@pam", "opsrun", False, pve_lab.url)
    with transport_for(host) as t:
        assert t.call("GET", "nodes")[0]["node"] == "pve1"
    # the separate token-name spelling
    monkeypatch.setenv("PROXMOX_USER", "root@pam")
    monkeypatch.setenv("PROXMOX_TOKEN_NAME", "opsrun")
    assert resolve_settings(host).token_id == "root@pam!opsrun"
    # settings win over the environment
    assert resolve_settings(Host("pve", "proxmox", {"api": "https://10.0.0.9",
                                                    "token_id": "ops@pve!ci",
                                                    "token_secret": "abc123"})).url == \
        "https://10.0.0.9:8006"


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "no Proxmox API address"),
    ({"api": "http://pve:8006", "token_id": "a@pam!t", "token_secret": "xyz"}, "not an https://"),
    ({"api": "pve", "token_id": "a@pam", "token_secret": "xyz"}, "is not user@realm!tokenname"),
    ({"api": "pve", "token_id": "a@pam!t"}, "has no secret"),
    ({"api": "pve"}, "no Proxmox credentials"),
    ({"api": "pve", "user": "root", "password": "xyz"}, "must be user@realm"),
    ({"api": "pve", "user": "root@pam", "password": "xyz", "ca_file": "/nonexistent/ca.pem"},
     "ca_file /nonexistent/ca.pem does not exist"),
])
def test_bad_settings(settings: dict[str, Any], message: str,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROXMOX_HOST", "PROXMOX_USER", "PROXMOX_TOKEN_NAME", "PROXMOX_TOKEN_VALUE",
                 "PROXMOX_PASSWORD", "PROXMOX_VERIFY_SSL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidInput, match=message):
        resolve_settings(Host("pve", "proxmox", settings))


def test_token_secret_never_shown(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    secret = str(pve_lab.token_secret)
    changes = [plan(pve, "proxmox.lxc", CT | {"state": "running"}),
               plan(pve, "proxmox.query", {"what": "nodes"})]
    for change in changes:
        for action in change.actions:
            assert secret not in action.display() and secret not in json.dumps(action.params)
    with pytest.raises(ApiError) as err:
        pve.call("PUT", "nodes/pve1/lxc/999/config", {"cores": 1})
    assert secret not in err.value.render()
    assert redact(f"token {secret}") == "token ***"  # marked when read


def test_process_fixture_serves_a_token(pve_process: PveProcess) -> None:  # noqa: F811
    import os

    host = Host("pve", "proxmox", {"api": pve_process.url, "token_id": pve_process.token_id,
                                   "token_secret": pve_process.token_secret,
                                   "ca_file": pve_process.cafile})
    with transport_for(host) as t:
        q = plan(t, "proxmox.query", {"what": "nodes"})
        assert [r["node"] for r in q.data["rows"]] == ["pve1"]
        converge(t, "proxmox.lxc", CT)
    os.kill(pve_process.pid, 0)  # still running until the fixture stops it by PID


def test_plan_is_stable_while_usage_moves(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    """Usage figures (uptime, cpu, mem) change every second; the probe answers a plan is
    fingerprinted by must not, or every saved plan would look drifted."""
    params = CT | {"state": "running",
                   "net0": {"name": "eth0", "bridge": "vmbr0", "ip": "dhcp"},  # mapping form
                   "features": {"nesting": True}}
    converge(pve, "proxmox.lxc", params)
    kind = get("proxmox.lxc")
    ctx = StepContext(host=pve.host)
    p = kind.prepare(kind.normalize(params), ctx)
    first = {k: v.fingerprint() for k, v in pve.probe(kind.probes(p, ctx)).items()}
    ct = pve_lab.pve.ct(101)
    pve_lab.sync(setattr, ct, "started_at", ct.started_at - 3600)  # an hour of uptime later
    pve_lab.sync(setattr, ct, "stats", {"cpu": 0.93, "mem": 400 * 2**20})
    second = {k: v.fingerprint() for k, v in pve.probe(kind.probes(p, ctx)).items()}
    assert first == second
    assert first.keys() == {"guest", "nodes", "config", "pending", "status"}


# ---------------------------------------------------------------- schema and the example playbook

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def _kind_schema(kind: str) -> dict[str, Any]:
    defs = json.loads((REPO / "schemas/playbook.schema.json").read_text())["$defs"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs,
            "$ref": f"#/$defs/kind_{kind}"}


def test_schema_defs_are_valid_and_described() -> None:
    from jsonschema import Draft202012Validator

    defs = {k: v for k, v in json.loads((REPO / "schemas/playbook.schema.json").read_text())["$defs"].items()
            if k.startswith(("kind_proxmox", "proxmox_"))}
    assert {k for k in defs if k.startswith("kind_proxmox")} == {
        "kind_proxmox.lxc", "kind_proxmox.vm", "kind_proxmox.snapshot", "kind_proxmox.query"}
    Draft202012Validator.check_schema(_kind_schema("proxmox.lxc"))

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key in ("properties", "patternProperties"):
                for name, sub in node.get(key, {}).items():
                    assert "description" in sub, f"{where}.{name} has no description"
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, where
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk({k: v for k, v in defs.items() if k.startswith("kind_")}, "$defs")
    lxc = Draft202012Validator(_kind_schema("proxmox.lxc"))
    assert not list(lxc.iter_errors(CT | {"password": "{{ secret('CT_ROOT') }}"}))
    assert list(lxc.iter_errors(CT))  # a literal password is refused
    assert list(lxc.iter_errors({"vmid": 101, "corse": 2}))  # typo
    vm = Draft202012Validator(_kind_schema("proxmox.vm"))
    assert not list(vm.iter_errors(VM | {"clone": 9000, "scsi1": "local-lvm:4"}))


def test_example_playbook_converges(pve: ProxmoxTransport) -> None:
    import yaml
    from jsonschema import Draft202012Validator

    from runner.render import render_value

    book = yaml.safe_load((REPO / "playbooks/proxmox-lab.yaml").read_text())
    assert book["hosts"] == "pve-lab"
    for rerun in (False, True):
        for step in book["steps"]:
            kind = next(k for k in step if k.startswith("proxmox."))
            assert not list(Draft202012Validator(_kind_schema(kind)).iter_errors(step[kind]))
            items = render_value(step.get("loop"), book["vars"]) if "loop" in step else [None]
            for item in items:
                params = render_value(step[kind], {**book["vars"], "item": item})
                if kind == "proxmox.query":
                    change = plan(pve, kind, params)
                    assert change.status == "noop" and change.data["rows"]
                elif rerun:
                    assert plan(pve, kind, params).status == "noop", (step["id"], item)
                else:
                    converge(pve, kind, params)
    report = plan(pve, "proxmox.query", render_value(book["steps"][-1]["proxmox.query"], {}))
    assert [r["name"] for r in report.data["rows"]] == ["lab-web1", "lab-web2", "lab-db1"]
    assert "lab-db1" in report.data["table"]


# ---------------------------------------------------------------- comparisons (pure)


@pytest.mark.parametrize(("key", "want", "have", "gtype", "equal"), [
    ("memory", "2G", 2048, "lxc", True),
    ("memory", 2048, "current=2048", "qemu", True),
    ("memory", "1G", "2048", "qemu", False),
    ("onboot", True, 1, "lxc", True),
    ("onboot", "no", "1", "lxc", False),
    ("cores", "2", 2, "lxc", True),
    ("tags", ["Web", "lab"], "lab;web", "lxc", True),
    ("tags", "lab", "lab;web", "lxc", False),
    ("features", "nesting=1,keyctl=1", "keyctl=1,nesting=1", "lxc", True),
    ("features", "nesting=true", "nesting=1", "lxc", True),
    ("features", "nesting=1", "keyctl=1,nesting=1", "lxc", False),
    ("net0", "name=eth0,bridge=vmbr0,ip=dhcp",
     "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:A1:59:CD,ip=dhcp,type=veth", "lxc", True),
    ("net0", "name=eth0,bridge=vmbr1", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:A1:59:CD", "lxc",
     False),
    ("net0", "name=eth0,bridge=vmbr0", "name=eth0,bridge=vmbr0,firewall=1", "lxc", False),
    ("net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:CD:68:05,bridge=vmbr0", "qemu", True),
    ("net0", "model=virtio,bridge=vmbr0", "virtio=BC:24:11:CD:68:05,bridge=vmbr0", "qemu", True),
    ("net0", "e1000,bridge=vmbr0", "virtio=BC:24:11:CD:68:05,bridge=vmbr0", "qemu", False),
    ("net0", "virtio=bc:24:11:cd:68:05,bridge=vmbr0", "virtio=BC:24:11:CD:68:05,bridge=vmbr0",
     "qemu", True),
    ("agent", 1, "1", "qemu", True),
    ("agent", "enabled=1,fstrim_cloned_disks=1", "1", "qemu", False),
    ("description", "a=b", "a=b\n", "lxc", True),
    ("description", "x", None, "lxc", False),
])
def test_same(key: str, want: Any, have: Any, gtype: str, equal: bool) -> None:
    from runner.steps.pve_values import same

    assert same(key, want, have, gtype) is equal


@pytest.mark.parametrize(("want", "have", "value", "grow", "unsafe"), [
    ("local-lvm:8", "local-lvm:vm-101-disk-0,size=8G", None, None, ""),
    ("local-lvm:10", "local-lvm:vm-101-disk-0,size=8G", None, "10G", ""),
    ("local-lvm:4", "local-lvm:vm-101-disk-0,size=8G", None, None, "shrink 8G -> 4G"),
    ("ceph:8", "local-lvm:vm-101-disk-0,size=8G", None, None, "move from storage local-lvm"),
    ("local-lvm:8,discard=on", "local-lvm:vm-200-disk-0,size=8G",
     "local-lvm:vm-200-disk-0,discard=1,size=8G", None, ""),
    ("local-lvm:vm-200-disk-0,discard=on", "local-lvm:vm-200-disk-0,discard=on,size=8G", None,
     None, ""),
    ("local-lvm:vm-200-disk-1", "local-lvm:vm-200-disk-0,size=8G", None, None,
     "a different disk"),
    ("local:iso/b.iso,media=cdrom", "local:iso/a.iso,media=cdrom", "local:iso/b.iso,media=cdrom",
     None, ""),
    ("/srv/data,mp=/data", "/srv/data,mp=/data", None, None, ""),
])
def test_volume_delta(want: str, have: str, value: str | None, grow: str | None,
                      unsafe: str) -> None:
    from runner.steps.pve_values import volume_delta

    d = volume_delta("scsi0", want, have)
    assert (d.value, d.grow) == (value, grow)
    assert (unsafe in d.unsafe) if unsafe else d.unsafe == ""


def test_bad_step_params_are_located_errors(pve_lab: PveLab) -> None:  # noqa: F811
    from runner.steps.shell import PrepareError

    ctx = StepContext(host=pve_lab.host())

    def prep(kind: str, params: Any) -> dict[str, Any]:
        k = get(kind)
        return k.prepare(k.normalize(params), ctx)

    with pytest.raises(PrepareError, match="give the guest's vmid or its name"):
        prep("proxmox.lxc", {"cores": 2})
    with pytest.raises(PrepareError, match="vmid 'web' is not a number"):
        prep("proxmox.vm", {"vmid": "web"})
    with pytest.raises(PrepareError, match="state 'on' is not one of"):
        prep("proxmox.lxc", {"vmid": 101, "state": "on"})
    with pytest.raises(PrepareError, match="snapshot name 'a b' is not valid"):
        prep("proxmox.snapshot", {"vmid": 101, "snapshot": "a b"})
    with pytest.raises(PrepareError, match="what 'disks' is not one of"):
        prep("proxmox.query", {"what": "disks"})
    flags = {"allow_restart": False, "allow_unsafe": False}
    assert prep("proxmox.lxc", "web1") == {"name": "web1", "state": "present", **flags}
    assert prep("proxmox.lxc", {"vmid": "101", "net0": {"bridge": "vmbr0", "firewall": True},
                                "allow_unsafe": "false", "allow_restart": "yes"}) == {
        "vmid": 101, "state": "present", "net0": "bridge=vmbr0,firewall=1",
        "allow_restart": True, "allow_unsafe": False}
    # templates are left alone until rendered
    assert get("proxmox.lxc").normalize({"vmid": "{{ item.vmid }}"}) == {"vmid": "{{ item.vmid }}"}


def test_transports_and_kinds_are_registered() -> None:
    for name in ("proxmox.lxc", "proxmox.vm", "proxmox.snapshot", "proxmox.query"):
        assert get(name).runs_where() == ["proxmox"]
    assert ProxmoxTransport.kind == "proxmox" and "pve-api" in ProxmoxTransport.capabilities


def test_server_errors_are_translated(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    converge(pve, "proxmox.lxc", CT)
    pve_lab.sync(pve_lab.pve.lose_quorum)
    with pytest.raises(ApiError) as err:
        apply(pve, plan(pve, "proxmox.lxc", CT | {"cores": 2}))
    assert err.value.status == 500
    assert err.value.message == ("pve: PUT /nodes/pve1/lxc/101/config: 500 cluster not ready - "
                                 "no quorum?")
    pve_lab.sync(pve_lab.pve.regain_quorum)
    pve_lab.sync(pve_lab.pve.fail, "GET", "/nodes", 502,
                 "<html><body><h1>502 Bad Gateway</h1> nginx</body></html>", html=True)
    with pytest.raises(ApiError) as err:
        pve.call("GET", "nodes")
    assert err.value.status == 502
    assert "not an API answer: 502 Bad Gateway nginx" in err.value.message
    assert "<html>" not in err.value.message


def test_pending_changes_of_a_running_vm(pve: ProxmoxTransport, pve_lab: PveLab) -> None:  # noqa: F811
    params = VM | {"state": "running"}
    converge(pve, "proxmox.vm", params)
    pve.call("PUT", "nodes/pve1/qemu/200/config", {"cores": 3})  # by hand: pending until restart
    wanted = params | {"cores": 3}
    waiting = plan(pve, "proxmox.vm", wanted)
    assert waiting.status == "noop"
    assert waiting.summary.endswith("pending until its next start: cores")
    assert waiting.data["pending"] == ["cores"]
    reboot = plan(pve, "proxmox.vm", wanted | {"allow_restart": True})
    assert calls(reboot) == ["POST nodes/pve1/qemu/200/status/reboot"]
    assert "reboot (to apply cores)" in reboot.summary
    apply(pve, reboot)
    assert plan(pve, "proxmox.vm", wanted | {"allow_restart": True}).status == "noop"
    assert str(pve_lab.pve.vm(200).config["cores"]) == "3"
