"""ONNX export of the detection classes, dynamic int8 quantization, and an onnxruntime model whose outputs the
processor post-processes as it does the PyTorch model's.

Two graphs:

- [`Glipv2ForGrounding`] (open vocabulary, phrase grounding): inputs `pixel_values` `(B, 3, H, W)`, `pixel_mask`
  `(B, H, W)`, `input_ids`, `attention_mask`, `token_type_ids` `(B, T)`; outputs `logits` `(B, A, T)`,
  `pred_boxes` `(B, A, 4)`, `centerness` `(B, A)`, `spatial_shapes` `(L, 2)`, `image_sizes` `(B, 2)`. Batch, image
  height / width and prompt length are dynamic axes.
- [`Glipv2ForObjectDetection`] (closed vocabulary, `config.id2label`): inputs `pixel_values`, `pixel_mask`; outputs
  `logits` `(B, A, num_labels)`, `pred_boxes`, `centerness` (`(B, K, A, 4)` / `(B, K, A)` with K > 1 prompt chunks),
  `spatial_shapes`, `image_sizes`, `label_chunks`. The prompt is fixed, so its text features are constants of the
  graph (folded at export: the text encoder does not run at inference).

The exporter is `torch.onnx.export(..., dynamo=False)` (the TorchScript tracer). Optimum's exporter has no config for
this architecture. The `torch.export`-based exporter (`dynamo=True`, torch 2.14) was tried: on the `tiny-random`
preset it took 330 s, failed on transformers' Swin attention with SDPA (a view of a non-contiguous tensor during
decomposition) and, with eager attention, still specialised the image height and width. The tracer exports in
seconds; the model code keeps shapes symbolic while it traces (`fusion.spatial_shapes_tensor`, no `int()` of
sizes in `fusion.flatten_levels`, the general offset read in `deformable_conv.reinterpret_offset`), and DyHead's
modulated deformable convolution exports through its `grid_sample` path (ONNX `GridSample`, opset >= 16) with its
weight as the right operand of the matmul (onnxruntime prepacks it, and [`quantize_int8`] covers it).

What the graph fixes at export (documented limits):

- Batches of several image sizes: [`Glipv2Model`] masks the padding a batch adds (`padding.py`, data-dependent
  Python); the graph computes the padded batch as the official GLIP code does (`mask_batch_padding = False`).
  Single images and batches of one padded size give the same outputs as PyTorch; for a mixed batch
  [`Glipv2OnnxModel`] warns (run such images one by one for identical results).
- transformers' Swin shrinks its attention window when a stage is not larger than the window (a Python branch);
  the graph has the regular windows, so both padded sides must exceed `32 x window_size` (GLIP-T: 224 pixels). The
  minimum is stored in the ONNX metadata and [`Glipv2OnnxModel`] refuses smaller inputs with an error.
- One prompt for several images is broadcast by [`Glipv2OnnxModel`] before the graph (the graph wants equal batches).

    model = Glipv2ForGrounding.from_pretrained(folder).eval()
    export_onnx(model, processor, "onnx/")                   # onnx/model.onnx + config + processor
    quantize_int8("onnx/model.onnx", "onnx/model_int8.onnx")  # linear layers -> int8 (dynamic quantization)
    onnx_model = Glipv2OnnxModel.from_pretrained("onnx/")     # or int8=True
    inputs = processor(images=image, text=["cat", "remote control"])
    results = processor.post_process_grounded_object_detection(onnx_model(**inputs), target_sizes=[(h, w)])
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy
import torch
from torch import nn

from .deformable_conv import Glipv2ModulatedDeformConv2d
from .modeling_glipv2_detection import Glipv2ForGrounding, Glipv2ForObjectDetection, Glipv2GroundingOutput
from .padding import own_padded_sizes

GROUNDING_INPUTS: tuple[str, ...] = ("pixel_values", "pixel_mask", "input_ids", "attention_mask", "token_type_ids")
GROUNDING_OUTPUTS: tuple[str, ...] = ("logits", "pred_boxes", "centerness", "spatial_shapes", "image_sizes")
DETECTION_INPUTS: tuple[str, ...] = ("pixel_values", "pixel_mask")
DETECTION_OUTPUTS: tuple[str, ...] = (*GROUNDING_OUTPUTS, "label_chunks")
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
# GridSample (the deformable convolution) needs opset 16; LayerNormalization is a single op from 17.
DEFAULT_OPSET = 17

_AXES = {
    "pixel_values": {0: "batch", 2: "height", 3: "width"},
    "pixel_mask": {0: "batch", 1: "height", 2: "width"},
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "token_type_ids": {0: "batch", 1: "sequence"},
    "logits": {0: "batch", 1: "anchors", 2: "sequence"},
    "pred_boxes": {0: "batch", 1: "anchors"},
    "centerness": {0: "batch", 1: "anchors"},
    "image_sizes": {0: "batch"},
}


class _GroundingGraph(nn.Module):
    """[`Glipv2ForGrounding`] with positional tensor inputs and a tuple of tensor outputs (what the tracer takes)."""

    def __init__(self, model: Glipv2ForGrounding) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        out = self.model(
            pixel_values=pixel_values,
            pixel_mask=pixel_mask,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
        )
        return tuple(out[name] for name in GROUNDING_OUTPUTS)


class _DetectionGraph(nn.Module):
    """[`Glipv2ForObjectDetection`]: pixels in, label logits, boxes and the label chunks out."""

    def __init__(self, model: Glipv2ForObjectDetection) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        return tuple(out[name] for name in DETECTION_OUTPUTS)


def minimum_image_side(config: Any) -> int:
    """The smallest padded image side the exported graph serves: `32 x window_size + 1` for a windowed backbone
    (Swin shrinks its window on smaller stages, a branch the graph cannot hold), else 1."""
    window = getattr(config.vision_config, "window_size", None)
    divisor = int(config.anchor_strides[2])
    return divisor * int(window) + 1 if window else 1


def _example_inputs(model: Glipv2ForGrounding, with_text: bool) -> tuple[torch.Tensor, ...]:
    """Batch 2, a non-square image above the minimum size, the second image partly padded and the second prompt
    padded: every traced branch is the general one (no batch-of-one or no-padding shortcuts)."""
    divisor = int(model.config.anchor_strides[2])
    side = max(4 * divisor, -(-minimum_image_side(model.config) // divisor) * divisor)
    height, width = side, side + divisor
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, height, width, generator=generator)
    pixel_mask = torch.ones(2, height, width, dtype=torch.long)
    pixel_mask[1, :, width - divisor // 2 :] = 0
    if not with_text:
        return pixel_values, pixel_mask
    input_ids = torch.randint(1000, 2000, (2, 8), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    return pixel_values, pixel_mask, input_ids, attention_mask, torch.zeros_like(input_ids)


@contextlib.contextmanager
def export_mode(model: Glipv2ForGrounding) -> Iterator[None]:
    """While exporting: eval mode, no gradients, the deformable convolution's `grid_sample` path (torchvision's
    kernel has no ONNX export) and the official padded-batch computation (the padding masks are data-dependent);
    everything is restored afterwards."""
    convs = [module for module in model.modules() if isinstance(module, Glipv2ModulatedDeformConv2d)]
    saved = [conv.use_torchvision for conv in convs]
    mask_padding, training = model.model.mask_batch_padding, model.training
    try:
        for conv in convs:
            conv.use_torchvision = False
        model.model.mask_batch_padding = False
        model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for conv, value in zip(convs, saved):
            conv.use_torchvision = value
        model.model.mask_batch_padding = mask_padding
        model.train(training)


def export_model(
    model: Glipv2ForGrounding, path: str | os.PathLike, opset: int = DEFAULT_OPSET, constant_folding: bool = True
) -> Path:
    """Exports `model` (a [`Glipv2ForObjectDetection`] as the closed-vocabulary graph, any other
    [`Glipv2ForGrounding`] as the grounding graph) to the ONNX file `path`, on the CPU, with dynamic axes; the task,
    input / output names and the minimum image side are stored in the file's metadata."""
    import onnx

    if not isinstance(model, Glipv2ForGrounding):
        raise TypeError(f"export_model takes a Glipv2ForGrounding or Glipv2ForObjectDetection, not {type(model)}.")
    closed = isinstance(model, Glipv2ForObjectDetection)
    if closed and not getattr(model.config, "detection_prompts", None):
        raise ValueError("This Glipv2ForObjectDetection has no vocabulary: call set_vocabulary(processor, labels).")
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("Export a model on the CPU (model.to('cpu')).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs, outputs = (DETECTION_INPUTS, DETECTION_OUTPUTS) if closed else (GROUNDING_INPUTS, GROUNDING_OUTPUTS)
    graph = _DetectionGraph(model) if closed else _GroundingGraph(model)
    axes = {name: _AXES[name] for name in (*inputs, *outputs) if name in _AXES}
    if closed:  # logits are per label (a fixed axis); with several chunks the anchors axis of the boxes moves
        axes["logits"] = {0: "batch", 1: "anchors"}
        if len(model.config.detection_prompts) > 1:
            axes["pred_boxes"] = axes["centerness"] = {0: "batch", 2: "anchors"}
    with export_mode(model):
        if closed:
            model._text_cache = None  # encoded inside the trace: a constant of the graph
        torch.onnx.export(
            graph,
            _example_inputs(model, with_text=not closed),
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=constant_folding,
            dynamo=False,
        )
        if closed:
            model._text_cache = None
    proto = onnx.load(str(path))
    metadata = {
        "glipv2_task": "detection" if closed else "grounding",
        "glipv2_inputs": json.dumps(list(inputs)),
        "glipv2_outputs": json.dumps(list(outputs)),
        "glipv2_min_image_side": str(minimum_image_side(model.config)),
        "glipv2_max_text_length": str(model.config.max_text_length),
        "glipv2_padding_divisor": str(model.model.padding_divisor),
    }
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))
    return path


