"""Host facts gathered: the probes asking what a host is (a POSIX/toybox snippet, Proxmox /version and /nodes)
and their parser (a piece the host cannot tell is None). Imports model, fact_names, steps.facts; no kind."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import runner.steps.facts as F
from runner import fact_names as N
from runner.model import Host, Probe, ProbeResult

KEY = F.HOST_PREFIX + "facts"
PVE_VERSION = F.HOST_PREFIX + "pve_version"
PVE_NODES = F.HOST_PREFIX + "pve_nodes"

# Each line `key=value`; `addr=`, `fib=`, `if6=` repeat. Every piece stands alone: a tool
# that is missing leaves its line empty. Builtins besides the tools named.
_OS_RELEASE = r"""f=/etc/os-release; [ -r "$f" ] || f=/usr/lib/os-release
[ -r "$f" ] && sed -n 's/^\([A-Z][A-Z0-9_]*\)=/os.\1=/p' "$f"
if [ "$(uname -s 2>/dev/null)" = Darwin ]; then
  echo os.ID=macos; echo os.NAME=macOS; echo "os.VERSION_ID=$(sw_vers -productVersion 2>/dev/null)"
  echo "membytes=$(sysctl -n hw.memsize 2>/dev/null)"
fi
"""
_ANDROID = (
    "for p in ro.product.model ro.product.manufacturer ro.product.brand ro.product.device "
    "ro.build.version.release ro.build.version.sdk ro.product.cpu.abi ro.product.cpu.abilist; "
    'do echo "prop.$p=$(getprop $p 2>/dev/null)"; done\n'
)
_COMMON = r"""echo "system=$(uname -s 2>/dev/null)"
echo "kernel=$(uname -r 2>/dev/null)"
echo "arch=$(uname -m 2>/dev/null)"
echo "hostname=$(hostname 2>/dev/null || uname -n 2>/dev/null)"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
[ -r /proc/meminfo ] && sed -n 's/^MemTotal:[^0-9]*\([0-9][0-9]*\).*/memkb=\1/p' /proc/meminfo
if command -v ip >/dev/null 2>&1; then
  ip -o addr show 2>/dev/null | sed 's/^/addr=/'
  echo "route4=$(ip -4 route get 1.0.0.0 2>/dev/null | head -n 1)"
  echo "route6=$(ip -6 route get 2000:: 2>/dev/null | head -n 1)"
else
  [ -r /proc/net/fib_trie ] && awk '/^ *[|]-- /{a=$2} / host LOCAL/{print "fib=" a}' /proc/net/fib_trie | sort -u
  [ -r /proc/net/if_inet6 ] && sed 's/^/if6=/' /proc/net/if_inet6
  [ -r /proc/net/route ] && awk 'NR>1 && $2=="00000000"{print "route=" $1 " " $3; exit}' /proc/net/route
fi
"""
_POSIX_ONLY = r"""t=; command -v timeout >/dev/null 2>&1 && t="timeout 3"
echo "fqdn=$($t hostname -f 2>/dev/null)"
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
[ -d /run/systemd/system ] && echo systemd=1
[ -d /run/openrc ] && echo openrc=1
for m in apt-get dnf5 dnf yum zypper pacman apk brew; do
  if command -v $m >/dev/null 2>&1; then echo "pkg=$m"; break; fi
done
"""


@F.define("host", "what the host is: OS, kernel, architecture, names, addresses, CPUs, memory, init, "
          "package manager (Android: its properties); `key=value` lines", blank=ProbeResult(0))
def _host(shell: F.Shell) -> str:
    if shell is F.TOYBOX:
        return _ANDROID + _COMMON + "true"
    return _OS_RELEASE + _COMMON + _POSIX_ONLY + "true"


def probes(host: Host) -> list[Probe]:
    """The probes asking `host`'s facts: one shell snippet, or two API GETs on Proxmox (the
    nodes one shared with steps that list nodes)."""
    if host.transport == "proxmox":
        return [F.ask(host, "api", "version", key=PVE_VERSION), F.ask(host, "api", "nodes", key=PVE_NODES)]
    return [F.ask(host, "host", key=KEY)]


def values(host: Host, answers: Mapping[str, ProbeResult]) -> dict[str, Any]:
    """The facts as variables (runner/fact_names.py), from the answers of `probes(host)`."""
    if host.transport == "proxmox":
        found = read_proxmox(answers.get(PVE_VERSION), answers.get(PVE_NODES))
    else:
        answer = answers.get(KEY)
        found = read_shell(answer.text if answer is not None else "", android=host.transport == "adb")
    return N.values_as_variables(host.transport, found)


# ---------------------------------------------------------------- reading the answers


def _lines(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            out.setdefault(key, []).append(value.strip())
    return out


def _unquote(value: str) -> str:
    """An os-release value: "quoted" (with \\ escapes), 'quoted' or bare."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip().split()[0])
    except (ValueError, IndexError):
        return None


def _major(version: str | None) -> str | None:
    m = re.match(r"\d+", version or "")
    return m.group(0) if m else None


