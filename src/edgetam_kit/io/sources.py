"""Frame sources: a sequence of T frames, each HxW or HxWxC, read when asked and not kept.

``open_source(x)`` turns what the caller has into a ``FrameSource``: a FrameSource (as is), a
numpy / dask / zarr array (T, H, W[, C]), a folder of images (natural sort: frame2 before
frame10), a TIFF stack, or a video file (PyAV). Plugins are consulted first through the
``edgetam_kit_frame_sources`` hook; the built-ins are registered through it too. Every source
checks that frame i has frame 0's shape and dtype when frame i is read (ValueError naming i), and
cheap cases up front. av, tifffile and scikit-image are imported only when a file is opened.
"""

from __future__ import annotations

import abc

import math
import mmap
import operator
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .plugin_guard import probe_source, remember_source
from .tiff_health import tiff_damage

BUILTIN_PRIORITY = -100
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".gif", ".mpg", ".mpeg",
                  ".wmv", ".flv", ".ogv", ".ts", ".mts", ".m2ts", ".3gp")
ACCEPTED = ("a FrameSource, a numpy/dask/zarr array (T, H, W) or (T, H, W, C), a folder of images "
            f"({'/'.join(s[1:] for s in IMAGE_SUFFIXES)}), a .tif/.tiff stack, a video file "
            f"({'/'.join(s[1:] for s in VIDEO_SUFFIXES)}), or a format a plugin opens")


@runtime_checkable
class FrameSource(Protocol):
    """T frames of one shape: ``len(src) == T``, ``src.shape == (T, H, W[, C])``,
    ``src.frame(i)`` -> ndarray (H, W[, C]) of ``src.dtype``, read on demand."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __len__(self) -> int: ...

    def frame(self, i: int) -> np.ndarray: ...


class BaseSource(abc.ABC):
    """Shared plumbing: index checks, the same-shape rule, iteration, ``close``/``with``.
    Subclasses set ``name``, ``_n``, ``frame_shape`` (H, W[, C]), ``_dtype`` and define ``_read(i)``."""

    name: str = "source"
    _n: int
    frame_shape: tuple[int, ...]
    _dtype: np.dtype

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n, *self.frame_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (negative counts from the end) as an (H, W[, C]) array."""
        i = self._index(i)
        return self._checked(i, self._read_named(i))

    def _read_named(self, i: int) -> np.ndarray:
        """``_read(i)``; a reader's failure (truncated or corrupt file, any library's error type)
        becomes a ValueError naming the source and the frame (its file, where there is one)."""
        try:
            return self._read(i)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ValueError(f"{self.name}: cannot read {self._where(i)} ({type(exc).__name__}: {exc})") from exc

    @abc.abstractmethod
    def _read(self, i: int) -> np.ndarray:
        """Read frame ``i`` (already a valid non-negative index) from the underlying store."""

    def _index(self, i: int) -> int:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(f"frame index must be an integer, got {type(i).__name__}") from None
        if not -self._n <= i < self._n:
            raise IndexError(f"frame index {i} is out of range for {self.name} with {self._n} frames")
        return i % self._n

    def _where(self, i: int) -> str:
        return f"frame {i}"

    def _checked(self, i: int, arr: np.ndarray) -> np.ndarray:
        for what, got, want in (("shape", arr.shape, self.frame_shape), ("dtype", arr.dtype, self._dtype)):
            if got != want:
                raise ValueError(f"{self.name}: {self._where(i)} has {what} {got} but {self._where(0)} has "
                                 f"{what} {want}; all frames of a source must have the same {what}")
        return arr

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self._n):
            yield self.frame(i)

    def close(self) -> None:
        """Release file handles (a closed source reopens them when read again)."""

    def __enter__(self) -> BaseSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # half-built (its __init__ raised) or interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, shape={self.shape}, dtype={self._dtype})"