def quantize_int8(source: str | os.PathLike, target: str | os.PathLike, activation_products: bool = False) -> Path:
    """Dynamic int8 quantization with onnxruntime of the linear layers: every `MatMul` / `Gemm` with a constant
    weight (the Swin, BERT and fusion projections, and DyHead's deformable convolutions, whose exported matmul takes
    the weight as its right operand); their inputs are quantized per call. `activation_products` also quantizes the
    products of two activations (the bi-attention's logits and weighted sums). Plain convolutions stay float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not Path(source).is_file():
        raise FileNotFoundError(f"No ONNX file at {source}: export the model first (scripts/export_onnx.py).")
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": not activation_products},
    )
    return Path(target)


def export_onnx(
    model: Glipv2ForGrounding,
    processor: Any,
    output_dir: str | os.PathLike,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    int8_activation_products: bool = False,
) -> dict[str, Path]:
    """`output_dir/model.onnx` (and with `int8` `model_int8.onnx`, see [`quantize_int8`]), the model's `config.json`
    and the processor's files: everything [`Glipv2OnnxModel.from_pretrained`] and `Glipv2Processor.from_pretrained`
    need."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {"onnx": export_model(model, output_dir / ONNX_FILE, opset=opset)}
    if int8:
        written["int8"] = quantize_int8(written["onnx"], output_dir / INT8_FILE, int8_activation_products)
    model.config.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    written["config"] = output_dir / "config.json"
    return written


