"""Drive the two video references (original SAM2VideoPredictor, transformers'
EdgeTamVideoModel) on in-memory frames, for parity tests and benchmarks.

Frames are given at the model's input size so that no engine resizes them (the three
engines resize with three different kernels: PIL bicubic, torchvision, ours antialiased
bilinear); each engine then sees identical pixels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from edgetam_kit.transforms import to_model_input, to_unit_rgb


def moving_disks(n: int, side: int, seed: int = 0) -> np.ndarray:
    """(n, side, side, 3) uint8: a textured background with two disks moving in straight lines."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    bg = (rng.random((side, side, 3)) * 80).astype(np.uint8)
    s = side / 256
    frames = np.empty((n, side, side, 3), np.uint8)
    for t in range(n):
        f = bg.copy()
        f[(xx - (80 + 6 * t) * s) ** 2 + (yy - (100 + 3 * t) * s) ** 2 < (30 * s) ** 2] = [230, 60, 60]
        f[(xx - 180 * s) ** 2 + (yy - (60 + 4 * t) * s) ** 2 < (20 * s) ** 2] = [60, 230, 60]
        frames[t] = f
    return frames


def run_original(predictor, frames: np.ndarray, prompts: list[dict], reverse: bool = False) -> dict[int, np.ndarray]:
    """One object (the original crashes with two: facebookresearch/EdgeTAM#15).
    prompts: [{"frame", "points"?, "labels"?, "box"?}]. Returns {frame: (H, W) bool}."""
    from PIL import Image

    side = predictor.image_size
    with tempfile.TemporaryDirectory() as d:
        for t, f in enumerate(frames):
            Image.fromarray(f).save(Path(d) / f"{t:05d}.jpg")
        state = predictor.init_state(d)
    # replace the JPEG-decoded frames (lossy) by the exact pixels, and drop the frame-0 warm-up
    state["images"] = torch.cat([to_model_input(to_unit_rgb(f), side, predictor.device, torch.float32)
                                 for f in frames])
    state["cached_features"] = {}
    for p in prompts:
        predictor.add_new_points_or_box(
            state, frame_idx=p["frame"], obj_id=1,
            points=None if p.get("points") is None else np.asarray(p["points"], np.float32),
            labels=None if p.get("labels") is None else np.asarray(p["labels"], np.int32),
            box=None if p.get("box") is None else np.asarray(p["box"], np.float32),
        )
    out = {}
    start = max(p["frame"] for p in prompts) if reverse else None
    with torch.inference_mode():
        for f, _ids, masks in predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
            out[f] = (masks[0, 0] > 0).cpu().numpy()
    return out


def hf_processor(side: int):
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={"height": side, "width": side},
                                           mask_size={"height": side // 4, "width": side // 4}),
        video_processor=Sam2VideoVideoProcessor(size={"height": side, "width": side}),
        target_size=side,
    )


def run_hf(model, frames: np.ndarray, prompts: list[dict], reverse: bool = False,
           both: bool = False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Several objects. prompts: [{"frame", "obj", "points"?, "labels"?, "box"?}], in order.
    both: forward from the earliest prompted frame, then reverse from it in the same session.
    Returns {frame: (masks (n_obj, H, W) bool, object scores (n_obj,))}."""
    side = model.config.image_size
    proc = hf_processor(side)
    h, w = frames.shape[1:3]
    with torch.inference_mode():
        session = proc.init_video_session(video=list(frames), inference_device=model.device)
        for p in prompts:
            kw = {}
            if p.get("points") is not None:
                kw = {"input_points": [[p["points"]]], "input_labels": [[p["labels"]]]}
            if p.get("box") is not None:
                kw["input_boxes"] = [[p["box"]]]
            proc.add_inputs_to_inference_session(session, frame_idx=p["frame"], obj_ids=p["obj"], **kw)
            model(inference_session=session, frame_idx=p["frame"])  # HF needs each prompted frame run first
        out = {}
        if both:
            first = min(p["frame"] for p in prompts)
            passes = [(first, False), (first, True)]
        else:
            passes = [(max(p["frame"] for p in prompts) if reverse else None, reverse)]
        for start, rev in passes:
            for o in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=rev):
                masks = proc.post_process_masks([o.pred_masks], original_sizes=[[h, w]], binarize=True)[0]
                out[o.frame_idx] = (masks[:, 0].cpu().numpy(), o.object_score_logits.reshape(-1).cpu().numpy())
    return out
