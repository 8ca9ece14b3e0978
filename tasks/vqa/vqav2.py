"""VQAv2 questions + annotations JSON loaded into a ``datasets`` dataset, with soft answer scores.

Soft scores: the target score of an answer is its official VQA accuracy, i.e. the mean over the 10 choose-9
annotator subsets of ``min(1, #matches / 3)`` computed on normalised answers (as MMF's ``VQAAnswerProcessor.
compute_answers_scores`` does). We do not use bottom-up-attention's ``min(1, 0.3 * count)`` approximation, so a
model trained on these targets optimises the metric reported by ``tasks/metrics/vqa_accuracy``.

Evaluation does not use these normalised answers: each record also keeps ``raw_answers``, the annotators' answers
exactly as in the annotations file, and the metric normalises them as the official ``vqaEval.py`` does (only for
questions whose annotators disagree, together with the prediction).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import datasets

from tasks.common import (
    RecordChecker,
    SkipReport,
    collect_valid,
    finish_dataset,
    image_feature_value,
    read_json,
    write_json,
)
from tasks.metrics.vqa_accuracy.vqa_normalization import leave_one_out_accuracy, normalize_answer

VQA_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_id": datasets.Value("int64"),
        "question_id": datasets.Value("int64"),
        "question": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "answer_type": datasets.Value("string"),
        "multiple_choice_answer": datasets.Value("string"),
        "answers": datasets.List(datasets.Value("string")),
        "raw_answers": datasets.List(datasets.Value("string")),
        "answer_scores": {
            "answer": datasets.List(datasets.Value("string")),
            "score": datasets.List(datasets.Value("float64")),
        },
        "label_ids": datasets.List(datasets.Value("int64")),
        "label_scores": datasets.List(datasets.Value("float64")),
    }
)
COCO_IMAGE_NAME_FORMAT = "COCO_{data_subtype}_{image_id:012d}.jpg"


def answer_soft_scores(answers: list[str]) -> dict[str, float]:
    """Score of each distinct (already normalised) answer: its 10-choose-9 averaged ``min(1, #matches / 3)``."""
    return {answer: leave_one_out_accuracy(answer, answers) for answer in sorted(set(answers))}


def _parse_annotation(entry: Any, checker: RecordChecker, official_eval: bool = False) -> dict[str, Any]:
    question_id = checker.get(entry, "question_id", int, "annotation with no question_id")
    record = f"question id={question_id}"
    answer_entries = checker.get(entry, "answers", list, record)
    if not answer_entries:
        raise checker.fail(record, "answers", "empty answer list")
    if official_eval:  # scored as the official code does, whatever the text: any string is an answer
        raw_answers = [checker.get(answer, "answer", str, record) for answer in answer_entries]
    else:
        raw_answers = [checker.text(answer, "answer", record) for answer in answer_entries]
    answers = [normalize_answer(answer) for answer in raw_answers]
    if not official_eval and not all(answers):
        raise checker.fail(record, "answers", "an answer is empty after normalisation")
    types = {}
    for key in ("question_type", "answer_type"):
        if official_eval or key in entry:  # the official report groups by both; elsewhere they are optional
            types[key] = checker.get(entry, key, str, record)
    return {
        "question_id": question_id,
        "answers": answers,
        "raw_answers": raw_answers,
        "multiple_choice_answer": normalize_answer(
            checker.get(entry, "multiple_choice_answer", str, record)
            if official_eval
            else checker.text(entry, "multiple_choice_answer", record)
        ),
        "question_type": types.get("question_type", ""),
        "answer_type": types.get("answer_type", ""),
    }


EMPTY_ANNOTATION = {
    "answers": [],
    "raw_answers": [],
    "multiple_choice_answer": "",
    "question_type": "",
    "answer_type": "",
}


def _answer_fields(annotation: dict[str, Any], vocab_index: dict[str, int]) -> dict[str, Any]:
    """The answer columns of a record: annotation fields, soft scores, and vocabulary labels."""
    scores = answer_soft_scores(annotation["answers"])
    labels = {vocab_index[answer]: score for answer, score in scores.items() if answer in vocab_index}
    return {
        "question_type": annotation["question_type"],
        "answer_type": annotation["answer_type"],
        "multiple_choice_answer": annotation["multiple_choice_answer"],
        "answers": annotation["answers"],
        "raw_answers": annotation["raw_answers"],
        "answer_scores": {"answer": list(scores), "score": list(scores.values())},
        "label_ids": list(labels),
        "label_scores": list(labels.values()),
    }


def _read_annotations(
    annotations_file: str | os.PathLike, skip_invalid: bool, report: SkipReport, official_eval: bool = False
) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """Valid annotations by question id, and the ids of the skipped ones (already counted in ``report``)."""
    checker = RecordChecker(annotations_file)
    entries = checker.get(read_json(annotations_file), "annotations", list, "<root>")
    seen: set[int] = set()

    def parse(entry: Any) -> dict[str, Any]:
        parsed = _parse_annotation(entry, checker, official_eval)
        checker.unique(seen, parsed["question_id"], f"question id={parsed['question_id']}", "question_id")
        return parsed

    valid = {item["question_id"]: item for item in collect_valid(entries, parse, skip_invalid, report)}
    declared = {entry.get("question_id") for entry in entries if isinstance(entry, dict)}
    return valid, {question_id for question_id in declared if isinstance(question_id, int)} - set(valid)


def load_vqa(
    questions_file: str | os.PathLike,
    annotations_file: str | os.PathLike | None,
    image_dir: str | os.PathLike,
    answer_vocab: list[str] | None = None,
    image_name_format: str = COCO_IMAGE_NAME_FORMAT,
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
    official_eval: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load VQAv2 as one record per question.

    Args:
        questions_file: ``v2_OpenEnded_mscoco_<subtype>_questions.json``.
        annotations_file: ``v2_mscoco_<subtype>_annotations.json``, or None for the unannotated test split.
        image_dir: folder of the images.
        answer_vocab: answer list (see :func:`build_answer_vocab`); fills ``label_ids``/``label_scores``.
        image_name_format: file name of an image, formatted with ``image_id`` and the questions file's
            ``data_subtype``; the default is COCO's ``COCO_val2014_000000397133.jpg`` pattern.
        streaming, skip_invalid, verify_images, report: as in :func:`tasks.detection.load_coco_detection`.
        official_eval: the records are scored under the official protocol, not trained on: every annotation must
            have string ``answer_type`` and ``question_type`` (the official report groups by them), and any string
            is an annotator answer (one that normalises to nothing, e.g. "the" or "?", is kept, its normalised
            answer ""), where training data rejects such an answer.

    Returns:
        Records: ``image``, ``image_id``, ``question_id``, ``question``, ``question_type``, ``answer_type``,
        ``multiple_choice_answer``, ``answers`` (the annotators' answers, normalised: the training answers),
        ``raw_answers`` (the annotators' answers exactly as in the file: the references of the official scoring),
        ``answer_scores``
        (``{answer, score}`` per distinct answer, see the module docstring), ``label_ids``/``label_scores``
        (vocabulary indices and scores of the answers in ``answer_vocab``; empty without one).
    """
    report = SkipReport() if report is None else report
    checker = RecordChecker(questions_file)
    data = read_json(questions_file)
    entries = checker.get(data, "questions", list, "<root>")
    data_subtype = data.get("data_subtype", "")
    annotations, rejected = None, set()
    if annotations_file is not None:
        annotations, rejected = _read_annotations(annotations_file, skip_invalid, report, official_eval)
    vocab_index = {answer: index for index, answer in enumerate(answer_vocab or [])}
    seen: set[int] = set()

    def parse(entry: Any) -> dict[str, Any] | None:
        question_id = checker.get(entry, "question_id", int, "question with no question_id")
        record = f"question id={question_id}"
        checker.unique(seen, question_id, record, "question_id")
        if question_id in rejected:
            return None  # its annotation was skipped (and counted) already
        image_id = checker.get(entry, "image_id", int, record)
        question = checker.text(entry, "question", record)
        file_name = image_name_format.format(image_id=image_id, data_subtype=data_subtype)
        path = checker.image_file(
            image_dir, file_name, f"{record} (image id={image_id})", verify_images and not streaming
        )
        annotation = EMPTY_ANNOTATION
        if annotations is not None:
            if question_id not in annotations:
                raise checker.fail(record, "question_id", f"no annotation in {annotations_file}")
            annotation = annotations[question_id]
        fields = {"image": image_feature_value(path), "image_id": image_id, "question_id": question_id}
        return {**fields, "question": question, **_answer_fields(annotation, vocab_index)}

    records = [record for record in collect_valid(entries, parse, skip_invalid, report) if record is not None]
    for question_id in sorted(set(annotations or {}) - seen):
        error = RecordChecker(annotations_file).fail(
            f"question id={question_id}", "question_id", f"unknown question id (not in {questions_file})"
        )
        if not skip_invalid:
            raise error
        report.add(error)
    return finish_dataset(records, VQA_FEATURES, questions_file, streaming, verify_images, skip_invalid, report)


def build_answer_vocab(dataset: datasets.Dataset | datasets.IterableDataset, min_count: int = 1) -> list[str]:
    """Answer vocabulary from the (normalised) annotator answers of a training dataset from :func:`load_vqa`.

    Keeps answers given at least ``min_count`` times, most frequent first (ties alphabetical), so the order is
    deterministic.
    """
    counts: Counter = Counter()
    for answers in dataset.select_columns(["answers"]):
        counts.update(answers["answers"])
    kept = [answer for answer, count in counts.items() if count >= min_count]
    return sorted(kept, key=lambda answer: (-counts[answer], answer))


def save_answer_vocab(vocab: list[str], path: str | os.PathLike) -> None:
    """Write the vocabulary as a JSON list."""
    write_json(path, list(vocab))


def load_answer_vocab(path: str | os.PathLike) -> list[str]:
    """Read a vocabulary written by :func:`save_answer_vocab` (a JSON list of distinct strings)."""
    vocab = read_json(path, expected=list)
    if not all(isinstance(answer, str) for answer in vocab) or len(set(vocab)) != len(vocab):
        raise RecordChecker(path).fail("<root>", "<root>", "expected a list of distinct strings")
    return vocab
