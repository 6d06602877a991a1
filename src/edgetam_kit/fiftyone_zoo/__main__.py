"""``python -m edgetam_kit.fiftyone_zoo install [--checkpoint PATH] [--zoo-dir DIR]``: make the
FiftyOne model zoo source in one command (see ``edgetam_kit.fiftyone_zoo.install``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgetam_kit.fiftyone_zoo",
        description="Install edgetam-kit's FiftyOne model zoo source (edgetam-kit-image-torch, "
                    "edgetam-kit-video-torch) under FiftyOne's model zoo folder.",
        epilog="example: python -m edgetam_kit.fiftyone_zoo install --checkpoint /models/edgetam.pt")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="link the source into the zoo folder (and point it at a checkpoint)")
    inst.add_argument("--checkpoint", help="a local checkpoint (HF folder or edgetam.pt), name or hub id; "
                                           "offline: nothing is downloaded")
    inst.add_argument("--zoo-dir", help="default: fo.config.model_zoo_dir (FIFTYONE_MODEL_ZOO_DIR)")
    args = parser.parse_args(argv)
    from . import install

    try:
        folder = install(args.zoo_dir, checkpoint=args.checkpoint)
    except (FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"installed: {folder}" + (f" (models point at {args.checkpoint})" if args.checkpoint else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
