"""A Proxmox VE inventory source: the guests of a cluster (by tag, pool, node, type) become ssh
hosts, reached at the address their config (`ip=` of netN, cloud-init ipconfigN) or agent gives.

Read-only API calls through the proxmox transport, made only when a run needs the group;
imported lazily (it reaches proxmoxer), so validate and plan of other hosts never load it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from runner.errors import Diagnostic, OpsrunError
from runner.model import Host, Probe
from runner.transports.proxmox import ProxmoxTransport

HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
LOCAL_NAMES = ("local", "localhost")
Guest = tuple[str, dict[str, Any], dict[str, Any]]  # name, ssh settings, host vars


def guests(api_host: Host, spec: dict[str, Any], group: str, warnings: list[Diagnostic]) -> list[Guest]:
    """The guests `spec` selects, as (name, settings, vars), in vmid order."""
    t = ProxmoxTransport(api_host)
    try:
        t.open()
        rows = _get(t, "cluster/resources", {"type": "vm"}) or []
        chosen = sorted((r for r in rows if isinstance(r, dict) and _wanted(r, spec)), key=lambda r: int(r["vmid"]))
        out: list[Guest] = []
        names: dict[str, int] = {}
        for row in chosen:
            guest = _guest(t, api_host, row, spec, group, warnings)
            if guest is None:
                continue
            name = guest[0]
            if name in names:
                raise OpsrunError(
                    f"group '{group}': guests {names[name]} and {row['vmid']} of {api_host.name} are both named "
                    f"{name}", hint="give each guest its own name in Proxmox (its hostname / VM name)")
            names[name] = int(row["vmid"])
            out.append(guest)
        return out
    finally:
        t.close()


def _get(t: ProxmoxTransport, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET `path`; None when the API answers with an error (an agent that is not running...)."""
    res = t.probe([Probe("q", api=("GET", path, tuple((params or {}).items())))])["q"]
    if res.rc != 0:
        if path == "cluster/resources":
            err = (res.data or {}).get("error", {}) if isinstance(res.data, dict) else {}
            raise OpsrunError(f"{t.host.name}: cannot list the guests: {err.get('message', res.data)}",
                              hint="the API token needs VM.Audit on /vms (or on the pool)")
        return None
    return res.data


def _tags(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [p for p in re.split(r"[;,\s]+", str(value or "")) if p]


def _wanted(row: dict[str, Any], spec: dict[str, Any]) -> bool:
    if row.get("type") not in ("lxc", "qemu") or int(row.get("template") or 0):
        return False
    kind = spec.get("type", "any")
    if kind != "any" and row.get("type") != kind:
        return False
    if spec.get("running", True) and row.get("status") != "running":
        return False
    if spec.get("node") and row.get("node") != spec["node"]:
        return False
    if spec.get("pool") and row.get("pool") != spec["pool"]:
        return False
    have = set(_tags(row.get("tags")))
    return all(tag in have for tag in spec.get("tags") or [])


def _guest(t: ProxmoxTransport, api_host: Host, row: dict[str, Any], spec: dict[str, Any], group: str,
           warnings: list[Diagnostic]) -> Guest | None:
    kind, node, vmid = str(row["type"]), str(row["node"]), int(row["vmid"])
    raw_name = str(row.get("name") or "")
    name = raw_name if HOST_NAME.match(raw_name) else f"{'ct' if kind == 'lxc' else 'vm'}{vmid}"
    if name in LOCAL_NAMES:
        warnings.append(Diagnostic(api_host.name, 0, 0, f"group '{group}': guest {vmid} is named {name}: left out",
                                   hint="`local` and `localhost` are this machine in opsrun", severity="warning"))
        return None
    cfg = _get(t, f"nodes/{node}/{kind}/{vmid}/config") or {}
    address = _address(t, kind, node, vmid, cfg, row.get("status") == "running", spec.get("network"))
    settings = dict(spec.get("settings") or {})
    if address:
        settings["address"] = address
    else:
        warnings.append(Diagnostic(
            api_host.name, 0, 0, f"group '{group}': no address found for guest {name} ({kind} {vmid} on {node}): "
            "reached by its name", severity="warning",
            hint="give its net0 a static ip=ADDR/PREFIX (or ipconfig0 on a VM), run the guest agent, "
                 "or set ansible_host in host_vars/" + name + ".yml"))
    tags = _tags(row.get("tags") or cfg.get("tags"))
    extra: dict[str, Any] = {"proxmox_vmid": vmid, "proxmox_node": node, "proxmox_type": kind,
                             "proxmox_name": raw_name, "proxmox_status": row.get("status", ""),
                             "proxmox_tags": tags}
    if row.get("pool"):
        extra["proxmox_pool"] = row["pool"]
    return name, settings, extra


def _props(value: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in str(value or "").split(","):
        key, eq, val = part.partition("=")
        if eq:
            out[key.strip()] = val.strip()
    return out


def _address(t: ProxmoxTransport, kind: str, node: str, vmid: int, cfg: dict[str, Any], running: bool,
             network: str | None) -> str | None:
    """The static address of the chosen (or first) interface, else what the running guest says."""
    prefix = "net" if kind == "lxc" else "ipconfig"
    keys = sorted((k for k in cfg if re.fullmatch(rf"{prefix}\d+", k)), key=lambda k: int(k[len(prefix):]))
    if network:
        keys = [k for k in keys if k[len(prefix):] == network.removeprefix("net").removeprefix("ipconfig")]
    for field, skip in (("ip", ("dhcp", "manual")), ("ip6", ("dhcp", "auto", "manual"))):
        for k in keys:
            ip = _props(cfg[k]).get(field, "")
            if ip and ip not in skip:
                return ip.split("/")[0]
    if not running:
        return None
    wanted = {_props(cfg[k]).get("name") for k in keys} if kind == "lxc" and network else set()
    if kind == "lxc":
        rows = _get(t, f"nodes/{node}/lxc/{vmid}/interfaces") or []
    elif _agent_on(cfg.get("agent")):
        answer = _get(t, f"nodes/{node}/qemu/{vmid}/agent/network-get-interfaces") or {}
        rows = answer.get("result", []) if isinstance(answer, dict) else []
    else:
        return None
    return _first_address(rows if isinstance(rows, list) else [], wanted)


def _agent_on(value: Any) -> bool:
    first = str(value or "0").split(",")[0]
    return first in ("1", "enabled=1", "true", "yes", "on")


def _first_address(rows: list[Any], names: set[Any]) -> str | None:
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for row in rows:
        if not isinstance(row, dict) or row.get("name") == "lo" or (names and row.get("name") not in names):
            continue
        for item in row.get("ip-addresses") or []:
            try:
                ip = ipaddress.ip_address(str(item.get("ip-address", "")))
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                found.append(ip)
    found.sort(key=lambda ip: ip.version)  # IPv4 first
    return str(found[0]) if found else None
