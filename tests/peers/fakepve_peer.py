"""Serve fakepve (the PyPI Proxmox VE API emulator, a test dependency) as its own process,
with an API token and an OS template in place, on a loopback address. Test-only.

    FAKEPVE_TOKEN_SECRET=... python -m tests.peers.fakepve_peer --cert C --key K \\
        [--host 127.0.0.1] [--port 0] [--token-id root@pam!opsrun] [--guests guests.json]

It prints `fakepve-peer listening on https://HOST:PORT` once it accepts connections and
runs until SIGTERM/SIGINT. The token secret comes from the environment, never argv.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys

TEMPLATES = ("debian-12-standard_12.7-1_amd64.tar.zst", "alpine-3.20-default_20240908_amd64.tar.xz")


async def serve(args: argparse.Namespace) -> None:
    from fakepve import FakePve

    pve = FakePve(user=args.user, password=os.environ.get("FAKEPVE_PASSWORD", "secret"),
                  host=args.host, port=args.port)
    pve.time_scale = args.time_scale
    secret = os.environ.get("FAKEPVE_TOKEN_SECRET", "")
    if secret:
        pve.apitokens[args.token_id] = secret
    for name in TEMPLATES:
        pve.store_file("local", name, 200 * 1024 * 1024, content="vztmpl")
    for node in args.node:
        pve.add_node(node)
    if args.guests:
        with open(args.guests, encoding="utf-8") as fh:
            for g in json.load(fh).get("guests", []):
                if g.get("type") == "lxc":
                    pve.add_ct(g["vmid"], g.get("name"), node=g.get("node", "pve1"),
                               status=g.get("status", "stopped"), config=g.get("config", {}))
                else:
                    pve.add_vm(g["vmid"], g.get("name", f"vm{g['vmid']}"),
                               node=g.get("node", "pve1"), status=g.get("status", "stopped"),
                               config=g.get("config", {}), template=g.get("template", False))
    await pve.start(args.cert, args.key)
    print(f"fakepve-peer listening on {pve.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await pve.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", default="root@pam")
    parser.add_argument("--token-id", default="root@pam!opsrun")
    parser.add_argument("--node", action="append", default=[], help="extra node (repeatable)")
    parser.add_argument("--guests", help='JSON: {"guests": [{"vmid", "type", "name", ...}]}')
    parser.add_argument("--time-scale", type=float, default=0.0)
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        print("fakepve_peer: refusing a non-loopback address", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
