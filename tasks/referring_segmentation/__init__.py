"""The referring segmentation task (PhraseCut, RefCOCO masks): an expression -> its mask; its spec in `task.py`."""
