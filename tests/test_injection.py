"""Injection matrix, applied for real on `local` inside a bubblewrap sandbox: every field kind
× quoting context × hostile payload; no payload may run code (a PWNED-* marker file), and
each value must reach the command exactly. Plus: secrets never show in /proc/<pid>/cmdline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner import render, secrets
from runner.render import RenderError, render_text
from tests.conftest import require_peer

ROOT = Path(__file__).resolve().parent.parent
BWRAP = shutil.which("bwrap")

PAYLOADS = [
    "; touch PWNED-{k} ;",
    "$(touch PWNED-{k})",
    "`touch PWNED-{k}`",
    "a\ntouch PWNED-{k}\nb",
    "' ; touch PWNED-{k} ; '",
    '" ; touch PWNED-{k} ; "',
    "'\\'' ; touch PWNED-{k} ; '\\''",
    "'\"'\"' ; touch PWNED-{k} ; '\"'\"'",
    "-n",
    "--help",
    "${IFS}touch${IFS}PWNED-{k}",
    "$IFS",
    "back\\",
    '\\"; touch PWNED-{k}; \\"',
    "x && touch PWNED-{k} || y",
    "| touch PWNED-{k}",
    "#) touch PWNED-{k}",
    "*",
    "'",
    '"',
    "\\",
    "",
    " lead and trail ",
    "EOF",
]

# (context name, command template with V for the value and O for the output file,
#  how the command's output relates to the value)
CONTEXTS: list[tuple[str, str, str]] = [
    ("unquoted", "printf '%s' V > O", "exact"),
    ("double", 'printf "%s" "<V>" > O', "angle"),
    ("single", "printf '%s' '<V>' > O", "angle"),
    ("heredoc", "cat > O <<EOF\n<V>\nEOF", "heredoc"),
    ("heredoc-tabs", "cat > O <<-EOF\n\t<V>\n\tEOF", "heredoc"),
    ("heredoc-quoted", "cat > O <<'EOF'\n<V>\nEOF", "heredoc"),
    ("sh-c-single", "sh -c 'printf \"%s\" V > O'", "exact"),
    ("sh-c-single-dq", 'sh -c \'printf "%s" "<V>" > O\'', "angle"),
    ("sh-c-double", "sh -c \"printf '%s' V > O\"", "exact"),
    ("bash-c-double-sq", "bash -c \"printf '%s' '<V>' > O\"", "angle"),
    ("dollar-paren", "printf '%s' \"$(printf '%s' \"<V>\")\" > O", "angle"),
    ("dollar-paren-bare", "printf '%s' \"$(printf '%s' V)\" > O", "subst"),
    ("backticks", "printf '%s' \"`printf '%s' \"<V>\"`\" > O", "angle"),
    ("backticks-bare", "printf '%s' \"`printf '%s' V`\" > O", "subst"),
    ("sh-heredoc", "sh <<'EOF'\nprintf '%s' \"<V>\" > O\nEOF", "angle"),
    ("eval", "eval \"printf '%s' V\" > O", "exact"),
    ("eval-single", "eval 'printf \"%s\" \"<'V'>\"' > O", "angle"),
    ("sh-heredoc-unquoted", "sh <<EOF\nprintf '%s' '<V>' > O\nEOF", "angle"),
    ("sh-c-twice", 'sh -c "sh -c \'printf %s \\"<V>\\" > O\'"', "angle"),
    ("case", "case V in *) printf '%s' V > O;; esac", "exact"),
    ("subshell-and", "(true && printf '%s' \"<V>\") > O", "angle"),
    ("comment", "true # V\nprintf ok > O", "ok"),
    ("assignment", "x=V; printf '%s' \"$x\" > O", "exact"),
]


def expected(how: str, value: str) -> str | None:
    if how == "exact":
        return value
    if how == "angle":
        return f"<{value}>"
    if how == "heredoc":
        return f"<{value}>\n"
    if how == "subst":  # $( ) drops trailing newlines
        return value.rstrip("\n")
    return "ok"


def refused(ctx: str, value: str) -> bool:
    """Values the renderer refuses in this context (checked in test_refusals below)."""
    return ctx.startswith("heredoc") and ("\nEOF" in f"\n{value}" or value == "EOF")


def ref(k: int) -> str:
    return "{{ p" + str(k) + " }}"


def payload(k: int) -> str:
    return PAYLOADS[k].replace("{k}", str(k))


def build(proj: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """One playbook with a step per case; returns it and {output file: expected text}."""
    steps: list[dict[str, Any]] = []
    want: dict[str, str] = {}
    variables = {f"p{k}": payload(k) for k in range(len(PAYLOADS))}
    for ctx, template, how in CONTEXTS:
        for k in range(len(PAYLOADS)):
            value = payload(k)
            if refused(ctx, value):
                continue
            out = f"out/{ctx}-{k}"
            cmd = template.replace("V", ref(k)).replace("O", out)
            steps.append({"id": f"c_{ctx.replace('-', '_')}_{k}", "run": cmd})
            want[out] = expected(how, value) or ""
    for k in range(len(PAYLOADS)):
        value = payload(k)
        v = ref(k)
        # guards, verify, env values, a host's own output fed back into a command
        steps.append(
            {"id": f"unless_{k}", "run": {"command": "true", "unless": f"printf '%s' \"{v}\" > out/u-{k}; false"}}
        )
        steps.append({"id": f"only_if_{k}", "run": {"command": "true", "only_if": f"printf '%s' {v} > out/o-{k}"}})
        steps.append({"id": f"verify_{k}", "run": "true", "verify": f"printf '%s' '{v}' > out/v-{k}"})
        steps.append({"id": f"env_{k}", "run": {"command": "printf '%s' \"$X\" > out/e-" + str(k), "env": {"X": v}}})
        steps.append({"id": f"src_{k}", "run": {"command": f"printf '%s' {v}", "changed_when": "false"}})
        steps.append(
            {"id": f"fed_{k}", "run": "printf '%s' \"got: {{ steps.src_" + str(k) + '.stdout }}" > out/f-' + str(k)}
        )
        for tag in ("u", "o", "v", "e"):
            want[f"out/{tag}-{k}"] = value
        want[f"out/f-{k}"] = f"got: {value}"
        if value and "/" not in value and value not in (".", ".."):  # file names, line, template vars
            steps.append({"id": f"file_{k}", "file": {"path": f"{proj}/out/n-{{{{ p{k} }}}}", "content": "x"}})
            want[f"out/n-{value}"] = "x"
        steps.append({"id": f"line_{k}", "line": {"path": f"out/l-{k}", "line": f"L={v}", "create": True}})
        steps.append({"id": f"tmpl_{k}", "template": {"src": "t.j2", "dest": f"out/t-{k}", "vars": {"v": v}}})
        if "\n" not in value:
            want[f"out/l-{k}"] = f"L={value}\n"
        want[f"out/t-{k}"] = f"[{value}]\n"
    return {"opsrun": 1, "name": "injection", "hosts": "local", "vars": variables, "steps": steps}, want


def sandboxed(proj: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`opsrun ARGS` in a bubblewrap sandbox: read-only /, private /tmp, no network, only
    the project folder writable."""
    # a checkout or venv under /tmp (a CI runner's work folder may be there) is bound back in, read-only
    back = sorted({str(p) for p in (ROOT, Path(sys.prefix)) if str(p).startswith("/tmp/")})
    argv = [
        str(BWRAP), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        *[a for p in back for a in ("--ro-bind", p, p)],
        "--bind", str(proj), str(proj), "--chdir", str(proj), "--unshare-all", "--die-with-parent",
        "--setenv", "PYTHONPATH", str(ROOT), sys.executable, "-m", "runner", *args,
    ]  # fmt: skip
    return subprocess.run(argv, cwd=proj, text=True, capture_output=True, timeout=timeout)


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    require_peer(BWRAP is not None, "bwrap (apt-get install bubblewrap)")
    (tmp_path / "out").mkdir()
    (tmp_path / "t.j2").write_text("[{{ v }}]\n")
    return tmp_path


