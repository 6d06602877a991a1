"""Progress reporting and cancellation for long-running calls.

``progress`` may be
- ``None`` or ``False`` (the default everywhere, scripts and notebooks alike): silent;
- ``True``: a ``tqdm.auto`` bar (a widget in Jupyter when ipywidgets is installed, text in a
  terminal), opened at the call's first step and closed at its last;
- a callable ``f(done, total)``, called after each step (frame, image, tile or batch);
- a tqdm-like object with ``update(n)``, updated by one per step.

``cancel`` may be a callable returning True to stop, or an event with ``is_set()``
(threading.Event). Work checks ``cancel`` between items and raises ``Cancelled``,
leaving the caller's state as it was before the call.

Interrupting (KeyboardInterrupt, e.g. the notebook's "interrupt kernel", or an exception
raised by a progress callback) between steps is handled like a cancel: the predictor keeps
its previous image(s) and a tracking session keeps every frame it completed.
"""

from __future__ import annotations

import threading
from typing import Any


class Cancelled(RuntimeError):
    """The caller cancelled a long-running call; nothing was changed."""


def check_progress_cancel(progress: Any, cancel: Any) -> None:
    """TypeError naming ``progress`` / ``cancel`` when neither form fits (checked at the call, not
    at the first step)."""
    if not (progress is None or isinstance(progress, bool) or callable(progress) or hasattr(progress, "update")):
        raise TypeError(f"progress must be True, a callable f(done, total) or have update(n), got "
                        f"{type(progress).__name__}")
    if not (cancel is None or hasattr(cancel, "is_set") or callable(cancel)):
        raise TypeError(f"cancel must be a callable returning bool or an object with is_set(), got "
                        f"{type(cancel).__name__}")


def is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    if callable(cancel):
        return bool(cancel())
    raise TypeError(f"cancel must be a callable returning bool or an object with is_set(), got {type(cancel).__name__}")


def make_bar(total: int | None = None, desc: str | None = None) -> Any:
    """A ``tqdm.auto`` bar (notebook widget or terminal text) with ``total`` steps."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


_auto = threading.local()  # the bar that progress=True opened on this thread, if any


def _report_auto(done: int, total: int) -> None:
    bar = getattr(_auto, "bar", None)
    if bar is not None and (done <= bar.n or bar.total != total):  # a new call: the old one was interrupted
        bar.close()
        bar = None
    if bar is None:
        bar = _auto.bar = make_bar(total)
    bar.update(done - bar.n)
    if done >= total:
        if hasattr(bar, "refresh"):
            bar.refresh()  # the last steps may come faster than the bar's redraw interval
        bar.close()
        _auto.bar = None


def report(progress: Any, done: int, total: int) -> None:
    """Tell ``progress`` that ``done`` of ``total`` steps are complete (see the module docstring)."""
    if progress is None or progress is False:
        return
    if progress is True:
        _report_auto(done, total)
    elif hasattr(progress, "update") and not callable(progress):  # tqdm-like
        progress.update(1)
    elif callable(progress):
        progress(done, total)
    else:
        raise TypeError(f"progress must be True, a callable f(done, total) or have update(n), got {type(progress).__name__}")
