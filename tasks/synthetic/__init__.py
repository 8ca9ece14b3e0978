"""Seeded synthetic scenes of coloured shapes written in every data format the task loaders read."""

from tasks.synthetic.generator import SPLITS, SyntheticSplitPaths, generate_synthetic_multitask, split_paths
from tasks.synthetic.scenes import ALL_PAIRS, COLORS, DEFAULT_HELD_OUT_PAIRS, SHAPES

__all__ = [
    "ALL_PAIRS",
    "COLORS",
    "DEFAULT_HELD_OUT_PAIRS",
    "SHAPES",
    "SPLITS",
    "SyntheticSplitPaths",
    "generate_synthetic_multitask",
    "split_paths",
]
