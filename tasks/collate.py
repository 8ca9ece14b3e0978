"""The shared base of the task collators: records -> model inputs through a `Glipv2Processor`, with GLIP's training
augmentation. Each task's collator (in its package) subclasses [`ProcessorCollator`].

With `train=True` images get GLIP's training augmentation (`MultiScaleResize`, then a horizontal flip with
probability `flip_prob` that also swaps "left"/"right" in captions and moves their spans) and the processor does not
resize again; with `train=False` the processor's own resize is used and nothing is random. All randomness comes from
`random.Random(seed)`; in eval mode the few random choices that remain (detection negatives) use a generator seeded
by `(seed, image_id)`, so a batch's content does not depend on batch order or sharding.

Padding never leaks: padded pixels are 0 in `pixel_mask` and padded tokens 0 in `attention_mask` (and `-100` in
caption `labels`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy
import torch
from PIL import Image, ImageOps

from glipv2.box_ops import xywh_to_xyxy as _xywh_to_xyxy
from glipv2.processing_glipv2 import MAX_TEXT_LENGTH
from glipv2.processing_glipv2 import resize_masks as glipv2_resize_masks
from tasks.transforms import MultiScaleResize, horizontal_flip

# Official GLIP training: INPUT.MIN_SIZE_TRAIN = (480, 512, ..., 800), INPUT.MAX_SIZE_TRAIN = 1333, flip 0.5.
TRAIN_MIN_SIZES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
TRAIN_MAX_SIZE = 1333
FLIP_PROB = 0.5

Boxes = list[list[float]]


def xywh_to_xyxy(boxes: Sequence[Sequence[float]]) -> Boxes:
    """COCO `[x, y, w, h]` boxes -> `[x0, y0, x1, y1]` lists (continuous pixel coordinates; `glipv2.box_ops`)."""
    return _xywh_to_xyxy(boxes).tolist() if len(boxes) else []


def load_rgb(image: Image.Image) -> Image.Image:
    """The record's image upright (EXIF orientation applied) and in RGB, so boxes and pixels share one frame."""
    return ImageOps.exif_transpose(image).convert("RGB")


class ProcessorCollator:
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
        image, boxes, _, caption, spans = self.augment_with_masks(image, boxes, None, caption, spans, rng)
        return image, boxes, caption, spans

    def augment_with_masks(
        self,
        image: Image.Image,
        boxes: Boxes,
        masks: numpy.ndarray | None,
        caption: str | None = None,
        spans: Sequence[Sequence[Sequence[int]]] = (),
        rng: random.Random | None = None,
    ) -> tuple[Image.Image, Boxes, numpy.ndarray | None, str | None, list]:
        """[`augment`] with the boxes' masks `(N, H, W)` (0/1 at the image's size; None: no masks) resized and
        flipped with the image (the same random draws: one scale, one flip)."""
        boxes = [list(box) for box in boxes]
        spans = [[list(span) for span in object_spans] for object_spans in spans]
        if not self.train:
            return image, boxes, masks, caption, spans
        rng = rng or self.rng
        image, boxes = self.resize(image, boxes, rng)
        if masks is not None and masks.shape[1:] != (image.height, image.width):
            masks = resize_masks(masks, (image.height, image.width))
        if rng.random() < self.flip_prob:
            image, boxes, caption, spans = horizontal_flip(image, boxes, caption, spans)
            masks = None if masks is None else numpy.ascontiguousarray(masks[:, :, ::-1])
        return image, boxes, masks, caption, spans

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

    def grounding_batch(self, examples: Sequence[tuple[Image.Image, str, dict[str, Any]]]) -> dict[str, Any]:
        """`(image, prompt, {"boxes": xyxy, "spans"})` examples -> the processor's grounding inputs with `labels`:
        per image `{"boxes": (N, 4) normalised cxcywh, "positive_map": (N, T)}`."""
        images, prompts, targets = zip(*examples)
        batch = self.processor(
            images=list(images),
            text=list(prompts),
            grounding_targets=list(targets),
            max_length=self.max_length,
            return_tensors="pt",
            **self.image_kwargs(),
        )
        return dict(batch)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids with [CLS] ... [SEP], padded to the longest text, truncated at ``max_length`` positions."""
        encoded = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def resize_masks(masks: numpy.ndarray, size: tuple[int, int]) -> numpy.ndarray:
    """`(N, H, W)` 0/1 masks resized to `size` `(height, width)` as the processor resizes them
    (`glipv2.processing_glipv2.resize_masks`), as uint8."""
    return glipv2_resize_masks(masks, size).numpy().astype(numpy.uint8)


def object_masks(rles: Sequence[Mapping[str, Any]], height: int, width: int) -> numpy.ndarray | None:
    """The `(N, height, width)` 0/1 masks of the objects' RLEs ([`tasks.masks`]); None when any object has no
    segmentation (its image then trains boxes only) or a mask of another size."""
    from tasks.masks import decode_rle, is_empty_mask

    if any(is_empty_mask(rle) or list(rle["size"]) != [height, width] for rle in rles):
        return None
    if not rles:
        return numpy.zeros((0, height, width), dtype=numpy.uint8)
    return numpy.stack([decode_rle(rle) for rle in rles])


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


__all__ = [
    "FLIP_PROB",
    "object_masks",
    "resize_masks",
    "TRAIN_MAX_SIZE",
    "TRAIN_MIN_SIZES",
    "ProcessorCollator",
    "fit_caption",
    "load_rgb",
    "xywh_to_xyxy",
]
