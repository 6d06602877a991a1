"""Helpers for the SIGKILL tests: wait for a writer's progress line, kill it hard, list the
hidden (temporary) names a writer leaves in a folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO


def wait_line(proc: subprocess.Popen, prefix: str, stream: IO[str] | None = None, timeout: float = 60.0) -> float:
    """Read ``stream`` (default: the process's stdout) until a line starting with ``prefix``;
    returns the time it came."""
    stream = proc.stdout if stream is None else stream
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if line.startswith(prefix):
            return time.monotonic()
        if not line and proc.poll() is not None:
            raise AssertionError(f"writer exited early: {proc.stderr.read()[-2000:]}")
    proc.kill()
    raise AssertionError(f"no {prefix!r} line within {timeout} s")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def hidden_names(folder: Path) -> list[str]:
    """Sorted names in ``folder`` that start with a dot (writers' temporary names)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
