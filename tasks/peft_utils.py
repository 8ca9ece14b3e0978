"""Parameter-efficient fine-tuning of GLIPv2 models: LoRA (through PEFT), GLIP-style prompt tuning, linear probing.

- [`prepare_model`]: freezes / wraps a model for one method (`lora`, `prompt`, `linear-probe`, `full`).
- LoRA: [`apply_lora`] with [`DEFAULT_LORA_TARGETS`] (fusion attention projections and text-encoder attention) and
  the task's head in `modules_to_save`; a target pattern that matches nothing fails with the module names that exist.
- Prompt tuning: [`Glipv2PromptTuning`], a learned `(max_text_length, text_hidden_size)` table added per position to
  the text embeddings (zero init, everything else frozen), saved as safetensors + a small JSON config
  ([`save_prompt_tuning`], [`load_prompt_tuning`]) and foldable into the position embeddings ([`merge_prompt_tuning`]).
- [`save_trained`] / [`merge_trained`]: what each method saves, and a plain checkpoint folded from an adapter.

A recipe's `peft` section selects the method (`tasks.recipe.PeftRecipe`); the task's spec names the head it trains.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import Any

import torch
from torch import nn

from tasks.common import write_json
from tasks.recipe import PEFT_METHODS, PeftRecipe

# Full-match regex (PEFT's `target_modules` string form): VLFuse attention projections, the fusion text layer's
# self-attention, and the text encoder's (BERT) self-attention.
DEFAULT_LORA_TARGETS = (
    r".*\.(attn\.(vision|text)|self_attn)\.(q_proj|k_proj|v_proj|o_proj)"
    r"|.*\.text_model\.encoder\.layer\.\d+\.attention\.self\.(query|key|value)"
)
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


def prepare_model(model: nn.Module, peft: PeftRecipe, heads: list[str]) -> nn.Module:
    """`model` set up for `peft.method`: a `PeftModel` for `lora` (adapters on `peft.target_modules`, the trained
    tasks' `heads` in `modules_to_save`); for the others the same model with only the intended parameters trainable
    (`prompt`: a table attached, see [`attach_prompt_tuning`]; `linear-probe`: `*_head.*`; `full`: everything)."""
    if peft.method not in PEFT_METHODS:
        raise ValueError(f"Unknown method {peft.method!r}; choose one of {PEFT_METHODS}.")
    if peft.method == "lora":
        return apply_lora(model, peft.target_modules, peft.lora_r, peft.lora_alpha, peft.lora_dropout, heads)
    model.requires_grad_(peft.method == "full")
    if peft.method == "linear-probe":
        if not any(_is_head_parameter(name) for name, _ in model.named_parameters()):
            raise ValueError(f"{type(model).__name__} has no `*_head` module to probe.")
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(_is_head_parameter(name))
    elif peft.method == "prompt":
        attach_prompt_tuning(model)
    return model


def save_trained(model: nn.Module, folder: str | os.PathLike, method: str = "full") -> None:
    """What a fine-tuning method saves: the adapter (`lora`: `adapter_model.safetensors` + `adapter_config.json`),
    the prompt table (`prompt`, [`save_prompt_tuning`]) or the whole model (`linear-probe`, `full`)."""
    if method == "prompt":
        save_prompt_tuning(model, folder)
    else:
        model.save_pretrained(folder)


def merge_trained(model: nn.Module, method: str) -> nn.Module:
    """A plain model with the method's weights folded in (`lora`: PEFT's `merge_and_unload`; `prompt`:
    [`merge_prompt_tuning`]); `linear-probe` and `full` models are returned as they are."""
    if method == "lora":
        return model.merge_and_unload()
    if method == "prompt":
        return merge_prompt_tuning(model)
    return model


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
        modules_to_save=list(modules_to_save or []),
    )
    return get_peft_model(model, config)


def inference_model(model: nn.Module) -> nn.Module:
    """The model under DDP (`.module`) and PEFT wrappers: a `PeftModel`'s base model (adapters live, unmerged), else
    `model` itself (a prompt-tuning table is already hooked in). Pipelines and evaluation call this one."""
    model = getattr(model, "module", model)  # DDP
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) and hasattr(model, "peft_config") else model


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


__all__ = [
    "DEFAULT_LORA_TARGETS",
    "Glipv2PromptTuning",
    "apply_lora",
    "attach_prompt_tuning",
    "check_targets",
    "count_parameters",
    "describe_modules",
    "detach_prompt_tuning",
    "inference_model",
    "load_prompt_tuning",
    "merge_prompt_tuning",
    "merge_trained",
    "parse_target_modules",
    "prepare_model",
    "save_prompt_tuning",
    "save_trained",
]
