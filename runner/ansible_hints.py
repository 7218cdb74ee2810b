"""Ansible habits -> the opsrun way, one line each: what schema errors say when a playbook
uses an Ansible key. Pure data and lookups; imports nothing from runner."""

from __future__ import annotations

# key -> (what to write in opsrun, a one-line example); Ansible modules first
STEP_KINDS: dict[str, tuple[str, str]] = {
    "shell": ("a shell command is `run`", "run: systemctl reload nginx"),
    "command": ("a command is `run`", "run: uptime"),
    "raw": ("a command is `run`", "run: uptime"),
    "script": ("a script is `run` (with its text, or a `copy` then `run`)", "run: sh /usr/local/bin/setup.sh"),
    "apt": ("packages are `package` (the host's manager is found)", "package: {name: nginx, state: present}"),
    "yum": ("packages are `package` (the host's manager is found)", "package: {name: nginx, state: present}"),
    "dnf": ("packages are `package` (the host's manager is found)", "package: {name: nginx, state: present}"),
    "apk": ("packages are `package` (the host's manager is found)", "package: {name: nginx, state: present}"),
    "ansible.builtin.package": ("packages are `package`", "package: {name: nginx, state: present}"),
    "systemd": ("services are `service`", "service: {name: nginx, state: started, enabled: true}"),
    "systemd_service": ("services are `service`", "service: {name: nginx, state: started, enabled: true}"),
    "lineinfile": ("a line in a file is `line`",
                   "line: {path: /etc/hosts, line: '10.0.0.5 db', regexp: '\\sdb$'}"),
    "blockinfile": ("a managed block is `file` with `content` or a `template`",
                    "template: {src: templates/block.j2, dest: /etc/app.conf}"),
    "replace": ("edits are `line` (one line) or `template` (the whole file)",
                "line: {path: /etc/ssh/sshd_config, regexp: '^#?PermitRootLogin', line: 'PermitRootLogin no'}"),
    "stat": ("a step that reads is `run` with `register`", "run: stat -c %s /etc/hosts"),
    "debug": ("a message is a `run` of echo (it only reads)", "run: echo 'port is {{ port }}'"),
    "get_url": ("downloads are a `run` with `creates`",
                "run: {command: 'curl -fsSLo /opt/x.tgz https://example.org/x.tgz', creates: /opt/x.tgz}"),
    "unarchive": ("archives are a `run` with `creates`",
                  "run: {command: 'tar -xzf /opt/x.tgz -C /opt', creates: /opt/x}"),
    "user": ("users are a `run` guarded by `unless`",
             "run: {command: 'useradd -m deploy', unless: 'id deploy'}"),
}

# step keys that are not a kind in Ansible either
STEP_KEYS: dict[str, tuple[str, str]] = {
    "with_items": ("loops are `loop` (the item is `item`)", "loop: [a, b]"),
    "with_list": ("loops are `loop` (the item is `item`)", "loop: [a, b]"),
    "with_dict": ("loops are `loop` over a list of mappings", "loop: [{name: a, port: 1}]"),
    "loop_control": ("the loop item is always `item`", "loop: [a, b]"),
    "become": ("a step's privilege is `sudo:` (true or false: it overrides the host's `sudo`)", "sudo: true"),
    "become_user": ("opsrun's sudo runs as root; as another user, say so in the command",
                    "run: sudo -u postgres psql -c 'select 1'"),
    "become_method": ("opsrun's privilege is sudo (`sudo: true` on the step or the host)", "sudo: true"),
    "listen": ("a handler is notified by its `id` (steps write `notify: <id>`)", "id: restart_nginx"),
    "meta": ("`meta: flush_handlers` is a step of its own that runs the notified handlers now",
             "flush_handlers: true"),
    "delegate_to": ("a step runs on other hosts with its own `hosts`", "hosts: db1"),
    "ignore_errors": ("a `run` that may fail has `failed_when: false`; for every step, the playbook's `on_failure`",
                      "run: {command: 'pkill -f old-agent', failed_when: false}"),
    "changed_when": ("`run` says when it changed with `changed_when`",
                     "run: {command: 'apply-config', changed_when: \"'updated' in stdout\"}"),
    "failed_when": ("`run` says when it failed with `failed_when`",
                    "run: {command: 'check', failed_when: \"rc > 1\"}"),
    "retries": ("`retries` goes with `until:` and counts the tries after the first; to retry a step that "
                "fails, write a `policy`", "{until: rc == 0, retries: 5, delay: 2}"),
    "delay": ("`delay` goes with `until:`: the seconds between its tries; to retry a step that fails, "
              "write a `policy`", "{until: rc == 0, retries: 5, delay: 2}"),
    "include_tasks": ("a step file is included with `include:` (its steps become <id>.<their id>)",
                      "include: {file: tasks/web.yaml, with: {port: 8080}}"),
    "import_tasks": ("a step file is included with `include:` (always static, like import_tasks)",
                     "include: {file: tasks/web.yaml, with: {port: 8080}}"),
    "include_role": ("a role is used with `role:` (a folder holding role.yaml)",
                     "role: {path: roles/nginx, with: {port: 8080}}"),
    "import_role": ("a role is used with `role:` (a folder holding role.yaml)",
                    "role: {path: roles/nginx, with: {port: 8080}}"),
}

PLAYBOOK: dict[str, tuple[str, str]] = {
    "tasks": ("a playbook's steps are `steps`, each with an `id`", "steps: [{id: hello, run: echo hi}]"),
    "pre_tasks": ("all steps are in `steps`, in order", "steps: [{id: first, run: echo hi}]"),
    "post_tasks": ("all steps are in `steps`, in order", "steps: [{id: last, run: echo bye}]"),
    "gather_facts": ("nothing to set: host facts (facts.os.family, ansible_os_family...) are gathered when a "
                     "template reads them, in the plan's one round trip",
                     "- {id: apt, when: \"facts.os.family == 'Debian'\", run: apt-get update}"),
    "become": ("privilege is the host's `sudo: true` in the inventory, or `sudo: true` on a step",
               "inventory.yaml: hosts: {web1: {address: 10.0.0.5, sudo: true}}"),
    "become_user": ("opsrun's sudo runs as root; as another user, say so in a step's command",
                    "- {id: query, run: \"sudo -u postgres psql -c 'select 1'\"}"),
    "roles": ("roles are steps, in order with the others", "- {id: web, role: roles/nginx}"),
    "import_playbook": ("no import_playbook: run each playbook, or share steps through a step file",
                        "opsrun apply base.yaml && opsrun apply web.yaml"),
    "vars_prompt": ("values come from `-e name=value` or `secret('NAME')`", "opsrun apply site.yaml -e port=8080"),
    "any_errors_fatal": ("failures across hosts are `max_fail_percentage`", "max_fail_percentage: 0"),
}


def with_until(key: str) -> str:
    """The hint for `retries:` or `delay:` written without `until:` ("" for other keys)."""
    return (hint(key, step=True) or "") if key in ("retries", "delay") else ""


def hint(key: str, *, step: bool) -> str | None:
    """`key` as Ansible means it: what opsrun has instead, with an example; None if not Ansible's."""
    table = {**STEP_KINDS, **STEP_KEYS} if step else PLAYBOOK
    found = table.get(key) or table.get(key.removeprefix("ansible.builtin."))
    if found is None:
        return None
    what, example = found
    return f"'{key}' is Ansible's: {what}, e.g. `{example}`"
