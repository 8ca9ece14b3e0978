"""Zero-shot classification and contrastive data: generic image-text pairs."""

from tasks.classification.image_text import PAIR_FEATURES, load_image_text_pairs

__all__ = ["PAIR_FEATURES", "load_image_text_pairs"]
