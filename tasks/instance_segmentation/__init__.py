"""The instance segmentation task (COCO-Mask, LVIS masks): detection with a mask per box; its spec in `task.py`."""
