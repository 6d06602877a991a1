"""Embedding cache on disk: image features stored in zarr under a signature.

The signature of an image's embedding holds everything the features depend on: a content
hash of the image's bytes with its shape and dtype, the normalisation (percentiles,
channels), the model (input size, encoder config, a hash of the encoder's weights, dtype)
and the tiling (tile size,
overlap, tile boxes). Its hash names the entry; the full signature is stored with it and
compared on every read, so an entry written by another model, another normalisation, an
older cache format or a different image is never used: it is a miss.

Layout: ``ROOT/edgetam-cache.json`` (format marker) and one zarr group per entry,
``ROOT/<sha256 of the signature>/`` with arrays ``embed`` (T, C, E, E), ``high_res_0``
(T, C/8, 4E, 4E), ``high_res_1`` (T, C/4, 2E, 2E) (T = 1, or the number of tiles) and the
signature and a crc32 per array in its attributes (an entry whose data does not match is a miss
and is re-encoded and replaced). Writes are atomic: an entry is written under a temporary name
(``.tmp-...``) and renamed into place only when complete, so a write that is killed midway
leaves only a temporary folder, which readers never look at and the next write removes (its
writer's pid is in its name).

Storage precision: ``EmbeddingCache(path, precision="fp16")`` stores the arrays as float16 (half
the bytes; values beyond float16's range, |x| > 65504, are clipped to +-65504, never stored as
inf) and upcasts them on ``get``. The precision is part of the entry's stored signature (and so of
its key): an fp16 entry is never served to an fp32 cache, nor the reverse. The default, "fp32",
is exact and keeps the keys of caches written before the option existed.

    cache = ek.EmbeddingCache("~/edgetam-cache")
    pred = ek.ImagePredictor(model, cache=cache)
    pred.set_image(img)      # encodes and stores; the next set_image(img) loads instead
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling import ImageFeatures
from ..runtime import Runtime, runtime_of
from .atomic import _alive, clean_leftovers, commit, temp_path

CACHE_FORMAT = 1
MARKER = "edgetam-cache.json"
ARRAYS = ("embed", "high_res_0", "high_res_1")
PRECISIONS = {"fp32": np.float32, "fp16": np.float16}  # storage precision -> the arrays' dtype on disk
STALE_TMP_SECONDS = 3600.0  # temporary folders older than this are removed by later writes
_TMP = re.compile(r"^\.tmp-[0-9a-f]{16}-(?P<pid>\d+)-[0-9a-f]{8}$")  # an entry being written by process pid


# ----------------------------------------------------------------------------- signatures
def content_hash(image: Any) -> str:
    """blake2b of an array's bytes, shape and dtype."""
    from ..transforms import _as_array

    arr = np.ascontiguousarray(_as_array(image, "image"))
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def model_identity(runtime: Runtime) -> dict[str, Any]:
    """What of the model the image features depend on: input size, encoder config, the digest of
    the encoder weights the runtime was built from (``Runtime.weights_id``; a weight change
    rebuilds the runtime, so an entry is never stored or found under other weights), dtype, and
    the autocast precision (bf16 features differ from fp32 ones; the fp32 backends agree to
    ~1e-6 and share entries)."""
    model = runtime.model
    cfg = model.config.to_dict()
    ident = {"image_size": cfg["image_size"], "image_encoder": cfg["image_encoder"], "weights": runtime.weights_id,
             "dtype": str(model.dtype)}
    if runtime.precision != "fp32":  # fp32 signatures stay as they were, so existing caches remain valid
        ident["precision"] = runtime.precision
    random = getattr(model, "random_weights", None)  # io.checkpoint.RANDOM_ATTR: entries of random weights say so
    if isinstance(random, str):
        ident["random_weights"] = random
    return ident


