"""The ``edgetam`` command line: ``info``, ``segment``, ``demo``, ``track``, ``auto``, ``embed``, ``bench``,
``export``, ``finetune`` and ``plugins`` (one module per command beside this one).

Bad input (a malformed flag, a missing file, an unusable checkpoint) ends with one line
``edgetam: error: ...`` on stderr and exit code 2. Set ``EDGETAM_DEBUG=1`` to get the
traceback instead. Nothing heavy is imported until a command runs (``edgetam --help`` is fast).
"""

from __future__ import annotations

import argparse
import os
import sys

from .auto import add_auto_parsers
from .bench import add_bench_parser
from .common import PROG, sub
from .demo import add_demo_parser
from .export import add_export_parser
from .finetune import add_finetune_parser
from .info import add_info_parsers
from .segment import add_segment_parser
from .track import add_track_parser


def build_parser() -> argparse.ArgumentParser:
    """The ``edgetam`` argument parser with its subcommands."""
    from ..config import PRESETS

    parser = argparse.ArgumentParser(
        prog=PROG, description="EdgeTAM segmentation from the command line.",
        epilog="example:\n  edgetam demo\n  edgetam segment cells.tif --point 120,80 --checkpoint edgetam -o mask.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    configs = sorted(PRESETS)
    add_info_parsers(subs)
    add_segment_parser(subs, configs)
    add_demo_parser(subs, configs)
    add_track_parser(subs, sub, configs)
    add_auto_parsers(subs, sub, configs)
    add_bench_parser(subs, configs)
    add_export_parser(subs, configs)
    add_finetune_parser(subs, configs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``edgetam`` command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `edgetam info | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError) as exc:  # CheckpointError is a ValueError
        if os.environ.get("EDGETAM_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
