"""Kill tests (issue 18) for the embedding cache writer and ``edgetam embed``: SIGKILL at random points,
repeated a few times; entries written before stay whole and readable, no visible entry is ever
damaged, and the next run removes what the killed writers left. Bounded: a few kills per writer."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from kill_helpers import hidden_names as _hidden, kill as _kill, wait_line as _wait_line

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1",
               EDGETAM_KIT_DISABLE_PLUGINS="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _entries_ok(folder: Path) -> set[str]:
    """Every visible entry of the cache at ``folder`` loads whole (checksums match); their names."""
    import zarr

    from edgetam_kit.io.cache import EmbeddingCache

    cache = EmbeddingCache(folder, readonly=True)
    names = set(cache.keys())
    for name in names:
        signature = zarr.open_group(str(folder / name), mode="r").attrs["signature"]
        assert cache._load(signature) is not None, f"entry {name} is visible but damaged"
    return names


# ----------------------------------------------------------------------------- the cache writer
CACHE_WRITER = """
    import sys
    import torch
    from edgetam_kit.io.cache import EmbeddingCache
    from edgetam_kit.modeling import ImageFeatures
    g = torch.Generator().manual_seed(0)
    feats = ImageFeatures(torch.randn(1, 256, 64, 64, generator=g),
                          (torch.randn(1, 32, 256, 256, generator=g), torch.randn(1, 64, 128, 128, generator=g)))
    cache = EmbeddingCache(sys.argv[1])
    print("ready", flush=True)
    k = 0
    while True:
        cache.put({"k": k}, feats)
        k += 1
"""


def test_sigkill_during_cache_writes_keeps_entries_whole(tmp_path) -> None:
    import torch

    from edgetam_kit.io.cache import EmbeddingCache
    from edgetam_kit.modeling import ImageFeatures

    folder = tmp_path / "cache"
    good = ImageFeatures(torch.ones(1, 4, 2, 2), (torch.zeros(1, 2, 8, 8), torch.ones(1, 3, 4, 4)))
    cache = EmbeddingCache(folder)
    cache.put({"k": "good"}, good)
    rng = random.Random(18)
    mid_write = 0
    for _ in range(3):
        proc = _start(["-c", textwrap.dedent(CACHE_WRITER), str(folder)])
        _wait_line(proc, "ready")
        time.sleep(rng.uniform(0.2, 1.5))
        _kill(proc)
        mid_write += any(n.startswith(".tmp-") for n in _hidden(folder))
        _entries_ok(folder)
        got = cache.get({"k": "good"})
        assert got is not None and torch.equal(got.embed, good.embed), "a kill damaged an earlier entry"
    assert mid_write >= 1, "no kill landed while an entry was being written"
    assert len(cache) >= 2, "no write completed before the kills"
    cache.put({"k": "next"}, good)  # the next write cleans what dead writers left
    assert _hidden(folder) == []


# ----------------------------------------------------------------------------- edgetam embed
def _images(folder: Path, n: int, seed: int) -> Path:
    import skimage.io

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        skimage.io.imsave(folder / f"f{i:02d}.png", (rng.random((48, 64, 3)) * 255).astype(np.uint8),
                          check_contrast=False)
    return folder


EMBED = "import sys; from edgetam_kit.cli import main; sys.exit(main(sys.argv[1:]))"


def _embed(source: Path, cache: Path) -> subprocess.Popen:
    return _start(["-c", EMBED, "embed", str(source), "-o", str(cache), "--checkpoint", "random:tiny", "--quiet"])


def test_sigkill_during_embed_keeps_the_cache_whole(tmp_path) -> None:
    cache = tmp_path / "cache"
    first, second = _images(tmp_path / "a", 12, 1), _images(tmp_path / "b", 12, 2)
    proc = _embed(first, cache)
    t0 = _wait_line(proc, "weights: RANDOM", proc.stderr)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    duration = time.monotonic() - t0
    proc.stdout.close()
    proc.stderr.close()
    before = _entries_ok(cache)
    assert len(before) == 12
    rng = random.Random(4)
    for k in range(3):  # stratified kill points over the embedding time
        proc = _embed(second, cache)
        _wait_line(proc, "weights: RANDOM", proc.stderr)
        time.sleep(duration * (0.1 + 0.8 * (k + rng.random()) / 3))
        _kill(proc)
        assert before <= _entries_ok(cache), "a kill lost or damaged an entry written before"
    proc = _embed(second, cache)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert len(_entries_ok(cache)) == 24
    assert _hidden(cache) == [], "the next run must clean what the killed ones left"
    proc = _embed(first, cache)
    out, err = proc.communicate(timeout=120)
    assert "0 embedded, 12 already" in out, out + err
