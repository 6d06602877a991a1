"""Peak memory of tracking: does a long stack cost what a short one costs?

    python benchmarks/memory.py                 # tiny 100 vs 2000 frames, real shape 50 vs 300, references
    python benchmarks/memory.py --quick         # tiny 100 vs 500, real 50 vs 100
    python benchmarks/memory.py --tiny 100 300 --real 50 150 --skip-references

Each run is a fresh subprocess (peak RSS only grows within a process) tracking one object
through a lazily generated SyntheticSource (frames are made on demand, never stored), so the
peak is the engine's own. The references are measured the same way on short runs, as MB of
peak RSS per extra frame (they load every frame up front and keep every frame's outputs).
Random weights; identical network shapes. Ours runs on the default runtime (``ek.optimize``, what
``ek.load_model`` gives every user), not the plain modules.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(engine: str, preset: str, n: int, side: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("EDGETAM_BENCH_THREADS", "2")))
    import edgetam_kit as ek
    from edgetam_kit.testing.synthetic import SyntheticSource

    source = SyntheticSource(n, side, side, seed=0)
    cx, cy = source.center(0)
    t0 = time.perf_counter()
    if engine == "edgetam-kit":
        model = ek.optimize(ek.build_random_model(preset))  # the default runtime, as ek.load_model gives
        session = ek.VideoTracker(model).start(source)
        session.add_prompt(0, 1, points=[[cx, cy]])
        for _ in session.propagate():
            pass
    else:
        from edgetam_kit.testing.oracles import make_video_references

        with tempfile.TemporaryDirectory() as d:
            refs = make_video_references(d, preset)
            frames = np.stack([source.frame(i) for i in range(n)])
            sys.path.insert(0, os.path.join(HERE, "..", "tests"))
            from video_runners import run_hf, run_original

            if engine == "original":
                run_original(refs.original, frames, [{"frame": 0, "points": [[cx, cy]], "labels": [1]}])
            else:
                run_hf(refs.hf, frames, [{"frame": 0, "obj": 1, "points": [[cx, cy]], "labels": [1]}])
    return {"peak_mb": peak_mb(), "seconds": time.perf_counter() - t0}


def run(engine: str, preset: str, n: int, side: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", engine, preset, str(n), str(side)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiny", type=int, nargs=2, metavar=("SHORT", "LONG"), help="tiny-config frame counts")
    ap.add_argument("--real", type=int, nargs=2, metavar=("SHORT", "LONG"), help="real-shape frame counts")
    ap.add_argument("--child", nargs=4, metavar=("ENGINE", "PRESET", "N", "SIDE"), help=argparse.SUPPRESS)
    ap.add_argument("--skip-references", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each run (default 2)")
    args = ap.parse_args()
    os.environ["EDGETAM_BENCH_THREADS"] = str(args.threads)
    if args.child:
        engine, preset, n, side = args.child
        print(json.dumps(child(engine, preset, int(n), int(side))))
        return

    tiny = tuple(args.tiny) if args.tiny else (100, 500) if args.quick else (100, 2000)
    real = tuple(args.real) if args.real else (50, 100) if args.quick else (50, 300)
    print(f"{'engine':<14}{'shape':<8}{'frames':>8}{'peak RSS MB':>14}{'seconds':>10}")
    rows = []
    for preset, (short, long), side in (("tiny", tiny, 256), ("edgetam", real, 480)):
        res = {n: run("edgetam-kit", preset, n, side) for n in (short, long)}
        for n, r in res.items():
            print(f"{'edgetam-kit':<14}{preset:<8}{n:>8}{r['peak_mb']:>14.0f}{r['seconds']:>10.1f}")
        ratio = res[long]["peak_mb"] / res[short]["peak_mb"]
        rows.append((preset, short, long, ratio))
    for preset, short, long, ratio in rows:
        verdict = "ok" if ratio <= 1.10 else "OVER 1.10"
        print(f"peak RSS ratio {preset} {long} vs {short} frames: {ratio:.3f} ({verdict})")
    if args.skip_references:
        return
    print("\nreferences, MB of peak RSS per extra frame (tiny config, 256x256 frames):")
    for engine in ("edgetam-kit", "original", "transformers"):
        a, b = run(engine, "tiny", 10, 256), run(engine, "tiny", 40, 256)
        print(f"  {engine:<14}{(b['peak_mb'] - a['peak_mb']) / 30:>8.2f} MB/frame  "
              f"(10 frames: {a['peak_mb']:.0f} MB, 40 frames: {b['peak_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
