"""Training memory with and without activation checkpointing (`--train-memory`).

One training step (forward, grounding loss, backward, AdamW) of `Glipv2ForGrounding` (`glip-tiny`: batch 2, 512x512,
the 80-label COCO prompt; `tiny-random` with `--smoke`) runs once per setting, each in its own subprocess so that
one setting's freed-but-kept allocator memory cannot hide the other's peak:

- `off`: today's default (everything kept for the backward);
- `on`: every `config.gradient_checkpointing_*` field (Swin stages, BERT layers, fusion layers, the bi-attention's
  recomputed softmaxes).

Peak memory of the step is the process's peak resident set during the step (VmHWM, reset through
`/proc/self/clear_refs`) minus its resident set once the model is built and the batch made: what the step itself
added (activations, gradients, AdamW state). Both processes use the same weights, batch and random draws (dropout,
drop path), so their gradients must agree; the largest relative difference is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tasks.benchmark.measure import load_tokenizer, peak_memory, training_batch
from tasks.benchmark.settings import COCO_LABELS

SETTINGS = ("off", "on")
GRADIENT_RTOL = 1e-5
MEMORY_GOAL = 0.5  # peak with checkpointing <= half of without


def _worker(
    preset: str, batch_size: int, size: int, setting: str, grads_path: str, tokenizer_path: str | None
) -> dict:
    """Builds the model and batch, then measures one training step; saves the gradients to `grads_path`."""
    from glipv2 import Glipv2Config, Glipv2ForGrounding
    from glipv2.configuration_glipv2 import GRADIENT_CHECKPOINTING_FIELDS

    switches = dict.fromkeys(GRADIENT_CHECKPOINTING_FIELDS, setting == "on")
    torch.manual_seed(0)
    model = Glipv2ForGrounding(Glipv2Config.from_preset(preset, **switches)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tokenizer = load_tokenizer(tokenizer_path)
    labels = COCO_LABELS[:10] if preset == "tiny-random" else COCO_LABELS
    batch = training_batch(tokenizer, batch_size, (size, size), torch.device("cpu"), labels=labels)
    gc.collect()
    record: dict[str, Any] = {}
    torch.manual_seed(1)  # dropout and drop path draw the same in both processes
    start = time.perf_counter()
    with peak_memory(torch.device("cpu"), record):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    torch.save(grads, grads_path)
    return {
        "setting": setting,
        "loss": float(loss.detach()),
        "step_s": seconds,
        "peak_step_mib": record.get("peak_memory_mb", float("nan")),
        "tokens": int(batch["input_ids"].shape[1]),
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def gradient_difference(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Largest per-tensor relative difference `max|a - b| / scale`, and the parameters failing
    `allclose(rtol=1e-5, atol=1e-5 * scale)`, where `scale` is the tensor's `max|b|`, at least 1e-5 of the step's
    largest gradient: some gradients are exactly zero in exact arithmetic (attention key biases: a softmax ignores a
    constant shift) and what autograd gives there is rounding noise (1e-12), equal in neither setting."""
    if reference.keys() != other.keys():
        raise ValueError("The two settings gave gradients for different parameters.")
    floor = GRADIENT_RTOL * max(float(grad.abs().max()) for grad in reference.values())
    worst, worst_name, failing = 0.0, None, []
    for name, grad in reference.items():
        scale = max(float(grad.abs().max()), floor)
        relative = float((other[name] - grad).abs().max()) / scale
        if relative > worst:
            worst, worst_name = relative, name
        if not torch.allclose(other[name], grad, rtol=GRADIENT_RTOL, atol=GRADIENT_RTOL * scale):
            failing.append(name)
    return {"grad_max_rel_diff": worst, "worst_parameter": worst_name, "params_failing_rtol": failing}


def run_train_memory(
    smoke: bool, threads: int | None = None, tokenizer: str | None = None, batch_size: int = 2, size: int = 512
) -> dict[str, Any]:
    """Runs each setting in a subprocess (same threads) and compares peak memory and gradients."""
    preset = "tiny-random" if smoke else "glip-tiny"
    size = 64 if smoke else size
    results: dict[str, Any] = {"preset": preset, "batch_size": batch_size, "image_size": size, "threads": threads}
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as folder:
        for setting in SETTINGS:
            grads_path = os.path.join(folder, f"{setting}.pt")
            command = [sys.executable, "-m", "tasks.benchmark.train_memory", "--preset", preset, "--setting"]
            command += [setting, "--batch", str(batch_size), "--size", str(size), "--grads", grads_path]
            command += ["--threads", str(threads)] if threads else []
            command += ["--tokenizer", tokenizer] if tokenizer else []
            done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"--train-memory worker ({setting}) failed:\n{done.stderr[-4000:]}")
            results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"  checkpointing {setting}: peak {results[setting]['peak_step_mib']:.0f} MiB over the built model, "
                f"{results[setting]['step_s']:.1f} s/step",
                flush=True,
            )
        reference = torch.load(os.path.join(folder, "off.pt"))
        other = torch.load(os.path.join(folder, "on.pt"))
        results.update(gradient_difference(reference, other))
    results["loss_rel_diff"] = abs(results["on"]["loss"] - results["off"]["loss"]) / abs(results["off"]["loss"])
    results["peak_ratio"] = results["on"]["peak_step_mib"] / results["off"]["peak_step_mib"]
    results["step_time_ratio"] = results["on"]["step_s"] / results["off"]["step_s"]
    results["memory_goal_met"] = results["peak_ratio"] <= MEMORY_GOAL
    results["gradient_goal_met"] = not results["params_failing_rtol"]
    return results


def train_memory_report(results: dict[str, Any]) -> str:
    """The printed summary: both peaks, their ratio against the goal, and the gradient agreement."""
    off, on = results["off"], results["on"]
    return "\n".join(
        [
            f"Training step memory, {results['preset']} (batch {results['batch_size']}, "
            f"{results['image_size']}x{results['image_size']}, {off['tokens']} tokens), "
            "CPU peak RSS over the built model:",
            f"  checkpointing off: {off['peak_step_mib']:.0f} MiB, {off['step_s']:.1f} s/step",
            f"  checkpointing on:  {on['peak_step_mib']:.0f} MiB, {on['step_s']:.1f} s/step",
            f"  peak ratio on/off: {results['peak_ratio']:.3f} "
            f"(goal <= {MEMORY_GOAL}, met: {results['memory_goal_met']})",
            f"  step time ratio on/off: {results['step_time_ratio']:.2f}",
            f"  gradients: max relative difference {results['grad_max_rel_diff']:.2e} "
            f"({results['worst_parameter']}); loss relative difference {results['loss_rel_diff']:.2e}; "
            f"rtol {GRADIENT_RTOL} met: {results['gradient_goal_met']}",
        ]
    )


def main() -> None:
    """The worker: one setting's step, its record as the last line of stdout."""
    parser = argparse.ArgumentParser(description="one --train-memory setting (run by scripts/benchmark.py)")
    parser.add_argument("--preset", required=True)
    parser.add_argument("--setting", choices=SETTINGS, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--grads", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    record = _worker(args.preset, args.batch, args.size, args.setting, args.grads, args.tokenizer)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
