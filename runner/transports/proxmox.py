"""Proxmox VE over its HTTPS API (proxmoxer): the only module that imports proxmoxer.

Calls the API with an API token (or a user/password ticket, renewed once when it expires),
waits for the UPID tasks it starts, and turns every proxmoxer/requests failure into
runner.errors. It never puts the token secret or the password in a message; it knows
nothing about step kinds beyond the two probe conveniences documented on `probe()`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from runner.errors import (
    ApiError,
    AuthError,
    CommandTimeout,
    ConnectError,
    InvalidInput,
    OpsrunError,
    TransportError,
)
from runner.model import Action, CommandResult, Host, Probe, ProbeResult
from runner.secrets import Secret, mark
from runner.transports import CAPABILITIES
from runner.transports.base import CommandGuard, Transport

DEFAULT_PORT = 8006
DEFAULT_TIMEOUT = 30.0  # seconds for one HTTP request
DEFAULT_TASK_TIMEOUT = 600.0  # seconds to wait for a UPID task when apply gives none
LOG_TAIL = 12  # task log lines kept in errors and results

UPID_RE = re.compile(r"^UPID:([^:]+):")
GUEST_REF = re.compile(r"\{guest:(?:(lxc|qemu):)?([^{}/]+)\}")
# usage figures that change every second: dropped from probe answers so that a plan's
# fingerprint only moves when the state a step cares about moves
VOLATILE = frozenset({
    "cpu", "mem", "memhost", "disk", "diskread", "diskwrite", "netin", "netout", "uptime",
    "pid", "swap", "freemem", "loadavg", "balloon_min", "blockstat", "nics", "proxmox-support",
})
VOLATILE_PATHS = re.compile(
    r"(^cluster/resources$|^nodes$|status/current$|^nodes/[^/]+/(lxc|qemu)$)")
RESOURCE_FILTERS = ("vmid", "name", "guest_type")
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class PveSettings:
    """How to reach one PVE API, from the host's settings and the usual PROXMOX_* names."""

    url: str  # https://host:port
    netloc: str  # host:port as proxmoxer wants it
    user: str  # user@realm
    token_name: str | None
    token_secret: Secret | None
    password: Secret | None
    verify: bool | str  # False, True or a CA file
    node: str | None
    timeout: float
    task_timeout: float

    @property
    def token_id(self) -> str:
        return f"{self.user}!{self.token_name}" if self.token_name else ""


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in FALSE_WORDS


def _number(host: Host, key: str, value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"host {host.name}: setting {key} must be a number of seconds, "
                           f"not {value!r}") from None
    if out <= 0:
        raise InvalidInput(f"host {host.name}: setting {key} must be positive")
    return out