def read_shell(text: str, *, android: bool = False) -> dict[str, Any]:
    """Fact path -> value from the `host` snippet's output; what it lacks is None."""
    kv = _lines(text)

    def one(key: str) -> str | None:
        v = kv.get(key, [""])[-1]
        return v or None

    out: dict[str, Any] = {}
    if android:
        out.update(_android(one))
    else:
        out.update(_os(one))
    out["system"] = one("system")
    out["kernel"] = one("kernel")
    out["arch"] = one("arch")
    name = one("hostname")
    out["hostname"] = name.split(".", 1)[0] if name else None
    out["cpus"] = _int(one("cpus"))
    kb, nbytes = _int(one("memkb")), _int(one("membytes"))
    out["memory_mb"] = kb // 1024 if kb is not None else nbytes // (1024 * 1024) if nbytes is not None else None
    out.update(_addresses(kv))
    if not android:
        out["fqdn"] = one("fqdn") or name
        out["init"] = _init(one("pid1"), "systemd" in kv, "openrc" in kv, out["system"])
        pkg = one("pkg")
        out["pkg_mgr"] = {"apt-get": "apt", "brew": "homebrew"}.get(pkg or "", pkg)
    return out


def _os(one: Any) -> dict[str, Any]:
    osid = (one("os.ID") and _unquote(one("os.ID")).lower()) or None
    name = _unquote(one("os.NAME") or "") or None
    version = _unquote(one("os.VERSION_ID") or "") or None
    like = _unquote(one("os.ID_LIKE") or "").lower().split()
    dist = DISTRIBUTIONS.get(osid or "") or name or (osid.capitalize() if osid else None)
    return {
        "os.id": osid,
        "os.name": name,
        "os.distribution": dist,
        "os.family": family(dist, like),
        "os.version": version,
        "os.version_major": _major(version),
        "os.codename": _unquote(one("os.VERSION_CODENAME") or "") or None,
        "os.like": like if one("os.ID") else None,
    }


def _android(one: Any) -> dict[str, Any]:
    release = one("prop.ro.build.version.release")
    abilist = one("prop.ro.product.cpu.abilist")
    return {
        "os.id": "android", "os.name": "Android", "os.distribution": "Android", "os.family": "Android",
        "os.version": release, "os.version_major": _major(release), "os.codename": None, "os.like": [],
        "android.model": one("prop.ro.product.model"),
        "android.manufacturer": one("prop.ro.product.manufacturer"),
        "android.brand": one("prop.ro.product.brand"),
        "android.device": one("prop.ro.product.device"),
        "android.release": release,
        "android.sdk": _int(one("prop.ro.build.version.sdk")),
        "android.abi": one("prop.ro.product.cpu.abi"),
        "android.abilist": [a for a in abilist.split(",") if a] if abilist else None,
    }


# os-release ID -> Ansible's ansible_distribution
DISTRIBUTIONS = {
    "debian": "Debian", "ubuntu": "Ubuntu", "raspbian": "Raspbian", "linuxmint": "Linux Mint", "pop": "Pop!_OS",
    "kali": "Kali", "devuan": "Devuan", "rhel": "RedHat", "centos": "CentOS", "fedora": "Fedora",
    "rocky": "Rocky", "almalinux": "AlmaLinux", "ol": "OracleLinux", "amzn": "Amazon", "scientific": "Scientific",
    "cloudlinux": "CloudLinux", "virtuozzo": "Virtuozzo", "eurolinux": "EuroLinux", "openeuler": "openEuler",
    "alpine": "Alpine", "arch": "Archlinux", "archarm": "Archlinux", "manjaro": "Manjaro",
    "opensuse-leap": "openSUSE Leap", "opensuse-tumbleweed": "openSUSE Tumbleweed", "opensuse": "openSUSE",
    "sles": "SLES", "sled": "SLED", "gentoo": "Gentoo", "slackware": "Slackware", "clear-linux-os": "ClearLinux",
    "freebsd": "FreeBSD", "macos": "MacOSX", "nixos": "NixOS",
}
# Ansible's ansible_os_family of each distribution
FAMILIES = {
    "Debian": ("Debian", "Ubuntu", "Raspbian", "Linux Mint", "Pop!_OS", "Kali", "Devuan"),
    "RedHat": ("RedHat", "CentOS", "Fedora", "Rocky", "AlmaLinux", "OracleLinux", "Amazon", "Scientific",
               "CloudLinux", "Virtuozzo", "EuroLinux", "openEuler"),
    "Suse": ("openSUSE Leap", "openSUSE Tumbleweed", "openSUSE", "SLES", "SLED"),
    "Archlinux": ("Archlinux", "Manjaro"),
    "Alpine": ("Alpine",), "Gentoo": ("Gentoo",), "Slackware": ("Slackware",), "ClearLinux": ("ClearLinux",),
    "FreeBSD": ("FreeBSD",), "Darwin": ("MacOSX",),
}
_FAMILY_OF = {d: fam for fam, ds in FAMILIES.items() for d in ds}
_LIKE = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "fedora": "RedHat", "centos": "RedHat",
         "suse": "Suse", "opensuse": "Suse", "arch": "Archlinux", "alpine": "Alpine", "gentoo": "Gentoo"}


