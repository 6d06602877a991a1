"""Long-running actions of the dock widget: model loading and propagation through a stack
(segment everything: ``automatic``), each a ``work`` generator run in a napari thread worker
(``runner``) whose results are written on the GUI thread, one frame at a time, each write
recorded for Undo.

A mixin of ``EdgeTamWidget``: it uses the widget's layers, state and controls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from .runner import END_CANCELLED, END_DONE, END_FAILED, start_task
from .settings import Settings, save_settings
from .state import WidgetState
from .work import (DIRECTIONS, STACK_MODES, Edit, FrameResult, ModelLoaded, ObjectPrompt, load_model_steps,
                   paint_objects, track_steps, write_plane)


class LongTasks:
    """Load a model, propagate, cancel; one task at a time."""

    state: WidgetState
    settings: Settings
    worker: Any
    last_error: BaseException | None
    _cancel: threading.Event
    output_layer: Any

    # ------------------------------------------------------------------ model
    def load_model(self, source: str) -> Any:
        """Load ``source`` in a worker; remembered in the settings once loaded."""
        return self._start(load_model_steps(source), f"loading {source}", self._on_model)

    def _cache_dir(self) -> str | None:
        return self.cache_edit.text().strip() or None

    def _on_model(self, msg: ModelLoaded) -> None:
        from ..engine.predictor import ImagePredictor

        cache = self._cache_dir()
        self.state.model = msg.model
        self.state.source = msg.source
        self.state.predictor = ImagePredictor(msg.model, cache=cache)
        self.state.embedded = None
        self.settings.remember_model(msg.source)
        self.settings.cache_dir = cache or ""
        save_settings(self.settings)
        if self.model_box.findText(msg.source) < 0:
            self.model_box.insertItem(0, msg.source)
        self.model_box.setCurrentText(msg.source)
        self._update_enabled()
        self._start_prefetch()  # an open series' next image
        self._say(f"model {msg.source} loaded ({'tracks' if msg.model.has_video else 'image only'})")

    def _on_cache_dir(self) -> None:
        """A new cache folder applies to the next embedding (and is remembered)."""
        from ..engine.predictor import ImagePredictor

        cache = self._cache_dir()
        if self.state.model is not None and self.worker is None:
            self.state.predictor = ImagePredictor(self.state.model, cache=cache)
            self.state.embedded = None
        self.settings.cache_dir = cache or ""
        save_settings(self.settings)

    # ------------------------------------------------------------------ propagation
    def propagate(self, direction: str | None = None) -> Any:
        """Commit, then track every committed object of this stack through its frames
        (``direction``: forward, backward or both; default: the widget's choice).
        Returns the thread worker, or None when nothing was started."""
        if self.mode not in STACK_MODES:
            raise ValueError(f"propagate needs a stack mode ({', '.join(STACK_MODES)}), the mode is {self.mode!r}")
        if self.state.model is None:
            raise ValueError("load a model first")
        if self._busy():
            return None
        direction = direction or self.direction_box.currentText()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.commit()
        here = self.current_prefix()[:-1]
        prompts: dict[int, dict[int, ObjectPrompt]] = {}
        for obj, per in self.state.committed.items():
            for prefix, p in per.items():
                if prefix[:-1] == here:
                    prompts.setdefault(obj, {})[prefix[-1]] = p
        if not prompts:
            self._say("nothing to propagate: click on an object first")
            return None
        self._edit = Edit(f"propagate {direction}")
        self.state.push_undo(self._edit, self.state.committed_copy())
        self._frame_prefix = here
        # written to (and saved) even if another image is picked meanwhile
        self._task_output, self._task_image, self._task_image_layer = self.output_layer, self.state.image, self.image_layer
        frames = self.geom.frames(self.current_prefix())
        gen = track_steps(self.state.model, frames, prompts, direction, self.channels, self._fresh_cancel())
        self._frames_done = 0
        return self._start(gen, f"propagate {direction}", self._on_frame, lambda outcome: self._on_propagated(
            outcome, f"propagate {direction}"))

    def _on_frame(self, msg: FrameResult) -> None:
        output = self._task_output
        index = self._frame_prefix + (msg.frame,)
        new = paint_objects(output.data[index], msg.obj_ids, msg.masks, replace=True)
        write_plane(output.data, index, new, self._edit)
        self._note_objects(msg.obj_ids, "propagate", self._task_image)
        output.refresh()
        self._frames_done = msg.done
        self._say(f"frame {msg.frame}: {msg.done} of {msg.total}")

    def _on_propagated(self, outcome: str, desc: str) -> None:
        """Done: say so (the last frame's line read as if it were still running)."""
        if outcome == END_DONE:
            n = self._frames_done
            self._say(f"{desc}: done, {n} frame{'s' if n != 1 else ''} written (Undo removes them)")

    # ------------------------------------------------------------------ workers
    def cancel(self) -> None:
        """Stop the running worker after its current step; what was written stays (undoable)."""
        self._cancel.set()
        self._say("cancelling...")

    def _fresh_cancel(self) -> threading.Event:
        self._cancel = threading.Event()
        return self._cancel

    def _start(self, gen: Iterator[Any], desc: str, on_result: Callable[[Any], None],
               ended: Callable[[str], None] | None = None) -> Any:
        """Run generator ``gen`` in a thread worker (see ``runner``); None when one is running.
        ended(outcome): called last when it ends (it may say more than the default message)."""
        if self.worker is not None:
            self._say("busy: wait for the running task or cancel it")
            return None
        self.last_error = None
        cancel = self._cancel

        def on_end(outcome: str, error: BaseException | None) -> None:
            self.worker = None
            if getattr(self, "_torn_down", False):
                return  # the dock was closed meanwhile: its controls are gone
            self._update_enabled()
            image, self._task_image_layer = getattr(self, "_task_image_layer", None), None
            if image is not None and outcome != END_FAILED:
                self._save(image, self._task_image)  # what the task wrote, also when cancelled
            if outcome == END_FAILED:
                self.last_error = error
                self._say(f"{desc} failed: {error}")
                from napari.utils.notifications import show_error

                show_error(f"EdgeTAM: {desc} failed: {error}")
            elif outcome == END_CANCELLED:
                self._say(f"{desc}: cancelled; results so far kept (Undo removes them)")
            elif self.status.text() == f"{desc}...":
                self._say(f"{desc}: done")
            if self.state.pending_click and self.state.model is not None and outcome == END_DONE:
                self.segment()
            if ended is not None:
                ended(outcome)

        self._say(f"{desc}...")
        self.worker = start_task(gen, desc, on_result, on_end, cancel)
        self._update_enabled()
        return self.worker
