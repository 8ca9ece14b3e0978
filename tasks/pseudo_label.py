"""Self-training with GLIP's pseudo-labels: a teacher grounds the phrases of image-caption pairs and the confident
boxes become MDETR-style grounding annotations for a student (GLIP §3.2, "grounding data from image-text pairs").

The output file is read by :func:`tasks.grounding.load_mdetr_grounding` like any human-labelled grounding file: one
``images`` entry per (image, caption) pair with its ``caption``; one annotation per kept box with ``bbox`` (xywh
pixels), ``tokens_positive`` (every span of the caption that names the phrase), ``phrase_ids``, ``score`` (the
teacher's confidence) and ``category_id`` 1. [`label_pairs`] runs it all (``scripts/pseudo_label.py``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import torch

from glipv2 import Glipv2Processor
from glipv2.box_ops import box_iou, xywh_to_xyxy, xyxy_to_xywh
from tasks.common import read_json, write_json

Span = tuple[int, int]
PhraseFinder = Callable[[str], list[Span]]

logger = logging.getLogger(__name__)


def vocabulary_spans(caption: str, vocabulary: Sequence[str]) -> list[Span]:
    """Character spans of the vocabulary phrases that occur in ``caption`` as whole words (case-insensitive; any run
    of whitespace matches a space).

    Longer phrases win over the phrases they contain ("red star" over "star"); matches do not overlap; spans are
    returned in caption order.
    """
    phrases = sorted({phrase.strip().lower() for phrase in vocabulary if phrase.strip()}, key=len, reverse=True)
    if not phrases:
        raise ValueError("The phrase vocabulary is empty: give at least one phrase to look for in the captions.")
    alternatives = (r"\s+".join(re.escape(word) for word in phrase.split()) for phrase in phrases)
    pattern = re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)
    return [match.span() for match in pattern.finditer(caption)]


def group_phrases(caption: str, spans: Sequence[Span]) -> list[list[Span]]:
    """Spans that name the same phrase (same words, ignoring case) form one phrase, in order of first mention.

    "a red circle to the left of a red circle" names one phrase twice: the teacher cannot tell the two mentions
    apart, so both boxes are labelled with both spans, as MDETR does for plural phrases.
    """
    groups: dict[str, list[Span]] = {}
    for begin, end in spans:
        if not (0 <= begin < end <= len(caption)):
            raise ValueError(
                f"Span ({begin}, {end}) lies outside the caption {caption!r} ({len(caption)} characters)."
            )
        key = " ".join(caption[begin:end].lower().split())
        groups.setdefault(key, []).append((int(begin), int(end)))
    return list(groups.values())


def _batches(samples: Iterable[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def pseudo_label(
    model: Any,
    processor: Any,
    samples: Iterable[dict[str, Any]],
    find_phrases: PhraseFinder,
    threshold: float = 0.4,
    max_boxes_per_phrase: int = 10,
    nms_threshold: float = 0.6,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Ground every caption's phrases with ``model`` and keep the boxes scored ``>= threshold``.

    Args:
        model: a grounding model (``Glipv2ForGrounding`` or any model whose output has ``logits``, ``pred_boxes``,
            ``centerness`` and ``spatial_shapes``), in eval mode.
        processor: its ``Glipv2Processor``.
        samples: dicts with ``image`` (PIL), ``caption`` and optionally ``image_id`` / ``file_name`` (copied to
            the output as ``original_img_id`` / ``file_name``).
        find_phrases: caption -> character spans of the phrases to ground (e.g. :func:`vocabulary_spans`).
        threshold: minimum box score (``sqrt(mean token probability x centerness)``, as in detection).
        max_boxes_per_phrase: most boxes kept per phrase.
        nms_threshold: per-phrase NMS IoU.
        batch_size: images per forward pass.

    Returns:
        MDETR-style grounding JSON (``images``, ``annotations``, ``categories``, ``info`` with counts). Captions with
        no phrase are counted in ``info["captions_without_phrases"]`` and written without annotations.
    """
    from glipv2.image_processing_glipv2 import get_image_size
    from glipv2.post_processing import post_process_grounding

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    without_phrases = 0
    device = next(model.parameters()).device
    for batch in _batches(samples, batch_size):
        captions = [sample["caption"] for sample in batch]
        for index, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"Sample {batch[index].get('image_id', index)}: the caption is empty.")
        phrases = [group_phrases(caption, find_phrases(caption)) for caption in captions]
        pictures = [sample["image"] for sample in batch]  # any mode: the processor converts (16-bit scaled, EXIF)
        exif = getattr(processor.image_processor, "do_exif_transpose", True)
        sizes = [get_image_size(picture, exif) for picture in pictures]  # (height, width) as the model sees them
        inputs = processor(images=pictures, text=captions, return_tensors="pt")
        num_tokens = inputs["input_ids"].shape[1]
        positive_maps = []
        for caption, groups in zip(captions, phrases):
            rows = processor.positive_map(caption, groups) if groups else torch.zeros(0, num_tokens)
            positive_maps.append(torch.nn.functional.pad(rows, (0, num_tokens - rows.shape[1])))
        outputs = model(**{key: value.to(device) for key, value in inputs.items()})
        results = post_process_grounding(
            outputs.logits,
            outputs.pred_boxes,
            outputs.centerness,
            outputs.spatial_shapes,
            positive_maps,
            threshold=threshold,
            nms_threshold=nms_threshold,
            max_detections=0,
            target_sizes=sizes,
        )
        for sample, (height, width), caption, groups, result in zip(batch, sizes, captions, phrases, results):
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "original_img_id": sample.get("image_id", image_id),
                    "file_name": sample.get("file_name", f"{image_id}.png"),
                    "width": width,
                    "height": height,
                    "caption": caption,
                }
            )
            without_phrases += not groups
            for phrase_id, spans in enumerate(groups):
                mine = (result["labels"] == phrase_id) & (result["scores"] >= threshold)
                kept = xyxy_to_xywh(result["boxes"][mine][:max_boxes_per_phrase].double()).tolist()
                for score, (x, y, w, h) in zip(result["scores"][mine], kept):
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "bbox": [x, y, w, h],
                            "area": w * h,
                            "iscrowd": 0,
                            "category_id": 1,
                            "tokens_positive": [list(span) for span in spans],
                            "phrase_ids": phrase_id,
                            "score": round(float(score), 6),
                        }
                    )
    return {
        "info": {
            "description": "GLIP-style pseudo-labels",
            "threshold": threshold,
            "captions": len(images),
            "boxes": len(annotations),
            "captions_without_phrases": without_phrases,
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }


def _spans_overlap(first: Sequence[Sequence[int]], second: Sequence[Sequence[int]]) -> bool:
    return any(a0 < b1 and b0 < a1 for a0, a1 in first for b0, b1 in second)


def box_recovery(
    pseudo: dict[str, Any], reference: dict[str, Any], iou_threshold: float = 0.5
) -> dict[str, float | int]:
    """How many true boxes the pseudo-labels recover.

    A reference box (MDETR JSON, e.g. the synthetic ``grounding_<split>.json``) is recovered when a pseudo box on the
    same image (matched by ``file_name``) and caption, whose spans overlap the reference box's spans, has IoU
    ``>= iou_threshold``; each pseudo box recovers at most one reference box (greedy by IoU).

    Returns:
        ``recall`` (recovered / reference boxes), ``precision`` (matched / pseudo boxes), and the counts.
    """

    def by_key(data: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        keys = {image["id"]: (image["file_name"], image["caption"]) for image in data["images"]}
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in keys.values()}
        for annotation in data["annotations"]:
            grouped[keys[annotation["image_id"]]].append(annotation)
        return grouped

    def xyxy(annotations: list[dict[str, Any]]) -> torch.Tensor:
        return xywh_to_xyxy([a["bbox"] for a in annotations])

    predicted, truth = by_key(pseudo), by_key(reference)
    recovered = 0
    total = sum(len(boxes) for boxes in truth.values())
    num_pseudo = sum(len(boxes) for boxes in predicted.values())
    for key, true_boxes in truth.items():
        candidates = predicted.get(key, [])
        if not true_boxes or not candidates:
            continue
        iou = box_iou(xyxy(true_boxes), xyxy(candidates))
        for row, true_box in enumerate(true_boxes):
            for column, candidate in enumerate(candidates):
                if not _spans_overlap(true_box["tokens_positive"], candidate["tokens_positive"]):
                    iou[row, column] = -1.0
        used: set[int] = set()
        for row in range(len(true_boxes)):
            for column in iou[row].argsort(descending=True).tolist():
                if iou[row, column] < iou_threshold:
                    break
                if column not in used:
                    used.add(column)
                    recovered += 1
                    break
    return {
        "recall": recovered / total if total else 0.0,
        "precision": recovered / num_pseudo if num_pseudo else 0.0,
        "recovered": recovered,
        "reference_boxes": total,
        "pseudo_boxes": num_pseudo,
    }


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


def caption_pairs(
    captions: str | None = None, image_dir: str | None = None, pairs: str | None = None
) -> Iterator[dict[str, Any]]:
    """The (image, caption) pairs to label, with their image id and file name: every caption of a COCO captions
    file (`captions` with `image_dir`), or the records of a JSON-lines file of `{"image": path, "text": caption}`."""
    if captions:
        from tasks.captioning import load_coco_captions

        dataset = load_coco_captions(captions, image_dir)
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

    root = os.path.dirname(os.path.abspath(pairs))
    for index, record in enumerate(load_image_text_pairs(pairs)):
        path = getattr(record["image"], "filename", "")  # the decoded file; its name relative to the pairs file
        file_name = os.path.relpath(path, root) if path else f"{index}.png"
        yield {"image": record["image"], "caption": record["text"], "image_id": index, "file_name": file_name}


def label_pairs(
    teacher: str,
    output: str,
    captions: str | None = None,
    image_dir: str | None = None,
    pairs: str | None = None,
    vocabulary: str | None = None,
    threshold: float = 0.4,
    max_boxes_per_phrase: int = 10,
    batch_size: int = 8,
    max_samples: int | None = None,
    reference: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Pseudo-labels image-caption pairs with the `teacher` checkpoint (the grounding task's model class) and
    writes MDETR JSON to `output`; with `reference` (MDETR JSON with the true boxes of the same pairs) the share of
    true boxes recovered is stored in the output's `info`. Returns the written data."""
    from itertools import islice

    from tasks.registry import get_task

    find = phrase_finder(vocabulary)
    grounding = get_task("grounding")
    model = grounding.model_class().from_pretrained(teacher).to(device).eval()
    processor = Glipv2Processor.from_pretrained(teacher)
    labels = pseudo_label(
        model,
        processor,
        islice(caption_pairs(captions, image_dir, pairs), max_samples),
        find,
        threshold=threshold,
        max_boxes_per_phrase=max_boxes_per_phrase,
        batch_size=batch_size,
    )
    labels["info"]["teacher"] = os.path.abspath(teacher)
    if reference:
        recovery = box_recovery(labels, read_json(reference))
        labels["info"]["recovery_at_iou_0.5"] = recovery
        logger.info(
            "recovered %d of %d true boxes (recall %.3f) with %d pseudo boxes (precision %.3f)",
            recovery["recovered"],
            recovery["reference_boxes"],
            recovery["recall"],
            recovery["pseudo_boxes"],
            recovery["precision"],
        )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_json(output, labels)
    info = labels["info"]
    logger.info(
        "wrote %s: %d captions, %d boxes (%d captions without a phrase)",
        output,
        info["captions"],
        info["boxes"],
        info["captions_without_phrases"],
    )
    return labels


__all__ = [
    "box_recovery",
    "caption_pairs",
    "group_phrases",
    "label_pairs",
    "phrase_finder",
    "pseudo_label",
    "read_vocabulary",
    "vocabulary_spans",
]
