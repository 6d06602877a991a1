"""What the dock widget holds between events: the model, the embedded plane, prompt records and
the undo stack (dataclasses; no napari import)."""

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
class WidgetState:
    """The widget's state besides its Qt controls and layers."""

    model: Any = None
    source: str = ""
    predictor: Any = None
    embedded: tuple | None = None  # key of the plane held by the predictor
    pending_click: bool = False
    negative: bool = False  # toggle: new points are negative
    touched: set = field(default_factory=set)  # planes of the current layer holding masks
    committed: PromptRecords = field(default_factory=dict)
    undo: list[UndoStep] = field(default_factory=list)
    last_click: LastClick | None = None

    def push_undo(self, edit: Edit, before: PromptRecords) -> None:
        """Record ``edit`` (and the prompt records before it); keeps the last ``MAX_UNDO``."""
        self.undo.append(UndoStep(edit, before))
        del self.undo[:-MAX_UNDO]

    def committed_copy(self) -> PromptRecords:
        return {o: dict(p) for o, p in self.committed.items()}