def test_injection_matrix_applied_in_a_sandbox(proj: Path) -> None:
    doc, want = build(proj)
    (proj / "pb.yaml").write_text(json.dumps(doc))
    res = sandboxed(proj, "apply", "pb.yaml", "--yes")
    markers = sorted(p.name for p in proj.rglob("PWNED-*"))
    assert not markers, f"payloads ran code: {[payload(int(m.split('-')[1])) for m in markers]}"
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    wrong = {}
    for name, text in want.items():
        path = proj / name
        got = path.read_text() if path.exists() else None
        if got != text:
            wrong[name] = (text, got)
    assert not wrong, f"{len(wrong)} values did not arrive intact: {dict(list(wrong.items())[:8])}"
    assert len(want) > 500


def test_names_in_probes_are_quoted(proj: Path) -> None:
    """Paths reach probes quoted, never as code; package and service names that do not fit
    their tool's grammar are refused before any probe (exit 4), so nothing is sent at all.
    (Names starting with '-' are option injection, checked in tests/test_names.py.)"""
    paths: list[dict[str, Any]] = []
    names: list[dict[str, Any]] = []
    for k in range(len(PAYLOADS)):
        if payload(k).startswith("-") or not payload(k):
            continue
        names.append({"id": f"pkg_{k}", "package": {"name": ref(k), "state": "present"}})
        names.append({"id": f"svc_{k}", "service": {"name": ref(k), "state": "started"}})
        paths.append({"id": f"creates_{k}", "run": {"command": "true", "creates": ref(k)}})
    variables = {f"p{k}": payload(k) for k in range(len(PAYLOADS))}
    for steps, codes in ((paths, (0, 2)), (names, (4,))):
        (proj / "pb.yaml").write_text(
            json.dumps({"opsrun": 1, "name": "n", "hosts": "local", "vars": variables, "steps": steps})
        )
        res = sandboxed(proj, "plan", "pb.yaml")
        assert res.returncode in codes, (res.stdout + res.stderr)[-3000:]
        assert not sorted(p.name for p in proj.rglob("PWNED-*"))


