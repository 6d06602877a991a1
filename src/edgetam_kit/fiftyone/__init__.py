"""FiftyOne face of edgetam-kit: models for ``apply_model``, resumable/shardable runs, conversions.

Importing this module imports ``fiftyone`` (``pip install "edgetam-kit[fiftyone]"``);
``import edgetam_kit`` alone never does. The operators live in ``fiftyone_plugin/``.
"""

from .labels import (ObjectPrompt, detection_from_mask, detection_full_mask, mask_box, prompts_from_label,
                     segmentation_from_masks, write_masks)
from .models import EdgeTamImageModel, EdgeTamVideoModel, Segment, to_detections, video_prompts
from .runner import RunSummary, label_images, label_videos, shard_ids, shard_of

__all__ = [
    "EdgeTamImageModel",
    "EdgeTamVideoModel",
    "ObjectPrompt",
    "RunSummary",
    "Segment",
    "detection_from_mask",
    "detection_full_mask",
    "label_images",
    "label_videos",
    "mask_box",
    "prompts_from_label",
    "segmentation_from_masks",
    "shard_ids",
    "shard_of",
    "to_detections",
    "video_prompts",
    "write_masks",
]