def family(distribution: str | None, like: Sequence[str] = ()) -> str | None:
    """Ansible's family of a distribution; else the first ID_LIKE it knows; else the name."""
    if distribution in _FAMILY_OF:
        return _FAMILY_OF[distribution]
    for word in like:
        if word in _LIKE:
            return _LIKE[word]
    return distribution


_INIT = {"systemd": "systemd", "openrc-init": "openrc", "runit": "runit", "runsvdir": "runit",
         "s6-svscan": "s6", "launchd": "launchd", "upstart": "upstart", "dinit": "dinit"}


def _init(pid1: str | None, systemd: bool, openrc: bool, system: str | None) -> str | None:
    if systemd:
        return "systemd"
    if openrc:
        return "openrc"
    if system == "Darwin":
        return "launchd"
    comm = (pid1 or "").strip()
    if comm in _INIT:
        return _INIT[comm]
    if comm == "init":
        return "sysvinit"
    if not comm or comm.endswith("sh"):
        return None  # a container's shell: nothing manages services
    return comm


def _addresses(kv: dict[str, list[str]]) -> dict[str, Any]:
    v4: list[tuple[str, str]] = []  # (interface, address)
    v6: list[tuple[str, str]] = []
    for line in kv.get("addr", []):
        parts = line.split()
        if len(parts) < 4 or parts[2] not in ("inet", "inet6"):
            continue
        iface, addr = parts[1].split("@", 1)[0], parts[3].split("/", 1)[0]
        scope = parts[parts.index("scope") + 1] if "scope" in parts[:-1] else ""
        if iface == "lo" or scope == "host" or _loopback(addr):
            continue
        (v4 if parts[2] == "inet" else v6).append((iface, addr))
    for addr in kv.get("fib", []):
        if not _loopback(addr):
            v4.append(("", addr))
    for line in kv.get("if6", []):
        parts = line.split()
        if len(parts) >= 6 and parts[3] != "10":  # scope 10: host (::1)
            try:
                v6.append((parts[5], ipaddress.IPv6Address(int(parts[0], 16)).compressed))
            except ValueError:
                continue
    known = bool(kv.get("addr") or kv.get("fib") or kv.get("if6"))
    out: dict[str, Any] = {}
    for fam, found, route in (("ipv4", v4, kv.get("route4", [""])[-1]), ("ipv6", v6, kv.get("route6", [""])[-1])):
        got = _route(route)
        if fam == "ipv4" and not got and kv.get("route"):
            got = _proc_route(kv["route"][-1])
        address = got.get("src")
        if address is None and got.get("dev"):
            address = next((a for i, a in found if i == got["dev"]), None)
        if address is None and len({a for _, a in found if not a.startswith("fe80:")}) == 1:
            address = next(a for _, a in found if not a.startswith("fe80:"))
        out[f"{fam}.default"] = address
        out[f"{fam}.interface"] = got.get("dev") or next((i for i, a in found if a == address and i), None)
        out[f"{fam}.gateway"] = got.get("via")
        out[f"{fam}.all"] = list(dict.fromkeys(a for _, a in found)) if known else None
    return out


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return True  # not an address at all


def _route(line: str) -> dict[str, str]:
    """`ip route get` answer: `1.0.0.0 via GW dev IF src ADDR uid 0` -> via, dev, src."""
    parts = line.split()
    return {k: parts[i + 1] for i, k in enumerate(parts[:-1]) if k in ("via", "dev", "src")}


def _proc_route(line: str) -> dict[str, str]:
    """`IFACE GATEWAY_HEX` of /proc/net/route's default line (the gateway little-endian)."""
    parts = line.split()
    out = {"dev": parts[0]} if parts else {}
    if len(parts) > 1:
        try:
            gw = int(parts[1], 16)
            if gw:  # 0: no gateway (a direct route)
                out["via"] = socket.inet_ntoa(gw.to_bytes(4, "little"))
        except (ValueError, OverflowError):
            pass
    return out


def read_proxmox(version: ProbeResult | None, nodes: ProbeResult | None) -> dict[str, Any]:
    ver = version.data if version is not None and version.rc == 0 and isinstance(version.data, dict) else {}
    rows = nodes.data if nodes is not None and nodes.rc == 0 and isinstance(nodes.data, list) else None
    number = str(ver["version"]) if ver.get("version") is not None else None
    names = sorted(str(r["node"]) for r in rows if isinstance(r, dict) and r.get("node")) if rows is not None else None
    online = (sorted(str(r["node"]) for r in rows if isinstance(r, dict) and r.get("node")
                     and r.get("status") == "online") if rows is not None else None)
    return {
        "proxmox.version": number,
        "proxmox.version_major": _major(number),
        "proxmox.release": str(ver["release"]) if ver.get("release") is not None else None,
        "proxmox.nodes": names,
        "proxmox.nodes_online": online,
    }
