"""The project a service works on: its folder (playbooks, inventory, gateway.yaml) and its private
state folder, and paths checked to stay inside the folder. Imports only errors, files and config.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from runner.config import EMBEDDED_INVENTORY_NAME
from runner.errors import InvalidInput
from runner.files import private_dir


@dataclass(frozen=True)
class Project:
    """A project folder and where its state lives (root/.opsrun, or OPSRUN_STATE_DIR)."""

    root: Path
    state: Path

    @classmethod
    def at(cls, root: str | Path) -> Project:
        base = Path(root).expanduser().resolve()
        if not base.is_dir():
            raise InvalidInput(f"no project folder {base}", hint="give the folder holding playbooks/ and inventory")
        env = os.environ.get("OPSRUN_STATE_DIR")
        state = Path(env).expanduser() if env else base / ".opsrun"
        if not state.is_absolute():
            state = (Path.cwd() / state).absolute()
        return cls(base, state)

    def inside(self, rel: str) -> Path:
        """`rel` (relative to the root, or absolute) as a path inside the project folder or its
        state folder; a path that leaves them (.., a symbolic link pointing out) is refused."""
        if not rel or "\x00" in rel:
            raise InvalidInput("a path inside the project is needed")
        raw = Path(rel).expanduser()
        path = raw if raw.is_absolute() else self.root / raw
        resolved = path.resolve()
        for base in (self.root, self.state.resolve()):
            if resolved == base or resolved.is_relative_to(base):
                return resolved
        raise InvalidInput(
            f"{rel}: not inside the project folder {self.root}",
            hint="name a file under the project folder (no '..', no link pointing out of it)",
        )

    def inventory_arg(self, inventory: str | None = None) -> str:
        """The inventory to load for `inventory` (a path inside the project): given, else the
        project's inventory.yaml, else the embedded one (named, so no working folder decides)."""
        if inventory:
            return str(self.inside(inventory))
        own = self.root / "inventory.yaml"
        return str(own) if own.is_file() else EMBEDDED_INVENTORY_NAME

    def private(self, *parts: str) -> Path:
        """A private folder under the state folder (0700, made if missing)."""
        return private_dir(self.state.joinpath(*parts), self.state)


def terminal_user() -> str:
    """The actor name of the person at this terminal."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
