"""Run a ``work`` generator in a napari thread worker and apply its results on the GUI thread.

Progress items go to the worker's progress bar in napari's activity dock; every other item goes
to ``on_result``, strictly in order; ``on_end`` is called once, after the last result.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .work import Progress

END_DONE, END_CANCELLED, END_FAILED = "done", "cancelled", "failed"


def start_task(gen: Iterator[Any], desc: str, on_result: Callable[[Any], None],
               on_end: Callable[[str, BaseException | None], None], cancel: threading.Event) -> Any:
    """Start ``gen`` in a napari ``GeneratorWorker`` and return the worker.

    on_end(outcome, error): outcome is "done", "cancelled" (``cancel`` set, or the worker quit
    from the activity dock) or "failed" (``error`` is the exception).
    """
    from napari.qt.threading import create_worker

    end = object()  # yielded last: `finished` can reach the GUI thread before the last yields do

    def run() -> Iterator[Any]:
        yield from gen
        yield end

    # errors go to on_end (the widget reports them), they are not re-raised in the event loop
    worker = create_worker(run, _progress={"total": 0, "desc": desc}, _ignore_errors=True)
    queue: deque = deque()
    state = {"busy": False, "ended": False, "stage": ""}

    def finish(outcome: str, error: BaseException | None = None) -> None:
        if not state["ended"]:
            state["ended"] = True
            on_end(outcome, error)
            release()

    def release() -> None:
        """Drop the connections to the widget's callbacks (the worker object may outlive the
        task; a closed widget must not be kept alive by it)."""
        for signal, slot in ((worker.yielded, on_yield), (worker.errored, on_error), (worker.finished, on_finished)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass

    def handle(item: Any) -> None:
        if item is end:
            return finish(END_CANCELLED if cancel.is_set() else END_DONE)
        if not isinstance(item, Progress):
            on_result(item)
        pbar = getattr(worker, "pbar", None)
        total = getattr(item, "total", 0)
        if pbar is not None and total:  # Progress and FrameResult carry done / total
            if pbar.total != total:
                pbar.total = total
            stage = getattr(item, "stage", "")  # a FrameResult counts frames
            if stage and stage != state["stage"]:
                state["stage"] = stage
                pbar.set_description(f"{desc}: {stage}")
            pbar.update(item.done - pbar.n)

    def on_yield(item: Any) -> None:
        # Qt can deliver the next item while one is handled (napari's progress bar processes
        # events): queue it, so that items are applied strictly in order
        queue.append(item)
        if state["busy"]:
            return
        state["busy"] = True
        try:
            while queue:
                handle(queue.popleft())
        finally:
            state["busy"] = False

    def on_finished() -> None:
        if worker.abort_requested:  # quit from the activity dock: no end marker comes
            finish(END_CANCELLED)

    worker.yielded.connect(on_yield)
    def on_error(exc: BaseException) -> None:
        finish(END_FAILED, exc)

    worker.errored.connect(on_error)
    worker.finished.connect(on_finished)
    worker.start()
    return worker
