"""Persistent state under /data: learned device identities, settings made in Home Assistant, schedules.

Written atomically (temporary file, fsync, rename), so a power cut never leaves half a file; a damaged
file is set aside with a warning and the add-on starts fresh rather than refusing to start.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

_LOG = logging.getLogger(__name__)


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