def resolve_settings(host: Host, env: Mapping[str, str] | None = None) -> PveSettings:
    """Settings first; the PROXMOX_* environment names fill in what the settings leave out."""
    env = os.environ if env is None else env
    s = host.settings
    where = f"host {host.name}"

    api = s.get("api") or s.get("address") or env.get("PROXMOX_HOST")
    if not api:
        raise InvalidInput(f"{where}: no Proxmox API address",
                           hint="set `api: https://pve.example:8006` on the host, "
                                "or export PROXMOX_HOST")
    text = str(api).strip()
    parts = urlsplit(text if "://" in text else f"https://{text}")
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidInput(f"{where}: api {text!r} is not an https:// address",
                           hint="the Proxmox API is served over HTTPS, usually on port 8006")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InvalidInput(f"{where}: api {text!r} has an invalid port") from None
    hostname = parts.hostname
    shown = f"[{hostname}]" if ":" in hostname else hostname
    netloc = f"{shown}:{port}"

    user = ""
    token_name: str | None = None
    token_id = s.get("token_id")
    if token_id:
        if "!" not in str(token_id):
            raise InvalidInput(f"{where}: token_id {token_id!r} is not user@realm!tokenname",
                               hint="e.g. token_id: automation@pve!opsrun")
        user, token_name = str(token_id).split("!", 1)
    elif s.get("user"):
        user = str(s["user"])
        if "!" in user:
            user, token_name = user.split("!", 1)
    else:
        env_user = env.get("PROXMOX_USER", "")
        if "!" in env_user:
            user, token_name = env_user.split("!", 1)
        else:
            user = env_user
        if not token_name and env.get("PROXMOX_TOKEN_NAME") and not s.get("password"):
            token_name = env["PROXMOX_TOKEN_NAME"]

    token_secret: Secret | None = None
    password: Secret | None = None
    if token_name:
        raw = s.get("token_secret")
        if raw is None and env.get("PROXMOX_TOKEN_VALUE"):
            raw = env["PROXMOX_TOKEN_VALUE"]
        if not raw:
            raise InvalidInput(f"{where}: API token {user}!{token_name} has no secret",
                               hint="set token_secret: env:NAME (or file:PATH) on the host, "
                                    "or export PROXMOX_TOKEN_VALUE")
        token_secret = raw if isinstance(raw, Secret) else mark(str(raw))
    else:
        raw = s.get("password")
        if raw is None and env.get("PROXMOX_PASSWORD"):
            raw = env["PROXMOX_PASSWORD"]
        if not raw:
            raise InvalidInput(f"{where}: no Proxmox credentials",
                               hint="set token_id + token_secret (an API token) on the host, or "
                                    "user + password; or export PROXMOX_USER and "
                                    "PROXMOX_TOKEN_NAME/PROXMOX_TOKEN_VALUE")
        password = raw if isinstance(raw, Secret) else mark(str(raw))
    if not user or "@" not in user:
        raise InvalidInput(f"{where}: Proxmox user {user!r} must be user@realm",
                           hint="e.g. root@pam or automation@pve")

    verify: bool | str
    if s.get("ca_file"):
        ca = Path(os.path.expanduser(str(s["ca_file"])))
        if not ca.is_file():
            raise InvalidInput(f"{where}: ca_file {ca} does not exist",
                               hint="give the PEM file of the CA that signed the PVE certificate "
                                    "(/etc/pve/pve-root-ca.pem on a node)")
        verify = str(ca)
    elif "verify_ssl" in s:
        verify = _truthy(s["verify_ssl"])
    elif "PROXMOX_VERIFY_SSL" in env:
        verify = _truthy(env["PROXMOX_VERIFY_SSL"])
    else:
        verify = True

    node = s.get("node") or env.get("PROXMOX_NODE") or None
    return PveSettings(
        url=f"https://{netloc}", netloc=netloc, user=user, token_name=token_name,
        token_secret=token_secret, password=password, verify=verify,
        node=str(node) if node else None,
        timeout=_number(host, "timeout", s.get("timeout"), DEFAULT_TIMEOUT),
        task_timeout=_number(host, "task_timeout", s.get("task_timeout"), DEFAULT_TASK_TIMEOUT),
    )


# ---------------------------------------------------------------- the transport


