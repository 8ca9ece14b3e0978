"""Phrase grounding data: MDETR-style JSON (Flickr30k Entities, GoldG, RefCOCO)."""

from tasks.grounding.mdetr import GROUNDING_FEATURES, MISSING_ID, load_mdetr_grounding

__all__ = ["GROUNDING_FEATURES", "MISSING_ID", "load_mdetr_grounding"]
