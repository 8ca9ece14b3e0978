"""Collators: lists of records from the ``tasks`` loaders -> model inputs plus labels, one class per task.

Every collator wraps a :class:`~glipv2.Glipv2Processor`. With ``train=True`` images get GLIP's training
augmentation (:class:`~tasks.transforms.MultiScaleResize`, then a horizontal flip with probability
``flip_prob`` that also swaps "left"/"right" in captions and moves their spans) and the processor does not resize
again; with ``train=False`` the processor's own resize is used and nothing is random. All randomness comes from
``random.Random(seed)``; in eval mode the few random choices that remain (detection negatives) use a generator
seeded by ``(seed, image_id)``, so a batch's content does not depend on batch order or sharding.

Padding never leaks: padded pixels are 0 in ``pixel_mask`` and padded tokens 0 in ``attention_mask`` (and
``-100`` in caption ``labels``).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image, ImageOps

from tasks.transforms import MultiScaleResize, horizontal_flip, od_to_grounding

logger = logging.getLogger(__name__)

# Official GLIP: MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN = 256 token positions, [CLS] and [SEP] included.
MAX_TEXT_LENGTH = 256
# Official GLIP training: INPUT.MIN_SIZE_TRAIN = (480, 512, ..., 800), INPUT.MAX_SIZE_TRAIN = 1333, flip 0.5.
TRAIN_MIN_SIZES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
TRAIN_MAX_SIZE = 1333
FLIP_PROB = 0.5
# Official od_to_grounding for detection data (DATASETS.RANDOM_SAMPLE_NEG): up to 85 absent classes per prompt.
NUM_NEGATIVES = 85

Boxes = list[list[float]]


def xywh_to_xyxy(boxes: Sequence[Sequence[float]]) -> Boxes:
    """COCO ``[x, y, w, h]`` boxes -> ``[x0, y0, x1, y1]`` (continuous pixel coordinates)."""
    return [[float(x), float(y), float(x) + float(w), float(y) + float(h)] for x, y, w, h in boxes]


def load_rgb(image: Image.Image) -> Image.Image:
    """The record's image upright (EXIF orientation applied) and in RGB, so boxes and pixels share one frame."""
    return ImageOps.exif_transpose(image).convert("RGB")


