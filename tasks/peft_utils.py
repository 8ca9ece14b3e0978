"""Parameter-efficient fine-tuning of GLIPv2 models: LoRA (through PEFT), GLIP-style prompt tuning, linear probing.

- [`prepare_model`]: freezes / wraps a model for one method (`lora`, `prompt`, `linear-probe`, `full`).
- LoRA: [`apply_lora`] with [`DEFAULT_LORA_TARGETS`] (fusion attention projections and text-encoder attention) and
  the task's head in `modules_to_save`; a target pattern that matches nothing fails with the module names that exist.
- Prompt tuning: [`Glipv2PromptTuning`], a learned `(max_text_length, text_hidden_size)` table added per position to
  the text embeddings (zero init, everything else frozen), saved as safetensors + a small JSON config
  ([`save_prompt_tuning`], [`load_prompt_tuning`]) and foldable into the position embeddings ([`merge_prompt_tuning`]).
- [`generate_shifted_shapes`]: a domain-shifted synthetic detection set (colours and shapes the demo never saw), in the
  `tasks.synthetic` layout, to show that fine-tuning helps.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import nn

from tasks.collators import DetectionCollator, load_rgb, xywh_to_xyxy
from tasks.common import write_json
from tasks.synthetic.scenes import SceneObject, describe, pair_name, sample_scene
from tasks.transforms import clean_category_name

METHODS = ("lora", "prompt", "linear-probe", "full")
# Full-match regex (PEFT's `target_modules` string form): VLFuse attention projections, the fusion text layer's
# self-attention, and the text encoder's (BERT) self-attention.
DEFAULT_LORA_TARGETS = (
    r".*\.(attn\.(vision|text)|self_attn)\.(q_proj|k_proj|v_proj|o_proj)"
    r"|.*\.text_model\.encoder\.layer\.\d+\.attention\.self\.(query|key|value)"
)
TASK_HEADS = {
    "detection": "grounding_head",
    "grounding": "grounding_head",
    "vqa": "vqa_head",
    "captioning": "caption_head",
}
PROMPT_WEIGHTS_NAME = "prompt_tuning.safetensors"
PROMPT_CONFIG_NAME = "prompt_tuning_config.json"
PROMPT_ATTRIBUTE = "prompt_tuning"


# ------------------------------------------------------------------------------------------------------ parameters
def count_parameters(model: nn.Module) -> tuple[int, int]:
    """`(trainable, total)` parameter counts (shared tensors counted once)."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total


def _is_head_parameter(name: str) -> bool:
    return any(part.endswith("_head") for part in name.split(".")[:-1])


def prepare_model(
    model: nn.Module,
    method: str,
    task: str = "detection",
    target_modules: str | list[str] | None = None,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
) -> nn.Module:
    """`model` set up for `method`: a `PeftModel` for `lora`; for the others the same model with only the intended
    parameters trainable (`prompt`: a table attached, see [`attach_prompt_tuning`]; `linear-probe`: `*_head.*`)."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    if method == "lora":
        return apply_lora(model, target_modules, lora_r, lora_alpha, lora_dropout, [task_head(task)])
    model.requires_grad_(method == "full")
    if method == "linear-probe":
        heads = [name for name, parameter in model.named_parameters() if _is_head_parameter(name)]
        if not heads:
            raise ValueError(f"{type(model).__name__} has no `*_head` module to probe.")
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(_is_head_parameter(name))
    elif method == "prompt":
        attach_prompt_tuning(model)
    return model


def task_head(task: str) -> str:
    """The head module a task trains (`grounding_head` for detection and grounding)."""
    if task not in TASK_HEADS:
        raise ValueError(f"Unknown task {task!r}; known: {sorted(TASK_HEADS)}.")
    return TASK_HEADS[task]


# ------------------------------------------------------------------------------------------------------------ LoRA
def parse_target_modules(spec: str | list[str] | None) -> str | list[str]:
    """`None` -> [`DEFAULT_LORA_TARGETS`]; `"a,b"` -> `["a", "b"]` (PEFT suffix match); another string is a regex
    that must match a module's full name."""
    if spec is None or spec == "":
        return DEFAULT_LORA_TARGETS
    if isinstance(spec, str) and "," in spec:
        return [part.strip() for part in spec.split(",") if part.strip()]
    return spec


