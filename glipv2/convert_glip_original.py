"""Conversion of official GLIP checkpoints (`microsoft/GLIP`, Hub repo `GLIPModel/GLIP`) to this library's layout.

The checkpoint is read with `torch.load(weights_only=True)`: a file that needs arbitrary unpickling is refused.
Its `model` entry is taken and DDP's `module.` prefix stripped; every key then goes through ONE ordered regex table
(`KEY_RULES`): the first rule that matches either maps it (possibly splitting Swin's fused `qkv` into
`q_proj/k_proj/v_proj`) or ignores it (`IGNORED`, each with its reason). A key no rule matches, a model key left
unfilled, or a shape mismatch stops the conversion with the full list.

Tensors of our layout that the official model does not have (`SYNTHESIZED`): transformers' `SwinModel` final
`swin.layernorm`, which `SwinBackbone.forward` never applies (its feature maps go through `hidden_states_norms`);
it is set to the identity (weight 1, bias 0) so the checkpoint loads with no missing key.

Any size converts: a named variant ([`VARIANTS`]), or any `Glipv2Config` (a preset with overrides, or a config
file) whose sizes match the checkpoint's. `scripts/convert_glip_original_checkpoint.py` is the command line.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.initialization import no_init_weights

from .configuration_glipv2 import Glipv2Config
from .image_processing_glipv2 import Glipv2ImageProcessor
from .modeling_glipv2_detection import Glipv2ForGrounding
from .processing_glipv2 import Glipv2Processor

logger = logging.getLogger(__name__)

# Variant -> (Glipv2Config preset, overrides). GLIP-T (A): EARLY_FUSE_ON False in glip_A_Swin_T_O365.yaml.
VARIANTS: dict[str, tuple[str, dict]] = {
    "glip-tiny-o365": ("glip-tiny", {}),
    "glip-tiny-o365-goldg": ("glip-tiny", {}),
    "glip-tiny-o365-goldg-cc-sbu": ("glip-tiny", {}),
    "glip-a-tiny-o365": ("glip-tiny", {"use_early_fusion": False}),
    "glip-large": ("glip-large", {}),
}

_TOWER = r"rpn\.head\.dyhead_tower\.(?P<n>\d+)"
_LAYER = "model.fusion.layers.{layer}"
_SWIN = "model.vision_backbone.swin"

# Official keys that have no place in our model, with the reason. They are matched before the mapping rules.
IGNORED: list[tuple[str, str]] = [
    (r"\.relative_position_index$", "buffer recomputed from the window size (non-persistent in transformers)"),
    (r"^language_backbone\.body\.model\.embeddings\.position_ids$", "buffer: arange(512), non-persistent today"),
    (r"^language_backbone\.body\.model\.embeddings\.token_type_ids$", "buffer: zeros, non-persistent today"),
    (r"^language_backbone\.body\.model\.pooler\.", "BERT pooler: unused (official add_pooling_layer=False)"),
    (r"^rpn\.head\.cls_logits\.", "closed-set classifier: unused by the dot-product (grounding) head"),
    (r"^rpn\.anchor_generator\.cell_anchors\.\d+$", "buffer: anchors are computed from config.anchor_strides"),
]

# (official-key regex, target template(s)). Targets use the regex's named groups; `{layer}` is the fusion layer of
# the dyhead_tower entry `n`. Two or three targets split the tensor in equal chunks along dim 0 (fused qkv).
KEY_RULES: list[tuple[str, str | tuple[str, ...]]] = [
    # --- Swin (swint.py) -> transformers SwinBackbone
    (
        r"^backbone\.body\.patch_embed\.proj\.(?P<p>weight|bias)$",
        _SWIN + ".embeddings.patch_embeddings.projection.{p}",
    ),
    (r"^backbone\.body\.patch_embed\.norm\.(?P<p>weight|bias)$", _SWIN + ".embeddings.norm.{p}"),
    (
        r"^backbone\.body\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attn\.qkv\.(?P<p>weight|bias)$",
        tuple(_SWIN + ".encoder.layers.{s}.blocks.{b}.attention." + n + "_proj.{p}" for n in "qkv"),
    ),
    (
        r"^backbone\.body\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attn\.proj\.(?P<p>weight|bias)$",
        _SWIN + ".encoder.layers.{s}.blocks.{b}.attention.o_proj.{p}",
    ),
    (
        r"^backbone\.body\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attn\.relative_position_bias_table$",
        _SWIN + ".encoder.layers.{s}.blocks.{b}.attention.relative_position_bias.relative_position_bias_table",
    ),
    (
        r"^backbone\.body\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.norm1\.(?P<p>weight|bias)$",
        _SWIN + ".encoder.layers.{s}.blocks.{b}.layernorm_before.{p}",
    ),
    (
        r"^backbone\.body\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.norm2\.(?P<p>weight|bias)$",
        _SWIN + ".encoder.layers.{s}.blocks.{b}.layernorm_after.{p}",
    ),
    (
        r"^backbone\.body\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.mlp\.(?P<fc>fc1|fc2)\.(?P<p>weight|bias)$",
        _SWIN + ".encoder.layers.{s}.blocks.{b}.mlp.{fc}.{p}",
    ),
    (
        r"^backbone\.body\.layers\.(?P<s>\d+)\.downsample\.(?P<m>reduction|norm)\.(?P<p>weight|bias)$",
        _SWIN + ".encoder.layers.{s}.downsample.{m}.{p}",
    ),
    # Official norm{i} normalises Swin layer i's output = transformers "stage{i+1}" (norm0 is nn.Identity).
    (r"^backbone\.body\.norm1\.(?P<p>weight|bias)$", "model.vision_backbone.hidden_states_norms.stage2.{p}"),
    (r"^backbone\.body\.norm2\.(?P<p>weight|bias)$", "model.vision_backbone.hidden_states_norms.stage3.{p}"),
    (r"^backbone\.body\.norm3\.(?P<p>weight|bias)$", "model.vision_backbone.hidden_states_norms.stage4.{p}"),
    # --- FPN: fpn_inner/layer{2,3,4} are the strides 8/16/32 levels
    (r"^backbone\.fpn\.fpn_inner2\.(?P<p>weight|bias)$", "model.fpn.lateral_convs.0.{p}"),
    (r"^backbone\.fpn\.fpn_inner3\.(?P<p>weight|bias)$", "model.fpn.lateral_convs.1.{p}"),
    (r"^backbone\.fpn\.fpn_inner4\.(?P<p>weight|bias)$", "model.fpn.lateral_convs.2.{p}"),
    (r"^backbone\.fpn\.fpn_layer2\.(?P<p>weight|bias)$", "model.fpn.output_convs.0.{p}"),
    (r"^backbone\.fpn\.fpn_layer3\.(?P<p>weight|bias)$", "model.fpn.output_convs.1.{p}"),
    (r"^backbone\.fpn\.fpn_layer4\.(?P<p>weight|bias)$", "model.fpn.output_convs.2.{p}"),
    (r"^backbone\.fpn\.top_blocks\.p6\.(?P<p>weight|bias)$", "model.fpn.extra_convs.0.{p}"),
    (r"^backbone\.fpn\.top_blocks\.p7\.(?P<p>weight|bias)$", "model.fpn.extra_convs.1.{p}"),
    # --- BERT: same module names as transformers' BertModel
    (r"^language_backbone\.body\.model\.(?P<rest>(embeddings|encoder)\..+)$", "model.text_model.{rest}"),
    # --- dyhead_tower: VLFuse (b_attn = BiAttentionBlockForCheckpoint)
    (_TOWER + r"\.b_attn\.layer_norm_v\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.vision_layer_norm.{p}"),
    (_TOWER + r"\.b_attn\.layer_norm_l\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.text_layer_norm.{p}"),
    (_TOWER + r"\.b_attn\.gamma_v$", _LAYER + ".vl_fuse.vision_layer_scale"),
    (_TOWER + r"\.b_attn\.gamma_l$", _LAYER + ".vl_fuse.text_layer_scale"),
    (_TOWER + r"\.b_attn\.attn\.v_proj\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.attn.vision.q_proj.{p}"),
    (_TOWER + r"\.b_attn\.attn\.values_v_proj\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.attn.vision.v_proj.{p}"),
    (_TOWER + r"\.b_attn\.attn\.out_v_proj\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.attn.vision.o_proj.{p}"),
    (_TOWER + r"\.b_attn\.attn\.l_proj\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.attn.text.k_proj.{p}"),
    (_TOWER + r"\.b_attn\.attn\.values_l_proj\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.attn.text.v_proj.{p}"),
    (_TOWER + r"\.b_attn\.attn\.out_l_proj\.(?P<p>weight|bias)$", _LAYER + ".vl_fuse.attn.text.o_proj.{p}"),
    # --- dyhead_tower: BertEncoderLayer (post-norm BERT layer)
    (_TOWER + r"\.attention\.self\.query\.(?P<p>weight|bias)$", _LAYER + ".text_layer.self_attn.q_proj.{p}"),
    (_TOWER + r"\.attention\.self\.key\.(?P<p>weight|bias)$", _LAYER + ".text_layer.self_attn.k_proj.{p}"),
    (_TOWER + r"\.attention\.self\.value\.(?P<p>weight|bias)$", _LAYER + ".text_layer.self_attn.v_proj.{p}"),
    (_TOWER + r"\.attention\.output\.dense\.(?P<p>weight|bias)$", _LAYER + ".text_layer.self_attn.o_proj.{p}"),
    (_TOWER + r"\.attention\.output\.LayerNorm\.(?P<p>weight|bias)$", _LAYER + ".text_layer.self_attn_layer_norm.{p}"),
    (_TOWER + r"\.intermediate\.dense\.(?P<p>weight|bias)$", _LAYER + ".text_layer.fc1.{p}"),
    (_TOWER + r"\.output\.dense\.(?P<p>weight|bias)$", _LAYER + ".text_layer.fc2.{p}"),
    (_TOWER + r"\.output\.LayerNorm\.(?P<p>weight|bias)$", _LAYER + ".text_layer.final_layer_norm.{p}"),
    # --- dyhead_tower: DyConv. DyConv[0] runs on the coarser level, [1] on the same, [2] (stride 2) on the finer.
    (_TOWER + r"\.DyConv\.0\.conv\.(?P<p>weight|bias)$", _LAYER + ".dyhead.coarser_conv.conv.{p}"),
    (_TOWER + r"\.DyConv\.1\.conv\.(?P<p>weight|bias)$", _LAYER + ".dyhead.same_conv.conv.{p}"),
    (_TOWER + r"\.DyConv\.2\.conv\.(?P<p>weight|bias)$", _LAYER + ".dyhead.finer_conv.conv.{p}"),
    (_TOWER + r"\.DyConv\.0\.bn\.(?P<p>weight|bias)$", _LAYER + ".dyhead.coarser_conv.norm.{p}"),
    (_TOWER + r"\.DyConv\.1\.bn\.(?P<p>weight|bias)$", _LAYER + ".dyhead.same_conv.norm.{p}"),
    (_TOWER + r"\.DyConv\.2\.bn\.(?P<p>weight|bias)$", _LAYER + ".dyhead.finer_conv.norm.{p}"),
    (_TOWER + r"\.AttnConv\.1\.(?P<p>weight|bias)$", _LAYER + ".dyhead.scale_attention.1.{p}"),
    (_TOWER + r"\.relu\.fc\.(?P<i>0|2)\.(?P<p>weight|bias)$", _LAYER + ".dyhead.activation.fc.{i}.{p}"),
    (_TOWER + r"\.offset\.(?P<p>weight|bias)$", _LAYER + ".dyhead.offset.{p}"),
    # --- head (VLDyHead's dot-product branch)
    (r"^rpn\.head\.(?P<m>bbox_pred|centerness)\.(?P<p>weight|bias)$", "grounding_head.{m}.{p}"),
    (r"^rpn\.head\.scales\.(?P<l>\d+)\.scale$", "grounding_head.scales.{l}.scale"),
    (r"^rpn\.head\.dot_product_projection_text\.(?P<p>weight|bias)$", "grounding_head.text_projection.{p}"),
    (r"^rpn\.head\.(?P<m>log_scale|bias_lang|bias0)$", "grounding_head.{m}"),
]

# Model keys with no official counterpart, and the value they get (see the module docstring).
SYNTHESIZED: dict[str, Callable[[torch.Size], torch.Tensor]] = {
    _SWIN + ".layernorm.weight": torch.ones,
    _SWIN + ".layernorm.bias": torch.zeros,
}

_COMPILED_IGNORED = [(re.compile(pattern), reason) for pattern, reason in IGNORED]
_COMPILED_RULES = [(re.compile(pattern), target) for pattern, target in KEY_RULES]


@dataclass
class ConversionResult:
    """Converted tensors plus the bookkeeping of every official key."""

    state_dict: dict[str, torch.Tensor]
    ignored: dict[str, str]
    unmapped: list[str]


def tower_layer(index: int, module: str, use_early_fusion: bool) -> int:
    """Fusion layer of `dyhead_tower.<index>`, checking that the sub-module sits where `VLDyHead` puts it.

    With early fusion each layer appends (VLFuse, BertEncoderLayer, DyConv); without it only DyConv.
    """
    if not use_early_fusion:
        if module != "dyconv":
            raise ValueError(f"dyhead_tower.{index} holds a {module} but the variant has no early fusion.")
        return index
    expected = {"vlfuse": 0, "bert": 1, "dyconv": 2}[module]
    if index % 3 != expected:
        raise ValueError(f"dyhead_tower.{index} holds a {module}, expected at positions {expected} mod 3.")
    return index // 3


def _tower_module(target: str) -> str:
    return "vlfuse" if ".vl_fuse." in target else "bert" if ".text_layer." in target else "dyconv"


def map_official_key(key: str, use_early_fusion: bool) -> tuple[str, ...] | str | None:
    """Target key(s) of an official key (without `module.`): a tuple for a split tensor, a reason string when the
    key is ignored, `None` when no rule matches."""
    for pattern, reason in _COMPILED_IGNORED:
        if pattern.search(key):
            return reason
    for pattern, target in _COMPILED_RULES:
        match = pattern.match(key)
        if match is None:
            continue
        groups = match.groupdict()
        targets = target if isinstance(target, tuple) else (target,)
        if "n" in groups:
            groups["layer"] = tower_layer(int(groups.pop("n")), _tower_module(targets[0]), use_early_fusion)
        return tuple(t.format(**groups) for t in targets)
    return None


def map_official_state_dict(official: dict[str, torch.Tensor], use_early_fusion: bool = True) -> ConversionResult:
    """Renames (and splits) every official tensor; records ignored and unmapped keys without raising."""
    state_dict: dict[str, torch.Tensor] = {}
    ignored: dict[str, str] = {}
    unmapped: list[str] = []
    for key, tensor in official.items():
        mapped = map_official_key(key, use_early_fusion)
        if mapped is None:
            unmapped.append(key)
        elif isinstance(mapped, str):
            ignored[key] = mapped
        elif len(mapped) == 1:
            state_dict[mapped[0]] = tensor
        else:  # fused qkv: rows are [q; k; v] (swint.WindowAttention: qkv(x).reshape(B, N, 3, heads, C // heads))
            for target, chunk in zip(mapped, tensor.chunk(len(mapped), dim=0)):
                state_dict[target] = chunk.contiguous()
    return ConversionResult(state_dict, ignored, unmapped)


def convert_state_dict(
    official: dict[str, torch.Tensor], expected_shapes: dict[str, torch.Size], use_early_fusion: bool = True
) -> dict[str, torch.Tensor]:
    """Full conversion against the target model's keys and shapes; raises listing every problem."""
    result = map_official_state_dict(official, use_early_fusion)
    state_dict = result.state_dict
    for key, make in SYNTHESIZED.items():
        if key in expected_shapes and key not in state_dict:
            state_dict[key] = make(expected_shapes[key])
    problems = [f"unmapped official key: {key}" for key in result.unmapped]
    problems += [f"model key left unfilled: {key}" for key in expected_shapes if key not in state_dict]
    problems += [f"converted key unknown to the model: {key}" for key in state_dict if key not in expected_shapes]
    problems += [
        f"shape mismatch for {key}: official {tuple(tensor.shape)} vs model {tuple(expected_shapes[key])}"
        for key, tensor in state_dict.items()
        if key in expected_shapes and tuple(tensor.shape) != tuple(expected_shapes[key])
    ]
    if problems:
        raise ValueError(f"{len(problems)} problem(s) converting the checkpoint:\n  " + "\n  ".join(problems))
    for reason in sorted(set(result.ignored.values())):
        count = sum(value == reason for value in result.ignored.values())
        logger.info("ignored %d official key(s): %s", count, reason)
    return state_dict


