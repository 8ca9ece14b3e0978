"""VQA benchmarks under their official protocols: VQAv2 (val2014 scored with the official `vqaEval.py` algorithm;
test-dev2015 and test2015 written for the evaluation server)."""

from __future__ import annotations

from typing import Any

from tasks.evaluation import predict_dataset
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import DataFiles

# The images of a split's questions: COCO 2014 names; test-dev2015 is a subset of the test2015 images.
IMAGE_NAME_FORMATS = {
    "val2014": "COCO_val2014_{image_id:012d}.jpg",
    "test-dev2015": "COCO_test2015_{image_id:012d}.jpg",
    "test2015": "COCO_test2015_{image_id:012d}.jpg",
}


def results_file_name(split: str, alg_name: str = "glipv2") -> str:
    """The official name of a results file: `vqa_[task_type]_[data_type]_[data_subtype]_[alg_name]_results.json`
    (the VQA evaluation server's convention, e.g. `vqa_OpenEnded_mscoco_test-dev2015_glipv2_results.json`)."""
    return f"vqa_OpenEnded_mscoco_{split}_{alg_name}_results.json"


def official_results(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The official results format: `[{"question_id": int, "answer": str}]`, one entry per question."""
    return [{"question_id": int(p["question_id"]), "answer": str(p["answer"])} for p in predictions]


def run_vqav2(run: BenchmarkRun) -> BenchmarkResult | None:
    """VQAv2 accuracy on val2014 (official algorithm on the raw annotator answers); test-dev2015 / test2015: the
    results file only."""
    from tasks.vqa.task import load, predict

    files = DataFiles(
        image_dir=run.file("image_dir"),
        annotation_file=None if run.for_server else run.file("annotation_file"),
        questions_file=run.file("questions_file"),
        image_name_format=IMAGE_NAME_FORMATS[run.split],
    )
    data = load(files, run.max_samples, official_eval=True)
    predictions = predict_dataset(
        predict, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
    )
    if predictions is None:
        return None
    results = official_results(predictions)
    files_written = {"results": run.write_json(results_file_name(run.split), results)}
    if run.for_server:
        return BenchmarkResult({}, len(data.dataset), files_written)
    # the references come from the loaded annotations by question id, as the official code pairs results with them
    dataset = data.dataset.select_columns(["question_id", "raw_answers", "answer_type", "question_type"])
    by_id = {row["question_id"]: row for row in dataset}
    rows = [by_id[entry["question_id"]] for entry in results]
    metrics = run.metric().compute(
        predictions=[entry["answer"] for entry in results],
        references=[row["raw_answers"] for row in rows],
        answer_types=[row["answer_type"] for row in rows],
        question_types=[row["question_type"] for row in rows],
    )
    return BenchmarkResult(metrics, len(data.dataset), files_written)


VQAV2 = Benchmark(
    name="vqav2",
    task="vqa",
    splits=("val2014", "test-dev2015", "test2015"),
    files={
        "val2014": {
            "questions_file": "v2_OpenEnded_mscoco_val2014_questions.json",
            "annotation_file": "v2_mscoco_val2014_annotations.json",
            "image_dir": "val2014",
        },
        "test-dev2015": {"questions_file": "v2_OpenEnded_mscoco_test-dev2015_questions.json", "image_dir": "test2015"},
        "test2015": {"questions_file": "v2_OpenEnded_mscoco_test2015_questions.json", "image_dir": "test2015"},
    },
    run=run_vqav2,
    protocol=(
        "VQAv2 open-ended accuracy as the official vqaEval.py (GT-Vision-Lab/VQA, commit a013f00): the answer is "
        "the model's highest-scoring label; newlines/tabs to spaces and stripped; only when the 10 raw annotator "
        "answers are not all identical are they and the prediction normalised (processPunctuation, "
        "processDigitArticle); per question the mean over the annotators left out of min(1, matches / 3). "
        "`accuracy` and `accuracy_<answer type>` are fractions; `official` holds vqaEval's overall, perAnswerType "
        "and perQuestionType in percent rounded to 2 decimals. Images are COCO_<images>_<id:012d>.jpg "
        "(test-dev2015 uses the test2015 images). test-dev2015 and test2015 have no public answers: the results "
        "file [{question_id, answer}] for every question goes to the evaluation server."
    ),
    server_splits=("test-dev2015", "test2015"),
)

BENCHMARKS = (VQAV2,)

__all__ = ["BENCHMARKS", "IMAGE_NAME_FORMATS", "VQAV2", "official_results", "results_file_name", "run_vqav2"]
