"""Property-based checks (issue 18): every input to the public API either works or raises
ValueError / TypeError / FileNotFoundError, and the CLI ends every argv with exit 0 or a usage/error
code and a message, never a traceback. Bounded for CI (a few dozen examples per property, tiny
random model built once) and derandomized, so every run tries the same inputs; each property also
checks that it saw inputs that work and inputs that are refused (never vacuous).
EDGETAM_PROPERTY_SCALE=10 EDGETAM_PROPERTY_RANDOM=1 searches deeper and wider, locally."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edgetam_kit as ek
from edgetam_kit.cli import main

ALLOWED = (ValueError, TypeError, FileNotFoundError)


SCALE = int(os.environ.get("EDGETAM_PROPERTY_SCALE", "1"))  # a deeper local search: e.g. 10
RANDOM = os.environ.get("EDGETAM_PROPERTY_RANDOM", "") == "1"  # new inputs each run (CI: the same ones)


def bounded(n: int) -> settings:
    return settings(max_examples=n * SCALE, deadline=None, derandomize=not RANDOM, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


OUTCOMES: dict[str, list[bool]] = {}


@contextlib.contextmanager
def allowed_errors(record: str | None = None):
    """Run a call that may refuse its input: only the documented errors (messages not empty).
    ``record``: count the outcome under this name (see ``both_seen``)."""
    ok = False
    try:
        yield
        ok = True
    except ALLOWED as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
    finally:
        if record:
            OUTCOMES.setdefault(record, []).append(ok)


def both_seen(name: str, least: int = 3, refused: int | None = None) -> None:
    """The property tried enough inputs that work (``least``) and enough that are refused (``refused``,
    default ``least``): it is not vacuous."""
    seen = OUTCOMES.pop(name, [])
    assert sum(seen) >= least and len(seen) - sum(seen) >= (least if refused is None else refused), \
        f"{name}: {sum(seen)} inputs worked, {len(seen) - sum(seen)} were refused; the strategy needs both"


@pytest.fixture(scope="module")
def model() -> Any:
    return ek.build_random_model("tiny", seed=0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


# ----------------------------------------------------------------------------- images
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.float16, np.float32, np.float64, np.bool_,
                          np.complex64, np.int64])
images = st.one_of(
    hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=24)),
    hnp.arrays(st.sampled_from([np.uint8, np.uint16, np.float32]),
               st.tuples(st.integers(1, 24), st.integers(1, 24)) | st.tuples(st.integers(1, 24), st.integers(1, 24),
                                                                            st.sampled_from([1, 3, 4]))))


def test_images_work_or_are_refused(model) -> None:
    pred = ek.ImagePredictor(model)

    @bounded(30)
    @given(image=images, channels=st.sampled_from([None, None, None, 0, 2, -1, 1.5, "rgb", True, [0, 1, 2]]))
    def prop(image, channels) -> None:
        with allowed_errors("images"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred.set_image(image, channels=channels)
            r = pred.predict(points=[[0, 0]], multimask=False)
            assert r.masks.shape[1:] == image.shape[:2]

    prop()
    both_seen("images")


# ----------------------------------------------------------------------------- prompts
H, W = 32, 48
numbers = st.one_of(st.integers(-10, 60), st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([2**40, -(2**40), 1e30]))
good_points = st.lists(st.tuples(st.integers(0, W - 1), st.integers(0, H - 1)).map(list), min_size=1, max_size=3)
point_lists = st.one_of(st.none(), good_points, good_points,
                        st.lists(st.lists(numbers, min_size=0, max_size=3), max_size=4),
                        hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=4), elements=numbers),
                        st.sampled_from(["1,2", {"a": 1}, 3]))
label_lists = st.one_of(st.none(), st.none(), st.lists(st.sampled_from([0, 1, 1, 2, -1, 0.5, True, "1"]), max_size=4))
good_boxes = st.tuples(st.integers(0, 20), st.integers(0, 15), st.integers(21, W - 1), st.integers(16, H - 1)).map(list)
boxes = st.one_of(st.none(), st.none(), good_boxes, st.lists(numbers, min_size=0, max_size=5),
                  st.sampled_from(["box", [[1, 2, 3, 4]]]))


@pytest.fixture(scope="module")
def predictor(model) -> Any:
    pred = ek.ImagePredictor(model)
    pred.set_image((np.random.default_rng(1).random((H, W, 3)) * 255).astype(np.uint8))
    return pred


def test_prompts_work_or_are_refused(predictor) -> None:
    @bounded(60)
    @given(points=point_lists, labels=label_lists, box=boxes, multimask=st.sampled_from([True, False, 1, None]))
    def prop(points, labels, box, multimask) -> None:
        with allowed_errors("prompts"):
            r = predictor.predict(points=points, labels=labels, box=box, multimask=multimask)
            assert r.masks.shape[1:] == (H, W) and r.masks.dtype == bool

    @bounded(20)
    @given(points=st.lists(point_lists, max_size=3), boxes=st.lists(boxes, max_size=3),
           index=st.one_of(st.none(), st.integers(-2, 3), st.just(0.0), st.lists(st.integers(-1, 2), max_size=3)))
    def batched(points, boxes, index) -> None:
        with allowed_errors("batched"):
            predictor.predict_batch(points=points or None, boxes=boxes or None, image_index=index, multimask=False)

    prop()
    batched()
    both_seen("prompts")
    both_seen("batched", least=1)


# ----------------------------------------------------------------------------- tracker
frame_args = st.integers(0, 1) | st.integers(-2, 3) | st.sampled_from([1.0, None, "0", True])
obj_ids = st.integers(1, 3) | st.integers(-1, 2**33) | st.just("a")
good_add = st.tuples(st.just("add"), st.integers(0, 1), st.integers(1, 3), good_points | st.none(), good_boxes)
good_propagate = st.tuples(st.just("propagate"), st.sampled_from(["forward", "backward", "both"]), st.none(), st.none())
ops = st.tuples(good_add, st.lists(st.one_of(
    good_add, good_propagate,
    st.tuples(st.just("add"), frame_args, obj_ids, point_lists, boxes),
    st.tuples(st.just("propagate"), st.sampled_from(["forward", "backward", "both", "sideways", 1]),
              st.one_of(st.none(), frame_args), st.one_of(st.none(), frame_args)),
    st.tuples(st.just("remove"), st.integers(1, 3) | st.just("x")),
    st.tuples(st.just("reset"))), min_size=1, max_size=3)).map(lambda t: [t[0], *t[1]])


def test_tracker_calls_work_or_are_refused(model) -> None:
    frames = (np.random.default_rng(2).random((2, H, W, 3)) * 255).astype(np.uint8)

    @bounded(10)
    @given(ops=ops)
    def prop(ops) -> None:
        session = ek.VideoTracker(model).start(frames)
        for op in ops:
            with allowed_errors(f"tracker-{op[0]}"):
                if op[0] == "add":
                    session.add_prompt(op[1], op[2], points=op[3], box=op[4])
                elif op[0] == "propagate":
                    for frame, ids, masks in session.propagate(op[1], start=op[2], stop=op[3]):
                        assert masks.shape == (len(ids), H, W)
                elif op[0] == "remove":
                    session.remove_object(op[1])
                else:
                    session.reset()

    prop()
    both_seen("tracker-add", least=1)
    both_seen("tracker-propagate", least=1, refused=0)
    OUTCOMES.clear()


# ----------------------------------------------------------------------------- sources
def test_sources_open_or_are_refused(workdir) -> None:
    import tifffile

    from edgetam_kit.io.sources import open_source

    @bounded(30)
    @given(kind=st.sampled_from(["array", "array", "missing", "folder", "junk-file", "tif", "tif", "npy-list", "none"]),
           array=hnp.arrays(st.sampled_from([np.uint8, np.float32, np.uint16]),
                            hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)),
           options=st.dictionaries(st.sampled_from(["series", "channels", "level", "bogus"]),
                                   st.sampled_from([0, 1, 5, -1, "x", None]), max_size=1))
    def prop(kind, array, options) -> None:
        folder = Path(tempfile.mkdtemp(dir=workdir))
        source: Any = {"array": array, "missing": folder / "nope.tif", "folder": folder, "none": None,
                       "npy-list": array.tolist()}.get(kind)
        if kind == "junk-file":
            (folder / "a.png").write_bytes(b"\x89PNG not really")
            source = folder
        elif kind == "tif":
            with allowed_errors():
                tifffile.imwrite(folder / "s.tif", array)
            source = folder / "s.tif"
        with allowed_errors("sources"):
            src = open_source(source, **options)
            for i in range(min(len(src), 2)):
                assert src.frame(i).shape == tuple(src.shape[1:])

    prop()
    both_seen("sources")


# ----------------------------------------------------------------------------- exporters
names = st.one_of(st.sampled_from(["a.png", "a.jpg", "A.PNG", "b.tif", "", ".", "..", "b/c.png", "x\x00y", ".hidden"]),
                  st.text(max_size=8))
annotations = st.lists(st.one_of(
    hnp.arrays(np.bool_, st.sampled_from([(6, 8), (6, 8), (8, 6), (6,)])),
    st.fixed_dictionaries({"segmentation": st.one_of(
        hnp.arrays(np.uint8, (6, 8)),
        st.fixed_dictionaries({"size": st.sampled_from([[6, 8], [8, 6], "x"]),
                               "counts": st.one_of(st.lists(st.integers(-2, 48), max_size=4), st.text(max_size=6))}))},
        optional={"predicted_iou": st.floats(width=32), "stability_score": st.just(np.float32(0.5))})),
    max_size=3)


def test_exporters_write_or_refuse(workdir) -> None:
    @bounded(40)
    @given(items=st.lists(st.tuples(names, annotations), min_size=0, max_size=3),
           fmt=st.sampled_from(["coco", "tiff", "zarr", "coco", "tiff", "png", ["coco"], None]))
    def prop(items, fmt) -> None:
        out = Path(tempfile.mkdtemp(dir=workdir))
        sets = [ek.MaskSet(name, (6, 8), anns) for name, anns in items]
        with allowed_errors("exporters"):
            paths = ek.export_masks(sets, out, format=fmt)
            assert all(Path(p).exists() for p in paths)

    prop()
    both_seen("exporters")


# ----------------------------------------------------------------------------- CLI argv
@pytest.fixture(scope="module")
def cli_files(workdir) -> dict[str, str]:
    import skimage.io

    img = (np.random.default_rng(3).random((24, 32, 3)) * 255).astype(np.uint8)
    skimage.io.imsave(workdir / "img.png", img, check_contrast=False)
    np.save(workdir / "frames.npy", np.stack([img, img]))
    return {"IMG": str(workdir / "img.png"), "NPY": str(workdir / "frames.npy"), "MISSING": str(workdir / "no.png"),
            "DIR": str(workdir)}


CK = ["--checkpoint", "random:tiny"]
VALID = {  # one working command line each; the property mutates them
    "segment": ["segment", "IMG", "--point", "3,4", "-o", "OUT.png", *CK],
    "auto": ["auto", "IMG", "-o", "OUT.json", "--points-per-side", "2", "--quiet", *CK],
    "track": ["track", "NPY", "--prompt", "0:1:3,4", "-o", "OUT.tif", "--direction", "forward", *CK],
    "embed": ["embed", "IMG", "-o", "OUT", "--quiet", *CK],
    "info": ["info", "--checkpoint", "random:tiny"],
    "plugins": ["plugins"],
}
JUNK = ["IMG", "NPY", "MISSING", "DIR", "random:tiny?seed=x", "random:nope", "edgetam", "1,2", "0:1:3,4",
        "0:1:1,2,30,20", "0:99999999999:1,2", "-1", "0", "2", "1e309", "nan", "x", "", "meta", "cuda", "tiff", "zarr",
        "OUT.txt", "OUT.zarr", "--bogus", "--box", "--format", "--device", "--threads", "--points-per-side",
        "--crop-n-layers", "--max-memory-frames", "--tiling", "--cache-readonly", "--backend", "--precision", "nope",
        "--help"]
mutation = st.tuples(st.sampled_from(["drop", "replace", "insert"]), st.integers(0, 20),
                     st.sampled_from(JUNK) | st.text(max_size=4))


def test_cli_argv_never_gives_a_traceback(workdir, cli_files, monkeypatch) -> None:
    monkeypatch.chdir(workdir)  # a mutated -o may name a relative folder
    @bounded(30)
    @given(command=st.sampled_from(sorted(VALID)), mutations=st.lists(mutation, max_size=2))
    def prop(command, mutations) -> None:
        out = Path(tempfile.mkdtemp(dir=workdir))
        argv = list(VALID[command])
        for how, at, word in mutations:
            at %= len(argv) + 1
            if how == "drop" and at < len(argv):
                del argv[at]
            elif how == "replace" and at < len(argv):
                argv[at] = word
            else:
                argv.insert(at, word)
        argv = [str(out / w.removeprefix("OUT")) if w.startswith("OUT") else cli_files.get(w, w) for w in argv]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = main(argv)
        assert rc in (0, 2), (argv, rc, err.getvalue())
        assert "Traceback" not in err.getvalue()
        if rc == 2:
            assert err.getvalue().strip(), f"exit 2 without a message: {argv}"
        OUTCOMES.setdefault("cli", []).append(rc == 0)

    prop()
    both_seen("cli")
