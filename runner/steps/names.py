"""Grammar checks for names handed to tools (packages, units, users, Android packages, settings).

A value that fails its grammar is refused before any probe, so it can never be read as an
option by the tool. Pure functions returning a message or None; imports nothing from runner.
"""

from __future__ import annotations

import re
from typing import Any

# Debian policy §5.6.1: lowercase letters, digits, + - . ; two or more characters, starting
# with a letter or digit. apt also takes name:arch, name=version and name/release. A name
# ending in "-" would mean "remove" to apt-get install, so it is refused too.
_DEB_NAME = r"[a-z0-9][a-z0-9+.-]*[a-z0-9+.]"
_DEB = re.compile(rf"{_DEB_NAME}(?::[a-z0-9][a-z0-9-]*)?(?:=[0-9][A-Za-z0-9.+~:-]*|/[a-z0-9][a-z0-9.+-]*)?")
# rpm names and dnf's NEVRA forms (name-version-release.arch, epoch with ":"); no globs, no
# @groups, no provides (paths, perl(Foo)).
_RPM = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]*(?::[A-Za-z0-9_.+~^-]+)?")
# apk: names (letters, digits, . _ + -) with an optional =version.
_APK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(?:=[0-9][A-Za-z0-9._+-]*)?")
PACKAGE_GRAMMARS: dict[str, tuple[re.Pattern[str], str]] = {
    "apt": (
        _DEB,
        "Debian names: lowercase letters, digits, '+', '-', '.', starting with a letter or digit, "
        "not ending in '-'; optionally :arch, =version or /release",
    ),
    "dnf": (_RPM, "rpm names: letters, digits, '_', '+', '-', '.', not starting with '-' or '.'; "
                  "optionally version-release.arch with an epoch:"),
    "apk": (_APK, "apk names: letters, digits, '_', '+', '-', '.', not starting with '-'; optionally =version"),
}
PACKAGE_GRAMMARS["yum"] = PACKAGE_GRAMMARS["dnf"]

# systemd.unit(5): ASCII letters, digits, ":", "-", "_", ".", "\"; "@" once for template
# instances; at most 255 characters. A leading "-" (the root slice/mount) is refused here.
_UNIT = re.compile(r"[A-Za-z0-9:_.\\][A-Za-z0-9:_.\\-]*(?:@[A-Za-z0-9:_.\\-]*)?")
UNIT_GRAMMAR = "systemd unit names: letters, digits, ':', '_', '.', '\\', '-', one '@', not starting with '-'"

# POSIX portable user names (letters, digits, . _ -, not starting with -), "$" at the end for
# machine accounts, "@" inside for directory users; or a numeric id.
_ACCOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\$?")
ACCOUNT_GRAMMAR = "letters, digits, '.', '_', '-' (POSIX portable names) not starting with '-' or '.', or a number"

# Java package names (what Android takes as an application id): two or more dot-separated
# parts, each a letter then letters, digits or "_".
_ANDROID_PACKAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")
ANDROID_PACKAGE_GRAMMAR = "Java package names like com.example.app (dot-separated parts of letters, digits, '_')"
_CLASS = r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*"
_ACTIVITY = re.compile(rf"(?:[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+/)?\.?{_CLASS}")
ACTIVITY_GRAMMAR = "a class name like .MainActivity or com.example.app/.MainActivity"
_SETTING_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
SETTING_KEY_GRAMMAR = "letters, digits, '_', '.', ':', '-', not starting with '-'"
_PROPERTY = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.:@-]*")
PROPERTY_GRAMMAR = "letters, digits, '_', '.', ':', '@', '-', not starting with '-'"
_KEYEVENT = re.compile(r"[A-Za-z0-9_]+")
KEYEVENT_GRAMMAR = "a key name like HOME or KEYCODE_BACK, or a key code number"
MAX_NAME = 255


