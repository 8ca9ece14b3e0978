"""Write the key manifests of the official GLIP checkpoints: state-dict key -> shape, derived from the official code.

    python tests/official_glip_keys.py [--output-dir tests/data/glip_key_manifests]

`maskrcnn_benchmark` cannot be imported here (CUDA extensions, old transformers), so this file re-declares, module
by module, the parameter and buffer names and shapes that the official modules register, from the official config
values (`configs/pretrain/*.yaml` over `maskrcnn_benchmark/config/defaults.py`). Sources, all in `microsoft/GLIP`:

- `modeling/detector/generalized_vl_rcnn.py`: `GeneralizedVLRCNN` = `backbone` (`body` + `fpn`), `language_backbone`
  (`body.model` = `BertModel(add_pooling_layer=False)`) and `rpn` (`VLDyHeadModule`: `head` + `anchor_generator`);
  `RPN_ONLY: True` so there are no ROI heads. The training script wraps it in DDP: every key starts with `module.`.
- `modeling/backbone/swint.py` (`SWINT.VERSION` "v1"): `patch_embed`, `layers.{s}.blocks.{b}` (`norm1`, `attn.qkv`
  fused, `attn.proj`, `attn.relative_position_bias_table`, buffer `attn.relative_position_index`, `norm2`,
  `mlp.fc1/fc2`), `layers.{s}.downsample` (`reduction`, `norm`) for s < 3, and one output norm `norm{i}` per stage
  in `OUT_FEATURES` (default stage2..stage5), except `norm0`, an `nn.Identity` for `*-RETINANET` bodies.
- `modeling/backbone/fpn.py` + `backbone/__init__.py` (`SWINT-FPN-RETINANET`): `fpn_inner{2,3,4}` (1x1) and
  `fpn_layer{2,3,4}` (3x3) on the last three Swin stages (`in_channels_list = [0, C2, C3, C4]`, index 1 skipped),
  plain biased convs (`conv_with_kaiming_uniform`, `USE_GN` False); `top_blocks.p6/p7` (`LastLevelP6P7`).
- `modeling/rpn/vldyhead.py` (`VLDyHead`): `dyhead_tower` is an `nn.Sequential`; per fusion layer i it appends
  `VLFuse` (`b_attn` = `fuse_helper.BiAttentionBlockForCheckpoint`), then `BertEncoderLayer` (or a parameter-less
  `DummyLayer` for the last layer when `USE_FUSED_FEATURES_DOT_PRODUCT` is off), then `DyConv`; with
  `EARLY_FUSE_ON` False only the `DyConv`. `DyConv` holds `DyConv.{0,1,2}` (`Conv3x3Norm`: `conv` =
  `ModulatedDeformConv` weight+bias, `bn` = GroupNorm), `AttnConv.1`, `relu.fc.{0,2}` (`DYReLU`, reduction 4, K2
  with bias: 4x channels out) and `offset` (27 channels). Head: `cls_logits` (NUM_CLASSES - 1 = 80 outputs, unused
  by the dot-product head), `bbox_pred`, `centerness`, `scales.{0..4}.scale`, `dot_product_projection_text`,
  `log_scale`, `bias_lang`, `bias0`. `anchor_generator.cell_anchors.{l}` are buffers (`BufferList`), (1, 4) each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

Shapes = dict[str, list[int]]

# Buffers that hold integers in the official modules (the rest are float tensors).
INTEGER_BUFFER_SUFFIXES = ("relative_position_index", "position_ids")


@dataclass(frozen=True)
class OfficialGlipSpec:
    """The official config values that decide the checkpoint's keys and shapes (names as in `defaults.py`)."""

    swint_embed_dim: int = 96  # MODEL.SWINT.EMBED_DIM
    swint_depths: tuple[int, ...] = (2, 2, 6, 2)  # MODEL.SWINT.DEPTHS
    swint_num_heads: tuple[int, ...] = (3, 6, 12, 24)  # MODEL.SWINT.NUM_HEADS
    swint_window_size: int = 7  # MODEL.SWINT.WINDOW_SIZE
    swint_mlp_ratio: int = 4  # MODEL.SWINT.MLP_RATIO
    out_features: tuple[str, ...] = ("stage2", "stage3", "stage4", "stage5")  # MODEL.BACKBONE.OUT_FEATURES
    fpn_channels: int = 256  # MODEL.BACKBONE.OUT_CHANNELS
    dyhead_channels: int = 256  # MODEL.DYHEAD.CHANNELS
    num_convs: int = 6  # MODEL.DYHEAD.NUM_CONVS
    early_fuse_on: bool = True  # FUSE_CONFIG.EARLY_FUSE_ON
    use_fused_features_dot_product: bool = True  # FUSE_CONFIG.USE_FUSED_FEATURES_DOT_PRODUCT
    fusion_embed_dim: int = 2048  # VLFuse.embed_dim (hard-coded)
    num_classes: int = 81  # MODEL.DYHEAD.NUM_CLASSES (cls_logits has NUM_CLASSES - 1 outputs)
    num_levels: int = 5  # len(MODEL.RPN.ANCHOR_STRIDE)
    # bert-base-uncased (BertConfig.from_pretrained("bert-base-uncased")); LANG_DIM = hidden_size.
    bert: dict = field(
        default_factory=lambda: {
            "vocab_size": 30522,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        }
    )

    @property
    def swint_out_channels(self) -> list[int]:
        """MODEL.SWINT.OUT_CHANNELS: embed_dim * 2**i per stage."""
        return [self.swint_embed_dim * 2**i for i in range(len(self.swint_depths))]


