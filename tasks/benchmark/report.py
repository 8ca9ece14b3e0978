"""Rendering a benchmark run: the goal table and the markdown report of `docs/benchmarks.md`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.benchmark.settings import LVIS_SIZE, Settings

# Performance goals: (ratio key, comparison, target, description).
GOALS = (
    (
        "glip_over_grounding_dino_latency_fp32",
        "<=",
        1.0,
        "GLIP-T / Grounding DINO-T latency, 640x640, 80 labels, fp32",
    ),
    ("matmul_peak_fraction_fp32", ">=", 0.5, "GLIP-T achieved GFLOP/s / fp32 matmul peak (640x640)"),
    ("lvis_over_coco_latency", "<=", 4.0, "detect_labels latency, 1,203 labels / 80 labels"),
    ("batch8_over_batch1_throughput", ">=", 1.3, "GLIP-T images/s per image, batch 8 / batch 1"),
    ("bf16_speedup", ">=", 2.0, "GLIP-T fp32 latency / bf16 latency (640x640)"),
)


def goal_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: value, target and whether it is met (None where not measured)."""
    rows = []
    for key, comparison, target, description in GOALS:
        value = results["ratios"][key]
        met = value <= target if comparison == "<=" else value >= target
        rows.append(
            {"goal": key, "description": description, "value": value, "target": f"{comparison} {target}", "met": met}
        )
    agreement = results["bf16_agreement"]["min_iou"]
    rows.append(
        {
            "goal": "bf16_top_detection_iou",
            "description": "bf16 vs fp32 top detections of a trained demo model, min IoU",
            "value": agreement,
            "target": ">= 0.95",
            "met": None if agreement is None else agreement >= 0.95,
        }
    )
    return rows