def target_matches(name: str, targets: str | list[str]) -> bool:
    """Whether module `name` is a LoRA target, with PEFT's rules (regex full match, or suffix match for a list)."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == target or name.endswith("." + target) for target in targets)


def describe_modules(model: nn.Module, examples: int = 4) -> str:
    """A compact inventory of the Linear modules: each distinct leaf name with its count and up to `examples`
    distinct paths (layer indices shown as `*`), e.g. `q_proj (24): model.fusion.layers.*.vl_fuse.attn.vision.q_proj`.
    """
    by_leaf: dict[str, dict[str, None]] = {}
    counts: Counter = Counter()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            leaf = name.rsplit(".", 1)[-1]
            counts[leaf] += 1
            by_leaf.setdefault(leaf, {})[re.sub(r"(?<=\.)\d+(?=\.)", "*", name)] = None
    lines = []
    for leaf, paths in sorted(by_leaf.items()):
        shown = ", ".join(list(paths)[:examples]) + (", ..." if len(paths) > examples else "")
        lines.append(f"  {leaf} ({counts[leaf]}): {shown}")
    return "\n".join(lines)


def check_targets(model: nn.Module, targets: str | list[str]) -> list[str]:
    """The Linear modules `targets` selects; a ValueError listing the model's Linear modules when there are none."""
    matched = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and target_matches(name, targets)
    ]
    if not matched:
        raise ValueError(
            f"LoRA target_modules {targets!r} match no Linear module of {type(model).__name__}. Linear modules by "
            f"leaf name (count: examples):\n{describe_modules(model)}\nGive a regex matching full names (e.g. "
            r"'.*\.attn\.vision\.q_proj') or a comma-separated list of leaf names (e.g. 'q_proj,v_proj')."
        )
    return matched


def apply_lora(
    model: nn.Module,
    target_modules: str | list[str] | None = None,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    modules_to_save: list[str] | None = None,
) -> nn.Module:
    """Wraps `model` in a LoRA `PeftModel`: adapters on `target_modules`, `modules_to_save` trained in full."""
    from peft import LoraConfig, get_peft_model

    targets = parse_target_modules(target_modules)
    check_targets(model, targets)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=modules_to_save or ["grounding_head"],
    )
    return get_peft_model(model, config)


def inference_model(model: nn.Module) -> nn.Module:
    """The model that pipelines and `tasks.evaluation` call: a `PeftModel`'s base model (adapters live, unmerged),
    else `model` itself (a prompt-tuning table is already hooked in)."""
    model = getattr(model, "module", model)  # DDP
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) and hasattr(model, "peft_config") else model


