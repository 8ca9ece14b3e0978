"""Captioning benchmarks under the COCO caption evaluation (pycocoevalcap's COCOEvalCap): the Karpathy test and
val splits as distributed in `dataset_coco.json`, COCO val2014, and the test2014 results file for the server."""

from __future__ import annotations

from typing import Any

from tasks.evaluation import predict_dataset
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import TaskData

KARPATHY_FILE = "dataset_coco.json"  # from Karpathy's caption_datasets.zip; image paths are filepath/filename


def _records(run: BenchmarkRun) -> TaskData:
    from tasks.captioning.coco_captions import load_coco_captions, load_karpathy_split

    if run.split.startswith("karpathy-"):
        dataset = load_karpathy_split(run.file("annotation_file"), run.file("image_dir"), run.split.split("-", 1)[1])
    else:
        dataset = load_coco_captions(
            run.file("annotation_file"), run.file("image_dir"), require_annotations=not run.for_server
        )
    if run.max_samples is not None and run.max_samples < len(dataset):
        dataset = dataset.select(range(run.max_samples))
    return TaskData(dataset=dataset)


def run_coco_captions(run: BenchmarkRun) -> BenchmarkResult | None:
    """Greedy captions of every image; BLEU-1..4, METEOR, ROUGE-L, CIDEr-D on the raw reference captions after the
    PTB tokenizer (and SPICE where its jars are present); the results file `[{"image_id", "caption"}]`."""
    from tasks.captioning.task import predict
    from tasks.metrics.caption_metrics.caption_metrics import DEFAULT_METRICS, spice_unavailable

    data = _records(run)
    predictions = predict_dataset(
        predict, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
    )
    if predictions is None:
        return None
    results = [{"image_id": p["image_id"], "caption": p["caption"]} for p in predictions]
    files = {"results": run.write_json(f"captions_{run.split}_glipv2_results.json", results)}
    if run.for_server:
        return BenchmarkResult({}, len(predictions), files)
    spice = spice_unavailable()
    metric_names = DEFAULT_METRICS if spice else (*DEFAULT_METRICS, "spice")
    metrics: dict[str, Any] = run.metric().compute(
        predictions=[p["caption"] for p in predictions],
        references=[p["references"] for p in predictions],
        metrics=metric_names,
    )
    if spice:
        metrics["not_computed"] = {"SPICE": spice}
    return BenchmarkResult(metrics, len(predictions), files)


COCO_CAPTIONS = Benchmark(
    name="coco-captions",
    task="captioning",
    splits=("karpathy-test", "karpathy-val", "val2014", "test2014"),
    files={
        "karpathy-test": {"annotation_file": KARPATHY_FILE, "image_dir": "."},
        "karpathy-val": {"annotation_file": KARPATHY_FILE, "image_dir": "."},
        "val2014": {"annotation_file": "annotations/captions_val2014.json", "image_dir": "val2014"},
        "test2014": {"annotation_file": "annotations/image_info_test2014.json", "image_dir": "test2014"},
    },
    run=run_coco_captions,
    protocol=(
        "COCO caption evaluation as pycocoevalcap's COCOEvalCap: one greedy caption per image (at most "
        "--max-caption-tokens new tokens), candidates and every raw reference caption tokenised by the Stanford PTB "
        "tokenizer, corpus BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D (idf from the evaluated references); SPICE "
        "only where the Stanford CoreNLP 3.6.0 jars are installed (pycocoevalcap downloads them: not offline). "
        "karpathy-test/val: the 5,000-image splits of Karpathy's dataset_coco.json (images under filepath/, i.e. "
        "val2014/). test2014 has no public references: the results file goes to the evaluation server."
    ),
    server_splits=("test2014",),
)

BENCHMARKS = (COCO_CAPTIONS,)

__all__ = ["BENCHMARKS", "COCO_CAPTIONS", "run_coco_captions"]
