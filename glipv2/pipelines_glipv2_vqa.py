"""`visual-question-answering` pipeline for [`Glipv2ForQuestionAnswering`] (transformers 5 removed its own).

`pipeline("visual-question-answering", model=...)(image, question, top_k=5)` returns `[{"answer", "score"}, ...]`
by decreasing score; a score is the sigmoid of the answer logit (the model is trained with per-answer BCE).
`pipe.save_pretrained(folder)` records the pipeline in the folder's `config.custom_pipelines`, so
`pipeline("visual-question-answering", model=folder, trust_remote_code=True)` works where glipv2 is not installed.
"""

from __future__ import annotations

import os
from typing import Any

from .image_processing_glipv2 import open_image
from .pipelines_glipv2 import Glipv2Pipeline
from .processing_glipv2 import MAX_TEXT_LENGTH


def check_question(question: Any, tokenizer: Any, max_length: int = MAX_TEXT_LENGTH) -> str:
    """Validates a question: a non-empty string of at most `max_length` tokens (special tokens included)."""
    if not isinstance(question, str):
        raise TypeError(f"The question must be a string, got {type(question).__name__}.")
    if not question.strip():
        raise ValueError("The question is empty: ask something about the image.")
    length = len(tokenizer(question)["input_ids"])
    if length > max_length:
        raise ValueError(
            f"The question is {length} tokens long (special tokens included), more than the {max_length} the "
            "text encoder takes; shorten it."
        )
    return question


class Glipv2VisualQuestionAnsweringPipeline(Glipv2Pipeline):
    """`pipeline("visual-question-answering", model=...)(image, question, top_k=5)` -> `[{"answer", "score"}]`.

    Also accepts `{"image": ..., "question": ...}` dicts (or a list of them) as the first argument.
    """

    def __call__(self, image: Any, question: str | None = None, **kwargs: Any) -> Any:
        if isinstance(image, dict) or (isinstance(image, list) and image and isinstance(image[0], dict)):
            return super().__call__(image, **kwargs)
        return super().__call__({"image": image, "question": question}, **kwargs)

    def _sanitize_parameters(self, top_k: int | None = None, **kwargs: Any) -> tuple[dict, dict, dict]:
        postprocess = {"top_k": top_k} if top_k is not None else {}
        return {}, {}, postprocess

    def preprocess(self, inputs: dict[str, Any]) -> dict[str, Any]:
        limit = getattr(self.model.config, "max_text_length", MAX_TEXT_LENGTH)
        question = check_question(inputs.get("question"), self.tokenizer, limit)
        image = inputs["image"]
        image = open_image(image) if isinstance(image, (str, os.PathLike)) else image
        encoding = self.processor(images=image, text=question, return_tensors="pt", max_length=limit)
        return dict(encoding)

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = 5) -> list[dict[str, Any]]:
        scores = model_outputs["logits"][0].float().sigmoid()
        top_k = max(1, min(top_k, scores.numel()))
        values, indices = scores.topk(top_k)
        id2label = self.model.config.id2label
        return [{"answer": id2label[i], "score": round(float(s), 4)} for s, i in zip(values, indices.tolist())]


__all__ = ["Glipv2VisualQuestionAnsweringPipeline", "check_question"]
