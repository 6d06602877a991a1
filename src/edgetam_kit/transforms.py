"""Image normalisation and coordinate transforms between the caller's pixels and the
model's square input frame. numpy in, torch out; nothing here knows the network.

Intensity rules (``to_unit_rgb``):
- uint8: divided by 255 (exactly as the reference implementations do);
- bool: False/True -> 0/1;
- uint16, other integers, and float images with values outside [0, 1]: rescaled so the
  ``percentiles`` (default 1st and 99.8th) map to 0 and 1, then clipped;
- float images already within [0, 1]: used as they are.
Channels: HxW and HxWx1 are replicated to RGB; HxWx3 is RGB; HxWx4 drops alpha; any
other channel count needs ``channels=`` (one index, replicated, or three indices).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_PERCENTILES = (1.0, 99.8)


def _as_array(image: object, name: str) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.float()  # bf16 / float8: numpy has no such dtype; float32 holds every value
        image = t.numpy()
    elif not isinstance(image, np.ndarray) and (
        hasattr(image, "__array__") or hasattr(image, "__array_interface__")
    ):
        image = np.asarray(image)  # PIL images, dask/zarr arrays
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (HxW or HxWxC), got {type(image).__name__}")
    return image


def check_channels(channels: object) -> list[int] | None:
    """``channels`` as a list of one or three ints (None stays None); TypeError naming it otherwise
    (a bool, a float, a string are refused, never read as an index)."""
    if channels is None:
        return None
    form = "None, one channel index (int) or three (a list of ints)"
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, (bool, np.bool_)):
        return [int(channels)]
    if isinstance(channels, (str, bytes)) or not isinstance(channels, (Sequence, np.ndarray)):
        raise TypeError(f"channels must be {form}, got {channels!r}")
    idx = list(channels)
    if any(isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) for i in idx) \
            or len(idx) not in (1, 3):
        raise TypeError(f"channels must be {form}, got {channels!r}")
    return [int(i) for i in idx]


def check_percentiles(percentiles: object) -> tuple[float, float]:
    """``percentiles`` as (low, high) floats with 0 <= low < high <= 100; ValueError naming it."""
    try:
        lo, hi = (float(v) for v in percentiles)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}") from None
    if not (0.0 <= lo < hi <= 100.0):
        raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}")
    return lo, hi


def select_channels(image: np.ndarray, channels: int | Sequence[int] | None, name: str = "image") -> np.ndarray:
    """Return an HxWx3 view/copy of ``image`` following the channel rules above."""
    if image.ndim == 2:
        image = image[..., None]
    c = image.shape[2]
    idx = check_channels(channels)
    if idx is not None:
        if len(idx) not in (1, 3) or any(not (-c <= int(i) < c) for i in idx):
            raise ValueError(f"channels must be one index or three indices into the {c} channels of {name}, got {channels!r}")
        image = image[..., [int(i) for i in idx]]
    elif c == 4:
        image = image[..., :3]
    elif c not in (1, 3):
        raise ValueError(
            f"{name} has {c} channels; pass channels= with one index (shown as grey) or three (shown as RGB)"
        )
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def to_unit_rgb(
    image: object,
    channels: int | Sequence[int] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    name: str = "image",
    keep_uint8: bool = False,
) -> np.ndarray:
    """Validate ``image`` (HxW or HxWxC) and return float32 HxWx3 in [0, 1]. keep_uint8: a uint8
    image comes back as uint8 HxWx3 (its /255 is done by ``to_model_input`` on the model's device,
    with the same result: a quarter of the bytes to upload)."""
    arr = _as_array(image, name)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be 2-D (HxW) or 3-D (HxWxC), got shape {arr.shape}; "
            "use set_images for several images or VideoTracker for stacks"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or (arr.ndim == 3 and arr.shape[2] == 0):
        raise ValueError(f"{name} is empty (shape {arr.shape}); expected HxW or HxWxC with H, W >= 1")
    if arr.ndim == 3 and arr.shape[2] > 16 and arr.shape[0] <= 16:
        raise ValueError(f"{name} looks channels-first (shape {arr.shape}); pass HxWxC (channels last)")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} dtype must be bool, integer or float, got {arr.dtype}")
    arr = select_channels(arr, channels, name)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr) if keep_uint8 else arr.astype(np.float32) / 255.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    was_float = arr.dtype.kind == "f"
    if was_float and not np.isfinite(arr).all():  # checked before any cast: 1e39 is finite in float64
        raise ValueError(f"{name} contains NaN or infinite values; replace them (e.g. np.nan_to_num) first")
    lo_p, hi_p = check_percentiles(percentiles)
    wide = arr.dtype.itemsize >= 8 and float(np.abs(arr).max()) > float(np.finfo(np.float32).max)
    work = arr.astype(np.float64 if wide else np.float32)  # beyond float32's range: rescale in float64
    if was_float and work.min() >= 0.0 and work.max() <= 1.0:
        return work.astype(np.float32, copy=False)
    lo, hi = np.percentile(work, [lo_p, hi_p])
    if hi <= lo:  # flat image: keep it flat at mid-grey rather than dividing by zero
        return np.full(work.shape, 0.5 if hi > 0 else 0.0, np.float32)
    ftype = work.dtype.type
    return np.clip((work - ftype(lo)) / ftype(hi - lo), 0.0, 1.0).astype(np.float32, copy=False)


def to_model_input(rgb01: np.ndarray, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """HxWx3 float [0, 1] (or uint8, divided by 255 on ``device``) -> (1, 3, size, size): bilinear
    (antialiased) resize, ImageNet normalisation."""
    x = torch.from_numpy(np.ascontiguousarray(rgb01)).permute(2, 0, 1).unsqueeze(0).to(device)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def scale_xy(xy: np.ndarray, hw: tuple[int, int], size: int) -> np.ndarray:
    """(..., 2) (x, y) in pixels of an image of shape ``hw`` -> pixels of the size x size frame."""
    h, w = hw
    return xy * np.array([size / w, size / h], dtype=np.float32)


def upscale_logits(logits: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) low-res logits -> (N, K, H, W) by bilinear interpolation."""
    return F.interpolate(logits.float(), size=hw, mode="bilinear", align_corners=False)
