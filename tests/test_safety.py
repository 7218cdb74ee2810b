"""Table tests for runner/safety/: dangerous variants are refused by the right rule,
benign look-alikes pass, user forbid/allow entries behave as docs/safety.md says, and a real
LocalTransport refuses a blocked command before anything runs."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import Blocked, InvalidInput
from runner.model import Host, Probe
from runner.safety import (
    BUILTIN_RULES,
    DEFAULT_RULES,
    DESTINATION_RULES,
    Finding,
    Lift,
    ParseError,
    Rules,
    check,
    check_destination,
    split_commands,
    validate_entry,
)
from runner.transports.local import LocalTransport
from tests.safety_corpus import BENIGN, DANGEROUS

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
    ("rm -rf ~/../..", "rm-root"),
    ("find / -name core -delete", "rm-root"),
    ("kill -9 -01", "kill-all"),
    ("pkill -9 .", "kill-all"),
    ("systemctl start reboot.target", "power"),
    ("echo b > /proc/sysrq-trigger", "power"),
    ("lvremove -y pve/vm-100-disk-0", "storage"),
    ("zpool destroy tank", "storage"),
    ("mdadm --zero-superblock /dev/sdb1", "storage"),
    ("am broadcast -a android.intent.action.FACTORY_RESET", "factory-reset"),
    ("fastboot -w", "factory-reset"),
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
    "strace -f {}",
    "timeout -s KILL 10 {}",
    "ssh host -- {}",
    "ssh -p 22 host {}",
    "unshare -m {}",
    "nsenter -t 1 -m {}",
    "systemd-run --wait {}",
    "setpriv --reuid=0 {}",
    "chrt -f 10 {}",
    "script -q -c '{}' /dev/null",
    "docker exec -it web {}",
    "kubectl exec pod -- {}",
    "adb shell {}",
    "echo '{}' | at now",
]
# wrappers that must not turn a look-alike into a refusal
BENIGN_TEMPLATES = ["sudo {}", "strace -f {}", "timeout 5 {}", "nice -n 5 {}", "env X=1 {}", "unshare -r {}"]


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


_PLAIN_BENIGN = [c for c in BENIGN if "'" not in c and "\n" not in c and "<<" not in c]


@pytest.mark.parametrize("template", BENIGN_TEMPLATES)
def test_wrapping_keeps_look_alikes_passing(template: str) -> None:
    refused = {c: check(template.format(c)) for c in _PLAIN_BENIGN}
    assert {c: r for c, r in refused.items() if r} == {}


def test_corpus_is_large_and_covers_every_rule() -> None:
    assert len(DANGEROUS) >= 500 and len(BENIGN) >= 250 and len(_PLAIN_BENIGN) >= 150
    assert len({c for c, _ in DANGEROUS}) == len(DANGEROUS)
    assert len(set(BENIGN)) == len(BENIGN)
    assert {r for _, r in DANGEROUS} == set(BUILTIN_RULES) - DESTINATION_RULES


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


# ---------------------------------------------------------------- file destinations (plan time)

DESTINATIONS: list[tuple[str, bool, str | None]] = [  # path, remove?, rule
    ("/dev/sda", False, "redirect-block-device"),
    ("/dev/sdb1", False, "redirect-block-device"),
    ("/dev/nvme0n1", False, "redirect-block-device"),
    ("/dev/nvme0n1p2", False, "redirect-block-device"),
    ("/dev/mmcblk0", False, "redirect-block-device"),
    ("/dev/mmcblk0p1", False, "redirect-block-device"),
    ("/dev/disk/by-id/ata-WDC_123", False, "redirect-block-device"),
    ("/dev/mapper/vg-root", False, "redirect-block-device"),
    ("/dev/pve/vm-100-disk-0", False, "redirect-block-device"),
    ("/dev/../dev/sda", False, "redirect-block-device"),
    ("/proc/sysrq-trigger", False, "power"),
    ("/sys/power/state", False, "power"),
    ("/proc/sys/kernel/sysrq", False, "power"),
    ("/dev/watchdog", False, "power"),
    ("/proc/self/environ", False, "kernel-file"),
    ("/proc/sys/net/ipv4/ip_forward", False, "kernel-file"),
    ("/sys/class/leds/led0/brightness", False, "kernel-file"),
    ("/sys/kernel/mm/transparent_hugepage/enabled", False, "kernel-file"),
    ("/etc/../proc/1/mem", False, "kernel-file"),
    ("/dev/null", False, "kernel-file"),
    ("/dev/tty1", False, "kernel-file"),
    ("/dev/ttyUSB0", False, "kernel-file"),
    ("/dev/shm/app.lock", False, None),
    ("/dev/mqueue/q", False, None),
    ("/etc/motd", False, None),
    ("/etc/nginx/conf.d/site.conf", False, None),
    ("/tmp/opsrun/x", False, None),
    ("~/.bashrc", False, None),
    ("relative/file.txt", False, None),
    ("/proc", False, None),  # the directory itself: a file step fails on it, harmlessly
    ("/", True, "rm-root"),
    ("/etc", True, "rm-root"),
    ("/etc/", True, "rm-root"),
    ("/usr/lib", True, "rm-root"),
    ("/var/lib", True, "rm-root"),
    ("/home", True, "rm-root"),
    ("/bin", True, "rm-root"),
    ("/data", True, "rm-root"),
    ("~", True, "rm-root"),
    ("~/../", True, "rm-root"),
    ("/tmp/..", True, "rm-root"),
    ("/proc/1", True, "kernel-file"),
    ("/sys/fs/cgroup/x", True, "kernel-file"),
    ("/dev/sda", True, "kernel-file"),
    ("/dev/shm/old.lock", True, None),
    ("/etc/nginx/conf.d", True, None),
    ("/srv/app/releases/1", True, None),
    ("/home/alice/tmp", True, None),
    ("~/.cache/pip", True, None),
    ("/var/lib/app/cache", True, None),
]


@pytest.mark.parametrize(("path", "remove", "rule"), DESTINATIONS, ids=[f"{'rm ' if r else ''}{p}" for p, r, _ in DESTINATIONS])
def test_file_destinations(path: str, remove: bool, rule: str | None) -> None:
    assert check_destination(path, remove=remove) == rule
    assert DEFAULT_RULES.check_destination(path, remove=remove) == rule
    assert check_destination(path, Rules(), remove=remove) == rule


def test_file_destinations_respect_forbid_and_allow() -> None:
    assert Rules(allow=["kernel-file"]).check_destination("/proc/sys/net/ipv4/ip_forward") is None
    assert Rules(allow=["kernel-file"]).check_destination("/dev/sda") == "redirect-block-device"
    leds = Rules(allow=["cat > /sys/class/leds/*"])
    assert leds.check_destination("/sys/class/leds/led0/brightness") is None
    assert leds.check_destination("/sys/power/state") == "power"
    assert leds.check_destination("/sys/block/sda/queue/scheduler") == "kernel-file"
    assert Rules(allow=["/sys/class/leds/*"]).check_destination("/sys/class/leds/a/trigger") is None
    assert Rules(allow=["redirect-block-device", "kernel-file"]).check_destination("/dev/sdb") is None
    assert Rules(allow=["cat > /dev/sdb"]).check_destination("/dev/sdb") is None
    assert Rules(allow=["cat > /dev/sdb"]).check_destination("/dev/sdc") == "redirect-block-device"
    assert Rules(allow=["rm-root"]).check_destination("/etc", remove=True) is None
    assert Rules(allow=["rm -rf -- /srv"]).check_destination("/srv", remove=True) is None
    assert Rules(forbid=["kernel-file"], allow=["kernel-file"]).check_destination("/proc/x") == "kernel-file"
    assert Rules(forbid=["cat > /etc/shadow"]).check_destination("/etc/shadow") == "cat > /etc/shadow"
    assert Rules(forbid=["rm -rf -- /opt/*"]).check_destination("/opt/app", remove=True) == "rm -rf -- /opt/*"
    assert Rules(forbid=["rm -rf -- /opt/*"]).check_destination("/opt/app") is None
    assert check_destination("/proc/x", Rules(allow=["power"])) == "kernel-file"
    assert "kernel-file" in DESTINATION_RULES and set(BUILTIN_RULES) >= DESTINATION_RULES


# ---------------------------------------------------------------- rules lifted by allow:

LIFTS: list[tuple[list[str], list[str], list[Lift]]] = [  # forbid, allow, lifted()
    ([], [], []),
    ([], ["power"], [Lift("power", ("power",), everywhere=True)]),
    ([], ["rule:rm-root"], [Lift("rule:rm-root", ("rm-root",), everywhere=True)]),
    (["power"], ["power"], [Lift("power", (), everywhere=True, pinned=("power",))]),
    ([], ["rm -rf /srv"], [Lift("rm -rf /srv", ("rm-root",), everywhere=False)]),
    ([], ["systemctl reboot"], [Lift("systemctl reboot", ("power",), everywhere=False)]),
    ([], ["glob:fastboot -w"], [Lift("glob:fastboot -w", ("factory-reset",), everywhere=False)]),
    ([], ["cat * > /dev/sdb"], [Lift("cat * > /dev/sdb", ("redirect-block-device",), everywhere=False, wide=True)]),
    ([], ["sudo *"], [Lift("sudo *", (), everywhere=False, wide=True)]),
    ([], ["re:^shutdown -r"], [Lift("re:^shutdown -r", (), everywhere=False, wide=True)]),
    ([], ["echo hi"], [Lift("echo hi", (), everywhere=False)]),
    (["power"], ["systemctl reboot"], [Lift("systemctl reboot", (), everywhere=False, pinned=("power",))]),
    ([], ["kill-all", "zpool destroy scratch"], [Lift("kill-all", ("kill-all",), everywhere=True),
                                                Lift("zpool destroy scratch", ("storage",), everywhere=False)]),
]


@pytest.mark.parametrize(("forbid", "allow", "lifts"), LIFTS)
def test_lifted_names_what_each_allow_entry_lifts(forbid: list[str], allow: list[str], lifts: list[Lift]) -> None:
    assert Rules(forbid=forbid, allow=allow).lifted() == lifts


def test_lifted_reads_as_a_sentence() -> None:
    text = [str(x) for x in Rules(forbid=["kill-all"], allow=["power", "rm -rf /srv", "sudo *", "kill-all", "echo"]).lifted()]
    assert text == [
        "allow 'power' lifts built-in rule 'power' everywhere",
        "allow 'rm -rf /srv' lifts 'rm-root' for the commands it matches",
        "allow 'sudo *' lifts any built-in rule for the commands it matches",
        "allow 'kill-all' lifts no built-in rule: forbid pins 'kill-all'",
        "allow 'echo' lifts no built-in rule",
    ]
    assert str(Rules(allow=["cat * > /dev/sdb"]).lifted()[0]) == (
        "allow 'cat * > /dev/sdb' lifts 'redirect-block-device' and any other built-in rule for the commands it matches"
    )


# ---------------------------------------------------------------- the package itself


def test_safety_modules_are_small_pure_and_point_down() -> None:
    import ast

    import runner.safety

    allowed_stdlib = {"__future__", "collections", "dataclasses", "difflib", "fnmatch", "itertools", "re", "shlex", "typing"}
    folder = Path(runner.safety.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        text = path.read_text()
        tree = ast.parse(text)
        doc = ast.get_docstring(tree)
        assert doc, path.name
        head = doc.split("\n\n")[0].splitlines()
        assert len(head) == 2 and all(line.strip() for line in head), path.name
        assert len(text.splitlines()) < 600, path.name
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top == "runner":
                    assert name == "runner.errors" or name.startswith("runner.safety."), (path.name, name)
                else:
                    assert top in allowed_stdlib, (path.name, name)


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


def test_corpus_words_shuffled_never_raise_and_prefilter_agrees() -> None:
    """Random sentences of the corpora's words: explain() never raises, check() agrees with it."""
    words = sorted({w for c, _ in DANGEROUS for w in c.split()} | {w for c in BENIGN for w in c.split()})
    rng = random.Random(7)
    rules = Rules(forbid=["x*"], allow=["power", "rm -rf /srv"])
    for _ in range(3000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 10)))
        rules.explain(text)
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


