"""FiftyOne overhead: samples/s through ``dataset.apply_model``, through the
``segment_with_prompts`` operator, and calling the engine directly on the same images and prompts.

    python benchmarks/fiftyone.py [--images 12] [--config edgetam] [--repeats 2] [--threads 2]

All three read the same PNG files from disk and segment the same two boxes per image with the
same random-weight checkpoint (saved to disk, loaded with ek.load_model). "direct" = read the
image + ImagePredictor.set_image + predict_batch; "apply_model" = EdgeTamImageModel via
apply_model (batch_size 1, labels saved by FiftyOne); "label_images" = the operators' resumable
runner called from Python (saves each sample); "operator" = execute_operator, immediate,
which also loads the checkpoint and saves each sample itself. Overhead = time / direct - 1
(target: <= 15%). A private mongod is started for the run (tests/fiftyone_helpers.py) and stopped.

Every path runs in a worker thread, because FiftyOne runs operators in its executor's thread and,
measured here, the same torch calls ran faster in a fresh thread than in the main thread; timing
"direct" in the main thread made the operator look faster than the engine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine_facts, set_threads

# This file is named fiftyone.py: drop its folder from the path so `import fiftyone` finds the package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))
import fiftyone_helpers as h  # noqa: E402  (isolated FiftyOne folders + one mongod)


def make_images(folder: Path, n: int, hw: tuple[int, int]) -> list[str]:
    from skimage import data, io, transform

    base = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    paths = []
    for i in range(n):
        img = transform.resize(base[i % len(base)], hw, order=1, preserve_range=True).astype(np.uint8)
        img = np.roll(img, 7 * i, axis=1)  # every image different
        p = folder / f"img{i:03d}.png"
        io.imsave(p, img, check_contrast=False)
        paths.append(str(p))
    return paths


BOXES = ([0.1, 0.1, 0.4, 0.5], [0.5, 0.45, 0.35, 0.45])  # relative x, y, w, h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--config", default="edgetam", help="edgetam (real shape, 1024 input) or tiny")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=4, help="passes per path (best and median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    set_threads(args.threads)

    fo = h.import_fiftyone()
    h.start_mongod()
    import fiftyone.operators as foo
    import fiftyone.utils.image as foui

    import edgetam_kit as ek
    from edgetam_kit.fiftyone import EdgeTamImageModel, label_images

    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ckpt = tmp / "ckpt"
            ek.save_model(ek.build_random_model(args.config, seed=1, video=False), ckpt)
            files = make_images(tmp, args.images, (args.height, args.width))
            ds = fo.Dataset()
            ds.add_samples([fo.Sample(filepath=f, boxes=fo.Detections(detections=[
                fo.Detection(label=str(k), bounding_box=b) for k, b in enumerate(BOXES)])) for f in files])

            pred = ek.ImagePredictor(ek.load_model(str(ckpt), device=args.device))

            def direct() -> None:
                for f in files:
                    img = foui.read(f)
                    hgt, wid = img.shape[:2]
                    pred.set_image(img)
                    pred.predict_batch(boxes=[[x * wid, y * hgt, (x + w) * wid, (y + hh) * hgt]
                                              for x, y, w, hh in BOXES], multimask=False)

            model = EdgeTamImageModel(checkpoint=str(ckpt), device=args.device)
            runs = {"direct": direct,
                    "apply_model": lambda: ds.apply_model(model, label_field="am", prompt_field="boxes",
                                                          skip_failures=False, progress=False),
                    "label_images": lambda: label_images(ds, model, "li", prompt_field="boxes",
                                                         skip_existing=False),
                    "operator": lambda: foo.execute_operator(
                        f"{h.PLUGIN_NAME}/segment_with_prompts", dataset=ds,
                        params=dict(checkpoint=str(ckpt), prompt_field="boxes", label_field="op",
                                    skip_existing=False, device=args.device))}
            pool = ThreadPoolExecutor(1)
            pool.submit(direct).result()  # warm-up (allocator, first-call costs) shared by all paths
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():  # interleaved, so load changes hit every path alike
                    t0 = time.perf_counter()
                    pool.submit(fn).result()
                    times[name].append(time.perf_counter() - t0)
            pool.shutdown()
            assert ds.count("am.detections") == ds.count("op.detections")
    finally:
        h.cleanup()

    print(f"machine: {machine_facts()}  device={args.device}")
    print(f"{args.images} images {args.height}x{args.width}, 2 boxes each, config {args.config} "
          f"(random weights), {args.repeats} interleaved passes per path")
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{'path':<14}{'best s':>9}{'samples/s':>11}{'overhead':>10}{'median s':>11}{'overhead':>10}")
    for name in times:
        print(f"{name:<14}{best[name]:>9.2f}{args.images / best[name]:>11.2f}"
              f"{(best[name] / best['direct'] - 1) * 100:>9.1f}%{median[name]:>11.2f}"
              f"{(median[name] / median['direct'] - 1) * 100:>9.1f}%")


if __name__ == "__main__":
    main()