def peft_task_loss(model: nn.Module, task: str, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """`tasks.multitask.task_loss` through a PEFT wrapper: the all-heads model is told which task a batch is."""
    if type(inference_model(model)).__name__ == "Glipv2ForPreTraining":
        outputs = model(task=task, **batch)
    else:
        outputs = model(**batch)
    return outputs.loss, dict(getattr(outputs, "loss_dict", None) or {})


# ------------------------------------------------------------------------------------------------- fixed prompts
class FixedPromptDetectionCollator(DetectionCollator):
    """Detection training with the evaluation prompt: every image gets all categories, in dataset order, joined as
    `detect_labels` joins them (GLIP's `DATASETS.DISABLE_SHUFFLE` for fine-tuning). A per-position prompt table then
    sees each class at the same token positions in training and evaluation. When the categories need several
    256-token chunks, images fall back to the sampled, shuffled prompts of [`DetectionCollator`] (never truncated).
    """

    def __init__(self, processor: Any, categories: Any, **kwargs: Any) -> None:
        super().__init__(processor, categories, **kwargs)
        names = [clean_category_name(name) for name in self.categories.values()]
        prompts = processor.build_prompts(names, max_length=self.max_length)
        self.prompt = prompts[0] if len(prompts) == 1 else None
        self.spans = dict(zip(self.categories, self.prompt.label_spans)) if self.prompt else {}

    def example(self, record: Any) -> tuple[Image.Image, str, dict[str, Any]]:
        """One record -> (augmented image, the fixed prompt, grounding target in that image's pixels)."""
        if self.prompt is None:
            return super().example(record)
        objects = record["objects"]
        crowd = objects.get("iscrowd") or [0] * len(objects["bbox"])
        kept = [index for index, is_crowd in enumerate(crowd) if not is_crowd]
        self.stats["crowd_boxes"] += len(crowd) - len(kept)
        boxes = xywh_to_xyxy([objects["bbox"][index] for index in kept])
        spans = [[list(self.spans[int(objects["category_id"][index])])] for index in kept]
        image, boxes, _, _ = self.augment(load_rgb(record["image"]), boxes, None, (), self.record_rng(record))
        return image, self.prompt.text, {"boxes": boxes, "spans": spans}


def fixed_prompt_source(task_data: Any, processor: Any, seed: int, data_recipe: dict[str, Any]) -> Any:
    """A detection `TaskSource` with [`FixedPromptDetectionCollator`] (scales as `tasks.multitask.build_sources`)."""
    from tasks.trainer import TaskSource

    kwargs: dict[str, Any] = {"train": True, "seed": seed}
    if "train_min_sizes" in data_recipe:
        kwargs.update(min_sizes=tuple(data_recipe["train_min_sizes"]), max_size=data_recipe.get("train_max_size"))
    if data_recipe.get("train_pad_size"):
        kwargs["pad_size"] = int(data_recipe["train_pad_size"])
    collator = FixedPromptDetectionCollator(processor, task_data.categories, **kwargs)
    return TaskSource(dataset=task_data.dataset, collator=collator)


# --------------------------------------------------------------------------------------------------- prompt tuning
def _position_embeddings(model: nn.Module) -> nn.Embedding:
    """The text encoder's absolute position-embedding table (`model.model.text_model.embeddings`)."""
    text_model = getattr(getattr(model, "model", None), "text_model", None)
    embedding = getattr(getattr(text_model, "embeddings", None), "position_embeddings", None)
    if not isinstance(embedding, nn.Embedding):
        raise ValueError(
            f"{type(model).__name__} has no `model.text_model.embeddings.position_embeddings` table: prompt tuning "
            "needs a text encoder with absolute position embeddings (BERT, RoBERTa)."
        )
    return embedding


class Glipv2PromptTuning(nn.Module):
    """GLIP's prompt tuning: a learned table `(num_positions, hidden_size)`, zero-initialised, whose row t is added
    to the text embedding of token position t (official GLIP: `tunable_linear`, zero-filled, its first T rows added
    per position). Here the rows join BERT's embedding sum (word + position + token type) before its LayerNorm,
    i.e. they add to the position embeddings; that makes the table foldable into the checkpoint exactly
    ([`merge_prompt_tuning`]). Official GLIP adds them to the text encoder's output instead.

    Attach it with [`attach_prompt_tuning`]: a forward hook on the position-embedding module adds `table[position]`.
    """

    def __init__(self, num_positions: int, hidden_size: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(num_positions, hidden_size))
        self._handle: Any = None

    def add_to(self, module: nn.Embedding, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        """Forward hook of the position embeddings: `output` `(..., T, D)` + the table rows of the positions."""
        position_ids = inputs[0]
        rows = torch.nn.functional.pad(self.table, (0, 0, 0, module.num_embeddings - self.table.shape[0]))
        return output + torch.nn.functional.embedding(position_ids, rows).to(output.dtype)

    def config(self) -> dict[str, Any]:
        """The JSON config saved beside the table."""
        return {
            "type": "glipv2_prompt_tuning",
            "num_positions": self.table.shape[0],
            "hidden_size": self.table.shape[1],
            "placement": "text_model.embeddings.position_embeddings",
        }


def attach_prompt_tuning(model: nn.Module, table: torch.Tensor | None = None) -> Glipv2PromptTuning:
    """Freezes nothing; adds a trainable [`Glipv2PromptTuning`] as `model.prompt_tuning` and hooks it into the text
    embeddings. `table` (default zeros) is `(rows, text_hidden_size)`, rows <= `config.max_text_length`."""
    if hasattr(model, PROMPT_ATTRIBUTE):
        raise ValueError("This model already has a prompt-tuning table; detach_prompt_tuning(model) first.")
    embedding = _position_embeddings(model)
    rows = model.config.max_text_length if table is None else table.shape[0]
    width = embedding.embedding_dim if table is None else table.shape[1]
    if rows > embedding.num_embeddings or width != embedding.embedding_dim:
        raise ValueError(
            f"A prompt table of shape ({rows}, {width}) does not fit position embeddings of shape "
            f"{tuple(embedding.weight.shape)}."
        )
    prompt = Glipv2PromptTuning(rows, embedding.embedding_dim).to(embedding.weight.device, embedding.weight.dtype)
    if table is not None:
        with torch.no_grad():
            prompt.table.copy_(table)
    prompt._handle = embedding.register_forward_hook(prompt.add_to)
    model.add_module(PROMPT_ATTRIBUTE, prompt)
    return prompt


def detach_prompt_tuning(model: nn.Module) -> Glipv2PromptTuning:
    """Removes the hook and the `prompt_tuning` submodule; returns the table module."""
    prompt = getattr(model, PROMPT_ATTRIBUTE, None)
    if not isinstance(prompt, Glipv2PromptTuning):
        raise ValueError("This model has no prompt-tuning table attached.")
    prompt._handle.remove()
    delattr(model, PROMPT_ATTRIBUTE)
    return prompt


def merge_prompt_tuning(model: nn.Module) -> nn.Module:
    """Folds the attached table into the position embeddings and detaches it: the model then needs no hook
    (`save_pretrained` gives a plain checkpoint) and computes the same outputs."""
    prompt = detach_prompt_tuning(model)
    embedding = _position_embeddings(model)
    with torch.no_grad():
        embedding.weight[: prompt.table.shape[0]] += prompt.table.to(embedding.weight.dtype)
    return model


def save_prompt_tuning(model: nn.Module, output_dir: str | os.PathLike) -> str:
    """Writes `prompt_tuning.safetensors` (the table; its config also in the metadata) and
    `prompt_tuning_config.json`; returns the weights' path."""
    from safetensors.torch import save_file

    prompt = getattr(model, PROMPT_ATTRIBUTE, None)
    if not isinstance(prompt, Glipv2PromptTuning):
        raise ValueError("This model has no prompt-tuning table attached.")
    os.makedirs(output_dir, exist_ok=True)
    config = prompt.config()
    path = os.path.join(output_dir, PROMPT_WEIGHTS_NAME)
    metadata = {"format": "pt", "config": json.dumps(config)}
    save_file({"table": prompt.table.detach().float().cpu().contiguous()}, path, metadata=metadata)
    write_json(os.path.join(output_dir, PROMPT_CONFIG_NAME), config)
    return path


def load_prompt_tuning(model: nn.Module, directory: str | os.PathLike) -> Glipv2PromptTuning:
    """Attaches the table saved in `directory` (by [`save_prompt_tuning`]) to `model`; returns it (frozen).

    In a pipeline: `load_prompt_tuning(model, "tuned/"); pipeline("open-vocabulary-detection", model=model, ...)`.
    """
    from safetensors import safe_open

    path = os.path.join(directory, PROMPT_WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory} has no {PROMPT_WEIGHTS_NAME} (written by save_prompt_tuning).")
    with safe_open(path, framework="pt") as handle:
        table = handle.get_tensor("table")
        config = json.loads((handle.metadata() or {}).get("config", "{}"))
    config_path = os.path.join(directory, PROMPT_CONFIG_NAME)
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as stream:
            config = json.load(stream)
    if config and list(table.shape) != [config["num_positions"], config["hidden_size"]]:
        raise ValueError(f"{path}: table shape {tuple(table.shape)} disagrees with its config {config}.")
    prompt = attach_prompt_tuning(model, table)
    prompt.requires_grad_(False)
    return prompt


# ------------------------------------------------------------------------------------------ domain-shifted shapes
SHIFTED_COLORS: dict[str, tuple[int, int, int]] = {
    "pink": (250, 120, 190),
    "cyan": (20, 200, 215),
    "brown": (135, 80, 35),
}
SHIFTED_SHAPES: tuple[str, ...] = ("diamond", "cross", "ring")
SHIFTED_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in SHIFTED_COLORS for s in SHIFTED_SHAPES)
SHIFTED_CATEGORIES = [{"id": i + 1, "name": pair_name(p), "supercategory": p[1]} for i, p in enumerate(SHIFTED_PAIRS)]


def draw_shifted_scene(objects: list[SceneObject], image_size: int, background: tuple[int, int, int]) -> Image.Image:
    """Renders diamonds, crosses and rings filling their boxes (pixels `x0..x1-1`, `y0..y1-1`)."""
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        right, bottom = x1 - 1, y1 - 1
        fill = SHIFTED_COLORS[obj.color]
        cx, cy, third = (x0 + right) / 2, (y0 + bottom) / 2, (x1 - x0) / 6
        if obj.shape == "diamond":
            draw.polygon([(cx, y0), (right, cy), (cx, bottom), (x0, cy)], fill=fill)
        elif obj.shape == "cross":
            draw.rectangle((cx - third, y0, cx + third, bottom), fill=fill)
            draw.rectangle((x0, cy - third, right, cy + third), fill=fill)
        else:
            draw.ellipse((x0, y0, right, bottom), outline=fill, width=max(2, (x1 - x0) // 6))
    return image


def generate_shifted_shapes(
    output_dir: str | os.PathLike,
    seed: int = 0,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int = 128,
    max_objects: int = 4,
) -> dict[str, Any]:
    """A detection + grounding set of pink/cyan/brown diamonds, crosses and rings on a darker background (none of
    them in `tasks.synthetic`), written in its layout: `images/<split>/`, `annotations/instances_<split>.json`,
    `annotations/grounding_<split>.json` for splits `train` and `val`. Deterministic in `seed`."""
    rng = random.Random(seed)
    background = (200, 205, 190)
    os.makedirs(os.path.join(output_dir, "annotations"), exist_ok=True)
    category_ids = {category["name"]: category["id"] for category in SHIFTED_CATEGORIES}
    next_id, counts = 1, Counter()
    for split, count in (("train", num_train), ("val", num_val)):
        os.makedirs(os.path.join(output_dir, "images", split), exist_ok=True)
        images, annotations, grounding_images = [], [], []
        for image_id in range(next_id, next_id + count):
            objects = sample_scene(rng, list(SHIFTED_PAIRS), image_size, max_objects)
            name = f"{image_id:06d}.png"
            draw_shifted_scene(objects, image_size, background).save(os.path.join(output_dir, "images", split, name))
            image = {"id": image_id, "file_name": name, "width": image_size, "height": image_size}
            caption, spans = describe(objects)
            images.append(image)
            grounding_images.append({**image, "caption": caption, "dataset_name": "shifted_shapes"})
            for index, (obj, span) in enumerate(zip(objects, spans)):
                x0, y0, x1, y1 = obj.box
                annotations.append(
                    {
                        "id": image_id * 10 + index,
                        "image_id": image_id,
                        "category_id": category_ids[obj.name],
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "area": float((x1 - x0) * (y1 - y0)),
                        "iscrowd": 0,
                        "tokens_positive": [list(span)],
                    }
                )
                counts[obj.name] += 1
        next_id += count
        instances = [{k: v for k, v in a.items() if k != "tokens_positive"} for a in annotations]
        base = {"info": {"description": f"domain-shifted shapes, split {split}"}, "categories": SHIFTED_CATEGORIES}
        write_json(
            os.path.join(output_dir, "annotations", f"instances_{split}.json"),
            {**base, "images": images, "annotations": instances},
        )
        write_json(
            os.path.join(output_dir, "annotations", f"grounding_{split}.json"),
            {**base, "images": grounding_images, "annotations": annotations},
        )
    return {"seed": seed, "categories": SHIFTED_CATEGORIES, "objects": dict(counts)}


__all__ = [
    "DEFAULT_LORA_TARGETS",
    "FixedPromptDetectionCollator",
    "METHODS",
    "SHIFTED_CATEGORIES",
    "Glipv2PromptTuning",
    "apply_lora",
    "attach_prompt_tuning",
    "check_targets",
    "count_parameters",
    "describe_modules",
    "detach_prompt_tuning",
    "fixed_prompt_source",
    "generate_shifted_shapes",
    "inference_model",
    "load_prompt_tuning",
    "merge_prompt_tuning",
    "parse_target_modules",
    "peft_task_loss",
    "prepare_model",
    "save_prompt_tuning",
    "task_head",
]