class ProxmoxTransport(Transport):
    """One PVE cluster reached through one API endpoint."""

    kind: ClassVar[str] = "proxmox"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES["proxmox"]

    def __init__(self, host: Host, guard: CommandGuard | None = None) -> None:
        super().__init__(host, guard)
        self.settings = resolve_settings(host)
        self._api: Any = None

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        if self._api is not None:
            return
        self._api = self._connect()
        self._call("GET", "version", {})  # proves the address, the certificate and the token

    def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            try:
                api._store["session"].close()
            except Exception:  # closing must never fail
                pass

    def _connect(self) -> Any:
        from proxmoxer import ProxmoxAPI
        from proxmoxer.core import AuthenticationError

        st = self.settings
        if st.verify is False:  # asked for explicitly: no warning on every request
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        kwargs: dict[str, Any] = {"verify_ssl": st.verify, "timeout": st.timeout}
        if st.token_name:
            kwargs.update(user=st.user, token_name=st.token_name, token_value=str(st.token_secret))
        else:
            kwargs.update(user=st.user, password=str(st.password))
        try:
            return ProxmoxAPI(st.netloc, backend="https", service="PVE", **kwargs)
        except AuthenticationError as exc:
            raise AuthError(self.host.name, f"login as {st.user} refused by {st.url}",
                            hint="check user and password (and the realm: @pam or @pve)") from exc
        except Exception as exc:
            raise self._translate(exc, "POST", "access/ticket") from exc

    # ------------------------------------------------------------ calls
    def _call(self, method: str, path: str, params: dict[str, Any]) -> Any:
        if self._api is None:
            self._api = self._connect()
        method = method.upper()
        path = path.strip("/")
        if method not in ("GET", "POST", "PUT", "DELETE"):
            raise OpsrunError(f"{self.host.name}: unknown API method {method!r}")
        data = _encode(params)
        for attempt in (1, 2):
            try:
                resource = self._api(path) if path else self._api
                return getattr(resource, method.lower())(**data)
            except Exception as exc:
                if attempt == 1 and self._ticket_expired(exc):
                    try:
                        self._api = self._connect()  # the ticket expired: log in again, once
                    except AuthError as again:
                        raise AuthError(
                            self.host.name,
                            f"login ticket expired and logging in again as {self.settings.user} "
                            f"was refused by {self.settings.url}",
                            hint="the password may have changed; check user and password",
                        ) from again
                    continue
                raise self._translate(exc, method, path) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _ticket_expired(self, exc: Exception) -> bool:
        from proxmoxer.core import ResourceException

        return (isinstance(exc, ResourceException) and exc.status_code == 401
                and self.settings.password is not None)

    def _translate(self, exc: Exception, method: str, path: str) -> TransportError:
        """A proxmoxer/requests exception as one of ours, with PVE's own words kept."""
        import requests
        from proxmoxer.core import AuthenticationError, ResourceException

        st = self.settings
        name = self.host.name
        what = f"{method} /{path}"
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, AuthenticationError):
            return AuthError(name, f"login as {st.user} refused by {st.url}",
                             hint="check user and password (and the realm: @pam or @pve)")
        if isinstance(exc, requests.exceptions.SSLError):
            return ConnectError(
                name, f"TLS certificate of {st.url} could not be verified: {_short_reason(exc)}",
                hint="set ca_file to the CA that signed it (/etc/pve/pve-root-ca.pem on a node), "
                     "or verify_ssl: false for a throw-away lab")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return ConnectError(name, f"no connection to {st.url} within {st.timeout:g}s",
                                hint="check the address and that port 8006 is reachable")
        if isinstance(exc, requests.exceptions.Timeout):
            return CommandTimeout(name, f"{what}: no answer from {st.url} within {st.timeout:g}s",
                                  hint="raise the host's timeout setting if the cluster is slow")
        if isinstance(exc, requests.exceptions.RequestException):
            return ConnectError(name, f"cannot reach {st.url}: {_short_reason(exc)}",
                                hint="is pveproxy running and the address right?")
        if not isinstance(exc, ResourceException):
            return ApiError(name, f"{what}: unexpected answer: {type(exc).__name__}: {exc}")

        status = int(exc.status_code or 0)
        message = _text(exc.content).strip() or _text(exc.status_message)
        fields = _fields(exc.errors)
        if not fields and isinstance(exc.errors, dict) and "errors" in exc.errors:
            page = re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", _text(exc.errors["errors"])))
            message = f"{message} (not an API answer: {page.strip()[:200]})"  # a proxy's page
        node = _node_of(path)
        if status == 401:
            if st.token_name:
                return AuthError(
                    name, f"token rejected: API token {st.token_id} was refused by {st.url} "
                          f"({status} {message})",
                    hint="check token_id and token_secret; the token may be deleted or expired "
                         f"(pveum user token list {st.user})")
            return AuthError(name, f"{what}: {st.user} is not logged in ({status} {message})")
        if status == 403:
            return ApiError(name, f"{what}: permission denied: {message}", status=status,
                            hint=f"grant {st.token_id or st.user} the privilege named above; an "
                                 "API token with privilege separation needs its own ACL entry")
        if status in (595, 596) or "no route to host" in message.lower():
            where = f"node {node}" if node else "the node"
            return ApiError(name, f"{what}: {where} is offline or unreachable ({status} {message})",
                            status=status,
                            hint="bring the node back, or use another node of the cluster")
        if fields:
            detail = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items()))
            return ApiError(name, f"{what} rejected: {detail}", status=status, fields=fields,
                            hint="fix these parameters (Proxmox's own words above)")
        if "is locked" in message or ("lock" in message and "got timeout" in message):
            return ApiError(name, f"{what}: {message}", status=status,
                            hint="a task (backup, snapshot, migration...) holds the guest's "
                                 "lock; wait for it, or clear a stale lock with `pct unlock` / "
                                 "`qm unlock`")
        return ApiError(name, f"{what}: {status} {message}", status=status)

    # ------------------------------------------------------------ probes
    def probe(self, probes: Sequence[Probe]) -> dict[str, ProbeResult]:
        """Answer GET probes. Two conveniences, both read-only:

        - a path segment `{guest:REF}` or `{guest:lxc:REF}` / `{guest:qemu:REF}` (REF a
          vmid or a guest name) becomes `nodes/NODE/TYPE/VMID`, from /cluster/resources;
        - GET cluster/resources takes client-side filters `vmid`, `name`, `guest_type`.

        A PVE error answer becomes rc 1 with `data = {"error": {...}}` (so a plan can say
        why it cannot know); unreachable hosts and refused credentials still raise.
        Usage figures (cpu, mem, uptime, ...) are dropped unless the key (its last
        "/"-separated part) starts with "live:".
        """
        out: dict[str, ProbeResult] = {}
        cache: dict[str, Any] = {}
        for p in probes:
            if p.api is None:
                raise OpsrunError(f"{self.host.name}: a Proxmox host answers API probes only, "
                                  f"not shell probe {p.key!r}")
            method, path, params = p.api
            live = p.key.rsplit("/", 1)[-1].startswith("live:")  # apply may prefix keys
            out[p.key] = self._answer(method, path, dict(params), live, cache)
        return out

    def _probe_api(self, method: str, path: str, params: dict[str, Any]) -> ProbeResult:
        return self._answer(method, path, params, False, {})

    def _answer(self, method: str, path: str, params: dict[str, Any], live: bool,
                cache: dict[str, Any]) -> ProbeResult:
        if method.upper() != "GET":
            raise OpsrunError(f"{self.host.name}: probes are read-only; {method} /{path} refused")
        path = path.strip("/")
        try:
            if GUEST_REF.search(path):
                path = GUEST_REF.sub(
                    lambda m: self._guest_path(m.group(1), m.group(2), cache), path)
            filters: dict[str, Any] = {}
            if path == "cluster/resources":
                filters = {k: params.pop(k) for k in RESOURCE_FILTERS if k in params}
            data = self._call("GET", path, params)
            if filters:
                data = [r for r in data or [] if _matches(r, filters)]
        except ApiError as exc:
            return _probe_error(exc)
        if not live and VOLATILE_PATHS.search(path):
            data = _strip_volatile(data)
        return ProbeResult(0, data=data)

    def _guest_path(self, kind: str | None, ref: str, cache: dict[str, Any]) -> str:
        if "resources" not in cache:
            cache["resources"] = self._call("GET", "cluster/resources", {"type": "vm"}) or []
        rows = [r for r in cache["resources"] if r.get("type") in ("lxc", "qemu")]
        if kind:
            rows = [r for r in rows if r.get("type") == kind]
        label = {"lxc": "container", "qemu": "VM"}.get(kind or "", "guest")
        if ref.isdigit():
            found = [r for r in rows if str(r.get("vmid")) == ref]
        else:
            found = [r for r in rows if r.get("name") == ref]
        if not found:
            raise ApiError(self.host.name, f"no {label} {ref} in the cluster", status=404)
        if len(found) > 1:
            ids = ", ".join(str(r.get("vmid")) for r in found)
            raise ApiError(self.host.name, f"{len(found)} guests are named {ref} ({ids}); "
                                           "give the vmid", status=409)
        r = found[0]
        return f"nodes/{r['node']}/{r['type']}/{r['vmid']}"

    # ------------------------------------------------------------ actions
    def execute(self, action: Action, *, timeout: float | None = None) -> CommandResult:
        """API actions: the call, then (wait_task) the UPID task to its end, bounded by
        `timeout` (else the host's task_timeout). A failed task raises ApiError."""
        if action.kind != "api":
            return super().execute(action, timeout=timeout)
        self.check(f"{action.method.upper()} /{action.path.strip('/')}")
        start = time.monotonic()
        data = self._call(action.method, action.path, dict(action.params))
        out: dict[str, Any] = {"data": data}
        if action.wait_task and isinstance(data, str) and UPID_RE.match(data):
            out = self.wait_task(data, timeout=timeout or self.settings.task_timeout)
        return CommandResult(0, stdout=json.dumps(out, default=str).encode(),
                             duration=time.monotonic() - start)

    def wait_task(self, upid: str, *, timeout: float) -> dict[str, Any]:
        """Poll /nodes/{node}/tasks/{upid}/status until it stops; raise if it failed."""
        m = UPID_RE.match(upid)
        if not m:
            raise OpsrunError(f"{self.host.name}: {upid!r} is not a task id (UPID)")
        node = m.group(1)
        fields = upid.split(":")
        ttype = fields[5] if len(fields) > 6 else "task"
        tid = fields[6] if len(fields) > 6 else ""
        label = f"task {ttype}" + (f" for {tid}" if tid else "") + f" on {node}"
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            status = self._call("GET", f"nodes/{node}/tasks/{upid}/status", {}) or {}
            if status.get("status") == "stopped":
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandTimeout(self.host.name, f"{label} still running after {timeout:g}s",
                                     hint=f"it goes on on the node; its log: GET /nodes/{node}"
                                          f"/tasks/{upid}/log")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
        exitstatus = str(status.get("exitstatus", ""))
        log = self._task_log(node, upid)
        if exitstatus == "OK" or exitstatus.startswith("WARNINGS"):
            return {"upid": upid, "exitstatus": exitstatus, "log": log[-LOG_TAIL:]}
        tail = [line for line in log if line.strip()][-LOG_TAIL:]
        text = "\n  ".join(tail) if tail else exitstatus
        raise ApiError(self.host.name,
                       f"{label} failed: {exitstatus}\n  task log (last lines):\n  {text}",
                       status=500, hint=f"full log: GET /nodes/{node}/tasks/{upid}/log")

    def _task_log(self, node: str, upid: str) -> list[str]:
        try:
            rows = self._call("GET", f"nodes/{node}/tasks/{upid}/log",
                              {"start": 0, "limit": 10000}) or []
        except ApiError:
            return []
        rows = sorted((r for r in rows if isinstance(r, dict)), key=lambda r: int(r.get("n", 0)))
        return [str(r.get("t", "")) for r in rows]


