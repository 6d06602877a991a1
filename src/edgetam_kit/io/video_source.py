"""Video files as frame sources (PyAV), read lazily with one forward cursor."""

from __future__ import annotations

import bisect
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .sources import BaseSource


class VideoSource(BaseSource):
    """A video file decoded with PyAV: frames (H, W, 3) uint8 RGB.

    Keeps one open container and a forward cursor: frame i after frame i-1 continues decoding;
    going back (or far forward past a keyframe already seen) seeks to the nearest keyframe before
    i and decodes forward. Keyframe positions are remembered (a few ints), frames are not.
    T comes from the stream metadata, or from one counting pass (``count_frames=True`` forces it).
    """

    def __init__(self, path: str | os.PathLike, count_frames: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.name, self._container = str(self.path), None
        self._lock = threading.Lock()  # one cursor: reads from several threads take turns
        self._key_index: list[int] = []  # known keyframes, ascending: frame index ...
        self._key_pts: list[int] = []  # ... and its pts
        try:
            self._open()
            n = int(self._stream.frames or 0)
            if count_frames or n <= 0:
                n = 0
                while self._next_frame(counting=True) is not None:
                    n += 1
                self._open()
            if n <= 0:
                raise ValueError("no frame could be decoded")
            self._n, first = n, self._next_frame()
            self._pending, self._pos = first, 0  # frame 0 stays decoded: reading it next costs nothing
        except ImportError:
            raise
        except Exception as exc:
            self.close()
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
            raise ValueError(f"source: cannot read video {self.path}: {reason}") from exc
        rgb = first.to_ndarray(format="rgb24")
        self.frame_shape, self._dtype = rgb.shape, rgb.dtype

    def _open(self) -> None:
        try:
            import av
        except ImportError as exc:
            raise ImportError("reading video files needs PyAV: pip install av") from exc

        self.close()
        self._container = av.open(str(self.path), mode="r")
        if not self._container.streams.video:
            raise ValueError("the file has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._frames = self._container.decode(self._stream)
        self._pending: Any = None
        self._pos = 0  # index of the next frame _next_frame returns

    def _next_frame(self, counting: bool = False) -> Any:
        if self._pending is not None:
            f, self._pending = self._pending, None
        else:
            try:
                f = next(self._frames)
            except StopIteration:
                if counting:
                    return None
                raise ValueError(f"{self.name}: the video ended after {self._pos} frames "
                                 f"(its metadata says {self._n}); frame {self._pos} cannot be read") from None
            except Exception as exc:
                raise ValueError(f"{self.name}: cannot decode frame {self._pos}: {type(exc).__name__}: {exc}") from exc
        if (f.key_frame or self._pos == 0) and f.pts is not None and (
            not self._key_index or self._pos > self._key_index[-1]
        ):  # decoding is contiguous from 0 or a known keyframe, so new keyframes come in order
            self._key_index.append(self._pos)
            self._key_pts.append(f.pts)
        self._pos += 1
        return f

    def _seek(self, i: int) -> None:
        """Put the cursor on the last known keyframe <= i (or the start)."""
        j = bisect.bisect_right(self._key_index, i) - 1
        k = self._key_index[j] if j >= 0 else 0
        if k > 0:
            pts = self._key_pts[j]
            self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
            self._frames, self._pending = self._container.decode(self._stream), None
            for f in self._frames:
                if f.pts is None or f.pts > pts:
                    break  # the seek did not land on the keyframe: decode from the start instead
                if f.pts == pts:
                    self._pending, self._pos = f, k
                    return
        self._open()

    def _read(self, i: int) -> np.ndarray:
        with self._lock:
            if self._container is None:
                self._open()
            j = bisect.bisect_right(self._key_index, i) - 1  # last known keyframe <= i
            if i < self._pos or (j >= 0 and self._key_index[j] > self._pos):
                self._seek(i)
            while self._pos < i:
                self._next_frame()
            return self._next_frame().to_ndarray(format="rgb24")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
