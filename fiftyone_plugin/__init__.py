"""FiftyOne plugin ``@edgetam/edgetam-kit``: EdgeTAM masks from the App or headless.

Operators (thin adapters over ``edgetam_kit.fiftyone``; the engine is imported on first use,
so loading the plugin stays cheap for the App server):

- ``segment_with_prompts``: boxes (Detections) or points (Keypoints) -> instance masks
- ``auto_segment``: masks for everything in each image
- ``track_objects``: prompts on any frames of videos -> tracks on every frame, both directions

Common parameters: ``checkpoint``, ``target`` (DATASET, CURRENT_VIEW, SELECTED_SAMPLES),
``prompt_field``, ``label_field``, ``output_dir``, ``skip_existing`` (default true),
``batch_size``, ``device``; scale-out: ``num_shards`` (queue that many delegated runs, one per
shard) and ``shard`` (the shard one run processes); ``delegate`` forces delegated execution.
"""

from __future__ import annotations

import time

import fiftyone.operators as foo
import fiftyone.operators.types as types

_DESCRIPTIONS = {
    "segment_with_prompts": "Instance masks from the boxes or keypoints of a prompt field",
    "auto_segment": "Masks for everything in each image (automatic mask generator)",
    "track_objects": "Track objects prompted on any video frames through every frame, both directions",
}


class _EdgeTamOperator(foo.Operator):
    """Shared inputs, validation, delegation and execution of the three operators."""

    NAME = ""
    LABEL = ""

    @property
    def config(self):
        return foo.OperatorConfig(
            name=self.NAME,
            label=self.LABEL,
            description=_DESCRIPTIONS[self.NAME],
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            view_target=False,  # our own ``target`` parameter
        )

    # ---------------------------------------------------------------- delegation
    def resolve_delegation(self, ctx):
        return True if ctx.params.get("delegate", False) else None

    # ---------------------------------------------------------------- inputs
    def resolve_input(self, ctx):
        inputs = types.Object()
        video = self.NAME == "track_objects"
        inputs.str("checkpoint", label="Checkpoint", default="edgetam",
                   description="A registered name (edgetam), a local HF folder / edgetam.pt path, or a hub id")
        targets = types.RadioGroup()
        targets.add_choice("DATASET", label="Entire dataset")
        if ctx.has_custom_view:
            targets.add_choice("CURRENT_VIEW", label="Current view")
        if ctx.selected:
            targets.add_choice("SELECTED_SAMPLES", label="Selected samples")
        inputs.str("target", label="Target", view=targets,
                   default="SELECTED_SAMPLES" if ctx.selected else ("CURRENT_VIEW" if ctx.has_custom_view
                                                                    else "DATASET"))
        if self.NAME != "auto_segment":
            choices = types.AutocompleteView()
            for name in _prompt_fields(ctx.dataset, video):
                choices.add_choice(name, label=name)
            inputs.str("prompt_field", label="Prompt field", required=False, view=choices,
                       description="Detections (boxes) or Keypoints (points)"
                                   + ("; a frames.<name> field, prompts on any frame" if video else ""))
        inputs.str("label_field", label="Label field", default=_default_label_field(self.NAME),
                   description="Where masks are written" + (" (frames.<label_field>)" if video else ""))
        inputs.str("output_dir", label="Mask folder", required=False,
                   description="Write masks as PNG files here (mask_path); empty: store masks in the database")
        inputs.bool("skip_existing", label="Skip samples already labelled", default=True)
        if not video:
            inputs.int("batch_size", label="Batch size", default=1, min=1,
                       description="Images encoded per engine call")
        inputs.str("device", label="Device", default="cpu", description="cpu, cuda, cuda:1, ...")
        if self.NAME == "auto_segment":
            inputs.int("points_per_side", label="Points per side", default=32, min=1)
            inputs.float("pred_iou_thresh", label="Predicted IoU threshold", default=0.8, min=0, max=1)
            inputs.float("stability_score_thresh", label="Stability threshold", default=0.95, min=0, max=1)
            inputs.int("min_mask_region_area", label="Min region area (pixels)", default=0, min=0)
        inputs.int("num_shards", label="Shards", default=1, min=1,
                   description="Split a delegated run into this many operations (one per worker)")
        inputs.int("shard", label="Shard", required=False, min=0,
                   description="Process only this shard (0..num_shards-1); empty with Shards > 1: queue all")
        inputs.bool("delegate", label="Delegate", default=False,
                    description="Queue for `fiftyone delegated launch` workers instead of running now")
        try:
            _parse(ctx, self.NAME)
        except ValueError as e:
            name = str(e).split(" ", 1)[0]
            prop = inputs.properties.get(name)
            if prop is not None:
                prop.invalid = True
                prop.error_message = str(e)
            inputs.view("error", types.Error(label="Cannot run", description=str(e)))
        return types.Property(inputs, view=types.View(label=self.LABEL))

    # ---------------------------------------------------------------- execution
    def execute(self, ctx):
        from edgetam_kit.fiftyone.params import queue_shards

        p = _parse(ctx, self.NAME)
        view = _target_view(ctx, p.target)
        if p.num_shards > 1 and p.shard is None:
            ids = queue_shards(self.uri, view, p)
            return {"queued": ids, "num_shards": p.num_shards}
        summary = self.run(ctx, view, p)
        try:
            ctx.trigger("reload_dataset")
        except ValueError:  # no executor (some headless contexts)
            pass
        return summary.to_dict()

    def run(self, ctx, view, p):
        raise NotImplementedError