def test_session_gives_the_planner_the_hosts_rules() -> None:
    from runner.model import Inventory, Playbook
    from runner.session import Session

    host = Host(name="web1", transport="local", forbid=("re:^iptables -F",), allow=("power",))
    playbook = Playbook(name="p", hosts="web1", steps=(), forbid=("kernel-file",), allow=("kernel-file",))
    session = Session(Inventory(hosts={"web1": host}, groups={}), playbook)
    rules = session.rules("web1")
    assert rules is session.rules("web1") and session.guard("web1") == rules.check
    assert rules.check("reboot") is None and rules.check("iptables -F") == "re:^iptables -F"
    assert rules.check_destination("/proc/sys/x") == "kernel-file"  # the playbook's forbid pins it
    assert [str(x) for x in rules.lifted()] == [
        "allow 'power' lifts built-in rule 'power' everywhere",
        "allow 'kernel-file' lifts no built-in rule: forbid pins 'kernel-file'",
    ]


# ---------------------------------------------------------------- the pre-filter


_PIECES = ["rm", "RM", "mkfs", "MKswap", "swap", "mk", "fs", "am", "cmd", "a m", "(", ")", "( )", "(\t)", "x",
           "/dev", "/DEV", "'", '"', "\\", "\\\n", " ", "cmdx", "xam", "am.", "_", "-", "sg_", "pm-", "Kill",
           "\u017f", "\u212a", "\u0131", "zzz", "lv", "init", "$'", "{", ","]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=8).map("".join))
def test_the_fast_prefilter_says_what_the_trigger_regex_says(text: str) -> None:
    """_may_trigger scans ASCII text for _TRIGGER's words instead of running the 70-branch
    case-insensitive regex: the same answer on every text (non-ASCII text takes the regex)."""
    from runner.safety.rules import _TRIGGER, _UNQUOTE, _may_trigger

    reference = "$'" in text or ("{" in text and "," in text) or (
        _TRIGGER.search(text.replace("\\\n", "").translate(_UNQUOTE)) is not None)
    assert _may_trigger(text) == reference
