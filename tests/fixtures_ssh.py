"""pytest plugin: real OpenSSH sshd peers on 127.0.0.X for the SSH transport and above.

`ssh_hosts` (session): three sshds, each with its own host key, one throw-away client key,
user `opsrun-test` (tests/peers/setup_ssh.sh). `spare_sshd` (function): a private sshd a test
may kill or re-key. Never reads or writes the real ~/.ssh; every sshd is stopped by PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.peers.sshd import SSH_KEYGEN, SSHD, TEST_USER, Sshd, SshdFarm, user_ready

N_HOSTS = 3


def _login_user() -> str:
    """opsrun-test when we are root (never root itself: its rc files are slow); else us."""
    if os.geteuid() == 0:
        return TEST_USER
    return pwd.getpwuid(os.geteuid()).pw_name


def _require_sshd() -> None:
    require_peer(os.access(SSHD, os.X_OK), f"{SSHD} not found (apt-get install openssh-server)")
    require_peer(os.access(SSH_KEYGEN, os.X_OK), "ssh-keygen not found (openssh-client)")
    if os.geteuid() == 0:
        require_peer(user_ready(TEST_USER),
                     f"user {TEST_USER} missing: run tests/peers/setup_ssh.sh as root")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_ssh_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point OPSRUN_SSH_CONFIG at an empty file and hide any ssh-agent for the whole run."""
    cfg = tmp_path_factory.mktemp("ssh-config") / "config"
    cfg.write_text("")
    saved = {k: os.environ.get(k) for k in ("OPSRUN_SSH_CONFIG", "SSH_AUTH_SOCK")}
    os.environ["OPSRUN_SSH_CONFIG"] = str(cfg)
    os.environ.pop("SSH_AUTH_SOCK", None)
    try:
        yield cfg
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def sshd_farm() -> Iterator[SshdFarm]:
    """The shared folder, client key and known_hosts, plus N_HOSTS running sshds."""
    _require_sshd()
    # Not under pytest's 0700 tmp root: sshd reads authorized_keys as the login user.
    workdir = Path(tempfile.mkdtemp(prefix="opsrun-sshd-"))
    farm = SshdFarm(workdir, _login_user())
    try:
        for i in range(N_HOSTS):
            farm.add(f"ssh{i + 1}")
        yield farm
    finally:
        farm.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_hosts(sshd_farm: SshdFarm) -> list[Sshd]:
    """The session's sshds (do not stop or re-key them: use `spare_sshd` for that)."""
    return sshd_farm.hosts[:N_HOSTS]


@pytest.fixture
def spare_sshd(sshd_farm: SshdFarm) -> Iterator[Callable[..., Sshd]]:
    """Factory for private sshds (own address, port, host key) stopped after the test.
    Keyword arguments become sshd_config options, e.g. PasswordAuthentication="yes"."""
    started: list[Sshd] = []

    def make(name: str = "spare", **options: str) -> Sshd:
        peer = sshd_farm.add(f"{name}{len(sshd_farm.hosts)}", **options)
        started.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in started:
            peer.stop()


@pytest.fixture
def remote_dir(sshd_farm: SshdFarm) -> Iterator[str]:
    """A fresh folder the remote login user owns (the sshds run on this machine)."""
    path = Path(tempfile.mkdtemp(prefix="opsrun-ssh-test-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(sshd_farm.user)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