def _default_label_field(name):
    from edgetam_kit.fiftyone.params import DEFAULT_LABEL_FIELD

    return DEFAULT_LABEL_FIELD[name]


def _prompt_fields(dataset, video):
    if dataset is None:
        return []
    import fiftyone.core.labels as fol

    kinds = (fol.Detections, fol.Keypoints)
    if video:
        schema = dataset.get_frame_field_schema(embedded_doc_type=kinds) or {}
        return [f"frames.{k}" for k in schema]
    return list(dataset.get_field_schema(embedded_doc_type=kinds))


def _parse(ctx, name):
    from edgetam_kit.fiftyone.params import parse_params

    return parse_params(dict(ctx.params), name, ctx.dataset, has_selection=bool(ctx.selected),
                        has_view=ctx.has_custom_view)


def _target_view(ctx, target):
    if target == "SELECTED_SAMPLES":
        return ctx.view.select(ctx.selected)
    if target == "CURRENT_VIEW":
        return ctx.view
    return ctx.dataset


def _progress(ctx, what, every_s=1.0):
    """A progress(done, total) callback that tells the context at most once per ``every_s``."""
    last = [float("-inf")]

    def report(done, total):
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            ctx.set_progress(progress=done / total if total else 1.0, label=f"{done}/{total} {what}")

    return report


def _label_images(ctx, view, p, **model_options):
    """Images of ``view`` labelled by an ``EdgeTamImageModel`` built with ``model_options``."""
    from edgetam_kit.fiftyone import EdgeTamImageModel, label_images
    from edgetam_kit.fiftyone.models import cached_model

    model = EdgeTamImageModel(checkpoint=p.checkpoint, model=cached_model(p.checkpoint, p.device), device=p.device,
                              **model_options)
    return label_images(view, model, p.label_field, prompt_field=model_options.get("prompt_field"),
                        output_dir=p.output_dir, skip_existing=p.skip_existing, batch_size=p.batch_size,
                        shard=p.shard or 0, num_shards=p.num_shards, progress=_progress(ctx, "images"))


class SegmentWithPrompts(_EdgeTamOperator):
    NAME = "segment_with_prompts"
    LABEL = "EdgeTAM: segment with prompts"

    def run(self, ctx, view, p):
        return _label_images(ctx, view, p, prompt_field=p.prompt_field)


class AutoSegment(_EdgeTamOperator):
    NAME = "auto_segment"
    LABEL = "EdgeTAM: segment everything"

    def run(self, ctx, view, p):
        return _label_images(ctx, view, p, mode="auto", auto=p.auto)


class TrackObjects(_EdgeTamOperator):
    NAME = "track_objects"
    LABEL = "EdgeTAM: track objects"

    def run(self, ctx, view, p):
        from edgetam_kit.fiftyone import EdgeTamVideoModel, label_videos
        from edgetam_kit.fiftyone.models import cached_model

        model = EdgeTamVideoModel(checkpoint=p.checkpoint, model=cached_model(p.checkpoint, p.device), device=p.device,
                                  prompt_field=p.prompt_field)
        return label_videos(view, model, p.label_field, prompt_field=p.prompt_field, output_dir=p.output_dir,
                            skip_existing=p.skip_existing, shard=p.shard or 0, num_shards=p.num_shards,
                            progress=_progress(ctx, "videos"))


def register(p):
    p.register(SegmentWithPrompts)
    p.register(AutoSegment)
    p.register(TrackObjects)
