"""What the dock widget holds between events: the model, the embedded plane, prompt records and
per-image prompt records and undo stacks (dataclasses; no napari import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .work import Edit, ObjectPrompt

MAX_UNDO = 20

# obj_id -> plane prefix -> prompt: what each committed object was prompted with
PromptRecords = dict[int, dict[tuple, ObjectPrompt]]


@dataclass
class UndoStep:
    """One undoable change of the output layer and the prompt records before it."""

    edit: Edit
    committed: PromptRecords


@dataclass
class LastClick:
    """The latest click's inputs and result: an unchanged prompt on the same plane and embedding
    is not decoded again. mask: (H, W) bool."""

    key: tuple  # plane key (see ``PromptHandling.plane_key``)
    predictor: Any
    obj_id: int
    prompt: ObjectPrompt
    mask: np.ndarray
    score: float

    def matches(self, key: tuple, predictor: Any, obj_id: int, prompt: ObjectPrompt) -> bool:
        return (self.key == key and self.predictor is predictor and self.obj_id == obj_id
                and self.prompt.same_as(prompt))


@dataclass
class ImageState:
    """One image's annotation: its plugin layers (role -> layer), the planes of its preview that
    hold masks, its committed prompt records, its undo history and its next object id."""

    layers: dict[str, Any] = field(default_factory=dict)
    touched: set = field(default_factory=set)
    committed: PromptRecords = field(default_factory=dict)
    undo: list[UndoStep] = field(default_factory=list)
    obj_id: int = 1
    scores: dict[int, float] = field(default_factory=dict)  # obj_id -> predicted IoU of its last click
    objects: dict[int, dict[str, Any]] = field(default_factory=dict)  # obj_id -> {"source", "predicted_iou"}
    resumed: bool = False  # the project folder was read for this image


@dataclass
class WidgetState:
    """The widget's state besides its Qt controls: the model, the embedded plane, the click
    toggle, and one ``ImageState`` per image (``image``: the one annotated now)."""

    model: Any = None
    source: str = ""
    predictor: Any = None
    embedded: tuple | None = None  # key of the plane held by the predictor
    pending_click: bool = False
    negative: bool = False  # toggle: new points are negative
    last_click: LastClick | None = None
    image: ImageState = field(default_factory=ImageState)
    images: dict[str, ImageState] = field(default_factory=dict)  # image uid -> its state

    @property
    def touched(self) -> set:
        return self.image.touched

    @property
    def committed(self) -> PromptRecords:
        return self.image.committed

    @committed.setter
    def committed(self, value: PromptRecords) -> None:
        self.image.committed = value

    @property
    def undo(self) -> list[UndoStep]:
        return self.image.undo

    def image_state(self, uid: str) -> ImageState:
        """The state of image ``uid`` (created empty the first time), made the current one."""
        self.image = self.images.setdefault(uid, ImageState())
        return self.image

    def push_undo(self, edit: Edit, before: PromptRecords, image: ImageState | None = None) -> None:
        """Record ``edit`` (and the prompt records before it) in the history of ``image``
        (default: the current one); keeps the last ``MAX_UNDO``."""
        target = self.image if image is None else image
        target.undo.append(UndoStep(edit, before))
        del target.undo[:-MAX_UNDO]

    def committed_copy(self) -> PromptRecords:
        return {o: dict(p) for o, p in self.image.committed.items()}
