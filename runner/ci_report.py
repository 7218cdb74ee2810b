"""CI outputs: JUnit XML for validate, plan and apply (one test case per file, or per host x
step), GitHub Actions annotations, and the error document machine formats print when a command
cannot run. Pure: takes diagnostics, errors and plain documents; no I/O."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from runner.errors import Diagnostic, OpsrunError
from runner.secrets import redact

_TAIL = 4000  # characters of a message kept in a failure element


def _suite(name: str, cases: list[ET.Element], time: float = 0.0) -> ET.Element:
    suite = ET.Element("testsuite", name=name)
    counts = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}
    for case in cases:
        for tag, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            if case.find(tag) is not None:
                counts[key] += 1
        suite.append(case)
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{time:.3f}")
    return suite


def _case(classname: str, name: str, *, time: float = 0.0, failure: str | None = None,
          error: str | None = None, skipped: str | None = None, out: str = "") -> ET.Element:
    case = ET.Element("testcase", classname=classname, name=name, time=f"{time:.3f}")
    for tag, text in (("failure", failure), ("error", error), ("skipped", skipped)):
        if text is not None:
            el = ET.SubElement(case, tag, message=_clean(text.splitlines()[0] if text else tag)[:_TAIL])
            if tag != "skipped":
                el.text = _clean(text)[:_TAIL]
    if out:
        ET.SubElement(case, "system-out").text = _clean(out)[:_TAIL]
    return case


def _clean(text: str) -> str:
    """XML 1.0 cannot hold most control characters, even escaped."""
    return "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else f"\\x{ord(c):02x}" for c in text)


def _document(name: str, suites: list[ET.Element]) -> str:
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        root.append(suite)
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def junit_validate(results: Iterable[tuple[str, list[Diagnostic]]]) -> str:
    """One test case per checked file; its errors are the failure, warnings its output."""
    cases = []
    for file, diags in results:
        errors = [d for d in diags if d.severity == "error"]
        warnings = [d for d in diags if d.severity != "error"]
        text = "\n".join(_line(d) for d in errors)
        cases.append(_case("validate", file, failure=text if errors else None,
                           out="\n".join(_line(d) for d in warnings)))
    return _document("opsrun validate", [_suite("validate", cases)])


def junit_error(command: str, message: str) -> str:
    """The document when the command could not run at all (bad input, no inventory)."""
    return _document(f"opsrun {command}", [_suite(command, [_case(command, command, error=message)])])


def _line(d: Diagnostic) -> str:
    return f"{d.where()}: {d.severity}: {d.message}" + (f" (hint: {d.hint})" if d.hint else "")


def junit_plan(plan: Mapping[str, Any]) -> str:
    """One test case per (host, step instance) of a plan document; `!` (blocked) fails."""
    by_host: dict[str, list[ET.Element]] = {h: [] for h in plan.get("hosts", [])}
    for step in plan.get("steps", []):
        host = str(step.get("host", ""))
        marker = step.get("marker", "")
        text = f"{marker} {step.get('summary', '')}".strip()
        actions = "\n".join(str(a.get("display", "")) for a in step.get("actions", []))
        reason = str(step.get("reason") or "")
        out = "\n".join(x for x in (text, reason, actions) if x)
        by_host.setdefault(host, []).append(_case(
            f"plan.{host}", str(step.get("instance", step.get("step", ""))),
            failure=f"{text}\n{reason}".strip() if marker == "!" else None, out=out))
    for host, why in (plan.get("unreachable") or {}).items():
        by_host.setdefault(host, []).append(_case(f"plan.{host}", "connect", error=f"unreachable: {why}"))
    return _document("opsrun plan", [_suite(host, cases) for host, cases in by_host.items()])


def junit_apply(recap: Mapping[str, Any], planned: Iterable[tuple[str, str]] = ()) -> str:
    """One test case per (host, step instance) of an apply recap; failed steps fail, skipped
    ones are skipped, an unreachable host is an error. `planned` (host, instance) pairs that
    never ran (the host stopped, the run was cut) are skipped test cases saying so."""
    return _document("opsrun apply", _apply_suites(recap, planned))


def junit_merged(merged: Mapping[str, Any], planned: Iterable[tuple[str, str]] = ()) -> str:
    """`runs merge`'s report: the shards' hosts as apply's, and an error case for each
    shard that left no run (its hosts were never applied)."""
    suites = _apply_suites(merged, planned)
    missing = list(merged.get("missing_shards") or [])
    if missing:
        suites.append(_suite("shards", [_case("shards", f"shard {m}", error=f"shard {m}: no run to merge")
                                        for m in missing]))
    return _document("opsrun apply (merged)", suites)


def _apply_suites(recap: Mapping[str, Any], planned: Iterable[tuple[str, str]]) -> list[ET.Element]:
    suites = []
    hosts = dict(recap.get("hosts") or {})
    missing: dict[str, list[str]] = {}
    for host, inst in planned:
        hosts.setdefault(host, {"steps": []})
        if not any(s.get("instance") == inst for s in hosts[host].get("steps", [])):
            missing.setdefault(host, []).append(inst)
    for host, run in hosts.items():
        cases = []
        for step in run.get("steps", []):
            status = str(step.get("status", ""))
            message = str(step.get("message") or status)
            cases.append(_case(
                f"apply.{host}", str(step.get("instance", step.get("step", ""))),
                time=float(step.get("duration") or 0.0),
                failure=message if status in ("failed", "blocked") else None,
                error=f"unreachable: {message}" if status == "unreachable" else None,
                skipped=message if status == "skipped" else None,
                out=f"{status}: {message}"))
        why = "not run: the host was unreachable" if run.get("unreachable") else (
            "not run: the host stopped before this step" if recap.get("ok") is False or run.get("steps")
            else "not run")
        cases += [_case(f"apply.{host}", inst, skipped=why) for inst in missing.get(host, [])]
        if run.get("unreachable") and not any(s.get("status") == "unreachable" for s in run.get("steps", [])):
            cases.append(_case(f"apply.{host}", "connect", error="unreachable"))
        suites.append(_suite(host, cases, sum(float(s.get("duration") or 0.0) for s in run.get("steps", []))))
    return suites


# ---------------------------------------------------------------- error documents


def error_document(command: str, exc: OpsrunError) -> dict[str, Any]:
    """What `--json` prints when the command could not produce its document: the error, its
    exit code and every located diagnostic (`{"ok": false, "error": {...}}`)."""
    diags: list[Diagnostic] = list(getattr(exc, "diagnostics", None) or [])
    return {
        "ok": False,
        "command": command,
        "error": {
            "kind": type(exc).__name__,
            "message": redact(exc.message),
            "hint": redact(exc.hint),
            "exit_code": exc.exit_code,
            "diagnostics": [{**d.as_dict(), "message": redact(d.message), "hint": redact(d.hint)} for d in diags],
        },
    }


def error_markdown(command: str, exc: OpsrunError) -> str:
    """The same for a markdown comment: a short "failed" section with the errors."""
    doc = error_document(command, exc)["error"]
    out = [f"### opsrun {command} failed", "", _md(doc["message"]), ""]
    for d in doc["diagnostics"]:
        where = f"{d['file']}:{d['line']}" + (f":{d['col']}" if d["col"] else "") if d["line"] else d["file"]
        hint = f" (hint: {_md(d['hint'])})" if d["hint"] else ""
        out.append(f"- `{_md(where)}` {_md(d['message'])}{hint}")
    if doc["hint"]:
        out += ["", f"Hint: {_md(doc['hint'])}"]
    out += ["", f"Nothing was {_DONE.get(command, 'done')} (exit code {doc['exit_code']})."]
    return "\n".join(out) + "\n"


_DONE = {"plan": "planned", "apply": "applied", "validate": "checked", "runs merge": "merged"}


def _md(text: str) -> str:
    """One line of markdown text: no raw HTML, pipes and backticks kept literal."""
    return " ".join(text.split()).replace("<", "&lt;").replace("`", "'").replace("|", "\\|")


# ---------------------------------------------------------------- GitHub Actions


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(diags: Iterable[Diagnostic]) -> list[str]:
    """Workflow commands that put each diagnostic on its file and line in a pull request
    (one without a file, e.g. about a command-line option, is an annotation of the run)."""
    lines = []
    for d in diags:
        level = "error" if d.severity == "error" else "warning"
        props = [f"file={_escape_property(d.file)}"] if d.file else []
        if d.file and d.line:
            props.append(f"line={d.line}")
        if d.file and d.col:
            props.append(f"col={d.col}")
        props.append(f"title={_escape_property('opsrun ' + level)}")
        message = d.message + (f" (hint: {d.hint})" if d.hint else "")
        lines.append(f"::{level} {','.join(props)}::{_escape_data(message)}")
    return lines
