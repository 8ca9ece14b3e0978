"""Instance segmentation benchmarks under their official protocols: COCO 2017 mask AP (`coco-mask`: val2017 scored
with COCOeval `segm`, test-dev2017 written for the evaluation server) and LVIS v1 mask AP (`lvis-minival-mask`,
`lvis-val-mask`: the LVIS API's federated `segm` evaluation of the LVIS box protocol's detections)."""

from __future__ import annotations

from tasks.detection.lvis import MASK_BENCHMARKS as LVIS_MASK_BENCHMARKS
from tasks.evaluation import predict_dataset
from tasks.metrics.coco_detection.coco_detection import to_coco_segm_results
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import DataFiles


def run_coco_mask(run: BenchmarkRun) -> BenchmarkResult | None:
    """COCO mask AP on val2017 (COCOeval `segm`, 100 detections per image); test-dev2017: the results file only."""
    from tasks.instance_segmentation.task import load, predict, score

    files = DataFiles(image_dir=run.file("image_dir"), annotation_file=run.file("annotation_file"))
    data = load(files, run.max_samples, require_annotations=not run.for_server, masks=not run.for_server)
    predictions = predict_dataset(
        predict, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
    )
    if predictions is None:
        return None
    # the server's naming, detections_[testset]_[alg]_results.json, for segm results too
    files = {
        "results": run.write_json(f"detections_{run.split}_glipv2_results.json", to_coco_segm_results(predictions))
    }
    if run.for_server:
        return BenchmarkResult({}, len(data.dataset), files)
    return BenchmarkResult(score(run.metric(), predictions, data), len(data.dataset), files)


COCO_MASK = Benchmark(
    name="coco-mask",
    task="instance_segmentation",
    splits=("val2017", "test-dev2017"),
    files={
        "val2017": {"annotation_file": "annotations/instances_val2017.json", "image_dir": "val2017"},
        "test-dev2017": {"annotation_file": "annotations/image_info_test-dev2017.json", "image_dir": "test2017"},
    },
    run=run_coco_mask,
    protocol=(
        "COCO 2017 mask AP@[.5:.95] (pycocotools COCOeval iouType 'segm' via faster-coco-eval, maxDets 100; the "
        "detections' areas are their masks', as detectron2 evaluates). Detections as the coco benchmark's (the 80 "
        "cleaned category names as the prompt, score threshold 0.05, NMS 0.6 per class, at most 100 per image) "
        "among each prompt chunk's mask candidates, each with its mask pasted at the image's size as a compressed "
        "RLE. test-dev2017: the results file (RLE segmentations, xywh boxes) goes to the evaluation server."
    ),
    server_splits=("test-dev2017",),
)

BENCHMARKS = (COCO_MASK, *LVIS_MASK_BENCHMARKS)

__all__ = ["BENCHMARKS", "COCO_MASK", "run_coco_mask"]
