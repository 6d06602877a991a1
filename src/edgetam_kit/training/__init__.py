"""Fine-tuning EdgeTAM on the user's own annotations (``ek.finetune``).

``data`` readers (folder, COCO, FiftyOne, memory) -> ``prompts`` sampled from the ground truth ->
``losses`` (focal + dice, IoU head, object score) -> the loop in ``finetune`` with validation
(``evaluate``), resumable ``state`` and a model ``card`` written beside the checkpoint.
"""

from .finetune import FinetuneResult, finetune
from .settings import FinetuneSettings

__all__ = ["FinetuneResult", "FinetuneSettings", "finetune"]