# ---------------------------------------------------------------- refusals (render only)


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("cat <<EOF\n{{ v }}\nEOF", "a\nEOF\ntouch PWNED"),
        ("cat <<'EOF'\nE{{ v }}\nEOF", "OF\ntouch PWNED"),
        ("cat <<-EOF\n\t{{ v }}\nEOF", "x\n\t\tEOF\ntouch PWNED"),
        ("sh -c 'cat <<EOF\n{{ v }}\nEOF'", "a\nEOF\ntouch PWNED"),
    ],
)
def test_values_that_would_end_a_heredoc_are_refused(template: str, value: str) -> None:
    with pytest.raises(RenderError, match="end the heredoc"):
        render_text(template, {"v": value}, shell=True)


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("echo $(( {{ v }} + 1 ))", "arithmetic"),
        ("(( n = {{ v }} ))", "arithmetic"),
        ("[[ 1 -eq {{ v }} ]]", "arithmetic"),
        ("let n={{ v }}", "arithmetic"),
        ("echo ${X:-{{ v }}}", r"\$\{…\}"),
        ("echo ${{ v }}", "variable name"),
        ("export {{ v }}=1", "variable name"),
        ("echo \\{{ v }}", "backslash"),
        ('echo "\\{{ v }}"', "backslash"),
        ("cat <<{{ v }}\nx\n{{ v }}\n", "delimiter"),
        ("echo {{ v }} | sh", "pipeline into a shell"),
        ("printf '%s' {{ v }} | sudo bash -s", "pipeline into a shell"),
        ('sh -c "echo $(echo {{ v }})"', "command substitution"),
        ("echo $'{{ v }}'", r"\$'…'"),
    ],
)
def test_contexts_that_cannot_be_made_safe_are_refused(template: str, why: str) -> None:
    with pytest.raises(RenderError, match=why):
        render_text(template, {"v": "x"}, shell=True)
    problems = render.shell_problems(template)  # validate finds the same, without rendering
    assert problems and any(__import__("re").search(why, reason) for _, reason, _ in problems)


