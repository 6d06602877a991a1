"""ONNX export and onnxruntime beside our eager runtime (issue 20): export time and file sizes, then
encode, click and tracked frame on CPU with N threads for eager (PyTorch), onnx (fp32) and
onnx-int8 (dynamic-quantized encoder + decoder), with the masks' IoU against eager.

    python benchmarks/onnx_runtime.py                      # real shape, 2 threads (~10 min on 2 busy cores)
    python benchmarks/onnx_runtime.py --preset tiny        # smoke test
    python benchmarks/onnx_runtime.py --markdown docs/export.md   # also rewrite the table there

Random weights (seed 0; speed does not depend on them). IoU: clicks: the 3 candidate masks of 3
clicks; tracking: every frame of one tracked object. Medians.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from common import machine_facts, median_seconds, set_threads  # noqa: E402

ENGINES = ("eager", "onnx", "onnx-int8")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def _image(side: int) -> np.ndarray:
    from onnx_helpers import sample_image

    return sample_image(side)


def bench(preset: str, repeats: int, n_frames: int, fp16: bool) -> tuple[list[str], dict]:
    import torch

    import edgetam_kit as ek
    from edgetam_kit.runtime import runtime_of
    from video_runners import moving_disks

    lines: list[str] = []
    facts: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = ek.build_random_model(preset, seed=0)
        ckpt, out = os.path.join(tmp, "ckpt"), os.path.join(tmp, "onnx")
        ek.save_model(model, ckpt)
        t0 = time.perf_counter()
        ek.export_onnx(model, out, quantize="int8", fp16=fp16)
        facts["export_s"] = time.perf_counter() - t0
        import json

        man = json.load(open(os.path.join(out, "manifest.json")))
        sizes = {p: e["bytes"] for p, e in man["files"].items()}
        for v, d in man["variants"].items():
            sizes.update({f"{p} ({v})": e["bytes"] for p, e in d.items()})
        facts["sizes"] = sizes
        side = model.config.image_size
        img = _image(side)
        clicks = [(0.39 * side, 0.2 * side), (0.23 * side, 0.78 * side), (0.7 * side, 0.6 * side)]
        frames = moving_disks(n_frames, side)
        prompt = {"points": [[0.31 * side, 0.39 * side]], "labels": [1]}
        res: dict[str, dict] = {}
        for engine in ENGINES:
            m = ek.load_model(ckpt if engine == "eager" else out, backend=engine)
            rt = runtime_of(m)
            px = torch.randn(1, 3, side, side)
            with rt.inference():
                enc = median_seconds(lambda: rt.encode_image(px), repeats)
            pred = ek.ImagePredictor(m)
            pred.set_image(img)
            click = median_seconds(lambda: pred.predict(points=[clicks[0]]), repeats * 3)
            masks = [pred.predict(points=[c]).masks for c in clicks]
            session = ek.VideoTracker(m).start(frames)
            session.add_prompt(0, 1, **prompt)
            t0, tracked = time.perf_counter(), []
            for f, ids, mk in session.propagate("forward"):
                tracked.append(mk[0])
            per_frame = (time.perf_counter() - t0) / n_frames
            res[engine] = dict(encode=enc, click=click, frame=per_frame, masks=masks, tracked=tracked)
            print(f"{engine}: encode {enc * 1e3:.1f} ms, click {click * 1e3:.1f} ms, frame {per_frame * 1e3:.1f} ms",
                  flush=True)
        base = res["eager"]
        lines += ["| engine | encode | click | tracked frame | click masks IoU vs eager (min / mean) "
                  "| tracked IoU vs eager (min) |", "| --- | --- | --- | --- | --- | --- |"]
        for engine in ENGINES:
            r = res[engine]
            ci = [_iou(a, b) for ma, mb in zip(base["masks"], r["masks"]) for a, b in zip(ma, mb)]
            ti = [_iou(a, b) for a, b in zip(base["tracked"], r["tracked"])]
            speed = lambda k: f"{r[k] * 1e3:.1f} ms" + ("" if engine == "eager" else f" ({base[k] / r[k]:.2f}x)")  # noqa: E731
            lines.append(f"| {engine} | {speed('encode')} | {speed('click')} | {speed('frame')} | "
                         f"{min(ci):.4f} / {np.mean(ci):.4f} | {min(ti):.4f} |")
    return lines, facts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="edgetam")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--fp16", action="store_true", help="also export fp16 files (sizes only)")
    ap.add_argument("--markdown", help="rewrite the table between the onnx-bench markers in this file")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    lines, facts = bench(args.preset, args.repeats, args.frames, args.fp16)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in facts["sizes"].items())
    table = "\n".join([f"{when}; preset {args.preset}; {args.threads} threads; {machine_facts()}", "",
                       *lines, "", f"Export (dynamo, with int8{' and fp16' if args.fp16 else ''}): "
                       f"{facts['export_s']:.0f} s. Files: {sizes}."])
    print("\n" + table)
    if args.markdown:
        text = open(args.markdown).read()
        new = re.sub(r"(<!-- onnx-bench -->\n).*?(\n<!-- /onnx-bench -->)", lambda m: m[1] + table + m[2], text,
                     flags=re.S)
        open(args.markdown, "w").write(new)


if __name__ == "__main__":
    main()