# ---------------------------------------------------------------- helpers


def _encode(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as PVE reads them: booleans 1/0, no None."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = 1 if value else 0
        else:
            out[key] = value
    return out


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _fields(errors: Any) -> dict[str, str]:
    if not isinstance(errors, dict) or "errors" in errors:
        return {}
    return {str(k): _text(v).strip() for k, v in errors.items()}


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for pattern in (r"\[SSL[^\]]*\][^')\"]*", r"Connection refused", r"Name or service not known",
                    r"No route to host", r"timed out"):
        m = re.search(pattern, text)
        if m:
            return m.group(0).strip()
    return text[:200]


def _node_of(path: str) -> str:
    m = re.match(r"nodes/([^/]+)", path)
    return m.group(1) if m else ""


def _matches(row: Any, filters: Mapping[str, Any]) -> bool:
    if not isinstance(row, dict):
        return False
    if "vmid" in filters and str(row.get("vmid")) != str(filters["vmid"]):
        return False
    if "name" in filters and row.get("name") != filters["name"]:
        return False
    return not ("guest_type" in filters and row.get("type") != filters["guest_type"])


def _strip_volatile(data: Any) -> Any:
    if isinstance(data, list):
        return [_strip_volatile(x) for x in data]
    if isinstance(data, dict):
        return {k: v for k, v in data.items()
                if k not in VOLATILE and not k.startswith("pressure")}
    return data


def _probe_error(exc: ApiError) -> ProbeResult:
    text = exc.detail
    low = text.lower()
    if exc.status in (404,) or "does not exist" in low:
        reason = "missing"
    elif exc.status in (595, 596) or "offline" in low:
        reason = "offline"
    elif "locked" in low:
        reason = "locked"
    elif exc.status == 403:
        reason = "denied"
    elif exc.status == 409:
        reason = "ambiguous"
    elif exc.fields:
        reason = "invalid"
    else:
        reason = "error"
    error = {"status": exc.status, "message": text, "fields": dict(exc.fields), "reason": reason}
    return ProbeResult(1, stderr=text.encode(), data={"error": error})
