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
import os
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

_SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
_REPO_ROOT = os.path.dirname(_SCRIPTS_DIR)
sys.path[:] = [path for path in sys.path if os.path.abspath(path or os.curdir) != _SCRIPTS_DIR]
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import torch  # noqa: E402

from tasks.common import read_json, write_json  # noqa: E402
from tasks.pseudo_label import PhraseFinder, box_recovery, pseudo_label, vocabulary_spans  # noqa: E402

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


def read_vocabulary(path: str) -> list[str]:
    """Phrases from a text file (one per line) or a JSON file (a list of strings, or COCO ``categories``)."""
    if path.endswith(".json"):
        data = read_json(path, expected=object)
        phrases = [category["name"] for category in data.get("categories", [])] if isinstance(data, dict) else data
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Vocabulary file {path} does not exist.")
        with open(path, encoding="utf-8") as handle:
            phrases = [line.strip() for line in handle]
    phrases = [phrase for phrase in phrases if isinstance(phrase, str) and phrase.strip()]
    if not phrases:
        raise ValueError(f"{path}: no phrases found (expected one per line, a JSON list or COCO 'categories').")
    return phrases


def phrase_finder(vocabulary: str | None) -> PhraseFinder:
    """The caption -> spans function: vocabulary matches, or spaCy noun chunks."""
    if vocabulary:
        return partial(vocabulary_spans, vocabulary=read_vocabulary(vocabulary))
    from glipv2.pipelines_glipv2 import find_noun_phrases

    find_noun_phrases("a test caption.")  # fails now, with instructions, if spaCy or its model is missing
    return find_noun_phrases


def samples(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """The (image, caption) pairs to label, with their image id and file name."""
    if args.captions:
        from tasks.captioning import load_coco_captions

        dataset = load_coco_captions(args.captions, args.image_dir)
        for record in dataset:
            for caption in record["captions"]:
                yield {
                    "image": record["image"],
                    "caption": caption,
                    "image_id": record["image_id"],
                    "file_name": record["file_name"],
                }
        return
    from tasks.classification import load_image_text_pairs

    root = os.path.dirname(os.path.abspath(args.pairs))
    for index, record in enumerate(load_image_text_pairs(args.pairs)):
        path = getattr(record["image"], "filename", "")  # the decoded file; its name relative to the pairs file
        file_name = os.path.relpath(path, root) if path else f"{index}.png"
        yield {"image": record["image"], "caption": record["text"], "image_id": index, "file_name": file_name}


def limited(items: Iterator[dict[str, Any]], limit: int | None) -> Iterator[dict[str, Any]]:
    for index, item in enumerate(items):
        if limit is not None and index >= limit:
            return
        yield item


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
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    import glipv2  # noqa: F401  (registers the Auto classes)

    find = phrase_finder(args.vocabulary)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(args.teacher).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.teacher)
    labels = pseudo_label(
        model,
        processor,
        limited(samples(args), args.max_samples),
        find,
        threshold=args.threshold,
        max_boxes_per_phrase=args.max_boxes_per_phrase,
        batch_size=args.batch_size,
    )
    labels["info"]["teacher"] = os.path.abspath(args.teacher)
    if args.reference:
        recovery = box_recovery(labels, read_json(args.reference))
        labels["info"]["recovery_at_iou_0.5"] = recovery
        logger.info(
            "recovered %d of %d true boxes (recall %.3f) with %d pseudo boxes (precision %.3f)",
            recovery["recovered"],
            recovery["reference_boxes"],
            recovery["recall"],
            recovery["pseudo_boxes"],
            recovery["precision"],
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_json(args.output, labels)
    info = labels["info"]
    logger.info(
        "wrote %s: %d captions, %d boxes (%d captions without a phrase)",
        args.output,
        info["captions"],
        info["boxes"],
        info["captions_without_phrases"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
