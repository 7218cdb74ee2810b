#!/bin/sh
# Set up this machine for the real-sshd tests (idempotent; run as root on Debian).
# Installs openssh-server/client and sudo when missing, creates the dedicated test user
# `opsrun-test` (password field '*': no password login, but not locked, so sshd accepts
# key logins) and lets it run sudo without a password. Never log in as root in tests.
set -eu

USER_NAME=opsrun-test

if [ "$(id -u)" -ne 0 ]; then
    echo "setup_ssh.sh: run as root" >&2
    exit 1
fi

need=""
[ -x /usr/sbin/sshd ] || need="$need openssh-server"
command -v ssh-keygen >/dev/null 2>&1 || need="$need openssh-client"
command -v sudo >/dev/null 2>&1 || need="$need sudo"
if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need
fi

if ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd -m -s /bin/bash "$USER_NAME"
fi
# '*' = no password, yet not locked ('!' makes sshd refuse even key logins without PAM).
usermod -p '*' "$USER_NAME"
# A plain shell: no rc file doing slow work on every command.
home=$(getent passwd "$USER_NAME" | cut -d: -f6)
mkdir -p "$home"
chown "$USER_NAME:" "$home"

dropin=/etc/sudoers.d/opsrun-test
tmp=$(mktemp)
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$USER_NAME" >"$tmp"
chmod 0440 "$tmp"
if command -v visudo >/dev/null 2>&1 && ! visudo -cqf "$tmp"; then
    rm -f "$tmp"
    echo "setup_ssh.sh: sudoers drop-in failed visudo check" >&2
    exit 1
fi
mv "$tmp" "$dropin"
chown root:root "$dropin"

# sshd refuses to start without its privilege-separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd

echo "setup_ssh.sh: ok ($USER_NAME ready, sshd $(command -v sshd || echo /usr/sbin/sshd))"
