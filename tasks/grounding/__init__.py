"""The phrase-grounding task: MDETR-style JSON (Flickr30k Entities, GoldG, RefCOCO), its collator, its spec."""

from tasks.grounding.collator import GroundingCollator
from tasks.grounding.mdetr import GROUNDING_FEATURES, MISSING_ID, load_mdetr_grounding

__all__ = ["GROUNDING_FEATURES", "MISSING_ID", "GroundingCollator", "load_mdetr_grounding"]
