"""Evaluate a GLIPv2 checkpoint: a public benchmark under its official protocol, or a task on a dataset.

    python scripts/evaluate_model.py --model CHECKPOINT --benchmark coco --root DATA/coco --split val2017 \
        --output-dir results/          # metrics JSON (+ the submission file of server-scored splits)
    python scripts/evaluate_model.py --list-benchmarks
    python scripts/evaluate_model.py --model CHECKPOINT --task detection --data-dir DATA --split val \
        --batch-size 8 --output results.json [--max-samples N]

``CHECKPOINT`` is a folder (or Hub id) with the model and its processor (``save_pretrained``). A benchmark reads
its files by their official names under ``--root`` (``--list-benchmarks`` prints them; ``docs/evaluation.md``
describes each protocol) and writes ``<output-dir>/<benchmark>_<split>_metrics.json``. With ``--task``, ``DATA``
follows the ``tasks.synthetic`` layout (``annotations/instances_<split>.json``, ``images/<split>/``, ...); for other
layouts give the files with ``--annotation-file``, ``--questions-file``, ``--image-dir`` (and
``--image-name-format`` for VQA); the JSON holds ``task``, ``model``, ``split``, ``num_samples``,
``num_processes`` and ``metrics``, and with ``--predictions`` the per-sample predictions go to a second file.
Several processes (``torchrun --nproc_per_node N`` or ``accelerate launch``; add ``--cpu`` for gloo ranks on CPU)
each evaluate a shard; predictions are gathered without duplicates and only the main process scores and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from accelerate import Accelerator

from tasks.protocol import BenchmarkRun, all_benchmarks, get_benchmark, run_benchmark
from tasks.registry import TASKS, get_task
from tasks.spec import DataFiles, PredictOptions, TaskSpec

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint folder or Hub id (model + processor)")
    parser.add_argument("--benchmark", help="a public benchmark by name (see --list-benchmarks)")
    parser.add_argument("--root", help="--benchmark: the dataset root its official file names are relative to")
    parser.add_argument("--output-dir", help="--benchmark: folder for the metrics and submission files")
    parser.add_argument("--list-benchmarks", action="store_true", help="print every benchmark, split and file")
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--data-dir", help="dataset root in the tasks.synthetic layout")
    parser.add_argument("--split", help="the split (default: val; a benchmark's first official split)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per process and step")
    parser.add_argument("--output", help="--task: JSON file for the metrics")
    parser.add_argument("--predictions", help="optional JSON file for the per-sample predictions")
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N samples")
    parser.add_argument("--annotation-file", help="overrides the layout's annotation file")
    parser.add_argument("--questions-file", help="VQA: overrides the layout's questions file")
    parser.add_argument("--image-dir", help="overrides the layout's image folder")
    parser.add_argument("--image-name-format", help="VQA: image file name pattern")
    parser.add_argument("--threshold", type=float, default=PredictOptions.threshold, help="detection score floor")
    parser.add_argument("--max-detections", type=int, default=PredictOptions.max_detections)
    parser.add_argument("--max-caption-tokens", type=int, default=PredictOptions.max_caption_tokens)
    parser.add_argument("--cpu", action="store_true", help="run on CPU (gloo ranks when launched multi-process)")
    args = parser.parse_args(argv)
    if args.list_benchmarks:
        return args
    if args.model is None:
        parser.error("give --model")
    if (args.benchmark is None) == (args.task is None):
        parser.error("give either --benchmark (a public benchmark) or --task (a dataset in the synthetic layout)")
    if args.benchmark is not None:
        if args.root is None or args.output_dir is None:
            parser.error("--benchmark needs --root (the dataset root) and --output-dir")
        return args
    if args.output is None:
        parser.error("--task needs --output (the metrics JSON)")
    if args.data_dir is None and (args.annotation_file is None or args.image_dir is None):
        parser.error("give --data-dir, or both --annotation-file and --image-dir")
    args.split = args.split or "val"
    return args


def data_files(spec: TaskSpec, args: argparse.Namespace) -> DataFiles:
    """The layout's files for ``--data-dir``/``--split``, with any explicit file options applied on top."""
    files = spec.default_files(args.data_dir, args.split) if args.data_dir else DataFiles("", "")
    overrides = {
        "annotation_file": args.annotation_file,
        "questions_file": args.questions_file,
        "image_dir": args.image_dir,
        "image_name_format": args.image_name_format,
    }
    return dataclasses.replace(files, **{key: value for key, value in overrides.items() if value is not None})


def format_table(metrics: dict[str, float]) -> str:
    """A two-column text table of the metrics."""
    width = max([len(name) for name in metrics] + [6])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {value:.4f}" for name, value in metrics.items()]
    return "\n".join(lines)


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON, creating the parent folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)


def list_benchmarks() -> str:
    """Every benchmark: its task, splits (server-scored ones marked) and official files."""
    lines = []
    for name, benchmark in sorted(all_benchmarks().items()):
        lines.append(f"{name} (task {benchmark.task})")
        for split in benchmark.splits:
            server = " [evaluation server: submission file only]" if split in benchmark.server_splits else ""
            files = ", ".join(f"{key}={path}" for key, path in benchmark.files[split].items())
            lines.append(f"  {split}{server}: {files}")
    return "\n".join(lines)


def evaluate_benchmark(args: argparse.Namespace, accelerator: Accelerator) -> None:
    """`--benchmark`: runs it and prints its metrics and the files written."""
    benchmark = get_benchmark(args.benchmark)
    options = PredictOptions(args.threshold, args.max_detections, args.max_caption_tokens)
    run = BenchmarkRun(
        benchmark=benchmark,
        model_dir=args.model,
        root=args.root,
        split=args.split or benchmark.splits[0],
        output_dir=args.output_dir,
        accelerator=accelerator,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        options=options,
    )
    result = run_benchmark(run)
    if result is not None:
        flat = {key: value for key, value in result.metrics.items() if isinstance(value, (int, float))}
        if flat:
            print(format_table(flat))
        for name, path in result.files.items():
            print(f"{name}: {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate (see the module docstring); returns the process exit status."""
    args = parse_args(argv)
    if args.list_benchmarks:
        print(list_benchmarks())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from glipv2 import Glipv2Processor

    accelerator = Accelerator(cpu=args.cpu)
    if args.benchmark is not None:
        evaluate_benchmark(args, accelerator)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return 0
    spec = get_task(args.task)
    model = spec.model_class().from_pretrained(args.model).to(accelerator.device)
    processor = Glipv2Processor.from_pretrained(args.model)
    data = spec.load(data_files(spec, args), args.max_samples)
    options = PredictOptions(args.threshold, args.max_detections, args.max_caption_tokens)
    result = spec.evaluate(accelerator, model, processor, data, args.batch_size, options)
    if result is not None:  # the main process
        metrics, predictions = result
        print(format_table(metrics))
        summary = {
            "task": args.task,
            "model": args.model,
            "split": args.split,
            "num_samples": len(data.dataset),
            "num_processes": accelerator.num_processes,
            "metrics": metrics,
        }
        write_json(args.output, summary)
        if args.predictions:
            write_json(args.predictions, predictions)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
