"""``edgetam bench``: time edgetam-kit beside the original code and transformers (benchmarks/run_all.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .common import sub


def benchmarks_dir() -> Path:
    """The repository's benchmarks/ folder (``EDGETAM_BENCHMARKS_DIR`` overrides)."""
    env = os.environ.get("EDGETAM_BENCHMARKS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "benchmarks"


def cmd_bench(args: argparse.Namespace) -> int:
    """``edgetam bench``: run benchmarks/run_all.py in this process."""
    import importlib.util

    script = benchmarks_dir() / "run_all.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"edgetam bench needs the benchmarks/ folder of a source checkout (looked for {script}); "
            "clone the repository and `pip install -e '.[test]'`, or set EDGETAM_BENCHMARKS_DIR")
    missing = [name for name in ("sam2", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise FileNotFoundError(
            f"edgetam bench times the peers too, and {', '.join(missing)} is not installed: "
            "`pip install 'edgetam-kit[test]'` (edgetam-dimos provides sam2)")
    argv = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    argv += (["--skip", *args.skip] if args.skip else []) + (["--compiled"] if args.compiled else [])
    argv += ["--markdown", args.markdown] if args.markdown else []
    argv += ["--preset", args.preset]
    spec = importlib.util.spec_from_file_location("edgetam_run_all", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.main(argv)
    return 0


def add_bench_parser(subs: argparse._SubParsersAction, configs: list[str]) -> None:
    p = sub(subs, "bench", "Time edgetam-kit beside the original EdgeTAM code and transformers (benchmarks/run_all.py).",
             "edgetam bench --quick --markdown docs/benchmarks.md")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and frames, 16x16 automask grid")
    p.add_argument("--skip", nargs="*", default=[], choices=["image", "tracking", "bf16", "automask"],
                   help="sections to leave out")
    p.add_argument("--compiled", action="store_true", help="also time backend='compiled' (torch.compile)")
    p.add_argument("--markdown", metavar="FILE", help="rewrite the table between the run_all markers in FILE")
    p.add_argument("--preset", choices=configs, default="edgetam", help="network shape (tiny: a smoke test only)")
    p.set_defaults(func=cmd_bench)
