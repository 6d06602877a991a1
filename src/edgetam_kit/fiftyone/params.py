"""Operator parameters: defaults, validation (ValueError naming the parameter), shard queueing.

Shared by the three operators of ``fiftyone_plugin/`` so the plugin stays a thin adapter and
the rules are testable without the App.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .checks import check_checkpoint, check_device_name, check_output_field, check_target_media

OPERATORS = ("segment_with_prompts", "auto_segment", "track_objects")
TARGETS = ("DATASET", "CURRENT_VIEW", "SELECTED_SAMPLES")
PROMPT_TYPES = ("Detections", "Keypoints")
DEFAULT_CHECKPOINT = "edgetam"
DEFAULT_LABEL_FIELD = {"segment_with_prompts": "edgetam", "auto_segment": "edgetam_auto",
                       "track_objects": "edgetam_tracks"}
AUTO_DEFAULTS = {"points_per_side": 32, "pred_iou_thresh": 0.8, "stability_score_thresh": 0.95,
                 "min_mask_region_area": 0}
COMMON = ("checkpoint", "target", "label_field", "output_dir", "skip_existing", "device", "num_shards", "shard",
          "delegate")
KNOWN = {"segment_with_prompts": COMMON + ("prompt_field", "batch_size"),
         "auto_segment": COMMON + ("batch_size",) + tuple(AUTO_DEFAULTS),
         "track_objects": COMMON + ("prompt_field",)}
VIEW_ONLY = ("error", "notice")  # form notices (no values)


@dataclass
class OperatorParams:
    """Validated parameters of one operator run."""

    operator: str
    checkpoint: str = DEFAULT_CHECKPOINT
    target: str = "DATASET"
    prompt_field: str | None = None
    label_field: str = "edgetam"
    output_dir: str | None = None
    skip_existing: bool = True
    batch_size: int = 1
    device: str = "auto"
    shard: int | None = None
    num_shards: int = 1
    auto: dict[str, Any] = field(default_factory=dict)

    def to_params(self) -> dict[str, Any]:
        """Back to an operator ``params`` dict (for queueing shards): the operator's own parameters."""
        d = {k: getattr(self, k) for k in KNOWN[self.operator] if hasattr(self, k) and k != "delegate"}
        d.update(self.auto)
        return d


def default_target(has_selection: bool, has_view: bool) -> str:
    return "SELECTED_SAMPLES" if has_selection else ("CURRENT_VIEW" if has_view else "DATASET")


