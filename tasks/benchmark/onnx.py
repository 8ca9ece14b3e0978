"""PyTorch eager against onnxruntime fp32 and int8 on the CPU, in one process on the same threads: GLIP-T
(`glip-tiny`, random weights) at 640x640 with the 80 COCO class names as prompt, batch 1 (`--smoke`: `tiny-random`
at 160x160). The graphs are exported and quantized by `glipv2.onnx_export` into a temporary folder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tasks.benchmark.measure import (
    build_glip,
    coco_prompt,
    environment,
    load_average,
    load_tokenizer,
    median_seconds,
)
from tasks.benchmark.settings import Settings

# Goals of issue #21: onnxruntime latency over eager latency.
ONNX_GOALS = (("onnx_fp32_over_eager", 0.8), ("onnx_int8_over_eager", 0.5))
# tiny-random's Swin window (4) needs padded sides above 128 pixels (see glipv2.onnx_export.minimum_image_side).
SMOKE_SIZE = (160, 160)
FULL_SIZE = (640, 640)


def _inputs(tokenizer: Any, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Random normalised pixels of `size` (batch 1, no padding) and the 80-label COCO prompt."""
    generator = torch.Generator().manual_seed(0)
    inputs = coco_prompt(tokenizer, torch.device("cpu"))
    inputs["pixel_values"] = torch.randn(1, 3, *size, generator=generator)
    inputs["pixel_mask"] = torch.ones(1, *size, dtype=torch.long)
    return inputs


@torch.no_grad()
def _eager(model: torch.nn.Module, inputs: dict[str, torch.Tensor], repeats: int, warmup: int) -> tuple[Any, float]:
    """The eager outputs and their median latency."""
    return model(**inputs), median_seconds(lambda: model(**inputs), torch.device("cpu"), repeats, warmup)


def _max_error(outputs: Any, reference: Any) -> dict[str, float]:
    return {name: float((outputs[name] - reference[name]).abs().max()) for name in ("logits", "pred_boxes")}


def run_onnx_benchmark(settings: Settings, optimization: str = "all", keep_dir: str | None = None) -> dict[str, Any]:
    """Latency (median of `settings.repeats` after `settings.warmup` runs) of eager PyTorch, onnxruntime fp32 and
    onnxruntime int8 on torch's current threads, the export and quantization times, the outputs' largest
    differences from eager, and the ratios of `ONNX_GOALS`. `optimization`: onnxruntime's graph optimisation level;
    `keep_dir`: write the ONNX files there instead of a temporary folder."""
    from glipv2.onnx_export import Glipv2OnnxModel, export_model, quantize_int8

    device = torch.device("cpu")
    size = SMOKE_SIZE if settings.smoke else FULL_SIZE
    repeats = 1 if settings.smoke else settings.repeats[settings.sizes[0]]
    warmup = settings.warmup
    threads = torch.get_num_threads()
    results: dict[str, Any] = {"environment": environment(settings), "image_size": list(size)}
    results["environment"]["onnxruntime_optimization"] = optimization
    tokenizer = load_tokenizer(settings.tokenizer)
    model = build_glip(settings.smoke, device)
    inputs = _inputs(tokenizer, size)
    results["prompt_tokens"] = int(inputs["input_ids"].shape[1])
    latency: dict[str, float] = {}
    reference, latency["eager"] = _eager(model, inputs, repeats, warmup)
    print(f"  eager: {latency['eager']:.3f} s", flush=True)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(keep_dir or temporary)
        start = time.perf_counter()
        fp32_path = export_model(model, folder / "model.onnx")
        results["export_s"] = time.perf_counter() - start
        start = time.perf_counter()
        int8_path = quantize_int8(fp32_path, folder / "model_int8.onnx")
        results["quantize_s"] = time.perf_counter() - start
        int8_all_path = quantize_int8(fp32_path, folder / "model_int8_all.onnx", activation_products=True)
        results["file_mb"] = {"fp32": fp32_path.stat().st_size / 2**20, "int8": int8_path.stat().st_size / 2**20}
        del model
        errors = {}
        paths = (("onnx_fp32", fp32_path), ("onnx_int8", int8_path), ("onnx_int8_all_matmuls", int8_all_path))
        for name, path in paths:
            session = Glipv2OnnxModel(path, threads=threads, optimization=optimization)
            errors[name] = _max_error(session(**inputs), reference)
            latency[name] = median_seconds(lambda session=session: session(**inputs), device, repeats, warmup)
            print(f"  {name}: {latency[name]:.3f} s (max |diff| vs eager {errors[name]})", flush=True)
            del session
    results["latency_s"] = latency
    results["max_abs_error_vs_eager"] = errors
    results["ratios"] = {
        "onnx_fp32_over_eager": latency["onnx_fp32"] / latency["eager"],
        "onnx_int8_over_eager": latency["onnx_int8"] / latency["eager"],
        "onnx_int8_all_matmuls_over_eager": latency["onnx_int8_all_matmuls"] / latency["eager"],
    }
    results["goals"] = [
        {
            "goal": key,
            "value": results["ratios"][key],
            "target": f"<= {target}",
            "met": results["ratios"][key] <= target,
        }
        for key, target in ONNX_GOALS
    ]
    results["environment"]["load_average_end"] = load_average()
    return results


def onnx_report(results: dict[str, Any]) -> str:
    """A short plain-text summary: latencies, ratios against the goals, the outputs' differences."""
    env, latency = results["environment"], results["latency_s"]
    height, width = results["image_size"]
    lines = [
        f"{env['device_name'] or env['device']}, {env['threads']} threads, torch {env['torch']}, onnxruntime graph "
        f"optimisation {env['onnxruntime_optimization']}; {height}x{width}, {results['prompt_tokens']} prompt tokens, "
        f"batch 1; load average {env['load_average_start']} -> {env['load_average_end']}",
        f"export {results['export_s']:.1f} s, int8 quantization {results['quantize_s']:.1f} s; files "
        f"{results['file_mb']['fp32']:.0f} MiB fp32, {results['file_mb']['int8']:.0f} MiB int8",
    ]
    for name in latency:
        error = results["max_abs_error_vs_eager"].get(name)
        suffix = f"  max |diff| logits {error['logits']:.2e}, boxes {error['pred_boxes']:.2e}" if error else ""
        lines.append(f"  {name:22s} {latency[name]:8.3f} s{suffix}")
    all_matmuls = results["ratios"]["onnx_int8_all_matmuls_over_eager"]
    lines.append(f"  onnx_int8_all_matmuls_over_eager: {all_matmuls:.3f} (int8 with activation products too)")
    for goal in results["goals"]:
        met = "met" if goal["met"] else "NOT met"
        lines.append(f"  {goal['goal']}: {goal['value']:.3f} (target {goal['target']}, {met})")
    return "\n".join(lines)


__all__ = ["ONNX_GOALS", "onnx_report", "run_onnx_benchmark"]
