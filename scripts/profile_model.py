"""Where the time of a GLIP-T forward and training step goes: `torch.profiler` tables per op, on CPU or CUDA.

For each case (inference at batch 1, fp32 and bf16; a training step in bf16) it prints the wall time of one call,
the device time spent in kernels (CUDA), the number of kernel launches and host-device synchronisations, and the
ops with the most self time. Random weights (`glip-tiny` preset), no download.

    python scripts/profile_model.py --device cuda --train-batch 8 --output profile_cuda.txt
    python scripts/profile_model.py --device cpu --size 320 --train-batch 1 --train-size 320
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from tasks.benchmark.measure import (  # noqa: E402
    autocast,
    build_glip,
    coco_prompt,
    load_tokenizer,
    model_inputs,
    synchronize,
    training_batch,
    training_step_fn,
)
from tasks.benchmark.settings import COCO_LABELS  # noqa: E402


def profile_call(fn, device: torch.device, label: str, rows: int, lines: list[str]) -> None:  # noqa: ANN001
    """Warms `fn` up twice, times one call, profiles one call, and appends the summary and top ops to `lines`."""
    for _ in range(2):
        fn()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    wall = time.perf_counter() - start
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events = prof.key_averages()
    lines.append(f"\n===== {label}: {wall * 1e3:.1f} ms wall")
    if device.type == "cuda":
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_ms = sum(e.device_time for e in kernels) / 1e3  # device_time is in microseconds
        syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
        copies = sum(e.count for e in events if e.key in ("cudaMemcpyAsync", "cudaMemcpy"))
        lines.append(
            f"kernels: {len(kernels)} launches, {kernel_ms:.1f} ms of kernel time "
            f"({kernel_ms / (wall * 1e3):.0%} of the wall time); {syncs} synchronisations, {copies} memcpy calls"
        )
        sort_by = "self_cuda_time_total"
    else:
        sort_by = "self_cpu_time_total"
    lines.append(events.table(sort_by=sort_by, row_limit=rows, max_name_column_width=60))
    print("\n".join(lines[-3:]), flush=True)


def compile_probe(tokenizer, device: torch.device, size: int, mode: str) -> int:  # noqa: ANN001
    """Batch-1 latency of both models, eager and compiled (`mode`), fp32 and bf16: how much is host overhead."""
    from tasks.benchmark.measure import build_grounding_dino, forward_fn, median_seconds

    for name, build in (("glip-tiny", build_glip), ("grounding-dino-tiny", build_grounding_dino)):
        model = build(False, device)
        inputs = model_inputs(model, coco_prompt(tokenizer, device), 1, (size, size), device)
        compiled = torch.compile(model, mode=mode)
        for precision in ("fp32", "bf16"):
            eager = median_seconds(forward_fn(model, inputs, precision, device), device, 20, 3)
            start = time.perf_counter()
            forward_fn(compiled, inputs, precision, device)()
            synchronize(device)
            compile_s = time.perf_counter() - start
            fast = median_seconds(forward_fn(compiled, inputs, precision, device), device, 20, 3)
            print(
                f"{name} {size}x{size} {precision}: eager {eager * 1e3:.1f} ms, torch.compile({mode}) "
                f"{fast * 1e3:.1f} ms ({eager / fast:.2f}x; first call {compile_s:.0f} s)",
                flush=True,
            )
        del model, compiled
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=640, help="inference image side")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-size", type=str, default="800x1333", help="training image HxW")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--output", default=None, help="also write the tables here")
    parser.add_argument(
        "--compile-probe",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="only time GLIP-T and Grounding DINO-T inference (batch 1) eager and under torch.compile with this mode",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    tokenizer = load_tokenizer(args.tokenizer)
    if args.compile_probe:
        return compile_probe(tokenizer, device, args.size, args.compile_probe)
    model = build_glip(False, device)
    lines: list[str] = []
    prompt = coco_prompt(tokenizer, device)
    inputs = model_inputs(model, prompt, 1, (args.size, args.size), device)
    for precision in ("fp32", "bf16"):

        def infer(precision: str = precision) -> None:
            with torch.no_grad(), autocast(device, precision):
                model(**inputs)

        profile_call(infer, device, f"inference {args.size}x{args.size} batch 1 {precision}", args.rows, lines)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    height, width = (int(v) for v in args.train_size.split("x"))
    batch = training_batch(tokenizer, args.train_batch, (height, width), device, labels=COCO_LABELS)
    step = training_step_fn(model, optimizer, batch, "bf16", device)
    profile_call(step, device, f"training step bf16 batch {args.train_batch} {height}x{width}", args.rows, lines)
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
