"""Official VQA accuracy (VQAv2 evaluation) as an ``evaluate`` metric."""

from __future__ import annotations

import datasets
import evaluate

from .vqa_normalization import official_vqa_accuracy

_DESCRIPTION = """VQA accuracy exactly as the official VQAv2 evaluation (vqaEval.py): for each question,
acc = mean over the 10 choose-9 subsets of annotators of min(#subset answers equal to the prediction / 3, 1),
after the official answer normalisation (punctuation, number words -> digits, articles, contractions)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted answer strings, one per question.
    references: per question, the list of the annotators' answer strings (10 in VQAv2).
    answer_types: optional per-question answer types ("yes/no", "number", "other") for per-type accuracy.
Returns:
    {"accuracy": float} (a fraction in [0, 1]; the server reports 100x this), plus "accuracy_<type>" per
    answer type when answer_types is given.
"""


class VqaAccuracy(evaluate.Metric):
    """Official VQAv2 accuracy (10-choose-9 averaged min(#matches/3, 1))."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Goyal et al., Making the V in VQA Matter, CVPR 2017.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            reference_urls=["https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools"],
        )

    def _compute(
        self, predictions: list[str], references: list[list[str]], answer_types: list[str] | None = None
    ) -> dict[str, float]:
        scores = [official_vqa_accuracy(pred, answers) for pred, answers in zip(predictions, references)]
        result = {"accuracy": sum(scores) / max(len(scores), 1)}
        if answer_types is not None:
            for answer_type in sorted(set(answer_types)):
                typed = [score for score, kind in zip(scores, answer_types) if kind == answer_type]
                result[f"accuracy_{answer_type}"] = sum(typed) / len(typed)
        return result
