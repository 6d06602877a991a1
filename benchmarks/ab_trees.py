"""Time edgetam-kit from two source trees (e.g. before and after a refactor) in the same sitting:
each round runs every tree once, in its own process, alternating; medians over the rounds.

    python benchmarks/ab_trees.py --tree before=/path/old/src --tree after=src --rounds 3

Both trees are used through the public API only (``ek.load_model``, ``ek.ImagePredictor``,
``ek.VideoTracker``, ``ek.AutoMaskGenerator``) and load the same random-weight checkpoint (real
shape, written once by the first tree). Figures: image encode 1024x1024 (s), click to mask with the
3 masks at 1024x1024 (ms), tracking one and three objects on 640x480 frames (s/frame over the
clip, and once the memory bank is full: frames after the 8th), automatic masks 16x16 points (s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_seconds  # noqa: E402

FRAMES = 12


def child(checkpoint: str, threads: int) -> dict[str, float]:
    import torch
    from skimage import data, transform

    import edgetam_kit as ek

    torch.set_num_threads(threads)
    model = ek.load_model(checkpoint)
    img = (transform.resize(data.astronaut(), (1024, 1024)) * 255).astype(np.uint8)
    pred = ek.ImagePredictor(model)
    out = {"encode_s": median_seconds(lambda: pred.set_image(img), 3)}
    out["click_s"] = median_seconds(lambda: pred.predict(points=[[460.0, 360.0]]), 10)
    rng = np.random.default_rng(0)
    frames = (rng.random((FRAMES, 480, 640, 3)) * 40 + 60).astype(np.uint8)
    for k in range(FRAMES):  # a bright disk moving right
        yy, xx = np.ogrid[:480, :640]
        frames[k][(yy - 240) ** 2 + (xx - 200 - 10 * k) ** 2 < 60 ** 2] = 220
    for n_obj in (1, 3):
        session = ek.VideoTracker(model).start(frames)
        session.add_prompt(0, 1, points=[[200, 240]])
        for j in range(1, n_obj):
            session.add_prompt(0, j + 1, points=[[60 + 80 * j, 60]])
        stamps = [time.perf_counter()]
        for _ in session.propagate():
            stamps.append(time.perf_counter())
        steps = np.diff(stamps)[1:]  # the prompted frame 0 is not tracked
        out[f"track{n_obj}_s_per_frame"] = float(np.mean(steps))
        out[f"track{n_obj}_full_bank_s_per_frame"] = float(np.mean(steps[7:]))
    gen = ek.AutoMaskGenerator(model, points_per_side=16, points_per_batch=64, pred_iou_thresh=0.5,
                               stability_score_thresh=0.213, stability_score_offset=0.005, mask_threshold=0.1)
    t0 = time.perf_counter()
    gen.generate(img)
    out["automask16_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=SRC", help="a source tree (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return
    trees = dict(t.split("=", 1) for t in args.tree)
    if len(trees) < 2:
        ap.error("give at least two --tree NAME=SRC")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "edgetam-random")
        first = next(iter(trees.values()))
        subprocess.run([sys.executable, "-c", "import edgetam_kit as ek, sys; "
                        "ek.save_model(ek.build_random_model('edgetam', seed=0, video=True), sys.argv[1])", ckpt],
                       check=True, env={**os.environ, "PYTHONPATH": os.path.abspath(first)})
        for r in range(args.rounds):
            for name, src in trees.items():
                env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
                done = subprocess.run([sys.executable, __file__, "--child", ckpt, "--threads", str(args.threads)],
                                      check=True, env=env, capture_output=True, text=True)
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
    names = list(trees)
    keys = list(results[names[0]][0])
    print(f"\nmedians of {args.rounds} rounds ({args.threads} threads)\n")
    print("| figure | " + " | ".join(names) + f" | {names[-1]} / {names[0]} |")
    print("| --- | " + " | ".join("---:" for _ in names) + " | ---: |")
    for k in keys:
        med = [statistics.median(run[k] for run in results[n]) for n in names]
        print(f"| {k} | " + " | ".join(f"{v:.4f}" for v in med) + f" | {med[-1] / med[0]:.3f} |")


if __name__ == "__main__":
    main()