SWIN_L = {"swint_embed_dim": 192, "swint_depths": (2, 2, 18, 2), "swint_num_heads": (6, 12, 24, 48)}

# Variant -> (official config file, its values). The O365+GoldG+CC+SBU model uses the O365+GoldG config.
VARIANTS: dict[str, tuple[str, OfficialGlipSpec]] = {
    "glip-tiny-o365": ("configs/pretrain/glip_Swin_T_O365.yaml", OfficialGlipSpec()),
    "glip-tiny-o365-goldg": ("configs/pretrain/glip_Swin_T_O365_GoldG.yaml", OfficialGlipSpec()),
    "glip-tiny-o365-goldg-cc-sbu": ("configs/pretrain/glip_Swin_T_O365_GoldG.yaml", OfficialGlipSpec()),
    "glip-a-tiny-o365": (
        "configs/pretrain/glip_A_Swin_T_O365.yaml",
        OfficialGlipSpec(early_fuse_on=False, use_fused_features_dot_product=False),
    ),
    "glip-large": ("configs/pretrain/glip_Swin_L.yaml", OfficialGlipSpec(**SWIN_L, swint_window_size=12, num_convs=8)),
}


def _linear(shapes: Shapes, prefix: str, in_features: int, out_features: int, bias: bool = True) -> None:
    shapes[f"{prefix}.weight"] = [out_features, in_features]
    if bias:
        shapes[f"{prefix}.bias"] = [out_features]


def _norm(shapes: Shapes, prefix: str, channels: int) -> None:
    shapes[f"{prefix}.weight"] = [channels]
    shapes[f"{prefix}.bias"] = [channels]


def _conv(shapes: Shapes, prefix: str, in_channels: int, out_channels: int, kernel: int) -> None:
    shapes[f"{prefix}.weight"] = [out_channels, in_channels, kernel, kernel]
    shapes[f"{prefix}.bias"] = [out_channels]


def swin_shapes(spec: OfficialGlipSpec, prefix: str = "backbone.body") -> Shapes:
    """`swint.SwinTransformer` (v1, patch 4, qkv_bias, patch_norm, no APE)."""
    shapes: Shapes = {}
    dim, window = spec.swint_embed_dim, spec.swint_window_size
    _conv(shapes, f"{prefix}.patch_embed.proj", 3, dim, 4)
    _norm(shapes, f"{prefix}.patch_embed.norm", dim)
    for stage, (depth, heads) in enumerate(zip(spec.swint_depths, spec.swint_num_heads)):
        width = dim * 2**stage
        for block in range(depth):
            base = f"{prefix}.layers.{stage}.blocks.{block}"
            _norm(shapes, f"{base}.norm1", width)
            shapes[f"{base}.attn.relative_position_bias_table"] = [(2 * window - 1) ** 2, heads]
            shapes[f"{base}.attn.relative_position_index"] = [window * window, window * window]
            _linear(shapes, f"{base}.attn.qkv", width, 3 * width)
            _linear(shapes, f"{base}.attn.proj", width, width)
            _norm(shapes, f"{base}.norm2", width)
            _linear(shapes, f"{base}.mlp.fc1", width, spec.swint_mlp_ratio * width)
            _linear(shapes, f"{base}.mlp.fc2", spec.swint_mlp_ratio * width, width)
        if stage < len(spec.swint_depths) - 1:
            _linear(shapes, f"{prefix}.layers.{stage}.downsample.reduction", 4 * width, 2 * width, bias=False)
            _norm(shapes, f"{prefix}.layers.{stage}.downsample.norm", 4 * width)
    for stage, width in enumerate(spec.swint_out_channels):
        if f"stage{stage + 2}" in spec.out_features and stage > 0:  # norm0 is nn.Identity for RETINANET bodies
            _norm(shapes, f"{prefix}.norm{stage}", width)
    return shapes


