"""Reading inventories in any format opsrun knows: its own YAML, Ansible INI and YAML, executable
(dynamic) inventories, `host1,host2,` lists and inventory folders. Talks to no target.

`read(path)` detects the format from the file itself and returns an opsrun-shaped Document
(positions pointing into the original text) for runner/inventory/build.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runner import load
from runner.errors import Diagnostic, InvalidInput
from runner.inventory import ansible, script

YAML_SUFFIXES = (".yml", ".yaml", ".json")
# not inventory files in an inventory folder (Ansible's INVENTORY_IGNORE_EXTS and friends)
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
IGNORED_FOLDERS = ("group_vars", "host_vars")


@dataclass
class Read:
    """An inventory as read: the opsrun-shaped document, its format and what it warned."""

    doc: load.Document
    kind: str  # opsrun | ini | yaml | script | list | folder
    folder: Path | None  # where its group_vars/ and host_vars/ are looked for
    warnings: list[Diagnostic] = field(default_factory=list)


def read(path: str) -> Read:
    p = Path(path)
    if not p.exists() and "," in path:
        return _host_list(path)
    if p.is_dir():
        return _folder(p)
    tree = ansible.Tree(str(p), "")
    if script.is_program(p):
        tree = script.read(p)
        return Read(tree.document(), "script", p.parent, tree.warnings)
    kind, doc = _parse(p, tree)
    if doc is not None:
        return Read(doc, kind, p.parent)
    return Read(tree.document(), kind, p.parent, tree.warnings)


def _parse(p: Path, tree: ansible.Tree) -> tuple[str, load.Document | None]:
    """One static file: an opsrun inventory (returned), or an Ansible one (added to `tree`)."""
    text = _text(p)
    tree.text += text if not tree.text else f"\0{p.name}\0{text}"
    suffix = p.suffix.lower()
    if suffix == ".ini":
        ansible.parse_ini(text, str(p), tree)
        return "ini", None
    try:
        doc = load.parse(text, str(p))
    except InvalidInput:
        if suffix in YAML_SUFFIXES:
            raise
        ansible.parse_ini(text, str(p), tree)  # `hosts`, `inventory`: INI is Ansible's default
        return "ini", None
    data = doc.data
    if isinstance(data, dict) and "plugin" in data and "opsrun" not in data:
        raise InvalidInput(f"{p} configures an Ansible inventory plugin", [doc.diag(
            ("plugin",), f"inventory plugin '{data['plugin']}': opsrun does not run Ansible inventory plugins",
            key=True, hint="for Proxmox guests, use a `proxmox:` source in a group (docs/playbooks.md"
                           "#proxmox-guests-as-hosts); else export it once: "
                           "ansible-inventory -i FILE --list --yaml > hosts.yml")])
    if isinstance(data, dict) and "_meta" in data and "opsrun" not in data:
        ansible.from_list_json(doc, tree)  # a saved `ansible-inventory --list`
        return "yaml", None
    if ansible.looks_like_ansible_yaml(data):
        ansible.from_yaml(doc, tree)
        return "yaml", None
    if isinstance(data, dict) or suffix in YAML_SUFFIXES or data is None:
        return "opsrun", doc
    ansible.parse_ini(text, str(p), tree)
    return "ini", None


def _text(p: Path) -> str:
    """The file's text, bounded like every YAML input (load.read's errors for missing files)."""
    try:
        with p.open("rb") as fh:
            raw = fh.read(load.MAX_BYTES + 1)
    except FileNotFoundError:
        raise InvalidInput(f"file not found: {p}", [Diagnostic(str(p), 0, 0, "no such file")]) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {p}", [Diagnostic(str(p), 0, 0, f"cannot read: {exc}")]) from None
    if len(raw) > load.MAX_BYTES:
        raise InvalidInput(f"{p} is too large", [Diagnostic(
            str(p), 0, 0, f"inventory file larger than {load.MAX_BYTES // (1024 * 1024)} MiB",
            hint="split it into several files in an inventory folder")])
    try:
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"cannot read {p}", [Diagnostic(str(p), 0, 0, f"not UTF-8 text: {exc}")]) from None


def _host_list(spec: str) -> Read:
    """`-i web1,web2,` (Ansible's host list): ssh hosts reached by their names."""
    tree = ansible.Tree("<host list>", spec)
    for i, raw in enumerate(spec.split(",")):
        name = raw.strip()
        if not name:
            continue
        where = ("<host list>", 1, i + 1)
        try:
            base, port = ansible.split_port(name)
        except ValueError as exc:
            tree.error(where, f"host '{name}': {exc}")
            continue
        tree.host(base, where)
        tree.member("all", base, where)
        if port is not None:
            tree.host_var(base, "ansible_port", port, where)
    return Read(tree.document(), "list", None, tree.warnings)


def _folder(folder: Path) -> Read:
    """Every inventory file in the folder (name order; not group_vars/, host_vars/, hidden or
    ignored files), merged as Ansible merges them."""
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(IGNORED_SUFFIXES)
        and p.name not in IGNORED_FOLDERS)
    if not files:
        raise InvalidInput(f"{folder}: no inventory file in the folder", [Diagnostic(
            str(folder), 0, 0, "an inventory folder holds inventory files (INI, YAML or programs)",
            hint="add e.g. hosts.ini, or give -i the file itself")])
    tree = ansible.Tree(str(folder), "")
    opsrun_docs: list[load.Document] = []
    for f in files:
        if script.is_program(f):
            part = script.read(f)
            _merge(tree, part)
            tree.text += f"\0{f.name}\0{part.text}"
            continue
        _, doc = _parse(f, tree)
        if doc is not None:
            opsrun_docs.append(doc)
    if opsrun_docs:
        if len(files) > 1:
            raise InvalidInput(f"{folder}: an opsrun inventory cannot be merged with others", [Diagnostic(
                opsrun_docs[0].file, 1, 1, "an inventory folder may hold one opsrun inventory, or Ansible files",
                hint="give -i the opsrun inventory file itself")])
        return Read(opsrun_docs[0], "opsrun", folder)
    return Read(tree.document(), "folder", folder, tree.warnings)


def _merge(into: ansible.Tree, part: ansible.Tree) -> None:
    """Add a separately read tree (an inventory program's) to a folder's tree."""
    into.errors += part.errors
    into.warnings += part.warnings
    for h, hv in part.hosts.items():
        into.host(h, part.at.get(("host", h), (part.file, 0, 0)))
        for k, v in hv.items():
            into.host_var(h, k, v, part.at.get(("hostvar", h, k), (part.file, 0, 0)))
    for g, grp in part.groups.items():
        into.group(g, part.at.get(("group", g), (part.file, 0, 0)))
        for h in grp.hosts:
            into.member(g, h, part.at.get(("member", g, h), (part.file, 0, 0)))
        for c in grp.children:
            into.child(g, c, part.at.get(("child", g, c), (part.file, 0, 0)))
        for k, v in grp.vars.items():
            into.group_var(g, k, v, part.at.get(("groupvar", g, k), (part.file, 0, 0)))


def relocate(diags: list[Diagnostic], doc: load.Document) -> list[Diagnostic]:
    """Diagnostics made against a folder's merged document, pointed at the file each value is in."""
    if not isinstance(doc, ansible.SourcedDocument) or not getattr(doc, "files", None):
        return diags
    by_path = {load.json_path(k): k for k in doc.values}
    out = []
    for d in diags:
        key = by_path.get(d.path)
        file = doc.file_of(key) if key is not None else doc.file
        out.append(d if file == d.file else Diagnostic(file, d.line, d.col, d.message, d.path, d.hint, d.severity))
    return out