def format_value(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/m"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def markdown_report(results: dict[str, Any], settings: Settings) -> str:
    """The markdown tables of `docs/benchmarks.md`."""
    env = results["environment"]
    lines = [
        "## Measured numbers",
        "",
        f"{env['date']}, {env['device']} ({env['device_name']}), {env['threads']} threads, torch {env['torch']}, "
        f"transformers {env['transformers']}; AMX: {env['amx_bf16']}, AVX-512 BF16: {env['avx512_bf16']}; "
        f"load average at start {env['load_average_start']}, at end {env['load_average_end']}"
        f"{' (smoke run: tiny configs, not representative)' if settings.smoke else ''}.",
        "",
        f"Matrix-multiply peak ({settings.matmul_size}^2, the better of a measurement at the start and one at the "
        f"end): fp32 {results['matmul_peak_gflops']['fp32']:.1f} GFLOP/s, "
        f"bf16 {results['matmul_peak_gflops']['bf16']:.1f} GFLOP/s.",
        "",
        "| model | params (M) | "
        + " | ".join(f"{h}x{w} {p} (s)" for h, w in settings.sizes for p in ("fp32", "bf16"))
        + " | images/s b1 | images/s b8 | GFLOPs/image | achieved GFLOP/s | peak mem (MiB) |",
        "|---" * (7 + 2 * len(settings.sizes)) + "|",
    ]
    for name, record in results["models"].items():
        cells = [name, format_value(record["parameters_m"], 1)]
        cells += [
            format_value(record["latency_s"][f"{h}x{w}"][p]) for h, w in settings.sizes for p in ("fp32", "bf16")
        ]
        cells += [format_value(record["images_per_s"]["batch1"]), format_value(record["images_per_s"]["batch8"])]
        cells += [format_value(record["gflops_per_image"], 1), format_value(record["achieved_gflops_fp32"], 1)]
        cells += [format_value(record.get("peak_memory_mb"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    vocab, train = results["large_vocabulary"], results["training_step"]
    lines += [
        "",
        f"`detect_labels` at {settings.sizes[0][0]}x{settings.sizes[0][1]} (warm text cache): 80 labels "
        f"({vocab['chunks_80']} chunk) {vocab['latency_80_s']:.3f} s, {LVIS_SIZE} labels "
        f"({vocab[f'chunks_{LVIS_SIZE}']} chunks) {vocab[f'latency_{LVIS_SIZE}_s']:.3f} s.",
        "",
        f"Training step, `{train['preset']}` preset, batch {train['batch_size']}, {train['image_size']} px: "
        f"fp32 {train['step_s_fp32']:.3f} s ({train['images_per_s_fp32']:.1f} images/s), bf16 autocast "
        f"{train['step_s_bf16']:.3f} s ({train['images_per_s_bf16']:.1f} images/s).",
        "",
        *full_training_lines(results["full_training_step"]),
        f"bf16 agreement: {results['bf16_agreement']['status']}.",
        "",
        "### Goals",
        "",
        "| goal | value | target | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['description']} | {format_value(r['value'])} | {r['target']} | {format_value(r['met'])} |"
        for r in results["goals"]
    ]
    return "\n".join(lines) + "\n"


def full_training_lines(full: dict[str, Any]) -> list[str]:
    """The full-size training step's table (or its status line) for the markdown report."""
    if full.get("status") != "measured":
        return [f"Full-size GLIP-T training step: {full.get('status')}.", ""]
    tf32 = full.get("tf32")
    tf32_note = (
        f"; TF32 for fp32 matmuls {tf32['matmul']}, for cuDNN convolutions {tf32['cudnn_convolutions']}"
        if tf32
        else ""
    )
    lines = [
        f"Full-size training step, `{full['preset']}` ({full['parameters_m']:.1f} M parameters), batch "
        f"{full['batch_size']}, {full['image_size']}, {full['prompt_tokens']}-token prompt, AdamW "
        "(MFU: forward + backward FLOPs counted by torch / step time / measured matmul peak of that precision"
        f"{tf32_note}):",
        "",
        "| precision | s/step | images/s | TFLOP/step | TFLOP/s | MFU | peak memory (GiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(precision, full[precision]) for precision in ("bf16", "fp32")]
    alternate = full.get("alternate_deform_conv")
    if alternate:
        rows += [
            (f"{p}, {alternate['path']} deformable conv", alternate[p]) for p in ("bf16", "fp32") if p in alternate
        ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | {r['tflops_per_step']:.2f} | "
            f"{r['achieved_tflops']:.1f} | {r['mfu']:.3f} | {r['peak_memory_gib']:.1f} |"
        )
    return lines + [""]


def write_markdown(path: Path, report: str) -> None:
    """Replaces the generated section of `path` (from `## Measured numbers` on), keeping the prose above it."""
    marker = "## Measured numbers"
    head = ""
    if path.exists():
        text = path.read_text()
        head = text.split(marker)[0] if marker in text else text.rstrip() + "\n\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((head or "# Benchmarks\n\n") + report)


def batching_report(results: dict[str, Any]) -> str:
    """The tables of `docs/batching.md`: per model and image, top-k agreement of the batch with the image alone."""
    lines = ["## Measured numbers", "", f"{results['environment']}", ""]
    for name, record in results["models"].items():
        height, width = record["padded_batch_size"]
        lines += [
            f"### {name}",
            "",
            f"{record['description']}; the batch is padded to {height}x{width}. Goal: the same top-20 labels, scores "
            "within 1% relative, boxes at IoU >= 0.99. The batch takes "
            f"{record['masked_seconds']:.2f} s masked, {record['unmasked_seconds']:.2f} s unmasked.",
            "",
            "| image | padded alone | masked: same top-20 labels | max relative score difference | min IoU |"
            " unmasked: same labels | max relative score difference | min IoU |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for image, entry in record["images"].items():
            cells = [image, "x".join(str(v) for v in entry["own_padded_size"])]
            for key in ("masked", "unmasked"):
                values = entry[key]
                cells += [
                    format_value(values["same_top_labels"]),
                    f"{values['max_relative_score_difference']:.2e}",
                    f"{values['min_iou']:.4f}",
                ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["GOALS", "batching_report", "format_value", "goal_table", "markdown_report", "write_markdown"]
