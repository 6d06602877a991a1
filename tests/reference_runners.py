"""Thin drivers that put the two reference implementations behind one interface, so a
parity test can ask all three engines the same question.

Every runner returns (masks (K, H, W) bool, scores (K,), logits (K, 4E, 4E) clamped to
+-32, object score logit) per object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgetam_kit.transforms import to_model_input, to_unit_rgb


@dataclass
class Out:
    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    object_score: float | None


class OriginalRunner:
    """The original EdgeTAM code's SAM2ImagePredictor."""

    def __init__(self, model: torch.nn.Module) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.pred = SAM2ImagePredictor(model)
        # the predictor hard-codes the 1024-input feature sizes; follow the model's size
        side = model.image_size
        self.pred._bb_feat_sizes = [(side // 4, side // 4), (side // 8, side // 8), (side // 16, side // 16)]

    def set_images(self, imgs: list[np.ndarray]) -> None:
        self.imgs = imgs
        self.current = -1

    def run(self, image: int, points=None, labels=None, box=None, mask_input=None, multimask=True) -> Out:
        if image != self.current:
            self.pred.set_image(self.imgs[image])
            self.current = image
        with torch.inference_mode():
            masks, scores, logits = self.pred.predict(
                point_coords=None if points is None else np.asarray(points, np.float32),
                point_labels=None if labels is None else np.asarray(labels),
                box=None if box is None else np.asarray(box, np.float32),
                mask_input=None if mask_input is None else np.asarray(mask_input, np.float32)[None],
                multimask_output=multimask,
            )
        return Out(masks.astype(bool), scores, np.clip(logits, -32, 32), None)


class HFRunner:
    """transformers' EdgeTamModel + Sam2Processor for coordinates and post-processing.

    Pixels: the HF image processor resizes the uint8 image (rounding to uint8 at model
    size) while the original resizes floats; the two references themselves then differ
    by ~1e-3 in logits. To compare models, not resize kernels, this runner feeds HF the
    same pixel tensor the original gets (test_hf_processor_end_to_end checks the HF
    processor itself on an image that needs no resize).
    """

    def __init__(self, model: torch.nn.Module, image_size: int) -> None:
        from transformers import Sam2ImageProcessor, Sam2Processor

        self.model = model
        self.size = image_size
        low = image_size // 4
        ip = Sam2ImageProcessor(size={"height": image_size, "width": image_size}, mask_size={"height": low, "width": low})
        self.processor = Sam2Processor(image_processor=ip, target_size=image_size)

    def set_images(self, imgs: list[np.ndarray]) -> None:
        px = torch.cat([to_model_input(to_unit_rgb(im), self.size, torch.device("cpu"), torch.float32) for im in imgs])
        with torch.inference_mode():
            self.embeddings = self.model.get_image_embeddings(pixel_values=px)
        self.sizes = [im.shape[:2] for im in imgs]

    def run_many(self, per_image: list[dict], multimask: bool) -> list[list[Out]]:
        """per_image[i]: {"image": idx, "points": [[..]] per object, "labels": ..., "boxes": ..., "mask": (N,4E,4E)}."""
        kwargs = {}
        sizes = [list(self.sizes[q["image"]]) for q in per_image]
        if per_image[0].get("points") is not None:
            kwargs["input_points"] = [q["points"] for q in per_image]
            kwargs["input_labels"] = [q["labels"] for q in per_image]
        if per_image[0].get("boxes") is not None:
            kwargs["input_boxes"] = [q["boxes"] for q in per_image]
        enc = self.processor(original_sizes=sizes, return_tensors="pt", **kwargs)
        emb = [torch.stack([e[q["image"]] for q in per_image]) for e in self.embeddings]
        call = {k: enc[k] for k in ("input_points", "input_labels", "input_boxes") if k in enc}
        if per_image[0].get("mask") is not None:
            call["input_masks"] = torch.as_tensor(np.stack([q["mask"] for q in per_image]), dtype=torch.float32)
        with torch.inference_mode():
            out = self.model(image_embeddings=emb, multimask_output=multimask, **call)
        full = self.processor.post_process_masks(out.pred_masks, torch.tensor(sizes))
        results = []
        for i in range(len(per_image)):
            objs = []
            for j in range(out.pred_masks.shape[1]):
                objs.append(Out(
                    full[i][j].numpy().astype(bool),
                    out.iou_scores[i, j].numpy(),
                    out.pred_masks[i, j].clamp(-32, 32).numpy(),
                    float(out.object_score_logits[i, j, 0]),
                ))
            results.append(objs)
        return results

    def run(self, image: int, points=None, labels=None, box=None, mask_input=None, multimask=True) -> Out:
        q = {"image": image,
             "points": None if points is None else [np.asarray(points, np.float32).tolist()],
             "labels": None if labels is None else [np.asarray(labels).tolist()],
             "boxes": None if box is None else [list(map(float, box))],
             "mask": None if mask_input is None else np.asarray(mask_input)[None]}
        return self.run_many([q], multimask)[0][0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_match(ours, ref: Out, who: str, check_object_score: bool = True) -> None:
    """The issue's tolerances: mask IoU >= 0.999, |d score| <= 1e-4, |d logits| <= 1e-3,
    and a non-trivial reference (no mask empty or full)."""
    assert ref.masks.shape == ours.masks.shape, f"{who}: mask shape {ref.masks.shape} vs ours {ours.masks.shape}"
    fractions = ref.masks.reshape(len(ref.masks), -1).mean(1)
    assert ((fractions > 0) & (fractions < 1)).all(), f"{who}: trivial reference masks (fractions {fractions})"
    for k in range(len(ref.masks)):
        assert iou(ours.masks[k], ref.masks[k]) >= 0.999, f"{who}: mask {k} IoU {iou(ours.masks[k], ref.masks[k])}"
    assert np.abs(ours.scores - ref.scores).max() <= 1e-4, f"{who}: scores {ours.scores} vs {ref.scores}"
    assert np.abs(ours.logits - ref.logits).max() <= 1e-3, f"{who}: logits differ by {np.abs(ours.logits - ref.logits).max()}"
    if check_object_score and ref.object_score is not None:
        assert abs(ours.object_score - ref.object_score) <= 1e-3
