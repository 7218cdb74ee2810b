"""runner/steps/names.py: the grammars that keep names handed to tools from being options,
table-tested with good names and hostile ones; and the step kinds refusing them in prepare()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runner import render
from runner.model import Host
from runner.steps import base, names
from runner.steps.base import StepContext
from runner.steps.shell import PrepareError

# values no grammar may take: options, shell text, whitespace, control characters
HOSTILE = [
    "-x",
    "--reference=/etc/shadow",
    "-oDPkg::Pre-Invoke::=touch /tmp/pwned",
    "--eval=%(touch /tmp/pwned)",
    "a b",
    "a;id",
    "a|id",
    "a&id",
    "$(id)",
    "`id`",
    "a\nb",
    "a\n",
    "a\tb",
    "a\x00b",
    "'a'",
    '"a"',
    "a>b",
    "",
    "x" * 300,
]

GOOD: dict[str, tuple[Callable[..., str | None], list[Any]]] = {
    "apt": (
        lambda v: names.package(v, "apt"),
        ["curl", "g++", "libstdc++6", "python3.11", "dvd+rw-tools", "curl=7.88.1-10+deb12u5",
         "libc6:i386", "nginx/bookworm-backports", "linux-image-6.1.0-13-amd64", "xz-utils", "0ad"],
    ),
    "dnf": (
        lambda v: names.package(v, "dnf"),
        ["nginx", "NetworkManager", "perl-Test-Simple", "kernel-5.14.0-362.el9.x86_64", "python3_pip",
         "bash-0:5.1.8-6.el9", "gcc-c++"],
    ),
    "apk": (lambda v: names.package(v, "apk"), ["curl", "py3-PyYAML", "busybox=1.36.1-r5", "libstdc++"]),
    "auto": (names.package, ["curl", "NetworkManager", "busybox=1.36.1-r5"]),
    "unit": (
        names.unit,
        ["nginx", "nginx.service", "getty@tty1.service", "systemd-fsck@dev-disk-by\\x2duuid-1.service",
         "sshd.socket", "multi-user.target", "var-lib-docker.mount", "user@1000.service"],
    ),
    "account": (
        lambda v: names.account(v, "owner"),
        ["root", "www-data", "_apt", "first.last", "1000", "0", "HOST$", "user@example.com"],
    ),
    "android_package": (names.android_package, ["com.example.kiosk", "org.mozilla.firefox", "a.b", "com.x_y.z1"]),
    "activity": (names.activity, [".MainActivity", "MainActivity", "com.example.kiosk/.Main",
                                  "com.example.kiosk/com.example.kiosk.ui.Main", ".Outer$Inner"]),
    "setting_key": (names.setting_key, ["screen_off_timeout", "adb_enabled", "wifi.on", "a:b"]),
    "property_name": (names.property_name, ["persist.sys.timezone", "ro.build.version.release",
                                            "debug.hwui.renderer", "vendor.x-y@1.0:z"]),
    "keyevent": (names.keyevent, ["HOME", "KEYCODE_BACK", "3", 26]),
}

EXTRA_BAD: dict[str, list[Any]] = {
    "apt": ["Curl", "openssh-server-", "a", "lib*", "?name(curl)", "~ncurl", "curl=", "curl=-1",
            "curl:-amd64", ".hidden", "+x"],
    "dnf": ["@development-tools", "/usr/bin/curl", "perl(Foo::Bar)", "nginx*", ".x"],
    "apk": ["curl>1.0", "curl~1", "curl@edge", "=1"],
    "auto": ["@group", "perl(Foo)"],
    "unit": ["-.mount", "a@b@c", "unit/name", "a%i"],
    "account": ["root:root", ".hidden", "ro ot", "a/b", "-1"],
    "android_package": ["com", "com..x", "1com.x", "com.1x", "com.x-y", "com.x/", ".com.x"],
    "activity": ["com.x/", "/.Main", "com.x/.Main/x", ".1Main", "com.x/-n"],
    "setting_key": ["-user", "a b"],
    "property_name": ["-x", "a b", "a=b"],
    "keyevent": ["--longpress", "KEY CODE", -1, "HOME;reboot"],
}

TABLE = [
    pytest.param(grammar, value, True, id=f"{grammar}-ok-{value!r}"[:80])
    for grammar, (_, values) in GOOD.items()
    for value in values
] + [
    pytest.param(grammar, value, False, id=f"{grammar}-bad-{value!r}"[:80])
    for grammar in GOOD
    for value in [*HOSTILE, *EXTRA_BAD.get(grammar, [])]
]


@pytest.mark.parametrize(("grammar", "value", "ok"), TABLE)
def test_grammar_table(grammar: str, value: Any, ok: bool) -> None:
    check = GOOD[grammar][0]
    problem = check(value)
    assert (problem is None) == ok, problem
    if problem:
        assert "is not valid" in problem or "key code" in problem


def test_refusal_names_the_field_and_the_grammar() -> None:
    msg = names.package("-oDPkg::Pre-Invoke::=id", "apt")
    assert msg is not None
    assert msg.startswith("package name (apt) '-oDPkg::Pre-Invoke::=id' is not valid (Debian names:")
    assert msg.endswith("it is not sent to the host")
    owner = names.account("--reference=/etc/shadow", "owner")
    assert owner is not None and owner.startswith("owner '--reference=/etc/shadow' is not valid (")
    long = names.unit("a" * 400)
    assert long is not None and "..." in long and len(long) < 400  # long values are shortened


def test_setting_values_may_not_start_with_two_dashes() -> None:
    assert names.setting_value("-1") is None  # a number is a value, not an option
    assert names.setting_value("hello world; x") is None  # quoted for the shell, a plain value
    bad = names.setting_value("--user")
    assert bad is not None and "option" in bad


# ---------------------------------------------------------------- the kinds refuse in prepare()


CTX = StepContext(host=Host("h", "local"), playbook_dir=".", render=render.render_text)

REFUSED = [
    ("package", {"name": ["curl", "-oDPkg::Pre-Invoke::=id"]}, "package name '-oDPkg::Pre-Invoke::=id'"),
    ("package", {"name": "--eval=%(id)", "manager": "dnf"}, "package name (dnf) '--eval=%(id)'"),
    ("package", {"name": "curl\nid"}, "package name 'curl\\nid'"),
    ("service", {"name": "--root=/", "state": "started"}, "service name '--root=/'"),
    ("service", {"name": "nginx; reboot", "state": "started"}, "service name 'nginx; reboot'"),
    ("file", {"path": "/tmp/x", "owner": "--reference=/etc/shadow"}, "owner '--reference=/etc/shadow'"),
    ("file", {"path": "/tmp/x", "group": "-R"}, "group '-R'"),
    ("adb.uninstall", "--user", "package '--user'"),
    ("adb.app", {"package": "com.x", "activity": "-n"}, "activity '-n'"),
    ("adb.app", "-p", "package '-p'"),
    ("adb.setting", {"namespace": "global", "key": "--user", "value": 1}, "setting key '--user'"),
    ("adb.setting", {"namespace": "global", "key": "k", "value": "--user"}, "setting value '--user'"),
    ("adb.setting", {"namespace": "--user", "key": "k", "value": "1"}, "setting namespace '--user'"),
    ("adb.prop", {"name": "-Z"}, "property name '-Z'"),
    ("adb.wait", {"for": "package", "package": "-3"}, "package '-3'"),
    ("adb.wait", {"for": "property", "property": "a b", "value": 1}, "property 'a b'"),
    ("adb.input", {"keyevent": ["HOME", "--longpress"]}, "keyevent '--longpress'"),
]


@pytest.mark.parametrize(("kind_name", "params", "message"), REFUSED, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)])
def test_kinds_refuse_hostile_names_before_any_probe(kind_name: str, params: Any, message: str) -> None:
    kind = base.get(kind_name)
    with pytest.raises(PrepareError) as info:
        kind.prepare(kind.normalize(params), CTX)
    assert message in str(info.value)


ACCEPTED = [
    ("package", {"name": ["curl", "g++"]}),
    ("service", {"name": "getty@tty1.service", "state": "started"}),
    ("file", {"path": "/tmp/x", "owner": "www-data", "group": "1000"}),
    ("adb.uninstall", "com.example.kiosk"),
    ("adb.app", {"package": "com.example.kiosk", "activity": ".MainActivity"}),
    ("adb.setting", {"namespace": "system", "key": "screen_off_timeout", "value": -1}),
    ("adb.prop", {"name": "persist.sys.timezone", "value": "Europe/Berlin", "assert": False}),
    ("adb.wait", "boot_completed"),
    ("adb.input", {"keyevent": ["HOME", 26]}),
    ("adb.input", {"text": "--not an option: input text takes its next word as text"}),
]


@pytest.mark.parametrize(("kind_name", "params"), ACCEPTED, ids=[f"{a[0]}-{i}" for i, a in enumerate(ACCEPTED)])
def test_kinds_accept_real_names(kind_name: str, params: Any) -> None:
    kind = base.get(kind_name)
    normal = kind.normalize(params)
    assert kind.prepare(normal, CTX) == normal


def test_adb_commands_end_options_before_the_package() -> None:
    ctx = StepContext(host=Host("d", "adb"))
    app = base.get("adb.app")
    probes = {p.key: p.command for p in app.probes(app.normalize("com.k"), ctx)}
    assert probes == {"pid": "pidof -- com.k", "path": "pm path -- com.k"}
    uninstall = base.get("adb.uninstall")
    assert [p.command for p in uninstall.probes(uninstall.normalize("com.k"), ctx)] == ["pm list packages -- com.k"]


# ---------------------------------------------------------------- for validate


STATIC = [
    ("package", {"name": ["curl", "-x"]}, [(("name", 1), "package name '-x'")]),
    ("package", {"name": "-x", "manager": "apk"}, [(("name",), "package name (apk) '-x'")]),
    ("package", {"name": "{{ pkg }}"}, []),  # rendered first: checked at plan time
    ("package", {"name": "PyYAML", "manager": "{{ m }}"}, []),  # auto: an rpm/apk name
    ("service", {"name": "-.mount"}, [(("name",), "service name '-.mount'")]),
    ("copy", {"src": "a", "dest": "/b", "owner": "--reference=/etc/shadow"}, [(("owner",), "owner '--ref")]),
    ("template", {"src": "a", "dest": "/b", "group": "adm"}, []),
    ("adb.app", "-p", [((), "package '-p'")]),
    ("adb.app", {"package": "com.x", "activity": "com.x/-n"}, [(("activity",), "activity 'com.x/-n'")]),
    ("adb.uninstall", {"package": "com.x"}, []),
    ("adb.setting", {"namespace": "global", "key": "k", "value": "--user"}, [(("value",), "setting value")]),
    ("adb.prop", "-Z", [((), "property name '-Z'")]),
    ("adb.wait", {"for": "package", "package": "x"}, [(("package",), "package 'x'")]),
    ("adb.input", {"keyevent": ["HOME", "--longpress"]}, [(("keyevent", 1), "keyevent '--longpress'")]),
    ("adb.input", {"keyevent": "--longpress"}, [(("keyevent",), "keyevent")]),
    ("run", {"command": "-x"}, []),
]


@pytest.mark.parametrize(("kind_name", "params", "expect"), STATIC, ids=[f"{s[0]}-{i}" for i, s in enumerate(STATIC)])
def test_static_problems_for_validate(kind_name: str, params: Any, expect: list[tuple[Any, str]]) -> None:
    got = names.static_problems(kind_name, params)
    assert [path for path, _ in got] == [path for path, _ in expect]
    for (_, message), (_, want) in zip(got, expect, strict=True):
        assert want in message
