"""Referring segmentation benchmarks under their official protocols: PhraseCut (`phrasecut`: the official files of
data/VGPhraseCut_v0, scored as ChenyunWu/PhraseCutDataset's `utils/evaluator.py`)."""

from __future__ import annotations

from tasks.evaluation import predict_dataset
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import DataFiles


def run_phrasecut(run: BenchmarkRun) -> BenchmarkResult | None:
    """Mean IoU, cumulative IoU and precision@0.5..0.9 over the split's tasks (phrases); the predicted masks are
    written as RLEs by `task_id`."""
    from tasks.referring_segmentation.task import load, predict, score

    files = DataFiles(image_dir=run.file("image_dir"), annotation_file=run.file("annotation_file"))
    data = load(files, run.max_samples)
    predictions = predict_dataset(
        predict, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
    )
    if predictions is None:
        return None
    masks = [
        {"task_id": task_id, "mask": prediction["mask"], "score": prediction["score"]}
        for task_id, prediction in zip(data.dataset["task_id"], predictions)
    ]
    files = {"predictions": run.write_json(f"phrasecut_{run.split}_glipv2_masks.json", masks)}
    return BenchmarkResult(score(run.metric(), predictions, data), len(data.dataset), files)


PHRASECUT = Benchmark(
    name="phrasecut",
    task="referring_segmentation",
    splits=("test", "val", "miniv"),
    files={
        split: {"annotation_file": f"refer_{split}.json", "image_dir": "images"} for split in ("test", "val", "miniv")
    },
    run=run_phrasecut,
    protocol=(
        "VGPhraseCut (root: data/VGPhraseCut_v0 with refer_<split>.json, image_data_split.json and images/), as "
        "the official Evaluator: per task the ground truth is the union of its instances' polygons drawn with PIL "
        "(coordinates truncated by int(), polygons of fewer than 2 points skipped) at the image's size; the "
        "prediction is the mask of the phrase's best box (the phrase is the prompt, all its tokens the phrase); "
        "mean IoU, cumulative IoU (sum of intersections over sum of unions) and the share of tasks with IoU above "
        "0.5-0.9. GLIPv2 reports the mean IoU on test."
    ),
)

BENCHMARKS = (PHRASECUT,)

__all__ = ["BENCHMARKS", "PHRASECUT", "run_phrasecut"]
