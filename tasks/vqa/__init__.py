"""The VQA task: VQAv2 questions + annotations JSON, soft scores, answer vocabulary, its collator and its spec."""

from tasks.vqa.collator import VqaCollator
from tasks.vqa.vqav2 import (
    VQA_FEATURES,
    answer_soft_scores,
    build_answer_vocab,
    load_answer_vocab,
    load_vqa,
    save_answer_vocab,
)

__all__ = [
    "VQA_FEATURES",
    "VqaCollator",
    "answer_soft_scores",
    "build_answer_vocab",
    "load_answer_vocab",
    "load_vqa",
    "save_answer_vocab",
]
