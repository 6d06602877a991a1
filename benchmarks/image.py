"""Image encode and click-to-mask: edgetam-kit vs the original EdgeTAM code vs transformers,
identical random weights, real shape (1024x1024 model input), one process.

    python benchmarks/image.py [--threads 2] [--repeats 5] [--clicks 20] [--size 1024]

Click-to-mask = one positive point, embedding cached, all 3 multimask outputs brought to the
input image's resolution and thresholded (what the original predictor returns; HF needs
post_process_masks for it). Ratios are peer time / our time (> 1 means we are faster).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from common import machine_facts, median_seconds, print_table, set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024, help="side of the test image in pixels")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    set_threads(args.threads)

    import edgetam_kit as ek
    from edgetam_kit.testing.oracles import make_reference_checkpoints
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from skimage import data, transform
    from transformers import Sam2Processor

    dev = torch.device(args.device)
    img = (transform.resize(data.astronaut(), (args.size, args.size)) * 255).astype(np.uint8)
    point = [[args.size * 0.45, args.size * 0.35]]
    with tempfile.TemporaryDirectory() as tmp:
        refs = make_reference_checkpoints(tmp, "edgetam", seed=0)
        ours = ek.ImagePredictor(ek.load_model(refs.hf_folder, device=dev))
    original = SAM2ImagePredictor(refs.original.to(dev))
    hf = refs.hf.to(dev)
    from transformers import Sam2ImageProcessor

    processor = Sam2Processor(image_processor=Sam2ImageProcessor(), target_size=1024)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        enc = {
            "edgetam-kit": median_seconds(lambda: (ours.set_image(img), sync()), args.repeats),
            "original": median_seconds(lambda: (original.set_image(img), sync()), args.repeats),
            "transformers": median_seconds(
                lambda: (hf.get_image_embeddings(
                    processor(images=img, return_tensors="pt")["pixel_values"].to(dev)), sync()), args.repeats),
        }
        hf_inputs = processor(images=img, input_points=[[point]], input_labels=[[[1]]], return_tensors="pt").to(dev)
        hf_emb = hf.get_image_embeddings(hf_inputs["pixel_values"])

        def hf_click() -> None:
            inp = processor(input_points=[[point]], input_labels=[[[1]]], original_sizes=[[args.size, args.size]],
                            return_tensors="pt").to(dev)
            out = hf(image_embeddings=hf_emb, input_points=inp["input_points"], input_labels=inp["input_labels"])
            processor.post_process_masks(out.pred_masks.cpu(), inp["original_sizes"].cpu())

        click = {
            "edgetam-kit": median_seconds(lambda: ours.predict(points=point, labels=[1]), args.clicks, warmup=3),
            "original": median_seconds(
                lambda: original.predict(point_coords=np.array(point), point_labels=np.array([1])), args.clicks, 3),
            "transformers": median_seconds(hf_click, args.clicks, warmup=3),
        }
    print(f"machine: {machine_facts()}  device={dev}")
    print(f"image {args.size}x{args.size}, random weights (identical in all three), medians of "
          f"{args.repeats} encodes / {args.clicks} clicks")
    print_table("encode (s)", [("image encode 1024x1024", enc)], "s")
    print_table("click to mask (ms)", [("1 point -> 3 masks @ input res", click)], "ms")


if __name__ == "__main__":
    main()
