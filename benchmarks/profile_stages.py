"""Where the time goes: torch.profiler summaries of one image encode, one click and one
tracked frame (real shape, random weights, ours only). The summary kept in
benchmarks/README.md comes from this script.

    python benchmarks/profile_stages.py [--threads 2] [--backend eager|none] [--precision fp32|bf16|fp16] [--rows 8]

For each stage: wall time (median of 3) and the operators with the most self CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from common import machine_facts, set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="eager")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--precision", default="fp32", help="fp32, or bf16 / fp16 (the opt-in autocast)")
    args = ap.parse_args()
    set_threads(args.threads)
    import torch
    from skimage import data, transform
    from torch.profiler import ProfilerActivity, profile

    import edgetam_kit as ek
    from edgetam_kit.testing.synthetic import SyntheticSource

    model = ek.optimize(ek.build_random_model("edgetam", seed=0, video=True), backend=args.backend,
                        precision=args.precision)
    img = (transform.resize(data.astronaut(), (1024, 1024)) * 255).astype(np.uint8)
    pred = ek.ImagePredictor(model)
    pred.set_image(img)

    src = SyntheticSource(12, 480, 640, seed=0)
    session = ek.VideoTracker(model).start(np.stack([src.frame(i) for i in range(12)]))
    session.add_prompt(0, 1, points=[src.center(0)])
    frames = session.propagate()
    for _ in range(8):  # fill the memory bank: 7 memories + pointers, as in a long run
        next(frames)

    stages = {
        "image encode 1024x1024": lambda: pred.set_image(img),
        "click (1 point, 3 masks at 1024x1024)": lambda: pred.predict(points=[[460, 360]], labels=[1]),
        "tracked frame (1 object, full bank)": lambda: next(frames),
    }
    print(f"machine: {machine_facts()}  backend={args.backend} precision={args.precision}")
    for name, fn in stages.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        print(f"\n## {name}: {statistics.median(times) * 1000:.0f} ms (median of 3)")
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.rows]
        for e in events:
            print(f"  {e.key:<50} {e.self_cpu_time_total / 1000:>8.1f} ms {100 * e.self_cpu_time_total / total:>5.1f}%"
                  f"  ({e.count} calls)")
    torch.set_num_threads(args.threads)


if __name__ == "__main__":
    main()
