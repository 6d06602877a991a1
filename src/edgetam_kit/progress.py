"""Progress reporting and cancellation for long-running calls.

``progress`` may be a callable ``f(done, total)`` or a tqdm-like object with ``update(n)``.
``cancel`` may be a callable returning True to stop, or an event with ``is_set()``
(threading.Event). Work checks ``cancel`` between items and raises ``Cancelled``,
leaving the caller's state as it was before the call.
"""

from __future__ import annotations

from typing import Any


class Cancelled(RuntimeError):
    """The caller cancelled a long-running call; nothing was changed."""


def is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    if callable(cancel):
        return bool(cancel())
    raise TypeError(f"cancel must be a callable returning bool or an object with is_set(), got {type(cancel).__name__}")


def report(progress: Any, done: int, total: int) -> None:
    if progress is None:
        return
    if hasattr(progress, "update") and not callable(progress):  # tqdm-like
        progress.update(1)
    elif callable(progress):
        progress(done, total)
    else:
        raise TypeError(f"progress must be a callable f(done, total) or have update(n), got {type(progress).__name__}")