def _int(params: dict, name: str, default: int, low: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _float01(params: dict, name: str, default: float) -> float:
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _bool(params: dict, name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _str(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value.strip()


def prompt_field_type(collection: Any, prompt_field: str, video: bool) -> str:
    """The label type name of ``prompt_field``; ValueError naming ``prompt_field`` when unusable."""
    if video and not prompt_field.startswith("frames."):
        raise ValueError(f"prompt_field must be a frame field 'frames.<name>' for videos, got {prompt_field!r}")
    if not video and prompt_field.startswith("frames."):
        raise ValueError(f"prompt_field {prompt_field!r} is a frame field; images need a sample field")
    fld = collection.get_field(prompt_field)
    if fld is None:
        names = (collection.get_frame_field_schema() or {}) if video else collection.get_field_schema()
        raise ValueError(f"prompt_field {prompt_field!r} is not a field of the dataset; fields: "
                         f"{', '.join(sorted(names))}")
    kind = getattr(getattr(fld, "document_type", None), "__name__", type(fld).__name__)
    if kind not in PROMPT_TYPES:
        raise ValueError(f"prompt_field {prompt_field!r} holds {kind}; it must hold Detections (boxes) or "
                         "Keypoints (points)")
    return kind


def check_known(params: dict[str, Any], operator: str) -> None:
    """ValueError naming the first parameter ``operator`` does not take (a misspelling, usually)."""
    import difflib

    known = KNOWN[operator]
    for name, value in params.items():
        if name in known or name in VIEW_ONLY:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; {operator} takes: {', '.join(known)}"
        raise ValueError(f"{name} is not a parameter of {operator}{hint}")


def parse_params(params: dict[str, Any], operator: str, collection: Any, has_selection: bool = False,
                 has_view: bool = False, check_files: bool = True) -> OperatorParams:
    """Validate an operator's ``params`` against ``collection`` (the dataset); fill defaults.

    Everything is checked that can be checked where the run is queued: names and values of the
    parameters, the dataset's media, the prompt and output fields' types, the checkpoint (when
    ``check_files``). The device's availability is checked where the run executes
    (``checks.resolve_device``), so a CPU App host can queue ``cuda`` work for GPU workers."""
    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
    video = operator == "track_objects"
    check_known(params, operator)
    check_target_media(collection, operator, video)
    target = _str(params, "target") or default_target(has_selection, has_view)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if target == "SELECTED_SAMPLES" and not has_selection:
        raise ValueError("target is SELECTED_SAMPLES but no samples are selected")
    p = OperatorParams(operator=operator, target=target)
    p.checkpoint = _str(params, "checkpoint") or DEFAULT_CHECKPOINT
    p.device = check_device_name(params.get("device"))
    p.skip_existing = _bool(params, "skip_existing", True)
    p.batch_size = _int(params, "batch_size", 1, 1)
    p.num_shards = _int(params, "num_shards", 1, 1)
    shard = params.get("shard")
    if shard is not None and shard != "":
        p.shard = _int(params, "shard", 0, 0)
        if p.shard >= p.num_shards:
            raise ValueError(f"shard must be in [0, {p.num_shards - 1}] for num_shards={p.num_shards}, got {p.shard}")
    p.output_dir = _str(params, "output_dir")
    if operator != "auto_segment":
        p.prompt_field = _str(params, "prompt_field")
        if p.prompt_field is None:
            raise ValueError("prompt_field is required: the Detections or Keypoints field holding the prompts"
                             + (" ('frames.<name>')" if video else ""))
        prompt_field_type(collection, p.prompt_field, video)
    label_field = _str(params, "label_field") or DEFAULT_LABEL_FIELD[operator]
    if label_field.startswith("frames."):
        raise ValueError(f"label_field must not start with 'frames.' (tracks are written to frames.<label_field>), "
                         f"got {label_field!r}")
    if "." in label_field or not label_field.replace("_", "a").isalnum():
        raise ValueError(f"label_field must be a field name (letters, digits, _), got {label_field!r}")
    if p.prompt_field is not None and label_field == p.prompt_field.removeprefix("frames."):
        raise ValueError(f"label_field {label_field!r} would overwrite the prompts: choose another name")
    check_output_field(collection, label_field, "Detections", video)
    p.label_field = label_field
    if check_files:
        check_checkpoint(p.checkpoint, video)
    if operator == "auto_segment":
        p.auto = {"points_per_side": _int(params, "points_per_side", AUTO_DEFAULTS["points_per_side"], 1),
                  "pred_iou_thresh": _float01(params, "pred_iou_thresh", AUTO_DEFAULTS["pred_iou_thresh"]),
                  "stability_score_thresh": _float01(params, "stability_score_thresh",
                                                     AUTO_DEFAULTS["stability_score_thresh"]),
                  "min_mask_region_area": _int(params, "min_mask_region_area",
                                               AUTO_DEFAULTS["min_mask_region_area"], 0)}
    return p


def queue_shards(operator_uri: str, target_view: Any, params: OperatorParams) -> list[str]:
    """Queue ``params.num_shards`` delegated runs of ``operator_uri`` over ``target_view``, run i
    taking shard i. Returns the queued operations' ids. Launch workers with
    ``fiftyone delegated launch`` (one per machine/process); each picks up whole shards."""
    import fiftyone.core.dataset as fod
    import fiftyone.operators as foo

    ids = []
    where = {"dataset": target_view} if isinstance(target_view, fod.Dataset) else {"view": target_view}
    for i in range(params.num_shards):
        shard_params = replace(params, shard=i, target="CURRENT_VIEW").to_params()
        result = foo.execute_operator(operator_uri, params=shard_params, request_delegation=True, **where)
        ids.append(str(result.result["id"]))
    return ids