def fpn_shapes(spec: OfficialGlipSpec, prefix: str = "backbone.fpn") -> Shapes:
    """`fpn.FPN` on the last three Swin stages + `LastLevelP6P7` (fed P5: in_channels == out_channels)."""
    shapes: Shapes = {}
    out = spec.fpn_channels
    for index, in_channels in enumerate(spec.swint_out_channels[-3:], start=2):
        _conv(shapes, f"{prefix}.fpn_inner{index}", in_channels, out, 1)
        _conv(shapes, f"{prefix}.fpn_layer{index}", out, out, 3)
    _conv(shapes, f"{prefix}.top_blocks.p6", out, out, 3)
    _conv(shapes, f"{prefix}.top_blocks.p7", out, out, 3)
    return shapes


def _bert_layer_shapes(shapes: Shapes, prefix: str, hidden: int, intermediate: int) -> None:
    for name in ("query", "key", "value"):
        _linear(shapes, f"{prefix}.attention.self.{name}", hidden, hidden)
    _linear(shapes, f"{prefix}.attention.output.dense", hidden, hidden)
    _norm(shapes, f"{prefix}.attention.output.LayerNorm", hidden)
    _linear(shapes, f"{prefix}.intermediate.dense", hidden, intermediate)
    _linear(shapes, f"{prefix}.output.dense", intermediate, hidden)
    _norm(shapes, f"{prefix}.output.LayerNorm", hidden)


def bert_shapes(spec: OfficialGlipSpec, prefix: str = "language_backbone.body.model") -> Shapes:
    """`BertModel(add_pooling_layer=False)`; `embeddings.position_ids` is a persistent buffer in the transformers
    4.x releases GLIP was trained with (it became non-persistent in 4.31)."""
    bert = spec.bert
    hidden = bert["hidden_size"]
    shapes: Shapes = {f"{prefix}.embeddings.position_ids": [1, bert["max_position_embeddings"]]}
    shapes[f"{prefix}.embeddings.word_embeddings.weight"] = [bert["vocab_size"], hidden]
    shapes[f"{prefix}.embeddings.position_embeddings.weight"] = [bert["max_position_embeddings"], hidden]
    shapes[f"{prefix}.embeddings.token_type_embeddings.weight"] = [bert["type_vocab_size"], hidden]
    _norm(shapes, f"{prefix}.embeddings.LayerNorm", hidden)
    for layer in range(bert["num_hidden_layers"]):
        _bert_layer_shapes(shapes, f"{prefix}.encoder.layer.{layer}", hidden, bert["intermediate_size"])
    return shapes


def vlfuse_shapes(spec: OfficialGlipSpec, prefix: str) -> Shapes:
    """`VLFuse` with `TYPE: MHA-B`: `b_attn` = `BiAttentionBlockForCheckpoint` (no SEPARATE_BIDIRECTIONAL)."""
    shapes: Shapes = {}
    vision, text, embed = spec.dyhead_channels, spec.bert["hidden_size"], spec.fusion_embed_dim
    _norm(shapes, f"{prefix}.b_attn.layer_norm_v", vision)
    _norm(shapes, f"{prefix}.b_attn.layer_norm_l", text)
    shapes[f"{prefix}.b_attn.gamma_v"] = [vision]
    shapes[f"{prefix}.b_attn.gamma_l"] = [text]
    attn = f"{prefix}.b_attn.attn"
    _linear(shapes, f"{attn}.v_proj", vision, embed)
    _linear(shapes, f"{attn}.l_proj", text, embed)
    _linear(shapes, f"{attn}.values_v_proj", vision, embed)
    _linear(shapes, f"{attn}.values_l_proj", text, embed)
    _linear(shapes, f"{attn}.out_v_proj", embed, vision)
    _linear(shapes, f"{attn}.out_l_proj", embed, text)
    return shapes


