"""render.py: shell quoting of inserted values, strict undefined names, the sandbox,
native types for single expressions, pending step results and secrets."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from runner import render, secrets
from runner.model import ShellCommand
from runner.render import PendingResult, RenderError, StepResults, evaluate, render_params, render_text, render_value


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    secrets.REGISTRY.clear()
    yield
    secrets.REGISTRY.clear()


# ---------------------------------------------------------------- shell quoting

QUOTING = [
    # (value, rendered `echo {{ v }}`)
    ("plain", "echo plain"),
    ("/srv/app-1.2_x", "echo /srv/app-1.2_x"),
    ("a b", "echo 'a b'"),
    ("it's", "echo 'it'\"'\"'s'"),
    ('say "hi"', "echo 'say \"hi\"'"),
    ("$(reboot)", "echo '$(reboot)'"),
    ("`id`", "echo '`id`'"),
    ("x; rm -rf /", "echo 'x; rm -rf /'"),
    ("a && b | c > d", "echo 'a && b | c > d'"),
    ("*", "echo '*'"),
    ("", "echo ''"),
    (None, "echo ''"),
    (8080, "echo 8080"),
    (True, "echo true"),
    (["a b", "c", "$HOME"], "echo 'a b' c '$HOME'"),
]


@pytest.mark.parametrize(("value", "expected"), QUOTING, ids=[repr(v) for v, _ in QUOTING])
def test_shell_fields_quote_inserted_values(value: Any, expected: str) -> None:
    assert render_text("echo {{ v }}", {"v": value}, shell=True) == expected


@pytest.mark.parametrize(
    "value", ["a b", "it's", '"q"', "$(touch /tmp/opsrun-pwned)", "x; y", "`id`", "\\n", "tab\there", "new\nline"]
)
def test_quoted_values_reach_a_real_shell_as_one_argument(value: str) -> None:
    command = render_text("printf '%s\\0' {{ v }}", {"v": value}, shell=True)
    res = subprocess.run(["sh", "-c", command], capture_output=True, timeout=10)
    assert res.returncode == 0
    assert res.stdout == value.encode() + b"\0"


def test_raw_is_not_quoted_and_quote_filter_is_not_doubled() -> None:
    assert render_text("ls {{ flags | raw }} {{ d }}", {"flags": "-l -a", "d": "my dir"}, shell=True) == (
        "ls -l -a 'my dir'"
    )
    assert render_text("echo {{ v | quote }}", {"v": "a b"}, shell=True) == "echo 'a b'"
    assert render_text("echo {{ v | raw }}", {"v": None}, shell=True) == "echo "


def test_text_fields_are_not_quoted() -> None:
    assert render_text("name={{ v }}", {"v": "a b; $(x)"}) == "name=a b; $(x)"
    assert render_text("v={{ v }}", {"v": None}) == "v="


def test_loops_and_literals_in_shell_fields() -> None:
    out = render_text("touch{% for f in files %} {{ f }}{% endfor %}", {"files": ["a", "b c"]}, shell=True)
    assert out == "touch a 'b c'"
    assert render_text("echo {{ 'x y' }}", {}, shell=True) == "echo 'x y'"


def test_render_params_quotes_only_shell_fields_and_skips_late_ones() -> None:
    params = {"command": "rm {{ f }}", "creates": "{{ f }}", "changed_when": "{{ nope }}", "n": 3}
    out = render_params(params, {"f": "a b"}, frozenset({"command"}), frozenset({"changed_when"}))
    assert out == {"command": "rm 'a b'", "creates": "a b", "changed_when": "{{ nope }}", "n": 3}


# ---------------------------------------------------------------- strict undefined


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: render_text("echo {{ nope }}", {}), "nope"),
        (lambda: render_text("echo {{ nope }}", {}, shell=True), "nope"),
        (lambda: render_text("{{ d.missing }}", {"d": {}}), "missing"),
        (lambda: render_value("{{ nope }}", {}), "nope"),  # single expression, native path
        (lambda: render_value(["ok", {"k": "{{ nope2 }}"}], {}), "nope2"),
        (lambda: evaluate("nope", {}), "nope"),  # a bare name in `when:`
        (lambda: evaluate("nope == 1", {}), "nope"),
        (lambda: evaluate("d.missing", {"d": {}}), "missing"),
    ],
)
def test_undefined_names_are_errors_naming_the_name(call: Any, name: str) -> None:
    with pytest.raises(RenderError) as info:
        call()
    assert f"'{name}' is undefined" in info.value.message or f"no attribute '{name}'" in info.value.message


def test_default_filter_and_is_defined_work() -> None:
    assert render_text("{{ x | default('d') }}", {}) == "d"
    assert evaluate("x is defined", {}) is False


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ n + 'x' }}", "TypeError"),
        ("{{ x | nosuchfilter }}", "nosuchfilter"),
        ("{% if %}", "template error"),
        ("{{ x", "template error"),
    ],
)
def test_broken_templates_are_render_errors_not_tracebacks(source: str, fragment: str) -> None:
    with pytest.raises(RenderError) as info:
        render_text(source, {"n": 1, "x": 1})
    assert fragment in info.value.message


def test_broken_expressions_are_render_errors() -> None:
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        evaluate("1 / 0", {})
    with pytest.raises(RenderError, match="bad expression"):
        evaluate("rc ==", {"rc": 0})


# ---------------------------------------------------------------- sandbox


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ x.__class__ }}",
    "{{ x.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ lipsum.__globals__ }}",
    "{{ f.__code__ }}",
    "{{ items.append(3) }}",  # immutable sandbox: no mutation of the caller's data
]


@pytest.mark.parametrize("source", ESCAPES)
@pytest.mark.parametrize("mode", ["text", "shell", "native"])
def test_sandbox_blocks_attribute_escapes(source: str, mode: str) -> None:
    items = [1, 2]
    variables = {"x": 1, "f": len, "items": items}
    with pytest.raises(RenderError) as info:
        if mode == "native":
            render_value(source, variables)
        else:
            render_text(source, variables, shell=mode == "shell")
    assert "unsafe" in info.value.message or "undefined" in info.value.message
    assert "<class" not in info.value.message
    assert items == [1, 2]


# ---------------------------------------------------------------- native values


def test_single_expression_keeps_its_type() -> None:
    v = {"items": ["a", "b"], "n": 3, "m": {"k": 1}, "flag": False}
    assert render_value("{{ items }}", v) == ["a", "b"]
    assert render_value("  {{ n }} ", v) == 3
    assert render_value("{{ m }}", v) == {"k": 1}
    assert render_value("{{ flag }}", v) is False
    assert render_value("{{ items | length }}", v) == 2
    assert render_value({"loop": "{{ items }}", "deep": ["{{ n }}"]}, v) == {"loop": ["a", "b"], "deep": [3]}


def test_mixed_text_and_shell_fields_render_to_strings() -> None:
    v = {"items": ["a", "b"], "n": 3}
    assert render_value("n={{ n }}", v) == "n=3"
    assert render_value("{{ n }} and {{ n }}", v) == "3 and 3"
    assert render_value("{{ items }}", v, shell=True) == "a b"
    assert render_value(5, v) == 5
    assert render_value("no template", v) == "no template"


# ---------------------------------------------------------------- step results


def _steps() -> StepResults:
    return StepResults({"check": {"rc": 0, "stdout": "3\n"}, "items": {"rc": 7}}, {"later"})


def test_known_step_results_are_readable() -> None:
    v = {"steps": _steps()}
    assert evaluate("steps.check.rc == 0", v) is True
    assert render_text("{{ steps.check.stdout | trim }}", v) == "3"
    assert render_text("{{ steps['check'].rc }}", v) == "0"
    # a step id that is also a Mapping method name still reads the step
    assert evaluate("steps.items.rc", v) == 7


@pytest.mark.parametrize(
    "call",
    [
        lambda v: evaluate("steps.later.rc == 0", v),
        lambda v: render_text("echo {{ steps.later.stdout }}", v, shell=True),
        lambda v: render_value("{{ steps.later }}", v),
        lambda v: render_text("{{ steps['later'].rc }}", v),
    ],
)
def test_pending_step_results_raise_pending(call: Any) -> None:
    with pytest.raises(PendingResult) as info:
        call({"steps": _steps()})
    assert info.value.step_id == "later"


def test_unknown_step_is_an_undefined_error() -> None:
    with pytest.raises(RenderError, match="nope"):
        evaluate("steps.nope.rc", {"steps": _steps()})


# ---------------------------------------------------------------- secrets


def test_secret_marks_the_value_and_redact_masks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSRUN_SECRET_DB_PASSWORD", "s3cr3t-pa55")
    out = render_text("psql postgres://app:{{ secret('DB_PASSWORD') }}@db/app", {}, shell=True)
    # in a shell field the secret is a variable reference; the value travels beside it
    assert out == 'psql postgres://app:"${OPSRUN_SECRET_DB_PASSWORD}"@db/app'
    assert isinstance(out, ShellCommand) and out.env == (("OPSRUN_SECRET_DB_PASSWORD", "s3cr3t-pa55"),)
    assert secrets.redact("postgres://app:s3cr3t-pa55@db") == "postgres://app:***@db"
    value = render_value("{{ secret('DB_PASSWORD') }}", {})
    assert isinstance(value, secrets.Secret)
    assert "s3cr3t" not in repr(value)


def test_secret_plain_env_name_and_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-123456")
    monkeypatch.delenv("OPSRUN_SECRET_API_TOKEN", raising=False)
    assert secrets.redact(render_text("{{ secret('API_TOKEN') }}", {})) == "***"
    monkeypatch.delenv("OPSRUN_SECRET_NOPE", raising=False)
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(RenderError, match=r"secret\('NOPE'\) is not set"):
        render_text("{{ secret('NOPE') }}", {})


def test_truthy() -> None:
    assert [render.truthy(v) for v in ("yes", "On", " true ", "1", "no", "", "false", 0, 1, [], [0])] == [
        True, True, True, True, False, False, False, False, True, False, True,
    ]


# ---------------------------------------------------------------- quoting contexts (the lexer)


@pytest.mark.parametrize(
    ("template", "kind", "layers"),
    [
        ("echo {{ v }}", "word", ()),
        ('echo "a {{ v }} b"', "dq", ()),
        ("echo 'a {{ v }} b'", "sq", ()),
        ("cat <<EOF\n{{ v }}\nEOF", "heredoc", ()),
        ("cat <<'EOF'\n{{ v }}\nEOF", "heredoc-quoted", ()),
        ('cat <<"E F"\n{{ v }}\nE F', "heredoc-quoted", ()),
        ("true # {{ v }}", "comment", ()),
        ('echo "$(basename {{ v }})"', "word", ()),
        ('echo "$(echo "{{ v }}")"', "dq", ()),
        ("echo `echo {{ v }}`", "word", ("bq",)),
        ("sh -c 'echo {{ v }}'", "word", ("sq",)),
        ("bash -lc \"echo '{{ v }}'\"", "sq", ("dq",)),
        ("sudo -u app sh -c 'echo \"{{ v }}\"'", "dq", ("sq",)),
        ("su -c 'echo {{ v }}' app", "word", ("sq",)),
        ("sh -c \"sh -c 'echo {{ v }}'\"", "word", ("sq", "dq")),
        ("eval echo {{ v }}", "word", ("word",)),
        ("ssh -p 22 web1 ls {{ v }}", "word", ("word",)),
        ("ssh web1 <<'EOF'\nrm {{ v }}\nEOF", "word", ("heredoc-quoted",)),
        ("sh <<EOF\necho '{{ v }}'\nEOF", "sq", ("heredoc",)),
        ("case {{ v }} in a) echo ok;; esac", "word", ()),
        ('x={{ v }}; echo "$x"', "word", ()),
        ("echo ${HOME}/{{ v }}", "word", ()),
        ("echo a\\ b {{ v }}", "word", ()),
        ("printf '%s\\n' \"it's\" {{ v }}", "word", ()),
    ],
)
def test_the_lexer_finds_each_insertions_context(template: str, kind: str, layers: tuple[str, ...]) -> None:
    from runner import shellquote

    head, _, tail = template.partition("{{ v }}")
    analysis = shellquote.analyse((head, 0, tail) if tail else (head, 0))
    assert not analysis.refused, analysis.refused
    ctx = analysis.contexts[0]
    assert (ctx.kind, ctx.layers) == (kind, layers)
    value = 'it\'s $(touch /nonexistent/x) `id` "q" \\'
    out = render_text(template, {"v": value}, shell=True)
    assert "touch /nonexistent/x" in out  # present, but as data: the matrix test runs these


def test_ssh_host_word_is_not_the_remote_command() -> None:
    from runner import shellquote

    ctx = shellquote.analyse(("ssh -o BatchMode=yes ", 0, " uptime")).contexts[0]
    assert (ctx.kind, ctx.layers) == ("word", ())


def test_text_keeps_the_whitespace_written_around_a_single_expression() -> None:
    # content: "{{ motd }}\n" and `|` blocks end with the newline the author wrote
    assert render_value("{{ m }}\n", {"m": "hi"}) == "hi\n"
    assert render_value("  {{ m }}", {"m": "hi"}) == "  hi"
    assert render_value("{{ n }}\n", {"n": 3}) == 3  # a number, a list or a mapping keeps its type
    assert render_value("{{ m }}", {"m": "hi"}) == "hi"
