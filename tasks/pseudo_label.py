"""Self-training with GLIP's pseudo-labels: a teacher grounds the phrases of image-caption pairs and the confident
boxes become MDETR-style grounding annotations for a student (GLIP §3.2, "grounding data from image-text pairs").

The output file is read by :func:`tasks.grounding.load_mdetr_grounding` like any human-labelled grounding file: one
``images`` entry per (image, caption) pair with its ``caption``; one annotation per kept box with ``bbox`` (xywh
pixels), ``tokens_positive`` (every span of the caption that names the phrase), ``phrase_ids``, ``score`` (the
teacher's confidence) and ``category_id`` 1. ``scripts/pseudo_label.py`` is the command line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torchvision.ops import box_iou

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
                for score, box in list(zip(result["scores"][mine], result["boxes"][mine]))[:max_boxes_per_phrase]:
                    x0, y0, x1, y1 = (float(value) for value in box)
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0),
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
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float64).reshape(-1, 4)
        return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)

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


__all__ = ["box_recovery", "group_phrases", "pseudo_label", "vocabulary_spans"]
