"""The phrase-grounding task: MDETR-style JSON (Flickr30k Entities, GoldG, RefCOCO), PhraseCut's official files,
its collator, its spec."""

from tasks.grounding.collator import GroundingCollator
from tasks.grounding.mdetr import GROUNDING_FEATURES, MISSING_ID, load_mdetr_grounding
from tasks.grounding.phrasecut import PHRASECUT_FEATURES, PHRASECUT_SPLITS, load_phrasecut, phrasecut_files

__all__ = [
    "GROUNDING_FEATURES",
    "MISSING_ID",
    "PHRASECUT_FEATURES",
    "PHRASECUT_SPLITS",
    "GroundingCollator",
    "load_mdetr_grounding",
    "load_phrasecut",
    "phrasecut_files",
]
