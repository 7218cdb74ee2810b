"""`opsrun init`: the files of a ready playbook repo (inventory, a site playbook, gateway.yaml,
.gitignore, pre-commit, a CI workflow). Pure text plus one writer; imports only errors."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from runner.errors import InvalidInput, OpsrunError

INVENTORY = """\
# yaml-language-server: $schema=schemas/inventory.schema.json
# Hosts and groups. Reference: https://github.com/opsrun/opsrun/blob/main/docs/playbooks.md#inventory
opsrun: 1
vars:
  site_dir: /tmp/{slug}
hosts:
  local: {{transport: local}}
  # web1: {{address: 192.0.2.10, user: deploy, sudo: true}}
groups:
  workstation: {{hosts: [local]}}
  # web: {{hosts: [web1], vars: {{port: 8080}}}}
"""

SITE = """\
# yaml-language-server: $schema=schemas/playbook.schema.json
# `opsrun plan site.yaml` shows what would change; `opsrun apply site.yaml` does it.
opsrun: 1
name: site
description: What every host of {name} gets.
hosts: workstation
vars:
  owner_note: managed by opsrun
steps:
  - id: site_dir
    name: The site folder
    file: {{path: "{{{{ site_dir }}}}", state: directory, mode: "0755"}}
  - id: readme
    name: A note saying who manages this folder
    file:
      path: "{{{{ site_dir }}}}/README"
      content: |
        {{{{ owner_note }}}} ({name})
      mode: "0644"
  - id: uptime
    name: How long the host has been up (only reads)
    run: {{command: uptime, changed_when: false}}
    tags: [check]
"""

GATEWAY = """\
# yaml-language-server: $schema=schemas/gateway.schema.json
# LLM providers for `opsrun author` and the fixer; keys come from the environment.
# Check them with `opsrun gateway check`. Reference: docs/llm.md.
opsrun: 1
providers:
  ollama:
    kind: ollama
    model: qwen2.5-coder:7b
    api_base: http://127.0.0.1:11434
    timeout_s: 90
    max_concurrency: 1
  openai:
    kind: openai
    model: gpt-4o-mini
    api_key: env:OPENAI_API_KEY
    timeout_s: 60
routing:
  order: [ollama, openai]
  deadline_s: 180
"""

GITIGNORE = """\
# opsrun's journals, saved plans and lock: private, per machine
.opsrun/
"""

PRE_COMMIT = """\
# `pre-commit install` once; then every commit validates the opsrun files it touches
# (other YAML is skipped: --skip-other).
repos:
  - repo: local
    hooks:
      - id: opsrun-validate
        name: opsrun validate
        entry: opsrun validate --skip-other
        language: system
        files: \\.(ya?ml)$
        require_serial: true
"""

WORKFLOW = """\
# Plans every pull request (the plan as the job summary, JUnit for the checks tab) and
# applies the reviewed playbooks when they land on main. Reference: docs/ci.md.
name: opsrun
on:
  pull_request:
  push:
    branches: [main]
jobs:
  opsrun:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with: {{python-version: "3.11"}}
      - run: pip install opsrun
      - name: validate
        run: opsrun validate . --junit reports/validate.xml
      - name: plan
        if: github.event_name == 'pull_request'
        run: opsrun plan site.yaml --format markdown --junit reports/plan.xml >> "$GITHUB_STEP_SUMMARY"
      - name: apply
        if: github.event_name == 'push'
        run: opsrun apply site.yaml --yes --junit reports/apply.xml
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: opsrun
          path: |
            reports/
            .opsrun/runs/
          include-hidden-files: true
"""

README = """\
# {name}

Playbooks run by [opsrun](https://github.com/opsrun/opsrun).

```sh
opsrun validate .          # schema, semantics, what plan finds offline
opsrun plan site.yaml      # what would change, per host and step
opsrun apply site.yaml     # do it (asks first on a terminal; --yes in CI)
```

- `inventory.yaml`: hosts and groups; `site.yaml`: the site playbook.
- `gateway.yaml`: LLM providers for `opsrun author`.
- `.opsrun/` (ignored by git): journals of runs, saved plans.
- `schemas/`: the JSON Schemas your editor reads through each file's first line.
"""


def slug(name: str) -> str:
    """`name` as one safe path and YAML word: letters, digits, `.`, `_` and `-`."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return text or "opsrun-site"


def _text(name: str) -> str:
    """`name` as plain text inside YAML and Markdown (no quotes or braces to escape)."""
    return re.sub(r"[^\w .-]+", "-", name).strip() or "opsrun-site"


def files(name: str, schemas: dict[str, str]) -> dict[str, str]:
    """Relative path -> text of every file `opsrun init` writes (`name`: the repo's, from its folder)."""
    words = {"name": _text(name), "slug": slug(name)}
    out = {
        "inventory.yaml": INVENTORY.format(**words),
        "site.yaml": SITE.format(**words),
        "gateway.yaml": GATEWAY,
        ".gitignore": GITIGNORE,
        ".pre-commit-config.yaml": PRE_COMMIT,
        ".github/workflows/opsrun.yml": WORKFLOW.format(),
        "README.md": README.format(**words),
    }
    for kind, text in schemas.items():
        out[f"schemas/{kind}.schema.json"] = text if text.endswith("\n") else text + "\n"
    return out


def write(root: Path, contents: dict[str, str], *, force: bool = False) -> list[str]:
    """Write the files under `root`; refuses to overwrite any existing file unless `force`.
    Nothing is written when something would be overwritten, and every file is written whole
    (staged beside its place, then renamed). Returns the paths written."""
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root}: not a folder", hint="give a folder (created when missing)")
    existing = sorted(rel for rel in contents if os.path.lexists(root / rel))
    if existing and not force:
        raise InvalidInput(
            f"{root}: would overwrite {', '.join(existing)}",
            hint="pick an empty folder, or pass --force to overwrite these files",
        )
    blocked = sorted(rel for rel in existing if (root / rel).is_dir())
    if blocked:
        raise InvalidInput(f"{root}: {', '.join(blocked)} is a folder where init writes a file")
    staged: list[tuple[Path, Path]] = []
    try:
        for rel, text in contents.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".init", dir=path.parent)
            staged.append((Path(name), path))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        for staged_file, path in staged:
            os.replace(staged_file, path)
    except OSError as exc:
        for staged_file, _ in staged:
            staged_file.unlink(missing_ok=True)
        raise OpsrunError(f"cannot write into {root}: {exc.strerror or exc}") from None
    return list(contents)
