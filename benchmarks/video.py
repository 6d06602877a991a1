"""Tracking speed: seconds per frame for edgetam-kit, the original EdgeTAM predictor and
transformers' EdgeTamVideoModel at identical random weights, real shape, one process.

    python benchmarks/video.py [--frames 10] [--threads 2] [--height 480 --width 640]

1 object and 3 objects (the original: 1 only — it crashes with several,
facebookresearch/EdgeTAM#15). Time = propagation over all frames / frames (prompting and,
for the original, its up-front frame loading are excluded). Ratios are peer / ours (> 1:
ours is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from common import machine_facts, print_table, set_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--preset", default="edgetam")
    args = ap.parse_args()
    set_threads(args.threads)

    import torch

    import edgetam_kit as ek
    from edgetam_kit.testing.oracles import make_video_references
    from edgetam_kit.testing.synthetic import SyntheticSource
    from video_runners import run_hf, run_original

    src = SyntheticSource(args.frames, args.height, args.width, seed=0)
    frames = np.stack([src.frame(i) for i in range(args.frames)])
    cx, cy = src.center(0)
    objs = [[cx, cy], [args.width * 0.15, args.height * 0.2], [args.width * 0.85, args.height * 0.8]]
    with tempfile.TemporaryDirectory() as d:
        refs = make_video_references(d, args.preset)
        model = ek.load_model(refs.pt_path, config=refs.config)

    def ours(n_obj: int) -> float:
        session = ek.VideoTracker(model).start(frames)
        for k in range(n_obj):
            session.add_prompt(0, k + 1, points=[objs[k]])
        t0 = time.perf_counter()
        for _ in session.propagate():
            pass
        return (time.perf_counter() - t0) / args.frames

    def hf(n_obj: int) -> float:
        t = {}
        prompts = [{"frame": 0, "obj": k + 1, "points": [objs[k]], "labels": [1]} for k in range(n_obj)]
        orig_iter = refs.hf.propagate_in_video_iterator

        def timed(*a, **kw):
            t0 = time.perf_counter()
            yield from orig_iter(*a, **kw)
            t["s"] = time.perf_counter() - t0

        refs.hf.propagate_in_video_iterator = timed
        try:
            run_hf(refs.hf, frames, prompts)
        finally:
            refs.hf.propagate_in_video_iterator = orig_iter
        return t["s"] / args.frames

    def original() -> float:
        t = {}
        pred = refs.original
        orig_prop = pred.propagate_in_video

        def timed(*a, **kw):
            t0 = time.perf_counter()
            yield from orig_prop(*a, **kw)
            t["s"] = time.perf_counter() - t0

        pred.propagate_in_video = timed
        try:
            run_original(pred, frames, [{"frame": 0, "points": [objs[0]], "labels": [1]}])
        finally:
            pred.propagate_in_video = orig_prop
        return t["s"] / args.frames

    with torch.inference_mode():
        one = {"edgetam-kit": ours(1), "original": original(), "transformers": hf(1)}
        three = {"edgetam-kit": ours(3), "transformers": hf(3)}
    print(f"machine: {machine_facts()}")
    print(f"{args.frames} frames {args.width}x{args.height}, preset {args.preset}, random weights (identical)")
    print_table("seconds per frame, 1 object", [("track 1 object", one)], "s")
    print_table("seconds per frame, 3 objects", [("track 3 objects", three)], "s")
    print(f"\n3 objects cost {three['edgetam-kit'] / one['edgetam-kit']:.2f}x one object (edgetam-kit)")


if __name__ == "__main__":
    main()