def test_validate_reports_refused_contexts_with_location(tmp_path: Path) -> None:
    pb = tmp_path / "pb.yaml"
    pb.write_text(
        "opsrun: 1\nname: t\nhosts: local\nvars: {n: 1}\nsteps:\n"
        "  - id: a\n    run: echo ok\n"
        "  - id: b\n    run:\n      command: |\n        echo fine {{ n }}\n        echo $(( {{ n }} + 1 ))\n"
        "    verify: echo ${X:-{{ n }}}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "runner", "validate", str(pb)], text=True, capture_output=True, cwd=tmp_path, timeout=60
    )
    assert res.returncode == 4, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert f"{pb}:12:" in out and "arithmetic" in out and "steps[1].run.command" in out
    assert f"{pb}:13:" in out and "steps[1].verify" in out
    assert "hint:" in out


def test_raw_opts_out_and_quote_is_a_no_op() -> None:
    assert render_text("echo {{ v | raw }}", {"v": "$HOME"}, shell=True) == "echo $HOME"
    assert render_text('echo "{{ v | quote }}"', {"v": "$x"}, shell=True) == 'echo "\\$x"'
    assert render_text("echo {{ v | quote }}", {"v": "a b"}) == "echo 'a b'"  # text fields: shlex


def test_analysis_is_cached_per_template_skeleton() -> None:
    from runner import shellquote

    shellquote.analyse.cache_clear()
    for i in range(200):
        render_text('echo "{{ v }}" {{ w }}', {"v": i, "w": "x y"}, shell=True)
    info = shellquote.analyse.cache_info()
    assert info.misses == 1 and info.hits == 199
    t0 = time.perf_counter()
    for i in range(2000):
        render_text('echo "{{ v }}" {{ w }}', {"v": i, "w": "x y"}, shell=True)
    assert time.perf_counter() - t0 < 2.0


# ---------------------------------------------------------------- secrets off argv


@pytest.fixture
def _clean_secrets() -> Any:
    secrets.REGISTRY.clear()
    yield
    secrets.REGISTRY.clear()


@pytest.mark.usefixtures("_clean_secrets")
def test_secrets_render_as_variable_references_in_every_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_SECRET_TOK", "hunter2-xyz")
    cases = {
        "echo {{ secret('TOK') }}": 'echo "${OPSRUN_SECRET_TOK}"',
        "echo \"a{{ secret('TOK') }}b\"": 'echo "a${OPSRUN_SECRET_TOK}b"',
        "echo 'a{{ secret('TOK') }}b'": "echo 'a'\"${OPSRUN_SECRET_TOK}\"'b'",
        "sh -c 'echo {{ secret('TOK') }}'": "sh -c 'echo \"${OPSRUN_SECRET_TOK}\"'",
        "echo x # {{ secret('TOK') }}": "echo x # ***",
        "echo {{ 'u:' ~ secret('TOK') }}": 'echo u:"${OPSRUN_SECRET_TOK}"',
    }
    for template, want in cases.items():
        out = render_text(template, {}, shell=True)
        assert out == want, template
        assert "hunter2" not in out
    for template in ("cat <<'EOF'\n{{ secret('TOK') }}\nEOF", "sudo sh -c 'echo {{ secret('TOK') }}'"):
        with pytest.raises(RenderError, match="secret cannot be inserted"):
            render_text(template, {}, shell=True)


def _cmdlines() -> list[bytes]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                continue
    return out


