"""Grounding collator: MDETR records (caption + `tokens_positive` spans) -> grounding inputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from tasks.collate import ProcessorCollator, fit_caption, load_rgb, object_masks, xywh_to_xyxy

logger = logging.getLogger(__name__)


class GroundingCollator(ProcessorCollator):
    """MDETR grounding records (caption + ``tokens_positive`` spans) -> grounding inputs.

    The caption is the prompt; each box's positive-map row covers the tokens of its spans. A flip swaps
    "left"/"right" in the caption and moves the spans. A caption longer than ``max_length`` tokens is cut and the
    boxes whose phrases fall past the cut are dropped (``stats["truncated_captions"]``, ``stats["dropped_boxes"]``).
    Output as :class:`DetectionCollator` (``with_masks``: the objects' masks too). ``class_labels`` are given only
    with ``category_labels``, from the records' ``category_id`` (a record without one is an error naming it): a
    category's phrases in other images are then positives of the inter-image region-word loss, as for detection
    data. Without it each box's phrase is its only positive (free-form phrases have no shared label).
    """

    def __init__(self, processor: Any, with_masks: bool = False, category_labels: bool = False, **kwargs: Any) -> None:
        super().__init__(processor, **kwargs)
        self.with_masks = with_masks
        self.category_labels = category_labels

    def example(self, record: Mapping[str, Any]) -> tuple[Image.Image, str, dict[str, Any]]:
        """One record -> (augmented image, caption, grounding target in that image's pixels)."""
        objects = record["objects"]
        kept = [index for index, spans in enumerate(objects["tokens_positive"]) if spans]
        self.stats["boxes_without_phrase"] += len(objects["bbox"]) - len(kept)
        boxes = xywh_to_xyxy([objects["bbox"][index] for index in kept])
        masks = None
        if self.with_masks:
            rles = [objects["mask"][index] for index in kept]
            masks = object_masks(rles, int(record["height"]), int(record["width"]))
            self.stats["images_without_masks"] += masks is None
        spans = [objects["tokens_positive"][index] for index in kept]
        image, boxes, masks, caption, spans = self.augment_with_masks(
            load_rgb(record["image"]), boxes, masks, record["caption"], spans, self.record_rng(record)
        )
        caption, keep, truncated = fit_caption(self.tokenizer, caption, spans, self.max_length)
        if truncated:
            self.stats["truncated_captions"] += 1
            self.stats["dropped_boxes"] += keep.count(False)
            logger.warning("image id=%s: caption cut to %d tokens", record.get("image_id"), self.max_length)
        boxes = [box for box, kept in zip(boxes, keep) if kept]
        spans = [object_spans for object_spans, kept in zip(spans, keep) if kept]
        target = {"boxes": boxes, "spans": spans}
        if masks is not None:
            target["masks"] = masks[[index for index, kept in enumerate(keep) if kept]]
        if self.category_labels:
            categories = [int(objects["category_id"][index]) for index in kept]  # the objects with a phrase
            target["class_labels"] = [category for category, fits in zip(categories, keep) if fits]  # and caption
            if any(category < 0 for category in target["class_labels"]):
                raise ValueError(
                    f"image id={record.get('image_id')}: an object has no 'category_id'; category_labels needs one "
                    "on every object with a phrase."
                )
        return image, caption, target

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate grounding records (see the class docstring for the output)."""
        return self.grounding_batch([self.example(record) for record in records])


__all__ = ["GroundingCollator"]
