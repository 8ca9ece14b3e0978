"""Object detection data: COCO instances JSON (also ODinW and LVIS)."""

from tasks.detection.coco import DETECTION_FEATURES, load_coco_detection

__all__ = ["DETECTION_FEATURES", "load_coco_detection"]
