"""Detection benchmarks under their official protocols: COCO 2017 (val2017 scored with pycocotools' COCOeval,
test-dev2017 written for the evaluation server), LVIS v1 (`lvis-minival`, `lvis-val`: the LVIS API's federated AP
with GLIP's chunked prompts, `tasks/detection/lvis.py`) and ODinW (`odinw13`, `odinw35`: every dataset of the suite
as GLIP's configs evaluate it, `tasks/detection/odinw.py`)."""

from __future__ import annotations

from typing import Any

from tasks.detection.lvis import BENCHMARKS as LVIS_BENCHMARKS
from tasks.detection.odinw import BENCHMARKS as ODINW_BENCHMARKS
from tasks.evaluation import predict_dataset
from tasks.metrics.coco_detection.coco_detection import to_coco_results
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import DataFiles


def _detect(run: BenchmarkRun, **load_options: Any) -> tuple[Any, list[dict[str, Any]] | None]:
    """Every image of the split's instances file, all its categories in GLIP's evaluation prompts."""
    from tasks.detection.task import load, predict

    files = DataFiles(image_dir=run.file("image_dir"), annotation_file=run.file("annotation_file"))
    data = load(files, run.max_samples, **load_options)
    predictions = predict_dataset(
        predict, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
    )
    return data, predictions


def run_coco(run: BenchmarkRun) -> BenchmarkResult | None:
    """COCO box AP on val2017 (COCOeval, 100 detections per image); test-dev2017: the results file only."""
    from tasks.detection.task import score

    data, predictions = _detect(run, require_annotations=not run.for_server)
    if predictions is None:
        return None
    name = f"detections_{run.split}_glipv2_results.json"  # the server's naming: detections_[testset]_[alg]_results
    files = {"results": run.write_json(name, to_coco_results(predictions, "xyxy"))}
    if run.for_server:
        return BenchmarkResult({}, len(data.dataset), files)
    return BenchmarkResult(score(run.metric(), predictions, data), len(data.dataset), files)


COCO = Benchmark(
    name="coco",
    task="detection",
    splits=("val2017", "test-dev2017"),
    files={
        "val2017": {"annotation_file": "annotations/instances_val2017.json", "image_dir": "val2017"},
        "test-dev2017": {"annotation_file": "annotations/image_info_test-dev2017.json", "image_dir": "test2017"},
    },
    run=run_coco,
    protocol=(
        "COCO 2017 box AP@[.5:.95] (pycocotools COCOeval semantics via faster-coco-eval, maxDets 100). The 80 "
        "category names, cleaned as GLIP's clean_name does, form the prompt (chunked only beyond 256 tokens); "
        "GLIP's test settings: score threshold 0.05, at most 100 detections per image, NMS 0.6 per class. "
        "test-dev2017 has no public ground truth: the results file (xywh boxes) goes to the evaluation server."
    ),
    server_splits=("test-dev2017",),
)

BENCHMARKS = (COCO, *LVIS_BENCHMARKS, *ODINW_BENCHMARKS)

__all__ = ["BENCHMARKS", "COCO", "run_coco"]
