"""Persistent state: learned device identities, settings made in Home Assistant, schedules.

It lives in a state directory: /data in the add-on (kept across updates and in Home Assistant's backups),
otherwise the user's state folder (XDG_STATE_HOME), never next to the options file, which may sit in a
clone of this repository. Written atomically (temporary file, fsync, rename), so a power cut never leaves
half a file; a damaged file is set aside with a warning and the add-on starts fresh rather than refusing
to start. A section of the wrong shape is damage too: a copy of the file is kept, that section (or entry)
starts fresh and the others are kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_LOG = logging.getLogger(__name__)
ADDON_STATE_DIR = Path("/data")
STATE_FOLDER = "marstek_webasto_addon"
KEPT_BROKEN = 3  # damaged copies kept of each file: enough to compare, bounded on a small disk
# The entries of these sections are read as they are; the other sections' readers check their own entries.
ENTRY_TYPES: dict[str, type] = {"identities": str, "addresses": str, "settings": dict, "energy": dict}


class StateDirError(Exception):
    """The state directory cannot be created or written."""


def default_state_dir(addon: bool) -> Path:
    if addon:
        return ADDON_STATE_DIR
    # The XDG spec says to ignore a relative XDG_STATE_HOME.
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / STATE_FOLDER


def prepare_state_dir(path: Path) -> Path:
    """Creates the folder if needed and proves it writable: a wrong folder is found at the start, not
    at the first save, an hour later, when what was learned would be lost."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".write-test-", dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StateDirError(
            f"the state directory {path} is not usable ({reason}); choose another with --state-dir"
        ) from None
    return path


def write_atomically(path: Path, text: str) -> None:
    """Replaces the file in one step (temporary file, fsync, rename): a power cut or a full disk leaves the
    old file or the new one, never half of one, and no temporary file behind. OSError if it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_aside(path: Path, *, copy: bool = False) -> Path:
    """Keeps a damaged file for a person to look at as `<name>.broken`, earlier ones shifted to `.broken.1`,
    `.broken.2` (the oldest dropped), so a second damage does not erase the first. `copy`: the file stays
    in place, as the part of it that could be read is still used. OSError if it cannot."""
    broken = path.with_suffix(".broken")
    for n in range(KEPT_BROKEN - 1, 0, -1):
        newer = broken if n == 1 else broken.with_name(f"{broken.name}.{n - 1}")
        if newer.exists():
            newer.replace(broken.with_name(f"{broken.name}.{n}"))
    if copy:
        shutil.copyfile(path, broken)
    else:
        path.replace(broken)
    return broken


_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def kind(value: object) -> str:
    """The JSON name of a value's type, for a message about a file."""
    return "null" if value is None else _KINDS.get(type(value), "a number")


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []  # what was damaged at the start, one line each
        self._copied = False
        self.data: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self._damaged(f"unreadable ({exc})", "starting fresh", whole=True)
            return {}
        if not isinstance(data, dict):
            self._damaged(f"the file is {kind(data)}, not an object", "starting fresh", whole=True)
            return {}
        for name, value in list(data.items()):
            if not isinstance(value, dict):
                self._damaged(f"section {name!r} is {kind(value)}, not an object", "starting it fresh")
                del data[name]
                continue
            wanted = ENTRY_TYPES.get(name)
            for key, entry in list(value.items()):
                if wanted is not None and not isinstance(entry, wanted):
                    self._damaged(f"{name}[{key!r}] is {kind(entry)}, not {_KINDS[wanted]}", "forgetting it")
                    del value[key]
        return data

    def _damaged(self, problem: str, outcome: str, *, whole: bool = False) -> None:
        """Says what is wrong, where, and keeps the file (once a run) before the damaged part is dropped."""
        kept = ""
        if whole or not self._copied:
            try:
                kept = f"; the file is kept as {set_aside(self.path, copy=not whole).name}"
            except OSError as exc:
                kept = f"; could not keep a copy ({exc.strerror or exc})"
            self._copied = True
        _LOG.warning("state file %s: %s; %s%s", self.path, problem, outcome, kept)
        self.problems.append(f"{self.path.name}: {problem}; {outcome}")

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.setdefault(name, {})
        assert isinstance(value, dict)  # checked when the file was read
        return value

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.data, indent=1, sort_keys=True))