class ArraySource(BaseSource):
    """A numpy / dask / zarr (or any indexable) array (T, H, W[, C]); ``np.asarray(arr[i])`` per
    frame, so dask and zarr read one frame at a time."""

    def __init__(self, array: Any, name: str = "source") -> None:
        shape = tuple(int(s) for s in array.shape)
        if len(shape) not in (3, 4) or min(shape) < 1:
            raise ValueError(f"{name} must have shape (T, H, W) or (T, H, W, C) with every size >= 1, got {shape}")
        self.name, self._array = f"{name} ({type(array).__name__})", array
        self._n, self.frame_shape = shape[0], shape[1:]
        try:
            self._dtype = np.dtype(array.dtype)
        except TypeError:  # e.g. a torch tensor: learn the dtype from frame 0
            self._dtype = np.asarray(array[0]).dtype

    def _read(self, i: int) -> np.ndarray:
        return np.asarray(self._array[i])


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _header_hw(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tuple(tif.pages[0].shape[:2])  # type: ignore[return-value]
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


class ImageFolderSource(BaseSource):
    """A folder of images, one per frame, in natural order (frame2 before frame10).

    Sizes are checked from the file headers at open (``check_sizes``); channels and dtype when read.
    """

    def __init__(self, folder: str | os.PathLike, check_sizes: bool = True) -> None:
        self.folder = Path(folder).expanduser()
        self.name = str(self.folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"source: {self.folder} is not a folder")
        files = [p for p in self.folder.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        if not files:
            raise ValueError(f"source: folder {self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.files = sorted(files, key=lambda p: (_natural_key(p.name), p.name))
        self._n = len(self.files)
        first = self._read_named(0)
        self.frame_shape, self._dtype = first.shape, first.dtype
        if check_sizes:
            for i, p in enumerate(self.files[1:], start=1):
                if _header_hw(p) != first.shape[:2]:
                    raise ValueError(f"{self.name}: {self._where(i)} has size {_header_hw(p)} but "
                                     f"{self._where(0)} has {first.shape[:2]}; all images must have the same size")

    def _where(self, i: int) -> str:
        return f"frame {i} ({self.files[i].name})"

    def _read(self, i: int) -> np.ndarray:
        path = self.files[i]
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path))
        import skimage.io

        return np.asarray(skimage.io.imread(path))


class TiffStackSource(BaseSource):
    """A TIFF stack: a series (T, ..., H, W[, S]) seen as frames (H, W[, S]), leading axes flattened.

    Memory-mapped when the data are contiguous and uncompressed, else one page read per frame;
    never the whole stack. A plain multi-page file whose pages tifffile splits into several series
    (pages appended one by one, or one odd-sized page) is read page by page; ``series=`` picks one.
    """

    def __init__(self, path: str | os.PathLike, series: int | None = None) -> None:
        import tifffile

        self.path = Path(path).expanduser()
        self.name, self._mm = str(self.path), None
        with tiff_damage() as damage:
            try:
                self._tif = tifffile.TiffFile(self.path)
                _ = len(self._tif.pages), self._tif.series  # walk the page chain and series now
            except Exception as exc:
                raise ValueError(f"source: cannot read TIFF {self.path}: {type(exc).__name__}: {exc}") from exc
        tif = self._tif
        if damage:
            tif.close()
            raise ValueError(f"source: TIFF {self.path} is truncated or damaged ({damage[0]}); only part of it "
                             "could be read")
        tif.filehandle.set_lock(True)  # pages read from several threads share one file position
        if not tif.series:
            tif.close()
            raise ValueError(f"source: TIFF {self.path} holds no images")
        if series is not None and (isinstance(series, bool) or not isinstance(series, int)
                                   or not 0 <= series < len(tif.series)):
            tif.close()
            raise ValueError(f"series must be an int in [0, {len(tif.series) - 1}] (the series of {self.path}), "
                             f"got {series!r}")
        if series is None and len(tif.series) > 1 and not (tif.is_imagej or tif.is_ome):
            pages = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
            self.frame_shape, self._dtype = tuple(pages[0].shape), np.dtype(pages[0].dtype).newbyteorder("=")
            for i, p in enumerate(pages):
                if tuple(p.shape) != self.frame_shape or np.dtype(p.dtype).newbyteorder("=") != self._dtype:
                    tif.close()
                    raise ValueError(f"{self.name}: frame {i} (page {p.index}) has shape {tuple(p.shape)} and dtype "
                                     f"{p.dtype} but frame 0 has {self.frame_shape} and {self._dtype}; all frames "
                                     "must have the same shape and dtype")
            self._pages, self._n = pages, len(pages)
            return
        s = tif.series[series or 0]
        nd = 3 if s.axes.endswith("S") or _channels_last(s.axes, s.shape) else 2
        self.frame_shape = tuple(int(d) for d in s.shape[-nd:])
        self._n = math.prod(s.shape[:-nd]) if len(s.shape) > nd else 1
        self._dtype = np.dtype(s.dtype).newbyteorder("=")
        if s.dataoffset is not None:  # contiguous and uncompressed: map it, read frames on demand
            try:
                self._map = tifffile.memmap(self.path, series=series or 0, mode="r")
            except ValueError as exc:  # "mmap length is greater than file size": cut short
                tif.close()
                raise ValueError(f"source: TIFF {self.path} is truncated or damaged ({exc})") from exc
            self._mm = self._map.reshape(self._n, *self.frame_shape)
            tif.close()
        elif len(s.pages) == self._n:
            self._pages = list(s.pages)
        elif self._n == 1:  # one image stored over several pages (e.g. H pages of W x C)
            self._pages = [s]
        else:
            tif.close()
            raise ValueError(f"source: TIFF {self.path} stores {self._n} frames in {len(s.pages)} compressed "
                             "pages; it cannot be read one frame at a time (save it uncompressed or as zarr)")

    def _read(self, i: int) -> np.ndarray:
        if self._mm is not None:
            out = np.array(self._mm[i], dtype=self._dtype)  # copy one frame out of the map ...
            self._release(i)  # ... and drop its pages from our resident set
            return out
        if self._tif.filehandle.closed:
            self._tif.filehandle.open()
        return np.asarray(self._pages[i].asarray(), dtype=self._dtype)

    def _release(self, i: int) -> None:
        """madvise(DONTNEED) frame i's pages: they stay in the OS page cache but stop counting in
        this process's RSS, so reading a whole mapped stack keeps RSS flat (Linux; no-op elsewhere)."""
        mm = getattr(self._map, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        nbytes = self._mm[0].nbytes
        lo = self._map.offset % mmap.ALLOCATIONGRANULARITY + i * nbytes  # np.memmap maps from a granule
        start = lo - lo % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, start, lo + nbytes - start)

    def close(self) -> None:
        if self._mm is None:
            self._tif.filehandle.close()


def _channels_last(axes: str, shape: tuple[int, ...]) -> bool:
    """An array written without axes metadata (tifffile's ``Q`` axes) whose last axis is 1-4 long
    is an image's channels (H, W, C), as every image reader sees it, not frames a few pixels wide."""
    return len(shape) >= 3 and axes.endswith("YX") and axes[-3] == "Q" and shape[-1] <= 4 < shape[-2]


def _as_path(source: object) -> Path | None:
    return Path(source).expanduser() if isinstance(source, (str, os.PathLike)) else None


def is_array_like(source: object) -> bool:
    return (not isinstance(source, (str, bytes, os.PathLike)) and not isinstance(source, FrameSource)
            and all(hasattr(source, a) for a in ("shape", "dtype", "__getitem__")))


def is_image_folder(source: object) -> bool:
    return (path := _as_path(source)) is not None and path.is_dir()


def is_tiff_path(source: object) -> bool:
    return (path := _as_path(source)) is not None and path.suffix.lower() in TIFF_SUFFIXES and path.is_file()


def is_video_path(source: object) -> bool:
    return (path := _as_path(source)) is not None and path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def open_source(source: object, *, plugin_manager: Any = None, **options: Any) -> FrameSource:
    """``source`` as a FrameSource (T, H, W[, C]); see the module docstring for accepted forms.

    Openers (plugins first, then built-ins) are asked in priority order; the first whose
    ``can_open`` says yes opens it with ``options``. A failing plugin opener is reported and the
    next one that accepts the source is tried; the last one's error propagates.
    """
    if isinstance(source, FrameSource):
        if options:
            raise TypeError(f"options {sorted(options)} apply when opening a path or array, not a FrameSource")
        return source
    if plugin_manager is None:
        from ..plugins.manager import get_plugin_manager

        plugin_manager = get_plugin_manager()
    hook = "edgetam_kit_frame_sources"
    candidates = []
    for opener in plugin_manager.frame_source_openers():
        try:
            if opener.can_open(source):
                candidates.append(opener)
        except Exception as exc:  # a broken plugin must not take the host down
            plugin_manager._report(plugin_manager.opener_plugins.get(opener.name, opener.name),
                                   f"{hook} (opener {opener.name!r} can_open)", exc)
    for k, opener in enumerate(candidates):
        plugin = plugin_manager.opener_plugins.get(opener.name, opener.name)
        builtin = plugin_manager.is_builtin(plugin)
        try:
            src = opener.open(source, **options)
            if not isinstance(src, FrameSource):
                raise TypeError(f"opened a {type(src).__name__}, not a FrameSource")
            if not builtin:  # a plugin's source must read its first frame, else the next opener is used
                probe_source(src)
        except Exception as exc:
            if k == len(candidates) - 1 and builtin:
                raise
            plugin_manager._report(plugin, f"{hook} (opener {opener.name!r})", exc)
            if k == len(candidates) - 1:
                raise ValueError(f"source: the frame source {opener.name!r} of plugin {plugin!r} failed "
                                 f"({type(exc).__name__}: {exc}) and no other opener accepts it") from exc
            continue
        if not builtin:
            remember_source(src, plugin)
        return src
    path = _as_path(source)
    if path is not None and not path.exists():
        raise FileNotFoundError(f"source: {path} does not exist; expected {ACCEPTED}")
    what = f"path {path}" if path is not None else type(source).__name__
    raise (ValueError if path is not None else TypeError)(f"source: cannot open {what}; expected {ACCEPTED}")
