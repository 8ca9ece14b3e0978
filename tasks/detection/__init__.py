"""The detection task: COCO instances JSON (also ODinW and LVIS), its collators, and its spec in `task.py`."""

from tasks.detection.coco import DETECTION_FEATURES, load_coco_detection
from tasks.detection.collator import DetectionCollator, FixedPromptDetectionCollator

__all__ = ["DETECTION_FEATURES", "DetectionCollator", "FixedPromptDetectionCollator", "load_coco_detection"]
