"""Log lines a stranger can cause at will, kept to one a window: the panel's port may be on the LAN.

`ServerLog` is the logger the panel hands aiohttp's request handler. A request its HTTP parser rejects (a
duplicated Host header, TLS on the plain port, a line too long) is answered with 400 before any middleware,
so before the panel's doors, and aiohttp would log each one as a traceback at ERROR. It is the client's
mistake, not ours: one short debug line, at most one a window. Everything else (a bug in a handler) logs as
aiohttp logs it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

WINDOW_S = 60.0


class ThrottledLog:
    """At most one line per window; the next line says how many were left out in between."""

    def __init__(self, logger: logging.Logger, window_s: float = WINDOW_S) -> None:
        self.logger = logger
        self.window_s = window_s
        self._last = float("-inf")
        self._left_out = 0

    def log(self, level: int, message: str, *args: object) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        if now - self._last < self.window_s:
            self._left_out += 1
            return
        self._last = now
        if self._left_out:
            message += " (and %d more since the last such line)"
            args = (*args, self._left_out)
            self._left_out = 0
        self.logger.log(level, message, *args)


def _one_line(text: str) -> str:
    # The parser's message may quote the client's bytes over several lines: keep the first, printable.
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return "".join(c if c.isprintable() else "?" for c in first)[:120]


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, logger: logging.Logger, window_s: float = WINDOW_S) -> None:
        super().__init__(logger, {})
        self.malformed = ThrottledLog(logger, window_s)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            # aiohttp's line is "Error handling request from %s": its one argument is the peer.
            peer = args[0] if args else "a client"
            self.malformed.log(
                logging.DEBUG, "panel: malformed HTTP request from %s: %s", peer, _one_line(error.message)
            )
            return
        super().log(level, msg, *args, **kwargs)
