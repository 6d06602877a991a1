"""Damaged TIFFs: tifffile reads a truncated or corrupt file as far as it can and only logs what
it skipped (``invalid page offset``, ``failed to reshape``), so a stack cut in half would open as
fewer frames without an error. ``tiff_damage`` collects those log records while a file is opened
so the caller can refuse it with an error that names the file."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

# tifffile's log messages that mean the file is not whole (not mere metadata quirks)
DAMAGE_SIGNS = ("invalid page offset", "failed to reshape", "corrupt", "truncat", "invalid offset",
                "out of bounds", "beyond end")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: keep its template
            text = str(record.msg)
        if any(sign in text.lower() for sign in DAMAGE_SIGNS):
            self.messages.append(text)


@contextlib.contextmanager
def tiff_damage() -> Iterator[list[str]]:
    """Yield a list that fills with tifffile's damage messages logged inside the block."""
    logger = logging.getLogger("tifffile")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