def image_signature(image: Any, runtime: Any, percentiles: Sequence[float], channels: Any,
                    tiling: dict[str, Any] | None) -> dict[str, Any]:
    """Everything an image's embedding depends on, JSON-ready. runtime: the ``Runtime`` that
    encodes it (or a model: its current runtime)."""
    from ..transforms import _as_array

    arr = _as_array(image, "image")
    ch = None if channels is None else ([int(channels)] if isinstance(channels, (int, np.integer))
                                        else [int(c) for c in channels])
    return {
        "format": CACHE_FORMAT,
        "image": {"hash": content_hash(arr), "shape": list(arr.shape), "dtype": arr.dtype.str},
        "normalisation": {"percentiles": [float(p) for p in percentiles], "channels": ch},
        "model": model_identity(runtime if isinstance(runtime, Runtime) else runtime_of(runtime)),
        "tiling": None if tiling is None else json.loads(json.dumps(tiling)),
    }


def signature_key(signature: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- the cache
class EmbeddingCache:
    """A folder of embeddings keyed by signature (see the module docstring).

    readonly: never write (a cache prepared elsewhere, e.g. on a shared drive).
    precision: how the arrays are stored: "fp32" (default, exact) or "fp16" (half the bytes;
    |values| > 65504 are clipped to +-65504; ``get`` upcasts to the dtype asked for). Entries of
    one precision are misses for a cache of the other, even in the same folder.
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False, precision: str = "fp32") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"cache must be a folder path (str or Path) or an EmbeddingCache, got {type(path).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self.precision = precision
        self.hits = 0
        self.misses = 0
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"cache: {self.path} exists and is not a folder; give a folder for the embedding cache")
        marker = self.path / MARKER
        self._foreign = False  # a folder marked by another format: never read from nor written to
        if marker.exists():
            try:
                fmt = json.loads(marker.read_text()).get("format")
            except (OSError, ValueError, AttributeError):
                fmt = None
            if fmt != CACHE_FORMAT:  # say why every lookup misses
                import warnings

                self._foreign = True
                warnings.warn(f"cache: {self.path} has format {fmt!r}, this version uses {CACHE_FORMAT}; "
                              "its entries are ignored and nothing is written there (clear it or use another "
                              "folder)", stacklevel=2)

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r}, precision={self.precision!r}, entries={len(self)})"

    def stored_signature(self, signature: dict[str, Any]) -> dict[str, Any]:
        """The signature an entry is keyed and stored under: the caller's, plus the storage
        precision when it is not fp32 (fp32 keys stay those of caches older than the option)."""
        sig = json.loads(json.dumps(signature))
        if self.precision != "fp32":
            sig["cache_precision"] = self.precision
        return sig

    def entry_path(self, signature: dict[str, Any]) -> Path:
        """The entry folder for the caller's ``signature`` under this cache's precision."""
        return self.path / signature_key(self.stored_signature(signature))

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))

    def __contains__(self, signature: dict[str, Any]) -> bool:
        return self._load(signature) is not None

    def _open(self, signature: dict[str, Any]) -> Any:
        """The entry's zarr group if it exists and is the one asked for, else None."""
        import zarr

        where = self.entry_path(signature)
        if not where.is_dir():
            return None
        try:
            group = zarr.open_group(str(where), mode="r")
            attrs = dict(group.attrs)
            if attrs.get("complete") is not True or attrs.get("signature") != self.stored_signature(signature):
                return None
            shapes = [group[name].shape for name in ARRAYS]
            dtypes = {np.dtype(group[name].dtype) for name in ARRAYS}
        except Exception:  # unreadable or foreign: never used
            return None
        if len({s[0] for s in shapes}) != 1 or any(len(s) != 4 for s in shapes):
            return None
        if dtypes != {np.dtype(PRECISIONS[self.precision])}:
            return None
        return group

    def _load(self, signature: dict[str, Any]) -> list[np.ndarray] | None:
        """The entry's arrays (as stored: float32 or float16, see ARRAYS) if it is complete and every array matches the
        checksum stored with it; None for a missing, foreign or damaged entry (a lost chunk reads as
        zeros in zarr: only the checksum tells)."""
        group = None if self._foreign else self._open(signature)
        if group is None:
            return None
        try:
            sums = dict(group.attrs).get("checksums")
            arrays = [np.ascontiguousarray(group[name][...]) for name in ARRAYS]
        except Exception:
            return None
        if not isinstance(sums, dict) or any(sums.get(n) != _checksum(a) for n, a in zip(ARRAYS, arrays)):
            return None
        return arrays

    def get(self, signature: dict[str, Any], device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> ImageFeatures | None:
        """The stored features for ``signature`` on ``device`` in ``dtype`` (fp16 entries are
        upcast), or None (a miss: absent, foreign, of the other precision or damaged; a damaged
        entry is replaced by the next ``put``)."""
        arrays = self._load(signature)
        if arrays is None:
            self.misses += 1
            return None
        self.hits += 1
        t = [torch.from_numpy(a).to(device, dtype) for a in arrays]
        return ImageFeatures(t[0], (t[1], t[2]))

    def put(self, signature: dict[str, Any], features: ImageFeatures) -> Path | None:
        """Store ``features`` under ``signature`` (atomically; as float16, clipped to +-65504, for
        an fp16 cache); returns the entry's folder, or None
        when nothing is written. A folder that cannot be written (a shared, read-only cache; a full
        disk) is reported once with a warning and used read-only from then on: the features just
        encoded are never lost to a failed cache write."""
        if self.readonly or self._foreign:
            return None
        try:
            return self._put(signature, features)
        except OSError as exc:
            import warnings

            self.readonly = True
            warnings.warn(f"cache: cannot write to {self.path} ({type(exc).__name__}: {exc}); using it read-only "
                          "(pass readonly=True, or --cache-readonly, to say so)", stacklevel=3)
            return None

    def _put(self, signature: dict[str, Any], features: ImageFeatures) -> Path | None:
        import zarr

        self.path.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()
        marker = self.path / MARKER
        if not marker.exists():
            _atomic_text(marker, json.dumps({"format": CACHE_FORMAT, "written_by": "edgetam-kit"}))
        final = self.entry_path(signature)
        if self._load(signature) is not None:  # a damaged entry is rewritten
            return final
        tmp = self.path / f".tmp-{final.name[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            group = zarr.open_group(str(tmp), mode="w")
            tensors = (features.embed, features.high_res[0], features.high_res[1])
            sums = {}
            for name, t in zip(ARRAYS, tensors):
                data = np.ascontiguousarray(_as_stored(t.detach().float().cpu().numpy(), self.precision))
                arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]))
                arr[...] = data
                sums[name] = _checksum(data)
            group.attrs["signature"] = self.stored_signature(signature)
            group.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            group.attrs["checksums"] = sums
            group.attrs["complete"] = True  # written last: an entry without it is never read
            commit(tmp, final)  # a stale or damaged entry under our name is swapped out
        except OSError:
            if self._open(signature) is None:  # not because another writer got there first
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def clear(self) -> None:
        """Remove every entry (and temporary leftovers); keeps the folder."""
        if self.path.is_dir():
            for p in self.path.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)

    def _remove_stale_tmp(self) -> None:
        """Remove what dead writers left: ``.tmp-<key>-<pid>-<random>`` entry folders whose process is
        gone (or older than STALE_TMP_SECONDS: a reused pid), and the ``io.atomic`` leftovers (marker
        files, replaced entries)."""
        clean_leftovers(self.path)
        now = time.time()
        for p in self.path.glob(".tmp-*"):
            m = _TMP.match(p.name)
            try:
                if (m is not None and not _alive(int(m["pid"]))) or now - p.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def _as_stored(data: np.ndarray, precision: str) -> np.ndarray:
    """float32 features -> the storage dtype; fp16 clips to float16's finite range (never inf)."""
    if precision == "fp32":
        return data
    big = float(np.finfo(np.float16).max)
    return np.clip(data, -big, big).astype(np.float16)


def _checksum(arr: np.ndarray) -> str:
    """crc32 of a C-contiguous array's bytes (catches lost chunks and flipped bytes, not forgery)."""
    return f"crc32:{zlib.crc32(memoryview(arr).cast('B')):08x}"


def _atomic_text(path: Path, text: str) -> None:
    tmp = temp_path(path)  # a kill leaves a name io.atomic.clean_leftovers knows
    tmp.write_text(text)
    os.replace(tmp, path)


def as_cache(cache: Any) -> EmbeddingCache | None:
    """None, an EmbeddingCache, or a folder path -> EmbeddingCache | None."""
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return EmbeddingCache(cache)
    raise TypeError(f"cache must be None, an EmbeddingCache or a folder path, got {type(cache).__name__}")
