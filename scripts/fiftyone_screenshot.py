"""Screenshot of the FiftyOne App showing masks written by the ``segment_with_prompts`` operator.

    python scripts/fiftyone_screenshot.py [--checkpoint PATH] [--out docs/images]

Needs Debian's ``chromium`` (``apt-get install -y chromium``); run by hand, not in CI. Steps:
a private mongod and FiftyOne folders (tests/fiftyone_helpers.py), a persistent dataset of
scikit-image sample images with box prompts, the operator run headless, the App server started
headless (``python -m fiftyone.server.main``), then a headless Chromium screenshot of the grid,
cropped to the left of the App's "Enterprise" pop-over (it cannot be dismissed without a click);
server and mongod are stopped by their pids. Without ``--checkpoint`` the masks
come from a RANDOM-WEIGHT model: they show where masks go in the App, not what EdgeTAM finds.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import fiftyone_helpers as h  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,900", "--virtual-time-budget=45000"]


def make_dataset(fo, folder: Path):
    from skimage import data, io, transform

    import numpy as np

    items = [("astronaut", data.astronaut(), [[0.28, 0.05, 0.42, 0.55], [0.0, 0.5, 0.35, 0.5]]),
             ("coffee", data.coffee(), [[0.2, 0.1, 0.6, 0.75]]),
             ("chelsea", data.chelsea(), [[0.25, 0.05, 0.5, 0.6]]),
             ("rocket", data.rocket(), [[0.4, 0.1, 0.2, 0.8]])]
    ds = fo.Dataset("edgetam-kit-screenshot", persistent=True, overwrite=True)
    for name, img, boxes in items:
        img = transform.resize(img, (480, int(480 * img.shape[1] / img.shape[0])), preserve_range=True)
        path = folder / f"{name}.png"
        io.imsave(path, img.astype(np.uint8), check_contrast=False)
        ds.add_sample(fo.Sample(filepath=str(path), prompts=fo.Detections(detections=[
            fo.Detection(label=name, bounding_box=b) for b in boxes])))
    return ds


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"App server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("App server did not start")


def screenshot(url: str, out: Path, profile: Path) -> None:
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
                   check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def crop(src: Path, dst: Path, box: tuple[int, int, int, int] = (0, 0, 975, 530)) -> None:
    """Keep the sidebar and the first tiles (left of the pop-over; 1400x900 window)."""
    from skimage import io

    img = io.imread(src)
    x0, y0, x1, y1 = box
    io.imsave(dst, img[y0:y1, x0:x1], check_contrast=False)
    print("wrote", dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="real weights; default: a random-weight model")
    ap.add_argument("--out", default=str(REPO / "docs" / "images"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fo = h.import_fiftyone()
    h.start_mongod()
    import fiftyone.operators as foo

    import edgetam_kit as ek

    server = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            checkpoint = args.checkpoint
            if checkpoint is None:
                checkpoint = str(tmp / "random")
                ek.save_model(ek.build_random_model("tiny", seed=1, video=False), checkpoint)
            ds = make_dataset(fo, tmp)
            result = foo.execute_operator(f"{h.PLUGIN_NAME}/segment_with_prompts", dataset=ds,
                                          params=dict(checkpoint=checkpoint, prompt_field="prompts",
                                                      label_field="edgetam"))
            print("operator:", result.result)
            port = h._free_port()
            server = subprocess.Popen([sys.executable, "-m", "fiftyone.server.main", "--port", str(port),
                                       "--address", "127.0.0.1"], env=h.subprocess_env(),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(port, server)
            base = f"http://127.0.0.1:{port}/datasets/{ds.name}"
            screenshot(base, tmp / "full.png", tmp / "chromium")
            crop(tmp / "full.png", out / "fiftyone-grid.png")
            ds.delete()
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        h.cleanup()


if __name__ == "__main__":
    main()
