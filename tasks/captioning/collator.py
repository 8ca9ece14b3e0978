"""Captioning collator: caption records -> images and caption tokens with next-token labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.collate import ProcessorCollator, load_rgb


class CaptionCollator(ProcessorCollator):
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


__all__ = ["CaptionCollator"]
