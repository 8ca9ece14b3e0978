"""Contrastive image-text data (zero-shot classification, pseudo-labelling): generic image-text pairs."""

from tasks.classification.collator import ImageTextCollator
from tasks.classification.image_text import PAIR_FEATURES, load_image_text_pairs

__all__ = ["PAIR_FEATURES", "ImageTextCollator", "load_image_text_pairs"]
