"""VQAv2 loader: fields, soft scores, answer vocabulary, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from tasks_test_utils import FIXTURES, Mutation, WriteVariant, delete_key, set_key

from tasks.common import Glipv2DataError, SkipReport
from tasks.vqa import VQA_FEATURES, build_answer_vocab, load_answer_vocab, load_vqa, save_answer_vocab

QUESTIONS = str(FIXTURES / "vqa_questions.json")
ANNOTATIONS = str(FIXTURES / "vqa_annotations.json")


def test_records_and_soft_scores(image_dir: Path) -> None:
    dataset = load_vqa(QUESTIONS, ANNOTATIONS, image_dir)
    assert dataset.features == VQA_FEATURES and len(dataset) == 3
    first = dataset[0]
    assert (first["question_id"], first["image_id"], first["question"]) == (
        397133000,
        397133,
        "How many people are in the image?",
    )
    assert first["image"].size == (640, 427)
    assert (first["question_type"], first["answer_type"], first["multiple_choice_answer"]) == (
        "how many",
        "number",
        "2",
    )
    # "two" is normalised to "2": seven "2", two "3", one "1" (the training answers)
    assert first["answers"] == ["2", "2", "2", "3", "2", "2", "1", "2", "3", "2"]
    # the raw answers, exactly as in the file, are what evaluation scores against
    assert first["raw_answers"] == ["2", "two", "2", "3", "2", "2", "1", "2", "3", "2"]
    # by hand (10-choose-9 mean of min(1, matches / 3)): "2" -> 1; "3" -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6;
    # "1" -> (1 * 0 + 9 * 1/3) / 10 = 0.3
    assert first["answer_scores"]["answer"] == ["1", "2", "3"]
    assert first["answer_scores"]["score"] == pytest.approx([0.3, 1.0, 0.6])
    assert first["label_ids"] == [] and first["label_scores"] == []
    third = dataset[2]
    # "the bananas" and "Bananas!" normalise to "bananas": five of them
    assert dict(zip(third["answer_scores"]["answer"], third["answer_scores"]["score"])) == pytest.approx(
        {"bananas": 1.0, "banana": 0.3, "food": 0.3, "fruit": 0.6}
    )


def test_answer_vocab_round_trip_and_labels(image_dir: Path, tmp_path: Path) -> None:
    dataset = load_vqa(QUESTIONS, ANNOTATIONS, image_dir)
    vocab = build_answer_vocab(dataset)
    assert vocab == ["yes", "2", "bananas", "3", "fruit", "1", "banana", "food", "no"]
    assert build_answer_vocab(dataset, min_count=5) == ["yes", "2", "bananas"]
    save_answer_vocab(vocab, tmp_path / "vocab.json")
    assert load_answer_vocab(tmp_path / "vocab.json") == vocab
    labelled = load_vqa(QUESTIONS, ANNOTATIONS, image_dir, answer_vocab=["yes", "2", "3"], streaming=True)
    first, second, third = list(labelled)
    assert first["label_ids"] == [1, 2] and first["label_scores"] == pytest.approx([1.0, 0.6])
    assert second["label_ids"] == [0] and second["label_scores"] == [1.0]
    assert third["label_ids"] == [] and third["label_scores"] == []
    (tmp_path / "dup.json").write_text('["a", "a"]')
    with pytest.raises(Glipv2DataError, match="distinct strings"):
        load_answer_vocab(tmp_path / "dup.json")


def test_unannotated_test_split(image_dir: Path) -> None:
    dataset = load_vqa(QUESTIONS, None, image_dir)
    assert dataset[0]["answers"] == [] and dataset[0]["answer_scores"] == {"answer": [], "score": []}
    assert dataset[0]["raw_answers"] == [] and dataset[0]["answer_type"] == ""


def test_raw_answers_are_kept_verbatim(image_dir: Path, write_variant: WriteVariant) -> None:
    raw = ["Two\n", " the  2 ", "2.", "TWO", "two", "2", "2", "3", "2", "2"]
    path = write_variant("vqa_annotations.json", set_key(("annotations", 0, "answers"), [{"answer": a} for a in raw]))
    record = load_vqa(QUESTIONS, path, image_dir)[0]
    assert record["raw_answers"] == raw and record["answers"] == ["2"] * 7 + ["3", "2", "2"]
    assert dict(zip(record["answer_scores"]["answer"], record["answer_scores"]["score"])) == pytest.approx(
        {"2": 1.0, "3": 0.3}
    )


def test_official_eval_keeps_answers_that_normalise_to_nothing(image_dir: Path, write_variant: WriteVariant) -> None:
    """Training data rejects an answer like "the" or "?"; the official scoring counts it as any other answer."""
    answers = [{"answer": a} for a in ["the", "?", "yes", "yes", "yes", "yes", "yes", "yes", "yes", " "]]
    path = write_variant("vqa_annotations.json", set_key(("annotations", 1, "answers"), answers))
    with pytest.raises(Glipv2DataError, match="question id=397133001"):
        load_vqa(QUESTIONS, path, image_dir)
    record = load_vqa(QUESTIONS, path, image_dir, official_eval=True)[1]
    assert record["raw_answers"] == [a["answer"] for a in answers]
    assert record["answers"] == ["", ""] + ["yes"] * 7 + [""]


@pytest.mark.parametrize("key", ["answer_type", "question_type"])
def test_answer_and_question_types(image_dir: Path, write_variant: WriteVariant, key: str) -> None:
    missing = write_variant("vqa_annotations.json", delete_key(("annotations", 2, key)))
    assert load_vqa(QUESTIONS, missing, image_dir)[2][key] == ""  # optional for training data
    with pytest.raises(Glipv2DataError, match=rf"question id=37777000: field '{key}': missing key"):
        load_vqa(QUESTIONS, missing, image_dir, official_eval=True)  # the official report groups by it
    wrong = write_variant("vqa_annotations.json", set_key(("annotations", 2, key), 3))
    with pytest.raises(Glipv2DataError, match=rf"question id=37777000: field '{key}': expected str, got int"):
        load_vqa(QUESTIONS, wrong, image_dir)


BAD_ANNOTATIONS = [
    ("empty answer", set_key(("annotations", 1, "answers", 3, "answer"), " "), "answer", "397133001"),
    ("no answers", set_key(("annotations", 1, "answers"), []), "answers", "397133001"),
    ("answer only punctuation", set_key(("annotations", 1, "answers", 3, "answer"), "the"), "answers", "397133001"),
    (
        "missing mc answer",
        delete_key(("annotations", 1, "multiple_choice_answer")),
        "multiple_choice_answer",
        "397133001",
    ),
    (
        "duplicate question",
        lambda data: data["annotations"].append(dict(data["annotations"][0])),
        "question_id",
        "397133000",
    ),
    (
        "unknown question",
        lambda data: data["annotations"].append({**data["annotations"][0], "question_id": 5}),
        "question_id",
        "id=5",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "field", "record"), BAD_ANNOTATIONS, ids=[c[0] for c in BAD_ANNOTATIONS])
def test_bad_annotations(
    image_dir: Path, write_variant: WriteVariant, case: str, mutate: Mutation, field: str, record: str
) -> None:
    path = write_variant("vqa_annotations.json", mutate)
    with pytest.raises(Glipv2DataError) as error:
        load_vqa(QUESTIONS, path, image_dir)
    assert record in str(error.value) and f"field '{field}'" in str(error.value)
    assert error.value.file in (path, QUESTIONS)
    report = SkipReport()
    dataset = load_vqa(QUESTIONS, path, image_dir, skip_invalid=True, report=report)
    assert report.total == 1 and report.counts[field] == 1
    assert len(dataset) == (3 if case in ("unknown question", "duplicate question") else 2)


BAD_QUESTIONS = [
    ("empty question", set_key(("questions", 2, "question"), ""), "question"),
    ("image id as string", set_key(("questions", 2, "image_id"), "37777"), "image_id"),
    ("missing image file", set_key(("questions", 2, "image_id"), 999), "file_name"),
    ("duplicate question id", set_key(("questions", 2, "question_id"), 397133001), "question_id"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_QUESTIONS, ids=[c[0] for c in BAD_QUESTIONS])
def test_bad_questions(image_dir: Path, write_variant: WriteVariant, case: str, mutate: Mutation, field: str) -> None:
    path = write_variant("vqa_questions.json", mutate)
    with pytest.raises(Glipv2DataError, match=rf"question id=\d+.*field '{field}'") as error:
        load_vqa(path, None, image_dir)
    assert error.value.file == path
    report = SkipReport()
    assert len(load_vqa(path, None, image_dir, skip_invalid=True, report=report)) == 2
    assert report.counts == {field: 1}