def test_secrets_never_appear_in_any_cmdline_while_the_command_runs(tmp_path: Path) -> None:
    secret = "s3cr3t-" + os.urandom(6).hex()
    (tmp_path / "out").mkdir()
    pb = tmp_path / "pb.yaml"
    pb.write_text(
        "opsrun: 1\nname: s\nhosts: local\nsteps:\n"
        "  - id: a\n    run:\n"
        "      command: printf '%s' {{ secret('TOK') }} > out/a; printf '%s' \"$PGPASS\" > out/b; "
        "sh -c 'printf %s \"{{ secret('TOK') }}\" > out/c; sleep 2'\n"
        "      env: {PGPASS: \"pw={{ secret('TOK') }}\"}\n"
        "      unless: test \"{{ secret('TOK') }}\" = nope\n"
        "    verify: test \"$(cat out/a)\" = {{ secret('TOK') }}\n"
    )
    env = {**os.environ, "OPSRUN_SECRET_TOK": secret, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "apply", str(pb), "--yes"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen = 0
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            lines = _cmdlines()
            leaked = [c for c in lines if secret.encode() in c]
            assert not leaked, leaked
            seen += any(b"sleep" in c for c in lines)
            time.sleep(0.02)
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert seen, "never saw the command running"
    assert (tmp_path / "out/a").read_text() == secret
    assert (tmp_path / "out/b").read_text() == f"pw={secret}"
    assert (tmp_path / "out/c").read_text() == secret
    journal = "".join(p.read_text() for p in (tmp_path / ".opsrun").rglob("*.jsonl"))
    assert journal and secret not in journal and secret not in out


def test_secret_preamble_leaves_the_commands_own_stdin_intact() -> None:
    from runner.transports.base import with_secrets

    env = (("OPSRUN_SECRET_A", "multi\nline\n value "), ("OPSRUN_SECRET_B", ""), ("OPSRUN_SECRET_C", "x\\y'\""))
    cmd, stdin = with_secrets(
        'printf "%s|%s|%s|" "$OPSRUN_SECRET_A" "$OPSRUN_SECRET_B" "$OPSRUN_SECRET_C"; cat', env, b"own\nstdin\n"
    )
    for shell in ("sh", "bash", "dash", "busybox"):
        if shutil.which(shell) is None:
            continue
        argv = [shell, "sh", "-c", cmd] if shell == "busybox" else [shell, "-c", cmd]
        res = subprocess.run(argv, input=stdin, capture_output=True, timeout=10)
        assert res.stdout == b"multi\nline\n value ||x\\y'\"|own\nstdin\n", (shell, res)


SECRET_CMD = 'printf "%s|" "$OPSRUN_SECRET_X"; cat'
SECRET_ENV = (("OPSRUN_SECRET_X", "pa55 'w\"rd\nline2"),)


def _check_secret_delivery(t: Any) -> None:
    from runner.model import Probe, ShellCommand

    r = t.run(ShellCommand(SECRET_CMD, SECRET_ENV), stdin=b"own stdin")
    assert (r.rc, r.stdout) == (0, b"pa55 'w\"rd\nline2|own stdin")
    r = t.run(ShellCommand(SECRET_CMD, SECRET_ENV))  # no stdin of its own: EOF after the secrets
    assert (r.rc, r.stdout) == (0, b"pa55 'w\"rd\nline2|")
    answers = t.probe([Probe("a", ShellCommand('printf "%s" "$OPSRUN_SECRET_X"', SECRET_ENV)), Probe("b", "echo b")])
    assert answers["a"].stdout == b"pa55 'w\"rd\nline2" and answers["b"].stdout == b"b\n"


@pytest.mark.peer
def test_secrets_reach_ssh_commands_on_stdin(ssh_hosts: list[Any]) -> None:
    from runner.transports.ssh import SSHTransport

    with SSHTransport(ssh_hosts[0].host()) as t:
        _check_secret_delivery(t)


@pytest.mark.peer
def test_secrets_reach_adb_commands_on_stdin(fake_android: Any) -> None:
    from tests.test_adb import opened

    t = opened(fake_android())
    try:
        _check_secret_delivery(t)
    finally:
        t.close()


def test_secrets_reach_local_commands_on_stdin() -> None:
    from runner.model import Host
    from runner.transports.local import LocalTransport

    _check_secret_delivery(LocalTransport(Host("local", "local")))


@pytest.mark.parametrize(
    "template",
    ["read {{ v }}", "unset {{ v }}", "printf -v {{ v }} %s x", "declare -i n={{ v }}", "local -i n={{ v }}"],
)
def test_names_and_integer_declarations_are_refused(template: str) -> None:
    with pytest.raises(RenderError):
        render_text(template, {"v": "x"}, shell=True)


@pytest.mark.parametrize(
    "template",
    ["read -r x <<< {{ v }}", "read -p {{ v }} x", "local x={{ v }}", "cat < {{ v }} > {{ v }}", "cmd 2>&1 >> {{ v }}"],
)
def test_redirection_targets_and_values_are_plain_words(template: str) -> None:
    assert "'a b'" in render_text(template, {"v": "a b"}, shell=True)