def _refusal(text: str, field: str, grammar: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f"{field} {shown!r} is not valid ({grammar}); it is not sent to the host"


def _check(value: Any, pattern: re.Pattern[str], field: str, grammar: str) -> str | None:
    text = str(value)
    if len(text) <= MAX_NAME and pattern.fullmatch(text):
        return None
    return _refusal(text, field, grammar)


def package(name: Any, manager: str = "auto") -> str | None:
    """A package name for `manager` (auto: valid for at least one of apt, dnf, apk)."""
    text = str(name)
    managers = [manager] if manager in PACKAGE_GRAMMARS else ["apt", "dnf", "apk"]
    if len(text) <= MAX_NAME and any(PACKAGE_GRAMMARS[m][0].fullmatch(text) for m in managers):
        return None
    label = f"package name ({manager})" if manager in PACKAGE_GRAMMARS else "package name"
    return _refusal(text, label, "; or ".join(PACKAGE_GRAMMARS[m][1] for m in managers))


def unit(name: Any) -> str | None:
    return _check(name, _UNIT, "service name", UNIT_GRAMMAR)


def account(name: Any, field: str) -> str | None:
    """owner / group: a user or group name, or a numeric id."""
    return _check(name, _ACCOUNT, field, ACCOUNT_GRAMMAR)


def android_package(name: Any, field: str = "package") -> str | None:
    return _check(name, _ANDROID_PACKAGE, field, ANDROID_PACKAGE_GRAMMAR)


def activity(name: Any) -> str | None:
    return _check(name, _ACTIVITY, "activity", ACTIVITY_GRAMMAR)


def setting_key(name: Any) -> str | None:
    return _check(name, _SETTING_KEY, "setting key", SETTING_KEY_GRAMMAR)


def setting_value(value: str) -> str | None:
    """`settings` reads --user (and future --options) anywhere on its line: no value may start with --."""
    if value.startswith("--"):
        return f"setting value {value!r} starts with '--', which the settings tool reads as an option"
    return None


def property_name(name: Any, field: str = "property name") -> str | None:
    return _check(name, _PROPERTY, field, PROPERTY_GRAMMAR)


def keyevent(key: Any) -> str | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return None if key >= 0 else f"keyevent {key} is not a key code"
    return _check(key, _KEYEVENT, "keyevent", KEYEVENT_GRAMMAR)


def first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


# ---------------------------------------------------------------- for validate

Problem = tuple[tuple[str | int, ...], str]  # (path inside the kind's params, message)


def _templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def static_problems(kind: str, params: Any) -> list[Problem]:
    """The same checks prepare() makes, on the values that need no rendering (a value with
    {{ }} is checked after rendering, at plan time). For `validate` (runner/schema.py): the
    path is relative to the kind's value in the step (() for a short form like `adb.app: pkg`)."""
    out: list[Problem] = []

    def check(path: tuple[str | int, ...], value: Any, fn: Any, *args: Any) -> None:
        if value is not None and not _templated(value):
            problem = fn(value, *args)
            if problem:
                out.append((path, problem))

    short = {"adb.app": android_package, "adb.uninstall": android_package, "adb.prop": property_name}
    if isinstance(params, str) and kind in short:
        check((), params, short[kind])
        return out
    if not isinstance(params, dict):
        return out
    if kind == "package":
        manager = params.get("manager", "auto")
        manager = "auto" if _templated(manager) else str(manager)
        given = params.get("name")
        for i, name in enumerate(given if isinstance(given, list) else [given]):
            check(("name", i) if isinstance(given, list) else ("name",), name, package, manager)
    elif kind == "service":
        check(("name",), params.get("name"), unit)
    elif kind in ("file", "template", "copy"):
        for field in ("owner", "group"):
            check((field,), params.get(field), account, field)
    elif kind in ("adb.app", "adb.uninstall", "adb.install"):
        check(("package",), params.get("package"), android_package)
        if kind == "adb.app":
            check(("activity",), params.get("activity"), activity)
    elif kind == "adb.setting":
        check(("key",), params.get("key"), setting_key)
        if isinstance(params.get("value"), str):
            check(("value",), params["value"], setting_value)
    elif kind == "adb.prop":
        check(("name",), params.get("name"), property_name)
    elif kind == "adb.wait":
        check(("package",), params.get("package"), android_package)
        check(("property",), params.get("property"), property_name, "property")
    elif kind == "adb.input":
        keys = params.get("keyevent")
        for i, k in enumerate(keys if isinstance(keys, list) else [keys]):
            check(("keyevent", i) if isinstance(keys, list) else ("keyevent",), k, keyevent)
    return out