def dyconv_shapes(spec: OfficialGlipSpec, prefix: str) -> Shapes:
    """`DyConv` with deformable convs, DyFuse, DyReLU and GroupNorm (all on in the GLIP configs)."""
    shapes: Shapes = {}
    channels = spec.dyhead_channels
    for index in range(3):
        _conv(shapes, f"{prefix}.DyConv.{index}.conv", channels, channels, 3)
        _norm(shapes, f"{prefix}.DyConv.{index}.bn", channels)
    _conv(shapes, f"{prefix}.AttnConv.1", channels, 1, 1)
    _linear(shapes, f"{prefix}.relu.fc.0", channels, channels // 4)
    _linear(shapes, f"{prefix}.relu.fc.2", channels // 4, channels * 4)
    _conv(shapes, f"{prefix}.offset", channels, 27, 3)
    return shapes


def head_shapes(spec: OfficialGlipSpec, prefix: str = "rpn") -> Shapes:
    """`VLDyHeadModule`: the `dyhead_tower`, the dot-product head and the anchor generator's buffers."""
    shapes: Shapes = {}
    tower = f"{prefix}.head.dyhead_tower"
    index = 0
    for layer in range(spec.num_convs):
        if spec.early_fuse_on:
            shapes.update(vlfuse_shapes(spec, f"{tower}.{index}"))
            if layer < spec.num_convs - 1 or spec.use_fused_features_dot_product:
                _bert_layer_shapes(
                    shapes, f"{tower}.{index + 1}", spec.bert["hidden_size"], spec.bert["intermediate_size"]
                )
            index += 2  # VLFuse + BertEncoderLayer (or the parameter-less DummyLayer)
        shapes.update(dyconv_shapes(spec, f"{tower}.{index}"))
        index += 1
    channels, text = spec.dyhead_channels, spec.bert["hidden_size"]
    _conv(shapes, f"{prefix}.head.cls_logits", channels, spec.num_classes - 1, 1)
    _conv(shapes, f"{prefix}.head.bbox_pred", channels, 4, 1)
    _conv(shapes, f"{prefix}.head.centerness", channels, 1, 1)
    _linear(shapes, f"{prefix}.head.dot_product_projection_text", text, channels)
    shapes[f"{prefix}.head.log_scale"] = [1]
    shapes[f"{prefix}.head.bias_lang"] = [text]
    shapes[f"{prefix}.head.bias0"] = [1]
    for level in range(spec.num_levels):
        shapes[f"{prefix}.head.scales.{level}.scale"] = [1]
    for level in range(spec.num_levels):
        shapes[f"{prefix}.anchor_generator.cell_anchors.{level}"] = [1, 4]
    return shapes


def official_key_shapes(spec: OfficialGlipSpec, module_prefix: str = "module.") -> Shapes:
    """All keys of the official checkpoint's `model` entry with their shapes, in module registration order."""
    shapes: Shapes = {}
    for part in (swin_shapes(spec), fpn_shapes(spec), bert_shapes(spec), head_shapes(spec)):
        shapes.update(part)
    return {f"{module_prefix}{name}": shape for name, shape in shapes.items()}


def _manifest_text(variant: str, config_file: str, shapes: Shapes) -> str:
    """JSON with one key per line, so diffs stay readable."""
    lines = [f"  {json.dumps(name)}: {json.dumps(shape)}" for name, shape in shapes.items()]
    header = (
        f'{{\n  "variant": {json.dumps(variant)},\n  "official_config": {json.dumps(config_file)},\n  "keys": {{\n'
    )
    return header + ",\n".join("  " + line for line in lines) + "\n  }\n}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Writes `<variant>.json` for every variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
    parser.add_argument("--output-dir", default=os.path.join(default_dir, "glip_key_manifests"))
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    for variant, (config_file, spec) in VARIANTS.items():
        shapes = official_key_shapes(spec)
        path = os.path.join(args.output_dir, f"{variant}.json")
        with open(path, "w") as handle:
            handle.write(_manifest_text(variant, config_file, shapes))
        print(f"{path}: {len(shapes)} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
