"""Atomic outputs: every file or folder the engine writes for a user (exports, ``track -o``) is
written under a temporary name in its destination folder and renamed into place only when
complete, so a failure or a kill at any point leaves the previous output as it was.

Temporary names are ``.<name>.<pid>-<random>.tmp`` (hidden, next to the output). A folder (OME-Zarr,
zarr) replaces an existing one by an atomic exchange of the two (Linux ``renameat2``), then the
old content is removed; where the exchange is not available the old folder is first renamed to
``.<name>.<pid>-<random>.old`` and restored by the next writer if a kill came between the two
renames. Leftovers of dead writers are removed by the next write into the same folder.

    with atomic_output(Path("out/a.zarr")) as tmp:
        write_everything(tmp)          # an exception removes tmp and keeps out/a.zarr
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|old)$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def temp_path(final: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``final`` that only this process uses."""
    return final.parent / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def clean_leftovers(folder: Path) -> None:
    """Remove the temporary files/folders of writers that are gone (a kill, a crash); an ``.old``
    folder whose output is missing (a kill between the two renames) is put back instead."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for p in entries:
        m = _LEFTOVER.match(p.name)
        if m is None or _alive(int(m["pid"])):
            continue
        final = folder / m["name"]
        if m["kind"] == "old" and not final.exists():
            with contextlib.suppress(OSError):  # never delete the only copy
                os.rename(p, final)
            continue
        _remove(p)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def commit(tmp: Path, final: Path) -> None:
    """Put the complete ``tmp`` in place of ``final`` (a file, or a folder replacing a folder)."""
    if not (tmp.is_dir() and final.is_dir()):
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)  # a folder where a file goes: the user asked for the file
        elif tmp.is_dir() and (final.is_file() or final.is_symlink()):
            final.unlink()  # a file where a folder goes
        os.replace(tmp, final)
        return
    if _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old content
        return
    old = temp_path(final, "old")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success it replaces ``final``, on an
    exception it is removed and ``final`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(final.parent)
    tmp = temp_path(final)
    try:
        yield tmp
        commit(tmp, final)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