def session_options(threads: int | None = None, optimization: str = "all") -> Any:
    """onnxruntime session options: `threads` intra-op threads (default: torch's), graph optimisation level
    `optimization` (`disable`, `basic`, `extended`, `all`)."""
    import onnxruntime

    levels = {
        "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {sorted(levels)}, got {optimization!r}.")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return options


def _cpu(value: Any) -> Any:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


class Glipv2OnnxModel:
    """An exported grounding or closed-vocabulary graph run by onnxruntime, called like the PyTorch model.

    `model(**processor(images=..., text=...))` returns a [`Glipv2GroundingOutput`] of torch tensors, which
    `processor.post_process_grounded_object_detection` (grounding) or
    `processor.image_processor.post_process_object_detection` (closed vocabulary) turn into detections exactly as
    for the PyTorch model's outputs.

    Args:
        path: the `.onnx` file.
        threads: intra-op threads (default: torch's number of threads).
        optimization: onnxruntime graph optimisation level (`disable`, `basic`, `extended`, `all`).
        providers: onnxruntime execution providers (default: the CPU).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        optimization: str = "all",
        providers: list[str] | None = None,
    ) -> None:
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No ONNX model at {path}: export one with `python scripts/export_onnx.py --model CHECKPOINT "
                f"--output-dir {path.parent}` (add --int8 for {INT8_FILE})."
            )
        self.path = path
        self.session = onnxruntime.InferenceSession(
            str(path), session_options(threads, optimization), providers=providers or ["CPUExecutionProvider"]
        )
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "glipv2_task" not in metadata:
            raise ValueError(f"{path} is not a glipv2 export (no glipv2 metadata); use scripts/export_onnx.py.")
        self.task = metadata["glipv2_task"]
        self.input_names = tuple(item.name for item in self.session.get_inputs())
        self.output_names = tuple(json.loads(metadata["glipv2_outputs"]))
        self.min_image_side = int(metadata["glipv2_min_image_side"])
        self.max_text_length = int(metadata["glipv2_max_text_length"])
        self.padding_divisor = int(metadata["glipv2_padding_divisor"])

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, int8: bool = False, **kwargs: Any) -> Glipv2OnnxModel:
        """The `model.onnx` (or with `int8` the `model_int8.onnx`) of an [`export_onnx`] folder."""
        return cls(Path(folder) / (INT8_FILE if int8 else ONNX_FILE), **kwargs)

    def _feed(self, inputs: Mapping[str, Any]) -> dict[str, numpy.ndarray]:
        """Checked numpy inputs of the graph: names, image sizes and prompt length; one prompt for several images
        is broadcast; missing `token_type_ids` are zeros (one text segment)."""
        arrays = {name: numpy.asarray(_cpu(value)) for name, value in inputs.items()}
        if self.task == "grounding" and "input_ids" in arrays and "token_type_ids" not in arrays:
            arrays["token_type_ids"] = numpy.zeros_like(arrays["input_ids"])
        unexpected = sorted(set(arrays) - set(self.input_names))
        missing = [name for name in self.input_names if name not in arrays]
        if unexpected or missing:
            raise ValueError(
                f"The {self.task} ONNX model {self.path.name} takes {list(self.input_names)}; missing {missing}, "
                f"unexpected {unexpected}. Pass the processor's output: "
                + ("processor(images=..., text=...)." if self.task == "grounding" else "processor(images=...).")
            )
        pixel_values = arrays["pixel_values"]
        if pixel_values.ndim != 4 or min(pixel_values.shape[-2:]) < self.min_image_side:
            raise ValueError(
                f"pixel_values of shape {pixel_values.shape}: the exported graph needs (B, 3, H, W) with H and W "
                f">= {self.min_image_side} (the backbone's attention window; see glipv2.onnx_export)."
            )
        batch = pixel_values.shape[0]
        if self.task == "grounding":
            if arrays["input_ids"].shape[-1] > self.max_text_length:
                raise ValueError(
                    f"The prompt has {arrays['input_ids'].shape[-1]} tokens, more than max_text_length="
                    f"{self.max_text_length}; split the labels with processor.build_prompts."
                )
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                if arrays[name].shape[0] == 1 and batch > 1:
                    arrays[name] = numpy.repeat(arrays[name], batch, axis=0)
        if batch > 1 and own_padded_sizes(torch.from_numpy(arrays["pixel_mask"]), self.padding_divisor) is not None:
            warnings.warn(
                "A batch of several image sizes: the ONNX graph computes it as the official GLIP code (the padding "
                "of a smaller image is seen by its convolutions and norms), unlike Glipv2ForGrounding; run the "
                "images one by one for identical outputs.",
                stacklevel=3,
            )
        dtypes = {item.name: item.type for item in self.session.get_inputs()}
        return {
            name: arrays[name].astype(numpy.float32 if dtypes[name] == "tensor(float)" else numpy.int64)
            for name in self.input_names
        }

    def __call__(self, **inputs: Any) -> Glipv2GroundingOutput:
        """`inputs`: the processor's `BatchFeature` (torch or numpy). Returns the model's output dataclass."""
        feed = self._feed(inputs)
        values = dict(zip(self.output_names, self.session.run(list(self.output_names), feed)))
        tensors = {name: torch.from_numpy(value) for name, value in values.items()}
        if self.task == "grounding":
            tensors["input_ids"] = torch.from_numpy(feed["input_ids"])
            tensors["text_attention_mask"] = torch.from_numpy(feed["attention_mask"])
        return Glipv2GroundingOutput(**tensors)


__all__ = [
    "DETECTION_INPUTS",
    "DETECTION_OUTPUTS",
    "GROUNDING_INPUTS",
    "GROUNDING_OUTPUTS",
    "Glipv2OnnxModel",
    "export_mode",
    "export_model",
    "export_onnx",
    "minimum_image_side",
    "quantize_int8",
    "session_options",
]
