"""Screenshots of the FiftyOne App running the ``segment_with_prompts`` operator, driven like a user
in headless Chromium: the form with the output-field error shown, the running operator's progress
bar, and the end-of-run summary.

    python scripts/fiftyone_app_screenshots.py [--out docs/images] [--images 12]

Needs Debian's ``chromium`` (``apt-get install -y chromium``); run by hand, not in CI. Steps: a
private mongod and FiftyOne folders (tests/fiftyone_helpers.py), a persistent dataset of
scikit-image images with box prompts and a ``gt_class`` Classification field, the App server
started headless (``python -m fiftyone.server.main``, with ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS``
as docs/fiftyone.md says), then Chromium through the DevTools protocol (scripts/cdp.py): the
operator browser (the backtick key), the operator's form, typing into its fields, Execute. The
masks come from a RANDOM-WEIGHT model of the real shape (slow enough on a CPU to see progress).
Server, browser and mongod are stopped by their pids.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))
import fiftyone_helpers as h  # noqa: E402
from cdp import Browser  # noqa: E402
from fiftyone_screenshot import make_dataset, wait_port  # noqa: E402

SERVER_LOG = Path(tempfile.gettempdir()) / "fiftyone-app-server.log"
LABEL_INPUT = """(() => {
  const t = %r;
  const labels = [...document.querySelectorAll('*')].filter(e => e.textContent.trim() === t);
  const label = labels[labels.length - 1];
  if (!label) return null;
  return [...document.querySelectorAll('input, textarea')].find(
      i => (i.type === 'text' || i.tagName === 'TEXTAREA') && (label.compareDocumentPosition(i) & 4)) || null;
})()"""


def set_text(b: Browser, label: str, text: str) -> None:
    """Type ``text`` into the form field labelled ``label``, replacing its value (keyboard input)."""
    b.click_js(LABEL_INPUT % label, what=f"field {label!r}")
    time.sleep(0.3)
    b.js(f"{LABEL_INPUT % label}.select()")
    b.type(text)
    time.sleep(0.5)
    if label == "Prompt field":
        b.key("Enter", vk=13)
    b.key("Tab", code="Tab", vk=9)
    time.sleep(2)  # the form is dynamic: the server resolves it again
    print(f"  {label}: {b.js(f'{LABEL_INPUT % label}.value')!r}")


def body_has(text: str) -> str:
    return f"document.body && document.body.innerText.includes({text!r})"


def button(text: str) -> str:
    return (f"[...document.querySelectorAll('button')].find(e => e.innerText.trim() === {text!r} "
            "&& !e.disabled)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "docs" / "images"))
    ap.add_argument("--images", type=int, default=12, help="samples (copies of 4 images)")
    ap.add_argument("--config", default="edgetam", help="model shape of the random weights")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fo = h.import_fiftyone()
    h.start_mongod()
    import edgetam_kit as ek

    server = browser = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            checkpoint = tmp / "random"
            ek.save_model(ek.build_random_model(args.config, seed=1, video=False), checkpoint)
            ds = make_dataset(fo, tmp)
            extra = [s.copy() for s in ds] * (max(args.images, 4) // 4 - 1)
            ds.add_samples(extra)
            for s in ds:
                s["gt_class"] = fo.Classification(label=s.prompts.detections[0].label)
                s.save()
            port = h._free_port()
            env = {**h.subprocess_env(), "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true"}
            server = subprocess.Popen([sys.executable, "-m", "fiftyone.server.main", "--port", str(port),
                                       "--address", "127.0.0.1"], env=env,
                                      stdout=open(SERVER_LOG, "w"), stderr=subprocess.STDOUT)
            wait_port(port, server)
            browser = b = Browser(tmp / "chromium")
            b.navigate(f"http://127.0.0.1:{port}/datasets/{ds.name}")
            b.wait(body_has("gt_class"), 120, "the dataset page")
            time.sleep(3)
            b.screenshot(tmp / "0-grid.png")
            # the operator browser: backtick, type, pick
            b.key("`", code="Backquote", text="`", vk=192)
            b.wait(body_has("EdgeTAM: segment with prompts"), 30, "the operator browser")
            b.type("segment with prompts")
            time.sleep(1)
            b.click_js("[...document.querySelectorAll('*')].find(e => e.children.length === 0 "
                       "&& e.textContent.trim() === 'EdgeTAM: segment with prompts')", "the operator")
            b.wait(body_has("Label field"), 60, "the operator form")
            set_text(b, "Checkpoint", str(checkpoint))
            set_text(b, "Prompt field", "prompts")
            set_text(b, "Label field", "gt_class")
            b.wait(body_has("already holds Classification"), 60, "the output-field error")
            time.sleep(1.5)
            b.screenshot(out / "fiftyone-form-error.png")
            print("wrote", out / "fiftyone-form-error.png")
            set_text(b, "Label field", "edgetam")
            b.wait(f"!({body_has('already holds Classification')})", 60, "the error to clear")
            time.sleep(1.5)
            b.click_js(button("Execute"), "Execute")
            b.wait("!!document.querySelector('[role=progressbar]')", 120, "a progress bar")
            b.wait(f"/\\b[1-9]\\d*\\/{len(ds)} images/.test(document.body.innerText) "
                   f"&& !document.body.innerText.includes('{len(ds)}/{len(ds)} images')", 300, "progress past 0")
            time.sleep(0.5)
            b.screenshot(out / "fiftyone-progress.png")
            print("wrote", out / "fiftyone-progress.png")
            b.wait(body_has("images labelled"), 900, "the summary")
            time.sleep(2)
            b.screenshot(out / "fiftyone-summary.png")
            print("wrote", out / "fiftyone-summary.png")
            ds.reload()
            print("labelled:", ds.count("edgetam"), "of", len(ds))
            ds.delete()
    except Exception:
        if browser is not None:  # what the page showed when a step failed
            browser.screenshot(out / "fiftyone-failed-step.png")
            print("page text:", (browser.js("document.body.innerText") or "")[:3000])
            print("App server log:", SERVER_LOG)
        raise
    finally:
        if browser is not None:
            browser.close()
        if server is not None:
            server.terminate()
            server.wait(20)
        h.cleanup()


if __name__ == "__main__":
    main()
