"""Persistent state: learned device identities, settings made in Home Assistant, schedules.

It lives in a state directory: /data in the add-on (kept across updates and in Home Assistant's backups),
otherwise the user's state folder (XDG_STATE_HOME), never next to the options file, which may sit in a
clone of this repository. Written atomically (temporary file, fsync, rename), so a power cut never leaves
half a file; a damaged file is set aside with a warning and the add-on starts fresh rather than refusing
to start.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

_LOG = logging.getLogger(__name__)
ADDON_STATE_DIR = Path("/data")
STATE_FOLDER = "marstek_webasto_addon"


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


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            broken = self.path.with_suffix(".broken")
            _LOG.warning(
                "state file %s is unreadable (%s); keeping it as %s and starting fresh",
                self.path,
                exc,
                broken.name,
            )
            self.path.replace(broken)
            return {}
        return data if isinstance(data, dict) else {}

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.setdefault(name, {})
        assert isinstance(value, dict)
        return value

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