def load_official_state_dict(path: str) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)`, the `model` entry, `module.` stripped."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True): it holds objects that need arbitrary "
            "unpickling, which this converter refuses. If you trust the file, re-save only its tensors elsewhere: "
            "torch.save({'model': torch.load(path, weights_only=False)['model']}, 'clean.pth').\n"
            f"Original error: {error}"
        ) from error
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict (or a dict with a 'model' state dict).")
    return {key.removeprefix("module."): tensor for key, tensor in checkpoint.items()}


def build_config(
    variant: str | None = None,
    config_file: str | os.PathLike | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Glipv2Config:
    """The `Glipv2Config` of the checkpoint: a named `variant`, a `config_file` (a `config.json`, or a folder
    holding one) or a `preset`; `overrides` (e.g. `{"num_fusion_layers": 2}`, a dict for a sub-config) on top."""
    given = [name for name, value in (("variant", variant), ("config_file", config_file), ("preset", preset)) if value]
    if len(given) != 1:
        raise ValueError(f"Give exactly one of variant, config_file or preset (got {given or 'none'}).")
    overrides = dict(overrides or {})
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"Unknown variant {variant!r}; variants: {sorted(VARIANTS)}.")
        preset, variant_overrides = VARIANTS[variant]
        return Glipv2Config.from_preset(preset, **{**variant_overrides, **overrides})
    if preset is not None:
        return Glipv2Config.from_preset(preset, **overrides)
    path = os.path.join(config_file, "config.json") if os.path.isdir(config_file) else config_file
    if not os.path.isfile(path):
        raise ValueError(f"Config file {path} does not exist.")
    config = Glipv2Config.from_json_file(path)
    for key, value in overrides.items():
        current = getattr(config, key, None)
        if isinstance(value, dict) and hasattr(current, "to_dict"):
            value = type(current)(**{**current.to_dict(), **value})
        setattr(config, key, value)
    config.validate_architecture()
    return config


def build_processor(tokenizer_path: str) -> Glipv2Processor:
    """`Glipv2Processor` with GLIP's image defaults and a bert-base-uncased tokenizer (`vocab.txt` or its folder)."""
    from transformers import BertTokenizer

    vocab = tokenizer_path if os.path.isfile(tokenizer_path) else os.path.join(tokenizer_path, "vocab.txt")
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=256)
    return Glipv2Processor(image_processor=Glipv2ImageProcessor(), tokenizer=tokenizer)


def convert_checkpoint(checkpoint: str, config: Glipv2Config | str) -> Glipv2ForGrounding:
    """Loads, converts and returns a `Glipv2ForGrounding` holding the official weights (`config`: a
    `Glipv2Config` or a variant name, see [`build_config`])."""
    config = build_config(config) if isinstance(config, str) else config
    official = load_official_state_dict(checkpoint)
    with no_init_weights():  # every tensor is overwritten below
        model = Glipv2ForGrounding(config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    state_dict = convert_state_dict(official, expected, config.use_early_fusion)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


__all__ = [
    "IGNORED",
    "KEY_RULES",
    "SYNTHESIZED",
    "VARIANTS",
    "build_config",
    "build_processor",
    "convert_checkpoint",
    "convert_state_dict",
    "load_official_state_dict",
    "map_official_key",
    "map_official_state_dict",
]
