"""Redaction leaves digests whole: a short secret found by chance in a hash's hex is not a leak,
and masking it corrupted saved plans' fingerprints (every apply saw drift). A secret that is the
whole digest-looking text, or long enough not to be chance, is still masked."""

from runner import secrets
from runner.plan import drift


def test_short_secret_inside_a_digest_is_not_masked_but_elsewhere_is() -> None:
    secrets.mark("abc", "short")
    try:
        digest = "sha256:" + "0" * 20 + "abc" + "1" * 41
        assert secrets.redact(digest) == digest
        assert secrets.redact_data({"fingerprint": {"stat": digest}}) == {"fingerprint": {"stat": digest}}
        assert secrets.redact("password abc here") == "password *** here"
    finally:
        secrets.REGISTRY.clear()


def test_hex_secrets_are_still_masked() -> None:
    token = "deadbeefcafe0123456789ab"
    secrets.mark(token, "token")
    secrets.mark("0badc0ffee", "pin")
    try:
        assert secrets.redact(token) == "***"
        assert secrets.redact("0badc0ffee") == "***"
        assert "deadbeefcafe0123" not in secrets.redact("f" * 10 + token + "e" * 10)
    finally:
        secrets.REGISTRY.clear()


def test_a_saved_plan_fingerprint_with_a_secret_lookalike_does_not_drift() -> None:
    from runner.model import Change, StepPlan

    secrets.mark("abc", "short")
    try:
        fp = {"stat": "0" * 30 + "abc" + "1" * 31}
        now = StepPlan("local", "motd", "motd", "motd", "file", Change("create", "create file"), fingerprint=fp)
        saved = secrets.redact_data(now.to_json())
        assert drift(saved, now) is None
    finally:
        secrets.REGISTRY.clear()


def test_flat_events_without_known_secrets_are_copied_not_walked_and_masked_once_one_is() -> None:
    """redact_data's shortcut (no secret known, only plain values) gives an equal copy; a secret
    marked afterwards is masked in the same kind of event, and non-plain values still become text."""
    from pathlib import Path

    secrets.REGISTRY.clear()
    event = {"host": "h1", "rc": 0, "ok": True, "took": 0.5, "note": None, "message": "token s3cr3t-value"}
    out = secrets.redact_data(event)
    assert out == event and out is not event
    assert secrets.redact_data({"path": Path("/etc/x")}) == {"path": "/etc/x"}
    secrets.mark("s3cr3t-value", "token")
    try:
        assert secrets.redact_data(event)["message"] == "token ***"
    finally:
        secrets.REGISTRY.clear()
