"""Image captioning data: COCO captions JSON and the Karpathy split file."""

from tasks.captioning.coco_captions import CAPTION_FEATURES, load_coco_captions, load_karpathy_split

__all__ = ["CAPTION_FEATURES", "load_coco_captions", "load_karpathy_split"]