class _ProcessorCollator:
    """Shared plumbing: the processor, the train/eval switch, the random generator and the image augmentation."""

    def __init__(
        self,
        processor: Any,
        train: bool = False,
        seed: int = 0,
        min_sizes: Sequence[int] = TRAIN_MIN_SIZES,
        max_size: int | None = TRAIN_MAX_SIZE,
        flip_prob: float = FLIP_PROB,
        max_length: int = MAX_TEXT_LENGTH,
        pad_size: int | None = None,
    ) -> None:
        self.processor = processor
        # Padding every training batch to one fixed square makes results independent of how samples are grouped
        # into batches (e.g. 1 vs N processes); GLIP pads to the batch maximum.
        self.pad_size = pad_size
        self.tokenizer = processor.tokenizer
        self.train = train
        self.seed = seed
        self.rng = random.Random(seed)
        self.resize = MultiScaleResize(tuple(min_sizes), max_size)
        self.flip_prob = flip_prob
        self.max_length = max_length
        self.stats: Counter = Counter()

    def record_rng(self, record: Mapping[str, Any]) -> random.Random:
        """The record's own ``augment_seed`` (set by the trainer: per-sample, so augmentation does not depend on
        the number of processes or on a resume); else the collator's generator in train mode, and in eval mode one
        seeded by ``(seed, image_id)``."""
        if "augment_seed" in record:
            return random.Random(record["augment_seed"])
        if self.train:
            return self.rng
        return random.Random(f"{self.seed}:{record.get('image_id')}")

    def augment(
        self,
        image: Image.Image,
        boxes: Boxes = (),
        caption: str | None = None,
        spans: Sequence[Sequence[Sequence[int]]] = (),
        rng: random.Random | None = None,
    ) -> tuple[Image.Image, Boxes, str | None, list]:
        """Training augmentation of an upright RGB image, its xyxy boxes and caption spans (identity in eval)."""
        boxes = [list(box) for box in boxes]
        spans = [[list(span) for span in object_spans] for object_spans in spans]
        if not self.train:
            return image, boxes, caption, spans
        rng = rng or self.rng
        image, boxes = self.resize(image, boxes, rng)
        if rng.random() < self.flip_prob:
            image, boxes, caption, spans = horizontal_flip(image, boxes, caption, spans)
        return image, boxes, caption, spans

    def image_kwargs(self) -> dict[str, Any]:
        """In train mode the image is already at its training scale: the processor must not resize it again."""
        kwargs: dict[str, Any] = {"do_resize": False} if self.train else {}
        if self.train and self.pad_size:
            kwargs["pad_size"] = {"height": self.pad_size, "width": self.pad_size}
        return kwargs

    def pixels(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """``pixel_values`` ``(B, 3, H, W)`` and ``pixel_mask`` ``(B, H, W)`` (0 on padding)."""
        encoded = self.processor(images=images, return_tensors="pt", **self.image_kwargs())
        return {"pixel_values": encoded["pixel_values"], "pixel_mask": encoded["pixel_mask"]}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids with [CLS] ... [SEP], padded to the longest text, truncated at ``max_length`` positions."""
        encoded = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


class DetectionCollator(_ProcessorCollator):
    """COCO detection records -> grounding inputs (detection as grounding, the official ``od_to_grounding``).

    Per image, the classes present (crowd boxes skipped, as the official training) plus up to ``num_negatives``
    sampled absent classes are shuffled and ". "-joined into a prompt; token counts use the real tokenizer and the
    budget is ``max_length`` minus [CLS]/[SEP]; boxes of positive classes that overflow are dropped (counted in
    ``stats["dropped_boxes"]``).

    Returns ``pixel_values``, ``pixel_mask``, ``input_ids``, ``attention_mask`` (and ``token_type_ids``) and
    ``labels``: per image ``{"boxes": (N, 4) normalised cxcywh, "positive_map": (N, T) 0/1}``.
    """

    def __init__(
        self,
        processor: Any,
        categories: Sequence[Mapping[str, Any]] | Mapping[int, str],
        num_negatives: int = NUM_NEGATIVES,
        **kwargs: Any,
    ) -> None:
        super().__init__(processor, **kwargs)
        if isinstance(categories, Mapping):
            self.categories = {int(key): str(value) for key, value in categories.items()}
        else:
            self.categories = {int(category["id"]): str(category["name"]) for category in categories}
        self.num_negatives = num_negatives
        self._token_counts: dict[str, int] = {}

    def count_tokens(self, text: str) -> int:
        """WordPiece tokens of ``text`` without special tokens (cached: class names repeat)."""
        if text not in self._token_counts:
            self._token_counts[text] = len(self.tokenizer.tokenize(text))
        return self._token_counts[text]

    def example(self, record: Mapping[str, Any]) -> tuple[Image.Image, str, dict[str, Any]]:
        """One record -> (augmented image, prompt, grounding target in that image's pixels)."""
        rng = self.record_rng(record)
        objects = record["objects"]
        crowd = objects.get("iscrowd") or [0] * len(objects["bbox"])
        kept = [index for index, is_crowd in enumerate(crowd) if not is_crowd]
        self.stats["crowd_boxes"] += len(crowd) - len(kept)
        category_ids = [int(objects["category_id"][index]) for index in kept]
        prompt = od_to_grounding(
            category_ids,
            self.categories,
            rng,
            self.num_negatives if category_ids else max(self.num_negatives, 1),  # a prompt is never empty
            max_tokens=self.max_length - 2,
            count_tokens=self.count_tokens,
        )
        self.stats["dropped_boxes"] += prompt.keep.count(False)
        boxes = xywh_to_xyxy([objects["bbox"][index] for index, keep in zip(kept, prompt.keep) if keep])
        spans = [spans for spans, keep in zip(prompt.tokens_positive, prompt.keep) if keep]
        # No caption is given to the flip: class names are not a sentence, "left"/"right" in a name stays.
        image, boxes, _, _ = self.augment(load_rgb(record["image"]), boxes, None, (), rng)
        return image, prompt.caption, {"boxes": boxes, "spans": spans}

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate detection records (see the class docstring for the output)."""
        images, prompts, targets = zip(*(self.example(record) for record in records))
        batch = self.processor(
            images=list(images),
            text=list(prompts),
            grounding_targets=list(targets),
            max_length=self.max_length,
            return_tensors="pt",
            **self.image_kwargs(),
        )
        return dict(batch)


def fit_caption(
    tokenizer: Any, caption: str, spans: Sequence[Sequence[Sequence[int]]], max_length: int
) -> tuple[str, list[bool], bool]:
    """Cut ``caption`` after the last token that fits in ``max_length`` positions ([CLS], [SEP] included).

    Returns the (possibly shorter) caption, per object whether all its spans still lie inside it, and whether
    the caption was cut.
    """
    offsets = tokenizer(caption, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= max_length - 2:
        return caption, [True] * len(spans), False
    cut = offsets[max_length - 3][1]
    return caption[:cut], [all(end <= cut for _, end in object_spans) for object_spans in spans], True


class GroundingCollator(_ProcessorCollator):
    """MDETR grounding records (caption + ``tokens_positive`` spans) -> grounding inputs.

    The caption is the prompt; each box's positive-map row covers the tokens of its spans. A flip swaps
    "left"/"right" in the caption and moves the spans. A caption longer than ``max_length`` tokens is cut and the
    boxes whose phrases fall past the cut are dropped (``stats["truncated_captions"]``, ``stats["dropped_boxes"]``).
    Output as :class:`DetectionCollator`.
    """

    def example(self, record: Mapping[str, Any]) -> tuple[Image.Image, str, dict[str, Any]]:
        """One record -> (augmented image, caption, grounding target in that image's pixels)."""
        objects = record["objects"]
        pairs = [(box, spans) for box, spans in zip(objects["bbox"], objects["tokens_positive"]) if spans]
        self.stats["boxes_without_phrase"] += len(objects["bbox"]) - len(pairs)
        boxes = xywh_to_xyxy([box for box, _ in pairs])
        image, boxes, caption, spans = self.augment(
            load_rgb(record["image"]), boxes, record["caption"], [spans for _, spans in pairs], self.record_rng(record)
        )
        caption, keep, truncated = fit_caption(self.tokenizer, caption, spans, self.max_length)
        if truncated:
            self.stats["truncated_captions"] += 1
            self.stats["dropped_boxes"] += keep.count(False)
            logger.warning("image id=%s: caption cut to %d tokens", record.get("image_id"), self.max_length)
        boxes = [box for box, kept in zip(boxes, keep) if kept]
        spans = [object_spans for object_spans, kept in zip(spans, keep) if kept]
        return image, caption, {"boxes": boxes, "spans": spans}

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate grounding records (see the class docstring for the output)."""
        images, captions, targets = zip(*(self.example(record) for record in records))
        batch = self.processor(
            images=list(images),
            text=list(captions),
            grounding_targets=list(targets),
            max_length=self.max_length,
            return_tensors="pt",
            **self.image_kwargs(),
        )
        return dict(batch)


class VqaCollator(_ProcessorCollator):
    """VQAv2 records -> ``pixel_values``, ``pixel_mask``, ``input_ids`` / ``attention_mask`` (the question) and
    ``labels`` ``(B, len(answer_vocab))`` float soft scores (VQAv2 BCE targets).

    The score of an answer is the record's ``answer_scores`` value (official 10-choose-9 VQA accuracy). Answers
    outside ``answer_vocab`` have no target column: they are counted in ``stats["out_of_vocabulary"]`` (one per
    distinct answer of a question) and questions left with no target at all in
    ``stats["questions_without_target"]``. Training augmentation is the multi-scale resize only: a flip would
    change the answer to "what is on the left?".
    """

    def __init__(self, processor: Any, answer_vocab: Sequence[str], **kwargs: Any) -> None:
        kwargs["flip_prob"] = 0.0
        super().__init__(processor, **kwargs)
        self.answer_vocab = list(answer_vocab)
        self.answer_index = {answer: index for index, answer in enumerate(self.answer_vocab)}

    def soft_scores(self, record: Mapping[str, Any]) -> torch.Tensor:
        """``(len(answer_vocab),)`` soft-score target of one record."""
        target = torch.zeros(len(self.answer_vocab), dtype=torch.float32)
        scores = record.get("answer_scores") or {"answer": [], "score": []}
        for answer, score in zip(scores["answer"], scores["score"]):
            if answer in self.answer_index:
                target[self.answer_index[answer]] = float(score)
            elif score > 0:
                self.stats["out_of_vocabulary"] += 1
        if scores["answer"] and not target.any():
            self.stats["questions_without_target"] += 1
        return target

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate VQA records (see the class docstring for the output)."""
        images = [self.augment(load_rgb(record["image"]), rng=self.record_rng(record))[0] for record in records]
        batch = {**self.pixels(images), **self.tokenize([record["question"] for record in records])}
        batch["labels"] = torch.stack([self.soft_scores(record) for record in records])
        return batch


class CaptionCollator(_ProcessorCollator):
    """Caption records -> ``pixel_values``, ``pixel_mask``, ``input_ids`` ([CLS] caption [SEP], padded),
    ``attention_mask`` and ``labels`` (``input_ids`` with ``-100`` exactly on padding).

    One caption per image: a random choice in train mode, the first one in eval mode. A flip swaps "left"/"right"
    in the chosen caption.
    """

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate caption records (see the class docstring for the output)."""
        images, captions = [], []
        for record in records:
            if not record["captions"]:
                raise ValueError(f"image id={record.get('image_id')} has no caption")
            rng = self.record_rng(record)
            caption = rng.choice(record["captions"]) if self.train else record["captions"][0]
            image, _, caption, _ = self.augment(load_rgb(record["image"]), (), caption, (), rng)
            images.append(image)
            captions.append(caption)
        batch = {**self.pixels(images), **self.tokenize(captions)}
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch


class ImageTextCollator(_ProcessorCollator):
    """Image-text pairs -> ``pixel_values``, ``pixel_mask``, ``input_ids``, ``attention_mask`` for contrastive
    training (no labels: the pairs on the diagonal are the positives). A flip swaps "left"/"right" in the text."""

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate image-text pairs (see the class docstring for the output)."""
        images, texts = [], []
        for record in records:
            rng = self.record_rng(record)
            image, _, text, _ = self.augment(load_rgb(record["image"]), (), record["text"], (), rng)
            images.append(image)
            texts.append(text)
        return {**self.pixels(images), **self.tokenize(texts)}


__all__ = [
    "CaptionCollator",
    "DetectionCollator",
    "GroundingCollator",
    "ImageTextCollator",
    "VqaCollator",
    "fit_caption",
    "load_rgb",
    "xywh_to_xyxy",
]
