#!/usr/bin/env bash
# Try playbooks/proxmox-lab.yaml against fakepve (the Proxmox API emulator the tests use),
# with no cluster: starts it on 127.0.0.1, plans, applies, plans again, stops it by PID.
#   bash tests/peers/try_proxmox_lab.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
work=$(mktemp -d /tmp/opsrun-pve-lab.XXXXXX)
"$py" -c "from fakepve.certs import make_cert; make_cert('$work', hosts=('127.0.0.1',))" >/dev/null
export PVE_TOKEN_SECRET="lab-$RANDOM$RANDOM"
FAKEPVE_TOKEN_SECRET="$PVE_TOKEN_SECRET" "$py" -m tests.peers.fakepve_peer \
  --cert "$work/fakepve.crt" --key "$work/fakepve.key" --host 127.0.0.1 --port 0 >"$work/peer.log" 2>&1 &
peer=$!
trap 'kill "$peer" 2>/dev/null; wait "$peer" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/peer.log" && break; sleep 0.1; done
url=$(grep -o 'https://[0-9.:]*' "$work/peer.log" | head -1)
[ -n "$url" ] || { echo "fakepve did not start:"; cat "$work/peer.log"; exit 1; }
cat >"$work/inventory.yaml" <<INV
opsrun: 1
hosts:
  pve-lab:
    transport: proxmox
    api: $url
    token_id: root@pam!opsrun
    token_secret: env:PVE_TOKEN_SECRET
    ca_file: $work/fakepve.crt
    node: pve1
INV
cd "$work"
opsrun() { "$OLDPWD/$py" -m runner "$@"; }
opsrun plan "$OLDPWD/playbooks/proxmox-lab.yaml" -i inventory.yaml || true
opsrun apply "$OLDPWD/playbooks/proxmox-lab.yaml" -i inventory.yaml --yes
opsrun plan "$OLDPWD/playbooks/proxmox-lab.yaml" -i inventory.yaml --detailed-exitcode
