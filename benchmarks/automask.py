"""Automatic mask generation: edgetam-kit's AutoMaskGenerator vs the original EdgeTAM
SAM2AutomaticMaskGenerator vs transformers' "mask-generation" pipeline, identical random
weights, real shape (1024x1024 model input), same settings, one process.

    python benchmarks/automask.py [--threads 2] [--repeats 1] [--points-per-side 16] [--size 1024]

The image is square and at the model's input size, so no engine resizes it (transformers'
pipeline also misplaces grid points on non-square images, see docs/automask.md). Random
weights predict IoU ~0.5 and logits within +-0.5, so the default thresholds (0.8 / 0.95 /
offset 1.0) would keep nothing and skip most of the work; the thresholds below keep a few
percent of the candidates, as real weights do. Time = one generate() call including the
image encoding, median of --repeats. Ratios are peer time / our time (> 1: we are faster).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from common import machine_facts, median_seconds, print_table, set_threads

SETTINGS = dict(points_per_batch=64, pred_iou_thresh=0.5, stability_score_thresh=0.213,
                stability_score_offset=0.005, mask_threshold=0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024, help="side of the square test image in pixels")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    set_threads(args.threads)

    import edgetam_kit as ek
    from edgetam_kit.testing.oracles import make_reference_checkpoints
    from PIL import Image
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from skimage import data, transform
    from transformers import Sam2ImageProcessor, pipeline

    dev = torch.device(args.device)
    img = (transform.resize(data.astronaut(), (args.size, args.size)) * 255).astype(np.uint8)
    settings = dict(SETTINGS, points_per_side=args.points_per_side)
    with tempfile.TemporaryDirectory() as tmp:
        refs = make_reference_checkpoints(tmp, "edgetam", seed=0)
        ours = ek.AutoMaskGenerator(ek.load_model(refs.hf_folder, device=dev), output_mode="binary_mask", **settings)
    original = SAM2AutomaticMaskGenerator(refs.original.to(dev), **settings)
    s = refs.config.image_size
    hf = pipeline("mask-generation", model=refs.hf.to(dev), device=dev,
                  image_processor=Sam2ImageProcessor(size={"height": s, "width": s},
                                                     mask_size={"height": s // 4, "width": s // 4}))
    pil = Image.fromarray(img)

    def run_hf():
        return hf(pil, points_per_batch=settings["points_per_batch"], points_per_crop=settings["points_per_side"],
                  pred_iou_thresh=settings["pred_iou_thresh"], stability_score_thresh=settings["stability_score_thresh"],
                  stability_score_offset=settings["stability_score_offset"], mask_threshold=settings["mask_threshold"])

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    counts = {}
    with torch.inference_mode():
        counts["edgetam-kit"] = len(ours.generate(img))
        counts["original"] = len(original.generate(img))
        counts["transformers"] = len(run_hf()["masks"])
        times = {
            "edgetam-kit": median_seconds(lambda: (ours.generate(img), sync()), args.repeats, warmup=0),
            "original": median_seconds(lambda: (original.generate(img), sync()), args.repeats, warmup=0),
            "transformers": median_seconds(lambda: (run_hf(), sync()), args.repeats, warmup=0),
        }
    n = args.points_per_side ** 2
    print(f"machine: {machine_facts()}  device={dev}")
    print(f"image {args.size}x{args.size}, {n} points ({args.points_per_side}x{args.points_per_side}) x 3 masks, "
          f"random weights (identical in all three), settings {SETTINGS}; median of {args.repeats}")
    print("masks kept: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print_table("automatic masks (s per image, encode included)", [(f"generate, {n} points", times)], "s")


if __name__ == "__main__":
    main()
