"""What an fp16 embedding cache costs in accuracy and saves on disk, against the exact path.

    python benchmarks/cache_precision.py [--threads 2] [--presets edgetam,tiny]

For each preset (random weights, seeded: ``ek.build_random_model``; no checkpoint is downloaded)
and each of 3 images (scikit-image astronaut, coffee, cell; cells3d needs a download), 16 point
prompts on a 4x4 grid are decoded from the exact (uncached) features and from the features read
back from an fp16 cache entry. Reported: mask IoU (best-multimask mask of each prompt; min and
mean over the 48 prompts), max |low-res logit| difference (all 3 multimask logits, clamped to
+-32 as the predictor returns them), max predicted-IoU difference, bytes of one entry on disk for
an fp32 and an fp16 cache (zarr's default compression), and the median time of
``EmbeddingCache.get`` (5 reads of each image's entry, ms, CPU tensors out).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine_facts, set_threads


def images() -> dict[str, np.ndarray]:
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "cell": data.cell()}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def grid_points(h: int, w: int, n: int = 4) -> list[list[float]]:
    """n x n (x, y) points at the centres of an n x n grid of cells."""
    return [[(i + 0.5) * w / n, (j + 0.5) * h / n] for j in range(n) for i in range(n)]


def measure(model, imgs: dict[str, np.ndarray], root: Path) -> dict[str, float]:
    import edgetam_kit as ek
    from edgetam_kit.io.cache import image_signature

    ious, logit_diff, score_diff = [], 0.0, 0.0
    sizes: dict[str, list[int]] = {"fp32": [], "fp16": []}
    get_ms: dict[str, list[float]] = {"fp32": [], "fp16": []}
    for name, img in imgs.items():
        exact = ek.ImagePredictor(model)
        exact.set_image(img)
        for precision in ("fp32", "fp16"):
            folder = root / f"{name}-{precision}"
            ek.ImagePredictor(model, cache=ek.EmbeddingCache(folder, precision=precision)).set_image(img)
            sizes[precision].append(folder_bytes(folder))
        cache = ek.EmbeddingCache(root / f"{name}-fp16", precision="fp16")
        cached = ek.ImagePredictor(model, cache=cache)
        cached.set_image(img)
        assert cache.hits == 1, "the fp16 entry must be read, not re-encoded"
        sig = image_signature(img, model, cached.percentiles, None, None)
        for precision in ("fp32", "fp16"):
            reader = ek.EmbeddingCache(root / f"{name}-{precision}", precision=precision)
            for _ in range(5):
                t0 = time.perf_counter()
                assert reader.get(sig) is not None
                get_ms[precision].append((time.perf_counter() - t0) * 1e3)
        for pt in grid_points(*img.shape[:2]):
            a = exact.predict(points=[pt], labels=[1])
            b = cached.predict(points=[pt], labels=[1])
            k = a.best
            ious.append(iou(a.masks[k], b.masks[k]))
            logit_diff = max(logit_diff, float(np.abs(a.logits - b.logits).max()))
            score_diff = max(score_diff, float(np.abs(a.scores - b.scores).max()))
    return {"iou_min": min(ious), "iou_mean": statistics.mean(ious), "logit": logit_diff, "score": score_diff,
            "bytes32": statistics.mean(sizes["fp32"]), "bytes16": statistics.mean(sizes["fp16"]),
            "get32": statistics.median(get_ms["fp32"]), "get16": statistics.median(get_ms["fp16"]), "prompts": len(ious)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="edgetam,tiny", help="comma-separated presets (random weights)")
    args = ap.parse_args()
    set_threads(args.threads)
    import torch

    import edgetam_kit as ek

    imgs = images()
    rows = {}
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            model = ek.build_random_model(preset, seed=0, video=False)
            rows[preset] = measure(model, imgs, Path(tmp) / preset)
    print(f"date: {time.strftime('%Y-%m-%d')}; machine: {machine_facts()}")
    print(f"images: {', '.join(f'{n} {i.shape[1]}x{i.shape[0]}' for n, i in imgs.items())}; 16 point prompts each; "
          "random weights (seed 0)\n")
    print("| preset (random weights) | mask IoU min / mean | max abs logit diff | max pred-IoU diff "
          "| entry bytes fp32 / fp16 (ratio) | get() ms fp32 / fp16 |")
    print("|---|---|---|---|---|---|")
    for preset, r in rows.items():
        print(f"| {preset} | {r['iou_min']:.4f} / {r['iou_mean']:.4f} | {r['logit']:.3g} | {r['score']:.3g} "
              f"| {r['bytes32'] / 1e6:.2f} MB / {r['bytes16'] / 1e6:.2f} MB ({r['bytes16'] / r['bytes32']:.2f}) "
              f"| {r['get32']:.1f} / {r['get16']:.1f} |")


if __name__ == "__main__":
    main()
