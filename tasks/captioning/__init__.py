"""The captioning task: COCO captions JSON and the Karpathy split file, its collator, its spec in `task.py`."""

from tasks.captioning.coco_captions import CAPTION_FEATURES, load_coco_captions, load_karpathy_split
from tasks.captioning.collator import CaptionCollator

__all__ = ["CAPTION_FEATURES", "CaptionCollator", "load_coco_captions", "load_karpathy_split"]
