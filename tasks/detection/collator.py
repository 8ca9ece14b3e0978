"""Detection collators: COCO records -> grounding inputs (detection as grounding, the official `od_to_grounding`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from tasks.collate import ProcessorCollator, load_rgb, object_masks, xywh_to_xyxy
from tasks.transforms import clean_category_name, od_to_grounding

# Official od_to_grounding for detection data (DATASETS.RANDOM_SAMPLE_NEG): up to 85 absent classes per prompt.
NUM_NEGATIVES = 85


class DetectionCollator(ProcessorCollator):
    """COCO detection records -> grounding inputs (detection as grounding, the official ``od_to_grounding``).

    Per image, the classes present (crowd boxes skipped, as the official training) plus up to ``num_negatives``
    sampled absent classes are shuffled and ". "-joined into a prompt; token counts use the real tokenizer and the
    budget is ``max_length`` minus [CLS]/[SEP]; boxes of positive classes that overflow are dropped (counted in
    ``stats["dropped_boxes"]``).

    Returns ``pixel_values``, ``pixel_mask``, ``input_ids``, ``attention_mask`` (and ``token_type_ids``) and
    ``labels``: per image ``{"boxes": (N, 4) normalised cxcywh, "positive_map": (N, T) 0/1, "class_labels": (N,)}``
    (the category ids: a category's boxes in different images are positives of GLIPv2's inter-image region-word
    loss), with ``with_masks`` also ``"masks"`` ``(N, h, w)`` (the objects' masks, augmented with the image; an image
    with an object without a mask trains its boxes only, ``stats["images_without_masks"]``).
    """

    def __init__(
        self,
        processor: Any,
        categories: Sequence[Mapping[str, Any]] | Mapping[int, str],
        num_negatives: int = NUM_NEGATIVES,
        with_masks: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(processor, **kwargs)
        self.with_masks = with_masks
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
        kept = [index for index, keep in zip(kept, prompt.keep) if keep]
        spans = [spans for spans, keep in zip(prompt.tokens_positive, prompt.keep) if keep]
        # No caption is given to the flip: class names are not a sentence, "left"/"right" in a name stays.
        return self.augmented(record, kept, prompt.caption, spans, rng)

    def augmented(
        self, record: Mapping[str, Any], kept: list[int], prompt: str, spans: list, rng: Any
    ) -> tuple[Image.Image, str, dict[str, Any]]:
        """The augmented image and the target of objects `kept` (their masks too, with `with_masks`)."""
        boxes = xywh_to_xyxy([record["objects"]["bbox"][index] for index in kept])
        masks = None
        if self.with_masks:
            rles = [record["objects"]["mask"][index] for index in kept]
            masks = object_masks(rles, int(record["height"]), int(record["width"]))
            self.stats["images_without_masks"] += masks is None
        image, boxes, masks, _, _ = self.augment_with_masks(load_rgb(record["image"]), boxes, masks, None, (), rng)
        category_ids = [int(record["objects"]["category_id"][index]) for index in kept]
        target = {"boxes": boxes, "spans": spans, "class_labels": category_ids}
        if masks is not None:
            target["masks"] = masks
        return image, prompt, target

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate detection records (see the class docstring for the output)."""
        return self.grounding_batch([self.example(record) for record in records])


class FixedPromptDetectionCollator(DetectionCollator):
    """Detection training with the evaluation prompt: every image gets all categories, in dataset order, joined as
    `detect_labels` joins them (GLIP's `DATASETS.DISABLE_SHUFFLE` for fine-tuning). A per-position prompt table then
    sees each class at the same token positions in training and evaluation. When the categories need several
    256-token chunks, images fall back to the sampled, shuffled prompts of [`DetectionCollator`] (never truncated).
    """

    def __init__(self, processor: Any, categories: Any, **kwargs: Any) -> None:
        super().__init__(processor, categories, **kwargs)
        names = [clean_category_name(name) for name in self.categories.values()]
        prompts = processor.build_prompts(names, max_length=self.max_length)
        self.prompt = prompts[0] if len(prompts) == 1 else None
        self.spans = dict(zip(self.categories, self.prompt.label_spans)) if self.prompt else {}

    def example(self, record: Any) -> tuple[Image.Image, str, dict[str, Any]]:
        """One record -> (augmented image, the fixed prompt, grounding target in that image's pixels)."""
        if self.prompt is None:
            return super().example(record)
        objects = record["objects"]
        crowd = objects.get("iscrowd") or [0] * len(objects["bbox"])
        kept = [index for index, is_crowd in enumerate(crowd) if not is_crowd]
        self.stats["crowd_boxes"] += len(crowd) - len(kept)
        spans = [[list(self.spans[int(objects["category_id"][index])])] for index in kept]
        return self.augmented(record, kept, self.prompt.text, spans, self.record_rng(record))


__all__ = ["NUM_NEGATIVES", "DetectionCollator", "FixedPromptDetectionCollator"]
