"""Image-text pairs collator for contrastive training (the pairs on the diagonal are the positives)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.collate import ProcessorCollator, load_rgb


class ImageTextCollator(ProcessorCollator):
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


__all__ = ["ImageTextCollator"]
