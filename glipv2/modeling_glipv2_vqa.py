"""Visual question answering on the shared GLIPv2 backbone: answer-vocabulary classification of the fused features
(GLIPv2, arXiv 2206.05836, §3.3), trained with the VQAv2 soft-score loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import ModelOutput

from .configuration_glipv2 import Glipv2Config
from .heads import build_head
from .loss import vqa_soft_score_loss
from .modeling_glipv2 import Glipv2Model, Glipv2PreTrainedModel, return_output


@dataclass
class Glipv2QuestionAnsweringOutput(ModelOutput):
    """Output of [`Glipv2ForQuestionAnswering`].

    Args:
        loss (`torch.FloatTensor`, *optional*): VQAv2 soft-score BCE ([`vqa_soft_score_loss`]), with `labels`.
        logits (`torch.FloatTensor` of shape `(B, num_answers)`): answer logits (sigmoid gives the answer scores).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


def vqa_targets(label_ids: list[list[int]], label_scores: list[list[float]], num_answers: int) -> torch.Tensor:
    """Dense `(B, num_answers)` soft-score targets from the loader's per-question `label_ids` / `label_scores`."""
    targets = torch.zeros(len(label_ids), num_answers)
    for row, (ids, scores) in enumerate(zip(label_ids, label_scores)):
        for index, score in zip(ids, scores):
            if not 0 <= index < num_answers:
                raise ValueError(f"Answer id {index} of question {row} is outside the vocabulary of {num_answers}.")
            targets[row, index] = score
    return targets


class Glipv2ForQuestionAnswering(Glipv2PreTrainedModel):
    """VQA as answer-vocabulary classification on the fused features (answers in `config.id2label`).

    `labels`: `(B, num_answers)` float soft scores (VQAv2: each answer's official accuracy, [`vqa_targets`]).
    """

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.model = Glipv2Model(config)
        self.vqa_head = build_head("vqa_head", config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Glipv2QuestionAnsweringOutput | tuple:
        """
        Args:
            pixel_values `(B, 3, H, W)`, pixel_mask `(B, H, W)`, input_ids / attention_mask `(B, T)` (the question).
            labels: `(B, num_answers)` soft scores.
        """
        outputs = self.model(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_mask=pixel_mask,
        )
        logits = self.vqa_head(outputs.vision_features, outputs.text_features, outputs.text_attention_mask, pixel_mask)
        loss = vqa_soft_score_loss(logits, labels) if labels is not None else None
        return return_output(Glipv2QuestionAnsweringOutput(loss=loss, logits=logits), return_dict)


__all__ = ["Glipv2ForQuestionAnswering", "Glipv2QuestionAnsweringOutput", "vqa_targets"]
