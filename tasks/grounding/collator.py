"""Grounding collator: MDETR records (caption + `tokens_positive` spans) -> grounding inputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from tasks.collate import ProcessorCollator, fit_caption, load_rgb, xywh_to_xyxy

logger = logging.getLogger(__name__)


class GroundingCollator(ProcessorCollator):
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
        return self.grounding_batch([self.example(record) for record in records])


__all__ = ["GroundingCollator"]
