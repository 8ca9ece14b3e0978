"""VQA collator: VQAv2 records -> images, questions and soft-score targets over an answer vocabulary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tasks.collate import ProcessorCollator, load_rgb


class VqaCollator(ProcessorCollator):
    """VQAv2 records -> ``pixel_values``, ``pixel_mask``, ``input_ids`` / ``attention_mask`` (the question) and
    ``labels`` ``(B, len(answer_vocab))`` float soft scores (VQAv2 BCE targets).

    The score of an answer is the record's ``answer_scores`` value (official 10-choose-9 VQA accuracy). Answers
    outside ``answer_vocab`` have no target column: they are counted in ``stats["out_of_vocabulary"]`` (one per
    distinct answer of a question) and questions left with no target at all in
    ``stats["questions_without_target"]``. Training augmentation is the multi-scale resize only: a flip would
    change the answer to "what is on the left?".
    """

    def __init__(self, processor: Any, answer_vocab: Sequence[str], **kwargs: Any) -> None:
        kwargs["flip_prob"] = 0.0
        super().__init__(processor, **kwargs)
        self.answer_vocab = list(answer_vocab)
        self.answer_index = {answer: index for index, answer in enumerate(self.answer_vocab)}

    def soft_scores(self, record: Mapping[str, Any]) -> torch.Tensor:
        """``(len(answer_vocab),)`` soft-score target of one record."""
        target = torch.zeros(len(self.answer_vocab), dtype=torch.float32)
        scores = record.get("answer_scores") or {"answer": [], "score": []}
        for answer, score in zip(scores["answer"], scores["score"]):
            if answer in self.answer_index:
                target[self.answer_index[answer]] = float(score)
            elif score > 0:
                self.stats["out_of_vocabulary"] += 1
        if scores["answer"] and not target.any():
            self.stats["questions_without_target"] += 1
        return target

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate VQA records (see the class docstring for the output)."""
        images = [self.augment(load_rgb(record["image"]), rng=self.record_rng(record))[0] for record in records]
        batch = {**self.pixels(images), **self.tokenize([record["question"] for record in records])}
        batch["labels"] = torch.stack([self.soft_scores(record) for record in records])
        return batch


__all__ = ["VqaCollator"]
