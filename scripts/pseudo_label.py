"""Pseudo-label image-caption pairs with a teacher checkpoint (GLIP self-training) and write MDETR grounding JSON.

    python scripts/pseudo_label.py --teacher demo_output/model \\
        --captions demo_output/data/annotations/captions_train.json --image-dir demo_output/data/images/train \\
        --vocabulary demo_output/data/annotations/instances_train.json --threshold 0.4 \\
        --output pseudo_train.json [--reference demo_output/data/annotations/grounding_train.json]

Pairs come from a COCO captions JSON (``--captions`` + ``--image-dir``; every caption of an image is one pair) or
from a JSON-lines file of ``{"image": path, "text": caption}`` (``--pairs``). The phrases of a caption are the
occurrences of ``--vocabulary`` phrases (a text file with one phrase per line, or a JSON file: a list of phrases, or
COCO ``categories`` whose names are used), or, without ``--vocabulary``, spaCy's noun chunks (needs spaCy and
``en_core_web_sm``). The teacher grounds them; boxes scoring at least ``--threshold`` are kept. The output is read
by ``tasks.grounding.load_mdetr_grounding`` with the same image folder (for ``--pairs``: the pairs file's folder),
so a student trains on it with ``scripts/train.py`` (recipe task entry:
``{name: grounding, files: {annotation_file: ..., image_dir: ...}}``). With ``--reference`` (an MDETR file with the
true boxes of the same pairs) the share of true boxes recovered at IoU >= 0.5 is printed and stored in the output's
``info``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch

from tasks.pseudo_label import label_pairs

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="teacher checkpoint folder (model + processor)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--captions", help="COCO captions JSON (needs --image-dir)")
    source.add_argument("--pairs", help="JSON-lines file of {'image': path, 'text': caption}")
    parser.add_argument("--image-dir", help="image folder of --captions")
    parser.add_argument("--vocabulary", help="phrases to ground: .txt (one per line) or .json (list or COCO)")
    parser.add_argument("--output", required=True, help="MDETR grounding JSON to write")
    parser.add_argument("--threshold", type=float, default=0.4, help="minimum box score kept")
    parser.add_argument("--max-boxes-per-phrase", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-samples", type=int, help="label only the first N pairs")
    parser.add_argument("--reference", help="MDETR JSON with the true boxes: print the share recovered")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.captions and not args.image_dir:
        parser.error("--captions needs --image-dir")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must lie in [0, 1], got {args.threshold}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Label, write, report; a bad input (file, vocabulary, caption) exits with status 2 and one clear message."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:  # Glipv2DataError is a ValueError
        print(f"pseudo_label.py: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    label_pairs(
        args.teacher,
        args.output,
        captions=args.captions,
        image_dir=args.image_dir,
        pairs=args.pairs,
        vocabulary=args.vocabulary,
        threshold=args.threshold,
        max_boxes_per_phrase=args.max_boxes_per_phrase,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        reference=args.reference,
        device=args.device,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
