"""Official VQA accuracy (VQAv2 evaluation, GT-Vision-Lab/VQA ``vqaEval.py``) as an ``evaluate`` metric."""

from __future__ import annotations

import datasets
import evaluate

from .vqa_normalization import official_vqa_accuracy, official_vqa_report

_DESCRIPTION = """VQA accuracy exactly as the official VQAv2 evaluation (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py, commit a013f0043c1e2cdc995922dfe257f7149aa9af06). References are
the annotators' RAW answers as distributed. Newlines/tabs become spaces and everything is stripped; only when the
answers are not all identical are the answers and the prediction normalised (processPunctuation, then
processDigitArticle: number words -> digits, articles dropped, contractions); then for each annotator left out,
min(1, #other answers equal to the prediction / 3), averaged over the annotators; the overall and per-type numbers
are means over the questions."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted answer strings, one per question.
    references: per question, the annotators' answers exactly as in the annotations file (10 in VQAv2).
    answer_types: optional per-question answer types ("yes/no", "number", "other") for per-type accuracy.
    question_types: optional per-question question types ("how many", "what color is the", ...); with
        answer_types, adds the official report.
Returns:
    "accuracy": the mean over the questions, a FRACTION in [0, 1] (unrounded; the official code reports 100x it);
    "accuracy_<answer type>" per answer type when answer_types is given (fractions);
    "official" when both answer_types and question_types are given: the official VQAEval.accuracy dict
    {"overall", "perAnswerType", "perQuestionType"} in PERCENT rounded to 2 decimals, as vqaEval.py reports them.
"""


class VqaAccuracy(evaluate.Metric):
    """Official VQAv2 accuracy (leave-one-annotator-out min(#matches/3, 1), per question, averaged)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Goyal et al., Making the V in VQA Matter, CVPR 2017.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            reference_urls=[
                "https://github.com/GT-Vision-Lab/VQA/blob/a013f0043c1e2cdc995922dfe257f7149aa9af06/"
                "PythonEvaluationTools/vqaEvaluation/vqaEval.py"
            ],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[list[str]],
        answer_types: list[str] | None = None,
        question_types: list[str] | None = None,
    ) -> dict[str, object]:
        for name, values in (("answer_types", answer_types), ("question_types", question_types)):
            if values is not None and len(values) != len(predictions):
                raise ValueError(f"{name} has {len(values)} entries for {len(predictions)} predictions")
        if question_types is not None and answer_types is None:
            raise ValueError("question_types needs answer_types too (the official report has both)")
        scores = [official_vqa_accuracy(pred, answers) for pred, answers in zip(predictions, references)]
        result: dict[str, object] = {"accuracy": float(sum(scores)) / max(len(scores), 1)}
        if answer_types is not None:
            for answer_type in sorted(set(answer_types)):
                typed = [score for score, kind in zip(scores, answer_types) if kind == answer_type]
                result[f"accuracy_{answer_type}"] = float(sum(typed)) / len(typed)
        if question_types is not None and scores:
            result["official"] = official_vqa_report(scores, answer_types, question_types)
        return result
