"""Table tests for runner/safety/: dangerous variants are refused by the right rule,
benign look-alikes pass, user forbid/allow entries behave as docs/safety.md says, and a real
LocalTransport refuses a blocked command before anything runs."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from runner.errors import Blocked, InvalidInput
from runner.model import Host, Probe
from runner.safety import (
    BUILTIN_RULES,
    DEFAULT_RULES,
    Finding,
    ParseError,
    Rules,
    check,
    split_commands,
    validate_entry,
)
from runner.transports.local import LocalTransport

# ---------------------------------------------------------------- corpus: must be refused

DANGEROUS: list[tuple[str, str]] = [
    # rm-root: the classic and its spellings
    ("rm -rf /", "rm-root"),
    ("rm -fr /", "rm-root"),
    ("rm -r -f /", "rm-root"),
    ("rm -Rf /", "rm-root"),
    ("rm -fR /", "rm-root"),
    ("rm --recursive --force /", "rm-root"),
    ("rm --rec --force /", "rm-root"),
    ("rm -rf /*", "rm-root"),
    ("rm -rf --no-preserve-root /", "rm-root"),
    ("rm -r --no-preserve-root /tmp/x", "rm-root"),
    ("rm -rf -- /", "rm-root"),
    ("rm / -rf", "rm-root"),
    ("rm -rf //", "rm-root"),
    ("rm -rf /.", "rm-root"),
    ("rm -rf /tmp/../", "rm-root"),
    ("rm -rf /tmp/x /", "rm-root"),
    ("rm -rf ~", "rm-root"),
    ("rm -rf ~/", "rm-root"),
    ("rm -rf ~/*", "rm-root"),
    ("rm -rf ~root", "rm-root"),
    ('rm -rf "$HOME"', "rm-root"),
    ("rm -rf ${HOME}/*", "rm-root"),
    ("rm -rf /etc", "rm-root"),
    ("rm -rf /usr/", "rm-root"),
    ("rm -rf /home", "rm-root"),
    ("rm -rf /home/*", "rm-root"),
    ("rm -Rf /boot", "rm-root"),
    ("rm -rf /boot/*", "rm-root"),
    ("rm -rf /var", "rm-root"),
    ("rm -rf /var/lib", "rm-root"),
    ("rm -rf /var/lib/*", "rm-root"),
    ("rm -rf /usr/local", "rm-root"),
    ("rm -rf /usr/lib/*", "rm-root"),
    ("rm -rf /root", "rm-root"),
    ("rm -rf /e*", "rm-root"),
    ("rm -rf /{etc,usr}", "rm-root"),
    ("rm -f /*", "rm-root"),
    ("rm /bin", "rm-root"),
    # rm-root: quoting, paths, prefixes and wrappers
    ("'rm' \"-rf\" '/'", "rm-root"),
    ("\\rm -rf /", "rm-root"),
    ("r\\m -rf /", "rm-root"),
    ("$'\\x72m' -rf /", "rm-root"),
    ("{rm,-rf,/}", "rm-root"),
    ("{r,}m -rf /", "rm-root"),
    ("rm${IFS}-rf${IFS}/", "rm-root"),
    ("/bin/rm -rf /", "rm-root"),
    ("/usr/bin/rm   -rf    /", "rm-root"),
    ("sudo rm -rf /", "rm-root"),
    ("sudo -u root rm -rf /", "rm-root"),
    ("sudo -n -E -- rm -rf /", "rm-root"),
    ("sudo -i rm -rf /", "rm-root"),
    ("doas rm -rf /", "rm-root"),
    ("FOO=1 rm -rf /", "rm-root"),
    ("A=1 B='x y' rm -rf /", "rm-root"),
    ("env A=B rm -rf /", "rm-root"),
    ("env -i PATH=/bin rm -rf /", "rm-root"),
    ("nohup rm -rf / &", "rm-root"),
    ("nice -n 5 rm -rf /", "rm-root"),
    ("nice -5 rm -rf /", "rm-root"),
    ("ionice -c3 rm -rf /", "rm-root"),
    ("timeout 10 rm -rf /", "rm-root"),
    ("timeout -s KILL 10 rm -rf /", "rm-root"),
    ("exec rm -rf /", "rm-root"),
    ("command rm -rf /", "rm-root"),
    ("builtin rm -rf /", "rm-root"),
    ("stdbuf -oL rm -rf /", "rm-root"),
    ("setsid rm -rf /", "rm-root"),
    ("flock /tmp/lock rm -rf /", "rm-root"),
    ("chroot /mnt rm -rf /", "rm-root"),
    ("busybox rm -rf /", "rm-root"),
    ("runuser -u root -- rm -rf /", "rm-root"),
    ("sudo nice -n 5 timeout 10 env X=1 rm -rf /", "rm-root"),
    # rm-root: chains, groups, substitutions, nested shells
    ("cd /tmp; rm -rf /", "rm-root"),
    ("true && rm -rf /", "rm-root"),
    ("false || rm -rf /", "rm-root"),
    ("ls | rm -rf /", "rm-root"),
    ("echo ok\nrm -rf /", "rm-root"),
    ("echo a \\\n && rm -rf /", "rm-root"),
    ("(rm -rf /)", "rm-root"),
    ("{ rm -rf /; }", "rm-root"),
    ("if true; then rm -rf /; fi", "rm-root"),
    ("for i in 1 2; do rm -rf /; done", "rm-root"),
    ("case x in x) rm -rf /;; esac", "rm-root"),
    ("echo $(rm -rf /)", "rm-root"),
    ("echo `rm -rf /`", "rm-root"),
    ('echo "$(rm -rf /)"', "rm-root"),
    ("x=$(rm -rf /)", "rm-root"),
    ("diff <(rm -rf /) /dev/null", "rm-root"),
    ("cat <<EOF\n$(rm -rf /)\nEOF", "rm-root"),
    ("sh -c 'rm -rf /'", "rm-root"),
    ('bash -c "rm -rf /"', "rm-root"),
    ("bash -lc 'rm -rf /'", "rm-root"),
    ('sh -ec "rm -rf /"', "rm-root"),
    ("zsh -c 'rm -rf /'", "rm-root"),
    ("/bin/sh -c 'cd / && rm -rf *' ; rm -rf /", "rm-root"),
    ("sudo sh -c \"bash -c 'rm -rf /'\"", "rm-root"),
    ("su -c 'rm -rf /'", "rm-root"),
    ('su - root -c "rm -rf /"', "rm-root"),
    ('eval "rm -rf /"', "rm-root"),
    ("echo 'rm -rf /' | sh", "rm-root"),
    ("printf 'rm -rf /' | sudo bash", "rm-root"),
    ("bash <<< 'rm -rf /'", "rm-root"),
    ("bash <<EOF\nrm -rf /\nEOF", "rm-root"),
    ("cat <<'EOF' | sh\nrm -rf /\nEOF", "rm-root"),
    ("echo / | xargs rm -rf", "rm-root"),
    ("watch -n 60 rm -rf /", "rm-root"),
    ("env -S 'rm -rf /'", "rm-root"),
    ("taskset -c 0 rm -rf /", "rm-root"),
    ("time rm -rf /", "rm-root"),
    ("xargs rm -rf <<EOF\n/\nEOF", "rm-root"),
    ("echo / | xargs -I{} rm -rf {}", "rm-root"),
    ("ssh root@db1 'rm -rf /'", "rm-root"),
    ("ssh -p 2222 -i key host rm -rf /", "rm-root"),
    ("adb shell rm -rf /data", "rm-root"),
    ("find / -delete", "rm-root"),
    ("find / -mindepth 1 -delete", "rm-root"),
    ("find /etc -exec rm -rf {} +", "rm-root"),
    # mkfs
    ("mkfs.ext4 /dev/sda1", "mkfs"),
    ("mkfs -t xfs /dev/sdb", "mkfs"),
    ("mke2fs /dev/vda", "mkfs"),
    ("mkswap /dev/sdb2", "mkfs"),
    ("/sbin/mkfs.vfat -F 32 /dev/mmcblk0p1", "mkfs"),
    ("sudo mkfs.btrfs -f /dev/nvme0n1", "mkfs"),
    ("mkfs.xfs -f /dev/mapper/vg-data", "mkfs"),
    ('mkfs.ext4 -L data "$DEV"', "mkfs"),
    ("mkdosfs /dev/sdc1", "mkfs"),
    ("cryptsetup luksFormat /dev/sdb", "mkfs"),
    # dd-device
    ("dd if=/dev/zero of=/dev/sda", "dd-device"),
    ("dd if=ubuntu.img of=/dev/nvme0n1 bs=4M status=progress", "dd-device"),
    ("dd of=/dev/vdb < image.raw", "dd-device"),
    ("dd if=/dev/urandom of=/dev/disk/by-id/ata-WDC_123", "dd-device"),
    ("sudo dd if=raspios.img of=/dev/mmcblk0 bs=4M", "dd-device"),
    ("dd if=x of=/dev/xvda1", "dd-device"),
    ("dd if=x of=/dev/hda", "dd-device"),
    ("dd if=/dev/zero of=/dev/mapper/vg-root", "dd-device"),
    ("dd if=/dev/zero of=/dev/pve/vm-100-disk-0", "dd-device"),
    ("dd if=/dev/zero of=/dev/block/by-name/boot", "dd-device"),
    ("dd if=/dev/zero of=//dev/../dev/sda", "dd-device"),
    # redirect-block-device
    ("> /dev/sda", "redirect-block-device"),
    ("cat x > /dev/nvme0n1", "redirect-block-device"),
    ("echo x >> /dev/sdb", "redirect-block-device"),
    ("cat disk.img 1>/dev/sdc", "redirect-block-device"),
    ("gunzip -c img.gz >/dev/mmcblk0", "redirect-block-device"),
    ("pv image.raw > /dev/vda", "redirect-block-device"),
    ("cat x &> /dev/sda", "redirect-block-device"),
    ("exec 3>/dev/sda", "redirect-block-device"),
    ("{ cat a; cat b; } > /dev/sdb", "redirect-block-device"),
    # write-block-device
    ("tee /dev/sda < img", "write-block-device"),
    ("cat img | sudo tee /dev/sdb > /dev/null", "write-block-device"),
    ("cp disk.img /dev/sdb", "write-block-device"),
    ("cp -t /dev/sdb disk.img", "write-block-device"),
    ("ddrescue /dev/sda /dev/sdb rescue.map", "write-block-device"),
    ("bmaptool copy image.wic /dev/sdb", "write-block-device"),
    # wipe-device
    ("shred /dev/sda", "wipe-device"),
    ("shred -n 3 -z /dev/nvme0n1", "wipe-device"),
    ("wipefs -a /dev/sda", "wipe-device"),
    ("wipefs --all /dev/sdb1", "wipe-device"),
    ("wipefs -af /dev/vda", "wipe-device"),
    ("blkdiscard /dev/nvme0n1", "wipe-device"),
    ("hdparm --security-erase pass /dev/sda", "wipe-device"),
    ("nvme format /dev/nvme0n1", "wipe-device"),
    # partition-table
    ("parted -s /dev/sda mklabel gpt", "partition-table"),
    ("parted /dev/sda -- mkpart primary ext4 1MiB 100%", "partition-table"),
    ("sgdisk --zap-all /dev/sda", "partition-table"),
    ("sgdisk -Z /dev/sdb", "partition-table"),
    ("sfdisk /dev/sda < layout.txt", "partition-table"),
    ("fdisk /dev/sda", "partition-table"),
    ("echo -e 'o\\nw' | fdisk /dev/sdb", "partition-table"),
    # fork-bomb
    (":(){ :|:& };:", "fork-bomb"),
    (":(){ :|: & };:", "fork-bomb"),
    ("bomb() { bomb | bomb & }; bomb", "fork-bomb"),
    ("f(){ f|f& };f", "fork-bomb"),
    ("function b { b|b& }; b", "fork-bomb"),
    ("function b() { b | b & }; b", "fork-bomb"),
    ("x() ( x | x & ); x", "fork-bomb"),
    ("bash -c ':(){ :|:& };:'", "fork-bomb"),
    ('perl -e "fork while fork"', "fork-bomb"),
    ('python3 -c "import os\nwhile True: os.fork()"', "fork-bomb"),
    # chmod-root / chown-root
    ("chmod -R 777 /", "chmod-root"),
    ("chmod 777 -R /", "chmod-root"),
    ("chmod --recursive 777 /", "chmod-root"),
    ("chmod -R 000 /etc", "chmod-root"),
    ("chmod -Rv 777 /usr", "chmod-root"),
    ("chmod -R a+rwx /", "chmod-root"),
    ("sudo chmod -R 777 /*", "chmod-root"),
    ("chmod 777 /", "chmod-root"),
    ("chown -R nobody /", "chown-root"),
    ("chown -R user:user /usr", "chown-root"),
    ("chown user -R /etc", "chown-root"),
    ("chgrp -R staff /", "chown-root"),
    ("chown --recursive x /var/lib", "chown-root"),
    ("chown nobody /", "chown-root"),
    # power
    ("reboot", "power"),
    ("sudo reboot", "power"),
    ("/sbin/reboot -f", "power"),
    ("shutdown -h now", "power"),
    ("shutdown -r +5", "power"),
    ("shutdown now", "power"),
    ("poweroff", "power"),
    ("halt", "power"),
    ("init 0", "power"),
    ("init 6", "power"),
    ("telinit 6", "power"),
    ("systemctl reboot", "power"),
    ("systemctl poweroff", "power"),
    ("systemctl --no-block halt", "power"),
    ("systemctl -i reboot", "power"),
    ("systemctl start reboot.target", "power"),
    ("systemctl isolate poweroff.target", "power"),
    ("systemctl suspend", "power"),
    ("kexec -e", "power"),
    ("echo b > /proc/sysrq-trigger", "power"),
    ("echo o | tee /proc/sysrq-trigger", "power"),
    ("nohup sh -c 'sleep 5; reboot' >/dev/null 2>&1 &", "power"),
    ("(sleep 5; reboot) &", "power"),
    ("while true; do reboot; done", "power"),
    ("adb reboot", "power"),
    ("adb -s emulator-5554 reboot bootloader", "power"),
    ("svc power reboot", "power"),
    ("setprop sys.powerctl reboot", "power"),
    ("ssh host sudo poweroff", "power"),
    ("ssh host <<'EOF'\nreboot\nEOF", "power"),
    ("sudo -s <<EOF\nreboot\nEOF", "power"),
    ("runuser -l root -c 'reboot'", "power"),
    ("/usr/bin/env bash -c 'poweroff'", "power"),
    ("! reboot", "power"),
    ("[ -f x ] || reboot", "power"),
    ('echo "$(echo "$(reboot)")"', "power"),
    ("echo `echo \\`reboot\\``", "power"),
    ("cat <<EOF\n`reboot`\nEOF", "power"),
    # kill-all
    ("kill -9 -1", "kill-all"),
    ("kill -- -1", "kill-all"),
    ("kill 1", "kill-all"),
    ("kill -KILL 1", "kill-all"),
    ("kill -s TERM -1", "kill-all"),
    ("killall5 -9", "kill-all"),
    # cannot be parsed (unbalanced quotes): the conservative scan still refuses
    ("echo 'unterminated; rm -rf /", "rm-root"),
    ('rm -rf / "oops', "rm-root"),
    ("bash -c \"reboot", "power"),
    ("echo `dd if=/dev/zero of=/dev/sda", "dd-device"),
    ("cat x > /dev/sda 'oops", "redirect-block-device"),
    ("echo $(mkfs.ext4 /dev/sda1", "mkfs"),
]

# ---------------------------------------------------------------- corpus: must pass

BENIGN: list[str] = [
    "rm -rf ./build",
    "rm -rf build dist *.egg-info",
    "rm -rf /tmp/opsrun-x",
    "rm -rf /tmp/*",
    "rm -rf /var/tmp/app/cache",
    "rm -rf /var/www/html/cache/*",
    "rm -rf /opt/app/releases/old",
    "rm -rf /home/alice/tmp",
    "rm -rf /etc/nginx/conf.d",
    "rm -f /etc/nginx/sites-enabled/default",
    "rm -rf ~/.cache/pip",
    'rm -rf "$HOME/.npm/_cacache"',
    "rm -f /tmp/opsrun.lock",
    "rm /",
    'echo "rm -rf /"',
    "echo 'rm -rf /' > notes.txt",
    'git commit -m "fix rm -rf / bug"',
    'grep -r "rm -rf /" .',
    "grep mkfs notes.txt",
    "printf '%s' 'dd if=/dev/zero of=/dev/sda'",
    "echo ':(){ :|:& };:'",
    "man shutdown",
    "man mkfs.ext4",
    "apt-get install mkfs-tools",
    "apt-get install -y e2fsprogs",
    "ls /dev/sda",
    "lsblk /dev/sda",
    "blkid /dev/sda1",
    "cat /dev/sda1 | head -c 10",
    "smartctl -a /dev/sda",
    "hdparm -I /dev/sda",
    "nvme list",
    "dd if=/dev/zero of=./disk.img bs=1M count=10",
    "dd if=/dev/sda of=./mbr.bin bs=512 count=1",
    "dd if=/dev/zero of=/tmp/swap bs=1M count=100",
    "mkfs.ext4 -F ./disk.img",
    "mkswap /swapfile",
    "wipefs /dev/sda",
    "wipefs -a ./disk.img",
    "shred -u secrets.txt",
    "fdisk -l /dev/sda",
    "parted /dev/sda print",
    "parted -l",
    "sfdisk -d /dev/sda > table.txt",
    "sgdisk -p /dev/sda",
    "echo hi > /dev/null",
    "cmd 2>&1 >/dev/null",
    "echo oops >&2",
    "echo 1 > /dev/shm/flag",
    "cat /etc/hosts > /dev/tty",
    "exec 3>&1",
    "cat > '/etc/hosts'",
    "systemctl status reboot.target",
    "systemctl list-dependencies poweroff.target",
    "systemctl restart nginx",
    "systemctl is-active sshd",
    "echo reboot >> log.txt",
    "printf 'reboot\\n' > /tmp/cmd.txt",
    "last reboot",
    "journalctl -b -1 | grep reboot",
    "command -v reboot",
    "type shutdown",
    "shutdown -c",
    "reboot --help",
    "init --version",
    "cat <<EOF > /etc/motd\nreboot required\nEOF",
    "cat <<'EOF' | tee /tmp/x\nrm -rf /\nEOF",
    "cat <<'EOF' > /tmp/x\n`reboot`\nEOF",
    "alias ll='ls -l'; ll",
    "cd / && ls",
    "find / -name x",
    "find / -xdev -type f -size +100M",
    "find / -name core -delete",
    "find . -type f -exec rm -f {} +",
    "find /etc -name '*.bak' -exec rm -rf {} +",
    "find /tmp -name '*.tmp' -delete",
    "chmod 777 ./tmp",
    "chmod -R 755 /var/www",
    "chmod -R u+rwX /srv/app",
    "chmod 1777 /tmp",
    "chmod 755 /",
    "chmod +x /usr/local/bin/tool",
    "chown -R www-data:www-data /var/www",
    "chown root:root /etc/cron.d/job",
    "chown -R alice ~",
    "kill -9 1234",
    "kill -1 4321",
    "kill -0 1",
    "kill -HUP $(cat /run/nginx.pid)",
    "pkill -f myapp",
    "python3 -c \"print('fork')\"",
    "perl -e 'print \"rm -rf /\"'",
    "sh -c 'rm -rf /tmp/opsrun-*'",
    "bash -c 'echo hello'",
    "bash ./deploy.sh",
    "sudo apt-get update",
    "sudo -l",
    "adb shell getprop ro.build.version.sdk",
    "adb shell input keyevent KEYCODE_HOME",
    "ssh host uptime",
    "echo \"it's fine\"",
    "tar -czf backup.tgz /etc",
    "rsync -a /etc/ backup/",
    "cp /tmp/new.conf /etc/app.conf",
    "mv /tmp/new.conf /etc/app.conf",
    "tee /tmp/out.txt < in.txt",
    "echo $((1 > 0))",
    "for f in *.log; do gzip \"$f\"; done",
    "case $x in a) echo a;; esac",
    "timeout 5 curl -s http://127.0.0.1/",
    "docker run --rm alpine echo hi",
    "format() { echo x; }; format",
]

# commands without single quotes, to be wrapped in the templates below
SIMPLE = [
    ("rm -rf /", "rm-root"),
    ("rm -rf /etc", "rm-root"),
    ("mkfs.ext4 /dev/sda1", "mkfs"),
    ("dd if=/dev/zero of=/dev/sda", "dd-device"),
    ("cat x > /dev/sda", "redirect-block-device"),
    ("tee /dev/nvme0n1", "write-block-device"),
    ("shred /dev/sda", "wipe-device"),
    ("sgdisk -Z /dev/sda", "partition-table"),
    ("chmod -R 777 /", "chmod-root"),
    ("chown -R nobody /usr", "chown-root"),
    ("reboot", "power"),
    ("systemctl poweroff", "power"),
    ("kill -9 -1", "kill-all"),
]
TEMPLATES = [
    "sudo {}",
    "true && {}",
    "true; {}",
    "bash -c '{}'",
    "sh -c \"{}\"",
    "( {} )",
    "echo $({})",
    "nohup {} &",
    "env X=1 {}",
    "ls | {}",
]


@pytest.mark.parametrize(("command", "rule"), DANGEROUS, ids=[c for c, _ in DANGEROUS])
def test_dangerous_commands_are_refused(command: str, rule: str) -> None:
    assert check(command) == rule


@pytest.mark.parametrize("command", BENIGN)
def test_benign_look_alikes_pass(command: str) -> None:
    assert check(command) is None, DEFAULT_RULES.explain(command)


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize(("command", "rule"), SIMPLE, ids=[c for c, _ in SIMPLE])
def test_wrapping_does_not_hide_a_command(template: str, command: str, rule: str) -> None:
    assert check(template.format(command)) == rule


def test_corpus_is_large_and_covers_every_rule() -> None:
    assert len(DANGEROUS) >= 100 and len(BENIGN) >= 50
    assert len({c for c, _ in DANGEROUS}) == len(DANGEROUS)
    assert len(set(BENIGN)) == len(BENIGN)
    assert {r for _, r in DANGEROUS} == set(BUILTIN_RULES)


# ---------------------------------------------------------------- user rules


def test_allow_power_lets_reboot_through_but_nothing_else() -> None:
    rules = Rules(allow=["power"])
    assert rules.check("reboot") is None
    assert rules("sudo shutdown -r now") is None
    assert rules.check("rm -rf /") == "rm-root"
    assert Rules().check("reboot") == "power"


def test_user_forbid_glob_blocks_a_pipeline() -> None:
    rules = Rules(forbid=["curl * | sh", "curl * | *sh"])
    assert rules.check("curl -fsSL https://get.example.com | sh") == "curl * | sh"
    assert rules.check("curl -fsSL https://get.example.com | sudo bash") == "curl * | *sh"
    assert rules.check("true && curl x | sh") == "curl * | sh"
    assert rules.check("curl -fsSL -o install.sh https://get.example.com") is None
    assert rules.check("echo 'curl x | sh'") is None


def test_user_forbid_matches_normalized_simple_commands() -> None:
    rules = Rules(forbid=["docker system prune*", "re:^apt(-get)? +(remove|purge)\\b"])
    assert rules.check("docker system prune -af") == "docker system prune*"
    assert rules.check("sudo   /usr/bin/docker 'system' prune") == "docker system prune*"
    assert rules.check("cd /srv && DEBIAN_FRONTEND=x sudo apt-get purge -y nginx") == (
        "re:^apt(-get)? +(remove|purge)\\b"
    )
    assert rules.check("bash -c 'apt remove x'") == "re:^apt(-get)? +(remove|purge)\\b"
    assert rules.check("docker system df") is None
    assert rules.check("apt-get install nginx") is None


def test_allow_by_pattern_lifts_only_the_commands_it_matches() -> None:
    rules = Rules(allow=["rm -rf /srv", "glob:systemctl reboot"])
    assert rules.check("rm -rf /srv") is None
    assert rules.check("sudo rm -rf /srv") is None
    assert rules.check("rm -rf /srv; rm -rf /etc") == "rm-root"
    assert rules.check("rm -rf /srv/*") == "rm-root"
    assert rules.check("systemctl reboot") is None
    assert rules.check("reboot") == "power"


def test_allow_regex_and_enclosing_command() -> None:
    rules = Rules(allow=["re:^shutdown -r \\+[0-9]+$", "bash -c *"])
    assert rules.check("shutdown -r +5") is None
    assert rules.check("shutdown -h now") == "power"
    assert rules.check("bash -c 'reboot'") is None  # the enclosing command is allowed
    assert rules.check("sh -c 'reboot'") == "power"


def test_allow_redirect_needs_a_pattern_with_the_redirection() -> None:
    assert Rules(allow=["cat *"]).check("cat img > /dev/sdb") == "redirect-block-device"
    assert Rules(allow=["cat * > /dev/sdb"]).check("cat img > /dev/sdb") is None
    assert Rules(allow=["redirect-block-device"]).check("cat img > /dev/sdb") is None


def test_forbid_is_final_and_can_pin_a_built_in_rule() -> None:
    assert Rules(forbid=["power"], allow=["power"]).check("reboot") == "power"
    assert Rules(forbid=["power"], allow=["reboot"]).check("reboot") == "power"
    assert Rules(forbid=["reboot"], allow=["power"]).check("reboot") == "reboot"
    assert Rules(forbid=["rule:power"]).check("uptime") is None


def test_merge_and_levels() -> None:
    inventory = {"forbid": ["docker system prune*"], "allow": []}
    host = Host(name="web1", transport="ssh", forbid=("re:^iptables -F",), allow=("power",))
    playbook = {"allow": ["rm -rf /srv"]}
    rules = Rules.from_levels(inventory, None, host, playbook)
    assert rules.forbid == ("docker system prune*", "re:^iptables -F")
    assert rules.allow == ("power", "rm -rf /srv")
    assert rules.check("reboot") is None
    assert rules.check("iptables -F") == "re:^iptables -F"
    assert rules.check("rm -rf /srv") is None
    assert Rules.merge(Rules(allow=["power"]), None, Rules(allow=["power"])) == Rules(allow=["power"])


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("powr", "did you mean 'power'"),
        ("rm-rot", "did you mean 'rm-root'"),
        ("rule:nope", "unknown built-in rule 'nope'"),
        ("re:(", "invalid regular expression"),
        ("glob:", "empty glob"),
    ],
)
def test_invalid_entries_are_explained(entry: str, problem: str) -> None:
    msg = validate_entry(entry)
    assert msg is not None and problem in msg
    with pytest.raises(InvalidInput) as info:
        Rules(allow=[entry])
    assert problem in info.value.render() and "docs/safety.md" in info.value.render()


@pytest.mark.parametrize("entry", ["power", "rule:rm-root", "glob:powr", "curl * | sh", "re:^x$", "killer"])
def test_valid_entries(entry: str) -> None:
    assert validate_entry(entry) is None


def test_rules_must_be_lists() -> None:
    with pytest.raises(InvalidInput, match="list of strings"):
        Rules(forbid="reboot")
    with pytest.raises(InvalidInput, match="must be a non-empty string"):
        Rules(allow=[3])  # type: ignore[list-item]


def test_explain_lists_each_fired_rule() -> None:
    findings = Rules(allow=["power"]).explain("sudo reboot; rm -rf / ; echo ok")
    assert findings == [
        Finding("reboot", "power", blocked=False, lifted_by="power"),
        Finding("rm -rf /", "rm-root", blocked=True),
    ]
    assert Rules().explain("echo ok") == []


# ---------------------------------------------------------------- the splitter


@pytest.mark.parametrize(
    ("text", "commands"),
    [
        ("a b  c", [["a", "b", "c"]]),
        ("'a b' \"c $x\" d\\ e", [["a b", "c $x", "d e"]]),
        ("a;b&&c||d|e&f", [["a"], ["b"], ["c"], ["d"], ["e"], ["f"]]),
        ("X=1 Y='2 3' cmd arg", [["cmd", "arg"]]),
        ("cmd 2>&1 >/dev/null <in", [["cmd"]]),
        ("cat <<EOF\nrm -rf /\nEOF\necho done", [["cat"], ["echo", "done"]]),
        ("echo a # rm -rf /", [["echo", "a"]]),
        ("f() { echo x; }", [["echo", "x"]]),
        ("if a; then b; else c; fi", [["a"], ["b"], ["c"]]),
        ("echo $'a\\tb'", [["echo", "a\tb"]]),
        ("echo {a,b}c", [["echo", "ac", "bc"]]),
        ("echo $'\\x' $'\\x41\\101\\u0042'", [["echo", "\\x", "AAB"]]),
    ],
)
def test_split_commands(text: str, commands: list[list[str]]) -> None:
    assert split_commands(text) == commands


@pytest.mark.parametrize("text", ["echo 'a", 'echo "a', "echo $(a", "echo `a", "cat >"])
def test_split_commands_refuses_broken_shell(text: str) -> None:
    with pytest.raises(ParseError):
        split_commands(text)


# ---------------------------------------------------------------- robustness and cost


def test_random_text_never_raises() -> None:
    rng = random.Random(1234)
    alphabet = [*"abc rmf-/\\'\"$(){}[];&|<>`#~*\n\t=:,", "rm -rf /", "sh -c ", "<<EOF\n", "$(", "reboot"]
    rules = Rules(forbid=["x*"], allow=["power"])
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        result = rules.check(text)
        assert result is None or isinstance(result, str)
        rules.explain(text)  # explain() has no safety net: a parser bug raises here


def test_prefilter_never_hides_a_block() -> None:
    """check() skips parsing when no trigger word appears; explain() always parses."""
    rng = random.Random(99)
    pieces = ["r", "m", "rm", " -rf ", "/", "/dev/", "sd", "a", "'", '"', "\\", "$'\\x72m'", "{", ",", "}",
              "re", "boot", "dd ", "of=", "mkfs", ".ext4 ", "sudo ", "; ", "|", "&", "$(", ")", " ", "~", "*"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        blocked = any(f.blocked for f in DEFAULT_RULES.explain(text))
        assert (check(text) is not None) == blocked, text


def test_deep_nesting_is_bounded() -> None:
    cmd = "rm -rf /"
    for _ in range(30):
        cmd = f"sh -c {cmd!r}" if "'" not in cmd else f'sh -c "{cmd}"'
    result = check(cmd)
    assert result is None or result == "rm-root"
    assert check("eval " * 200 + "rm -rf /") == "rm-root"
    assert check('echo "$(' * 3000 + "rm -rf /" + ')"' * 3000) == "rm-root"  # too deep to parse: scanned
    assert check("echo " + "{a,b}" * 500 + " && reboot") == "power"
    assert check("(" * 5000 + "reboot" + ")" * 5000) == "power"


def test_check_is_cheap() -> None:
    corpus = [c for c, _ in DANGEROUS] + BENIGN
    rules = Rules()
    start = time.perf_counter()
    n = 0
    for _ in range(5):
        for c in corpus:
            rules._cache.clear()
            rules.check(c)
            n += 1
    per_check = (time.perf_counter() - start) / n
    assert per_check < 0.005, f"{per_check * 1e6:.0f} us per check"
    plain = Rules()
    start = time.perf_counter()
    for i in range(2000):
        plain.check(f"test -f /etc/app{i}.conf && cat /etc/app{i}.conf")
    assert (time.perf_counter() - start) / 2000 < 0.001


# ---------------------------------------------------------------- at the transport boundary


def test_local_transport_refuses_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    host = Host(name="local", transport="local")
    with LocalTransport(host, guard=Rules()) as t:
        # harmless even if it ran: -n is a dry run and the device variable is unset
        with pytest.raises(Blocked) as info:
            t.run(f'touch {marker}; mkfs.ext4 -n "$OPSRUN_TEST_UNSET_DEVICE"')
        assert info.value.rule == "mkfs" and "local: blocked by safety rule 'mkfs'" in str(info.value)
        assert not marker.exists()
    with LocalTransport(host, guard=Rules(forbid=["touch *"])) as t:
        with pytest.raises(Blocked, match="touch"):
            t.run(f"true && touch {marker}")
        with pytest.raises(Blocked):
            t.probe([Probe("ok", "true"), Probe("bad", f"touch {marker}")])
        assert not marker.exists()
        assert t.run(f"echo ok > {marker}").rc == 0
    assert marker.read_text() == "ok\n"
