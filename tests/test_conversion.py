"""Official GLIP checkpoint conversion: key manifests, the regex table, and parity part by part (fp32, <= 1e-4).

References are independent of our modules: timm's Swin (fused qkv, as the official code), transformers' BertModel,
transformers' Grounding DINO fusion layer (adapted to GLIP, see `test_vlfuse_matches_grounding_dino_fusion_layer`)
and a plain-loop port of the official CUDA kernel `modulated_deformable_im2col_gpu_kernel`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glipv2 import Glipv2Config, Glipv2ForGrounding
from glipv2.convert_glip_original import (
    IGNORED,
    VARIANTS,
    build_config,
    convert_state_dict,
    load_official_state_dict,
    map_official_state_dict,
)
from glipv2.deformable_conv import Glipv2ModulatedDeformConv2d, torchvision_deform_conv_available
from glipv2.fusion import Glipv2VLFuse, flatten_levels
from scripts.convert_glip_original_checkpoint import main
from tests.official_glip_keys import (
    INTEGER_BUFFER_SUFFIXES,
    OfficialGlipSpec,
    bert_shapes,
    official_key_shapes,
    swin_shapes,
)
from tests.official_glip_keys import VARIANTS as MANIFEST_VARIANTS

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_DIR = REPO_ROOT / "tests" / "data" / "glip_key_manifests"
TOLERANCE = 1e-4


def _manifest(variant: str) -> dict[str, list[int]]:
    return json.loads((MANIFEST_DIR / f"{variant}.json").read_text())["keys"]


def _random_tensor(name: str, shape: list[int], device: str = "cpu") -> torch.Tensor:
    """Random official-style values: norms around 1, everything else small, index buffers as integers."""
    if name.endswith(INTEGER_BUFFER_SUFFIXES):
        return torch.zeros(shape, dtype=torch.long, device=device)
    if device == "meta":
        return torch.empty(shape, device=device)
    values = torch.randn(shape) * 0.1
    is_norm_weight = name.endswith("weight") and ("norm" in name or "LayerNorm" in name or ".bn." in name)
    return values + 1.0 if is_norm_weight else values


def _official_state_dict(shapes: dict[str, list[int]], device: str = "cpu") -> dict[str, torch.Tensor]:
    return {name: _random_tensor(name, shape, device) for name, shape in shapes.items()}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


# ----------------------------------------------------------------------------------------------- manifests / keys
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_manifest_is_the_generator_output(variant: str) -> None:
    _, spec = MANIFEST_VARIANTS[variant]
    assert _manifest(variant) == official_key_shapes(spec)


def test_manifest_spot_checks_against_the_official_code() -> None:
    tiny, tiny_a, large = _manifest("glip-tiny-o365"), _manifest("glip-a-tiny-o365"), _manifest("glip-large")
    # 6 x (VLFuse, BertEncoderLayer, DyConv) = tower entries 0..17; GLIP-T (A) only DyConv 0..5; GLIP-L 8 x 3.
    assert tiny["module.rpn.head.dyhead_tower.17.offset.weight"] == [27, 256, 3, 3]
    assert tiny["module.rpn.head.dyhead_tower.15.b_attn.attn.l_proj.weight"] == [2048, 768]
    assert tiny["module.rpn.head.dyhead_tower.16.intermediate.dense.weight"] == [3072, 768]
    assert "module.rpn.head.dyhead_tower.5.relu.fc.2.weight" in tiny_a
    assert not any(".b_attn." in key or "dyhead_tower.6." in key for key in tiny_a)
    assert large["module.rpn.head.dyhead_tower.23.DyConv.2.conv.weight"] == [256, 256, 3, 3]
    assert large["module.backbone.body.layers.2.blocks.17.attn.relative_position_bias_table"] == [23 * 23, 24]
    assert large["module.backbone.fpn.fpn_inner4.weight"] == [256, 1536, 1, 1]
    assert tiny["module.backbone.body.layers.0.blocks.0.attn.qkv.weight"] == [288, 96]
    assert "module.backbone.body.norm0.weight" not in tiny  # nn.Identity for SWINT-FPN-RETINANET
    assert tiny["module.rpn.head.cls_logits.weight"] == [80, 256, 1, 1]
    assert len(tiny) == 746 and len(tiny_a) == 542 and len(large) == 1022


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_key_maps_and_loads_with_no_missing_or_unexpected_key(variant: str) -> None:
    config = build_config(variant)
    official = load_like_checkpoint(_official_state_dict(_manifest(variant), device="meta"))
    with torch.device("meta"):
        model = Glipv2ForGrounding(config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    result = map_official_state_dict(official, config.use_early_fusion)
    assert result.unmapped == []
    assert all(reason for reason in result.ignored.values())
    state_dict = convert_state_dict(official, expected, config.use_early_fusion)
    missing, unexpected = model.load_state_dict(state_dict, strict=True, assign=True)
    assert missing == [] and unexpected == []
    # Every official tensor is used once, except the ignored ones; qkv becomes three tensors.
    num_qkv = sum(key.endswith(("attn.qkv.weight", "attn.qkv.bias")) for key in official)
    assert len(result.state_dict) == len(official) - len(result.ignored) + 2 * num_qkv


def load_like_checkpoint(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The manifest keys carry DDP's `module.` prefix, which the loader strips."""
    return {key.removeprefix("module."): value for key, value in official.items()}


def test_tiny_official_checkpoint_converts_into_a_working_model() -> None:
    """An official-structured checkpoint at the tests' tiny-random sizes converts, loads strictly and runs."""
    config = Glipv2Config.from_preset("tiny-random")
    text = config.text_config
    spec = OfficialGlipSpec(
        swint_embed_dim=8, swint_depths=(1, 1, 1, 1), swint_num_heads=(1, 1, 2, 2), swint_window_size=4,
        fpn_channels=32, dyhead_channels=32, num_convs=2, fusion_embed_dim=32,
        bert={"vocab_size": text.vocab_size, "hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 16,
              "max_position_embeddings": 256, "type_vocab_size": 2},
    )  # fmt: skip
    official = load_like_checkpoint(_official_state_dict(official_key_shapes(spec)))
    model = Glipv2ForGrounding(config).eval()
    expected = {key: value.shape for key, value in model.state_dict().items()}
    missing, unexpected = model.load_state_dict(convert_state_dict(official, expected), strict=True)
    assert missing == [] and unexpected == []
    torch.testing.assert_close(model.grounding_head.bias0, official["rpn.head.bias0"], rtol=0, atol=0)
    with torch.no_grad():
        outputs = model(pixel_values=torch.randn(1, 3, 64, 64), input_ids=torch.tensor([[101, 4937, 102]]))
    assert torch.isfinite(outputs.pred_boxes).all()


def test_unmapped_unfilled_and_misplaced_keys_are_errors() -> None:
    config = build_config("glip-a-tiny-o365")
    official = load_like_checkpoint(_official_state_dict(_manifest("glip-a-tiny-o365"), device="meta"))
    with torch.device("meta"):
        expected = {key: value.shape for key, value in Glipv2ForGrounding(config).state_dict().items()}
    official["rpn.head.some_new_thing.weight"] = torch.empty(3, device="meta")
    del official["backbone.fpn.top_blocks.p7.bias"]
    with pytest.raises(ValueError) as error:
        convert_state_dict(official, expected, use_early_fusion=False)
    assert "unmapped official key: rpn.head.some_new_thing.weight" in str(error.value)
    assert "model key left unfilled: model.fpn.extra_convs.1.bias" in str(error.value)
    # A VLFuse at a DyConv position (or in a model without early fusion) is refused.
    with pytest.raises(ValueError, match="no early fusion"):
        map_official_state_dict({"rpn.head.dyhead_tower.0.b_attn.gamma_v": torch.zeros(1)}, use_early_fusion=False)
    with pytest.raises(ValueError, match="mod 3"):
        map_official_state_dict({"rpn.head.dyhead_tower.2.b_attn.gamma_v": torch.zeros(1)}, use_early_fusion=True)


def test_ignore_list_is_documented_and_minimal() -> None:
    official = _manifest("glip-tiny-o365")
    ignored = map_official_state_dict(load_like_checkpoint(_official_state_dict(official, "meta"))).ignored
    assert all(
        any(tag in key for tag in ("relative_position_index", "position_ids", "cls_logits", "cell_anchors"))
        for key in ignored
    )
    assert len(IGNORED) == 6


# ----------------------------------------------------------------------------------------------- end to end (CLI)
def test_main_converts_writes_and_reloads(
    tmp_path: Path, bert_vocab_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glipv2 import Glipv2Processor

    variant = "glip-a-tiny-o365"
    official = _official_state_dict(_manifest(variant))
    checkpoint = tmp_path / "glip_a_tiny_o365.pth"
    torch.save({"model": official, "iteration": 7}, checkpoint)
    assert (
        main(["--checkpoint", str(checkpoint), "--variant", variant, "--output", str(tmp_path / "dry"), "--dry-run"])
        == 0
    )
    assert not (tmp_path / "dry").exists()
    output = tmp_path / "converted"
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--variant",
                variant,
                "--output",
                str(output),
                "--tokenizer",
                str(bert_vocab_dir),
            ]
        )
        == 0
    )
    model = Glipv2ForGrounding.from_pretrained(output)
    assert model.config.use_early_fusion is False and model.config.num_fusion_layers == 6
    state = model.state_dict()
    qkv = official["module.backbone.body.layers.2.blocks.5.attn.qkv.weight"]
    prefix = "model.vision_backbone.swin.encoder.layers.2.blocks.5.attention"
    torch.testing.assert_close(torch.cat([state[f"{prefix}.{n}_proj.weight"] for n in "qkv"]), qkv, rtol=0, atol=0)
    pairs = {
        "module.backbone.body.norm3.weight": "model.vision_backbone.hidden_states_norms.stage4.weight",
        "module.backbone.fpn.fpn_inner2.weight": "model.fpn.lateral_convs.0.weight",
        "module.rpn.head.dyhead_tower.5.DyConv.0.conv.weight": "model.fusion.layers.5.dyhead.coarser_conv.conv.weight",
        "module.rpn.head.dot_product_projection_text.weight": "grounding_head.text_projection.weight",
        "module.rpn.head.scales.4.scale": "grounding_head.scales.4.scale",
    }
    for official_key, key in pairs.items():
        torch.testing.assert_close(state[key], official[official_key], rtol=0, atol=0)
    processor = Glipv2Processor.from_pretrained(output)
    assert processor.image_processor.channel_order == "bgr"
    assert processor.tokenizer("a cat")["input_ids"] == [101, 1037, 4937, 102]
    _check_push(checkpoint, variant, tmp_path / "pushed", bert_vocab_dir, monkeypatch)


def _check_push(checkpoint: Path, variant: str, output: Path, vocab: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--push_to_hub` goes through the project's publishing (`tasks.publish`; the upload replaced by a recorder)."""
    from types import SimpleNamespace

    from tasks import publish

    pushed = {}

    def record(staging: str, repo_id: str, *args: object, **kwargs: object) -> SimpleNamespace:
        pushed.update(repo_id=repo_id, files=sorted(os.listdir(staging)))
        return SimpleNamespace(oid="sha")

    monkeypatch.setattr(publish, "push_folder", record)
    argv = ["--checkpoint", str(checkpoint), "--variant", variant, "--output", str(output), "--tokenizer", str(vocab)]
    assert main([*argv, "--push_to_hub", "someone/glip-a-tiny-o365"]) == 0
    assert pushed["repo_id"] == "someone/glip-a-tiny-o365"
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= set(pushed["files"])


def test_checkpoint_needing_unsafe_unpickling_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "cfg": _Opaque()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_official_state_dict(str(path))
    assert main(["--checkpoint", str(path), "--variant", "glip-large", "--output", str(tmp_path / "out")]) == 1


class _Opaque:
    """An object torch.load(weights_only=True) cannot rebuild."""


# ----------------------------------------------------------------------------------------------- parity: Swin vs timm
TINY_SWIN = OfficialGlipSpec(swint_embed_dim=16, swint_depths=(2, 2, 2, 2), swint_num_heads=(1, 2, 2, 4))


def _converted_part(official: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    state_dict = map_official_state_dict(official).state_dict
    return {key.removeprefix(prefix): value for key, value in state_dict.items() if key.startswith(prefix)}


def _timm_swin_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Swin keys -> timm 1.0 keys: timm's patch merging opens the *next* stage (layers.{s+1}.downsample)."""
    state_dict = {}
    for key, value in official.items():
        key = key.removeprefix("backbone.body.")
        if key.startswith("norm") or key.endswith("relative_position_index"):
            continue  # per-stage output norms are applied by the test; index buffers are rebuilt by timm
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) + 1)
        state_dict[".".join(parts)] = value
    return state_dict


@pytest.mark.parametrize("window, size", [(7, (224, 224)), (4, (128, 256))])
def test_swin_backbone_matches_timm_swin(window: int, size: tuple[int, int]) -> None:
    """Our Swin (transformers' SwinBackbone + converted weights) against timm's Swin + the official stage norms.

    Sizes keep every stage a multiple of the window: timm rolls the map *before* padding it to whole windows,
    whereas the official `swint.py` (and transformers) pad first, so on padded stages timm is not a reference.
    """
    from dataclasses import replace

    from timm.models.swin_transformer import SwinTransformer
    from transformers import AutoBackbone

    spec = replace(TINY_SWIN, swint_window_size=window)
    official = _official_state_dict(swin_shapes(spec))
    reference = SwinTransformer(
        img_size=size,
        embed_dim=spec.swint_embed_dim,
        depths=spec.swint_depths,
        num_heads=spec.swint_num_heads,
        window_size=spec.swint_window_size,
        num_classes=0,
        always_partition=True,
        drop_path_rate=0.0,
    ).eval()
    missing, unexpected = reference.load_state_dict(_timm_swin_state_dict(official), strict=False)
    assert unexpected == [] and set(missing) == {"norm.weight", "norm.bias"}
    config = Glipv2Config.from_preset("tiny-random").vision_config.__class__(
        embed_dim=spec.swint_embed_dim,
        depths=list(spec.swint_depths),
        num_heads=list(spec.swint_num_heads),
        window_size=spec.swint_window_size,
        out_features=["stage2", "stage3", "stage4"],
        drop_path_rate=0.0,
    )
    ours = AutoBackbone.from_config(config).eval()
    converted = _converted_part(official, "model.vision_backbone.")
    converted["swin.layernorm.weight"] = torch.ones(8 * spec.swint_embed_dim)
    converted["swin.layernorm.bias"] = torch.zeros(8 * spec.swint_embed_dim)
    assert ours.load_state_dict(converted, strict=True)
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        actual = ours(pixels).feature_maps
        stages = reference.forward_intermediates(pixels, indices=[1, 2, 3], intermediates_only=True)
    for index, (feature, stage) in enumerate(zip(actual, stages), start=1):
        weight, bias = official[f"backbone.body.norm{index}.weight"], official[f"backbone.body.norm{index}.bias"]
        expected = F.layer_norm(stage.permute(0, 2, 3, 1), weight.shape, weight, bias).permute(0, 3, 1, 2)
        assert feature.shape == expected.shape
        assert _relative_error(feature, expected) <= TOLERANCE, index


def _official_shift_mask(height_pad: int, width_pad: int, window: int, shift: int) -> torch.Tensor:
    """`swint.BasicLayer.forward`: the SW-MSA mask over the padded map, -100 across regions."""
    image_mask = torch.zeros(1, height_pad, width_pad, 1)
    count = 0
    for h in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for w in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            image_mask[:, h, w, :] = count
            count += 1
    windows = image_mask.view(1, height_pad // window, window, width_pad // window, window, 1)
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _official_swin_block(block: nn.Module, x: torch.Tensor, height: int, width: int, shift: int) -> torch.Tensor:
    """`swint.SwinTransformerBlock.forward` (pad to whole windows, *then* roll) driving timm's block modules."""
    batch, _, channels = x.shape
    window = block.window_size[0]
    shortcut = x
    x = block.norm1(x).view(batch, height, width, channels)
    x = F.pad(x, (0, 0, 0, (window - width % window) % window, 0, (window - height % window) % window))
    height_pad, width_pad = x.shape[1:3]
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    rows, cols = height_pad // window, width_pad // window
    windows = x.view(batch, rows, window, cols, window, channels).permute(0, 1, 3, 2, 4, 5)
    mask = _official_shift_mask(height_pad, width_pad, window, shift) if shift else None
    windows = block.attn(windows.reshape(-1, window * window, channels), mask=mask)
    x = windows.view(batch, rows, cols, window, window, channels).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(batch, height_pad, width_pad, channels)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + x[:, :height, :width, :].reshape(batch, height * width, channels)
    return x + block.mlp(block.norm2(x))


def test_swin_backbone_matches_the_official_block_order_on_padded_stages() -> None:
    """Real GLIP inputs (800 x 1333, padded to 32) give stages that are not whole windows. The official block pads
    to whole windows and then rolls; this reference runs that order with timm's modules (patch embedding, merging,
    attention, MLP) and the official stage norms, on a size whose first stages need padding (40 x 56, window 7)."""
    from timm.models.swin_transformer import SwinTransformer
    from transformers import AutoBackbone, SwinConfig

    spec = TINY_SWIN
    official = _official_state_dict(swin_shapes(spec))
    timm_swin = SwinTransformer(
        embed_dim=spec.swint_embed_dim, depths=spec.swint_depths, num_heads=spec.swint_num_heads,
        window_size=spec.swint_window_size, num_classes=0, always_partition=True, strict_img_size=False,
    ).eval()  # fmt: skip
    timm_swin.load_state_dict(_timm_swin_state_dict(official), strict=False)
    config = SwinConfig(
        embed_dim=spec.swint_embed_dim,
        depths=list(spec.swint_depths),
        num_heads=list(spec.swint_num_heads),
        window_size=spec.swint_window_size,
        out_features=["stage2", "stage3", "stage4"],
    )
    ours = AutoBackbone.from_config(config).eval()
    converted = _converted_part(official, "model.vision_backbone.")
    converted.update({"swin.layernorm.weight": torch.ones(128), "swin.layernorm.bias": torch.zeros(128)})
    ours.load_state_dict(converted, strict=True)
    pixels = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        actual = ours(pixels).feature_maps
        x = timm_swin.patch_embed(pixels)  # (B, H, W, C)
        expected = []
        for index, stage in enumerate(timm_swin.layers):
            x = stage.downsample(x)
            batch, height, width, channels = x.shape
            flat = x.reshape(batch, height * width, channels)
            for number, block in enumerate(stage.blocks):
                shift = 0 if number % 2 == 0 else spec.swint_window_size // 2
                flat = _official_swin_block(block, flat, height, width, shift)
            x = flat.view(batch, height, width, channels)
            if index > 0:
                weight, bias = (
                    official[f"backbone.body.norm{index}.weight"],
                    official[f"backbone.body.norm{index}.bias"],
                )
                expected.append(F.layer_norm(x, (channels,), weight, bias).permute(0, 3, 1, 2))
    for feature, reference in zip(actual, expected, strict=True):
        assert feature.shape == reference.shape
        assert _relative_error(feature, reference) <= TOLERANCE


# ----------------------------------------------------------------------------------------------- parity: FPN
def _official_fpn(weights: dict[str, torch.Tensor], features: list[torch.Tensor]) -> list[torch.Tensor]:
    """`fpn.FPN.forward` + `LastLevelP6P7` as written, on the 4 Swin maps (the stride-4 one has no inner block)."""

    def conv(name: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        weight = weights[f"backbone.fpn.{name}.weight"]
        return F.conv2d(x, weight, weights[f"backbone.fpn.{name}.bias"], stride, weight.shape[-1] // 2)

    inner_blocks, layer_blocks = ["fpn_inner2", "fpn_inner3", "fpn_inner4"], ["fpn_layer2", "fpn_layer3", "fpn_layer4"]
    last_inner = conv(inner_blocks[-1], features[-1])
    results = [conv(layer_blocks[-1], last_inner)]
    for feature, inner_block, layer_block in zip(
        features[:-1][::-1], inner_blocks[:-1][::-1], layer_blocks[:-1][::-1]
    ):
        inner_lateral = conv(inner_block, feature)
        last_inner = inner_lateral + F.interpolate(last_inner, size=inner_lateral.shape[-2:], mode="nearest")
        results.insert(0, conv(layer_block, last_inner))
    p6 = conv("top_blocks.p6", results[-1], 2)  # use_P5: in_channels == out_channels
    return [*results, p6, conv("top_blocks.p7", F.relu(p6), 2)]


def test_fpn_matches_the_official_fpn() -> None:
    from glipv2.backbone import Glipv2FeaturePyramid
    from tests.official_glip_keys import fpn_shapes

    spec = OfficialGlipSpec(swint_embed_dim=8, fpn_channels=16)
    official = _official_state_dict(fpn_shapes(spec))
    ours = Glipv2FeaturePyramid(spec.swint_out_channels[-3:], 16, 5).eval()
    missing, unexpected = ours.load_state_dict(_converted_part(official, "model.fpn."))
    assert missing == [] and unexpected == []
    sizes = [(40, 52), (20, 26), (10, 13), (5, 7)]  # an odd stage: nearest upsampling to the lateral's size
    features = [torch.randn(2, c, *size) for c, size in zip(spec.swint_out_channels, sizes)]
    with torch.no_grad():
        actual = ours(tuple(features[1:]))
    expected = _official_fpn(official, features)
    assert [tuple(f.shape[-2:]) for f in actual] == [(20, 26), (10, 13), (5, 7), (3, 4), (2, 2)]
    for level, (feature, reference) in enumerate(zip(actual, expected)):
        assert _relative_error(feature, reference) <= TOLERANCE, level


# ----------------------------------------------------------------------------------------------- parity: BERT
def test_text_encoder_matches_transformers_bert_model() -> None:
    from transformers import BertConfig, BertModel

    bert = {
        "vocab_size": 100,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
    }
    official = _official_state_dict(bert_shapes(OfficialGlipSpec(bert=bert)))
    text_config = {"model_type": "bert", "num_attention_heads": 4, **bert}
    ours = Glipv2ForGrounding(Glipv2Config.from_preset("tiny-random", text_config=text_config)).model.eval()
    missing, unexpected = ours.text_model.load_state_dict(_converted_part(official, "model.text_model."), strict=True)
    assert missing == [] and unexpected == []
    reference = BertModel(BertConfig(num_attention_heads=4, **bert), add_pooling_layer=False).eval()
    prefix = "language_backbone.body.model."
    reference_state = {k.removeprefix(prefix): v for k, v in official.items() if not k.endswith("position_ids")}
    missing, unexpected = reference.load_state_dict(reference_state, strict=True)
    assert missing == [] and unexpected == []
    input_ids = torch.randint(1, 100, (2, 9))
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    with torch.no_grad():
        actual = ours.encode_text(input_ids, attention_mask)
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert _relative_error(actual, expected) <= TOLERANCE


def test_fusion_text_layer_matches_transformers_bert_layer() -> None:
    """The extra text layer after each VLFuse (official `BertEncoderLayer`: transformers' BertAttention,
    BertIntermediate, BertOutput; its logit clamps to +-50000 are inactive in fp32 here) vs transformers' BertLayer."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    from glipv2.fusion import Glipv2TextLayer
    from tests.official_glip_keys import _bert_layer_shapes

    official: dict[str, list[int]] = {}
    _bert_layer_shapes(official, "rpn.head.dyhead_tower.1", 32, 64)
    official = _official_state_dict(official)
    ours = Glipv2TextLayer(32, 4, 64, "gelu", 0.1, 1e-12).eval()
    missing, unexpected = ours.load_state_dict(_converted_part(official, "model.fusion.layers.0.text_layer."))
    assert missing == [] and unexpected == []
    config = BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, attn_implementation="eager")
    reference = BertLayer(config).eval()
    reference_state = {key.removeprefix("rpn.head.dyhead_tower.1."): value for key, value in official.items()}
    missing, unexpected = reference.load_state_dict(reference_state, strict=True)
    assert missing == [] and unexpected == []
    hidden = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min  # get_extended_attention_mask
    with torch.no_grad():
        actual = ours(hidden, mask)
        expected = reference(hidden, attention_mask=extended)
    expected = expected[0] if isinstance(expected, tuple) else expected
    assert _relative_error(actual, expected) <= TOLERANCE


# ----------------------------------------------------------------------------------------------- parity: VLFuse
def _grounding_dino_fusion_layer(vision_dim: int, text_dim: int, embed_dim: int, num_heads: int) -> nn.Module:
    """transformers' `GroundingDinoFusionLayer`, with its text side resized to GLIP's text width.

    Grounding DINO's layer has one width for both modalities (`d_model`); GLIP's has 256 for vision and 768 for text.
    The attention itself never uses the widths after construction, so the text-side modules are swapped for ones of
    the text width: `layer_norm_text`, `text_param`, `attn.text_proj`, `attn.values_text_proj`, `attn.out_text_proj`.
    """
    from transformers import GroundingDinoConfig
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoFusionLayer

    config = GroundingDinoConfig(
        d_model=vision_dim,
        encoder_ffn_dim=2 * embed_dim,
        encoder_attention_heads=2 * num_heads,
        fusion_dropout=0.0,
        fusion_droppath=0.0,
    )
    layer = GroundingDinoFusionLayer(config)
    layer.layer_norm_text = nn.LayerNorm(text_dim, config.layer_norm_eps)
    layer.text_param = nn.Parameter(torch.ones(text_dim))
    layer.attn.text_proj = nn.Linear(text_dim, embed_dim)
    layer.attn.values_text_proj = nn.Linear(text_dim, embed_dim)
    layer.attn.out_text_proj = nn.Linear(embed_dim, text_dim)
    return layer.eval()


GROUNDING_DINO_NAMES = {
    "layer_norm_v": "layer_norm_vision",
    "layer_norm_l": "layer_norm_text",
    "gamma_v": "vision_param",
    "gamma_l": "text_param",
    "attn.v_proj": "attn.vision_proj",
    "attn.l_proj": "attn.text_proj",
    "attn.values_v_proj": "attn.values_vision_proj",
    "attn.values_l_proj": "attn.values_text_proj",
    "attn.out_v_proj": "attn.out_vision_proj",
    "attn.out_l_proj": "attn.out_text_proj",
}


def test_vlfuse_matches_grounding_dino_fusion_layer() -> None:
    """Our VLFuse vs Grounding DINO's fusion layer (GLIP's `BiAttentionBlockForCheckpoint`, which it derives from).

    Same math: pre-LayerNorm on both sides, one logit matrix `q_v k_l^T / sqrt(d)` clamped to +-50000 shared by both
    directions, text->image softmax over image positions after a row-max shift, image->text softmax over real
    tokens, layer-scaled residuals added to the *normed* inputs (`x' = LN(x) + gamma * Attn(LN(x))`). Differences,
    none of which changes fp32 results here: Grounding DINO subtracts the global max before the clamp (GLIP's
    `STABLE_SOFTMAX_2D`, off in GLIP's configs; softmax is shift-invariant), masks padded tokens with -inf where
    GLIP adds -9e15, takes a padding mask (True = pad) instead of an attention mask, and has one width for both
    modalities (resized above). The image side is all pyramid levels concatenated (official `permute_and_flatten`).
    """
    from tests.official_glip_keys import vlfuse_shapes

    vision_dim, text_dim, embed_dim, num_heads = 32, 24, 64, 4
    spec = OfficialGlipSpec(dyhead_channels=vision_dim, fusion_embed_dim=embed_dim, bert={"hidden_size": text_dim})
    official = _official_state_dict(vlfuse_shapes(spec, "rpn.head.dyhead_tower.0"))
    ours = Glipv2VLFuse(vision_dim, text_dim, embed_dim, num_heads, 0.1, 1 / 6, 50000.0).eval()
    missing, unexpected = ours.load_state_dict(_converted_part(official, "model.fusion.layers.0.vl_fuse."))
    assert missing == [] and unexpected == []
    reference = _grounding_dino_fusion_layer(vision_dim, text_dim, embed_dim, num_heads)
    reference_state = {}
    for key, value in official.items():
        name = key.removeprefix("rpn.head.dyhead_tower.0.b_attn.")
        module, _, leaf = name.rpartition(".") if not name.startswith("gamma") else (name, "", "")
        reference_state[GROUNDING_DINO_NAMES[module] + (f".{leaf}" if leaf else "")] = value
    missing, unexpected = reference.load_state_dict(reference_state, strict=True)
    assert missing == [] and unexpected == []

    levels = tuple(torch.randn(2, vision_dim, size, size) for size in (8, 4, 2, 1, 1))
    text = torch.randn(2, 7, text_dim)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    with torch.no_grad():
        vision_out, text_out = ours(levels, text, mask)
        (vision_expected, _), (text_expected, _) = reference(
            flatten_levels(levels)[0], text, attention_mask_text=~mask.bool()
        )
    assert _relative_error(flatten_levels(vision_out)[0], vision_expected) <= TOLERANCE
    assert _relative_error(text_out, text_expected) <= TOLERANCE


# ----------------------------------------------------------------------------------------------- parity: DCN
def _official_bilinear(image: torch.Tensor, height: int, width: int, h: float, w: float) -> float:
    """`dmcn_im2col_bilinear` of `deform_conv_kernel_cuda.cu`, one channel `image` (H, W)."""
    h_low, w_low = math.floor(h), math.floor(w)
    h_high, w_high = h_low + 1, w_low + 1
    lh, lw = h - h_low, w - w_low
    hh, hw = 1 - lh, 1 - lw
    v1 = image[h_low, w_low] if h_low >= 0 and w_low >= 0 else 0.0
    v2 = image[h_low, w_high] if h_low >= 0 and w_high <= width - 1 else 0.0
    v3 = image[h_high, w_low] if h_high <= height - 1 and w_low >= 0 else 0.0
    v4 = image[h_high, w_high] if h_high <= height - 1 and w_high <= width - 1 else 0.0
    return float(hh * hw * v1 + hh * lw * v2 + lh * hw * v3 + lh * lw * v4)


def _official_modulated_deform_conv(
    image: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int,
) -> torch.Tensor:
    """Plain-loop port of `modulated_deform_conv_cuda_forward` + `modulated_deformable_im2col_gpu_kernel`.

    Per sample b the kernel gets the raw pointers of `offset[b]` and `mask[b]` and indexes them as if laid out for
    the convolution's own output size (height_col, width_col), whatever their real spatial size: the flat read is
    emulated here from the tensors' storage, exactly as the pointer arithmetic does.
    """
    batch, channels, height, width = image.shape
    kernel, pad, dilation = 3, 1, 1
    height_col = (height + 2 * pad - kernel) // stride + 1
    width_col = (width + 2 * pad - kernel) // stride + 1
    offset_storage = torch.as_strided(offset, (offset.untyped_storage().nbytes() // 4,), (1,), 0)
    mask_storage = torch.as_strided(mask, (mask.untyped_storage().nbytes() // 4,), (1,), 0)
    output = torch.zeros(batch, weight.shape[0], height_col, width_col, dtype=torch.float64)
    for b in range(batch):
        data_offset = offset_storage[offset[b].storage_offset() :].tolist()
        data_mask = mask_storage[mask[b].storage_offset() :].tolist()
        columns = torch.zeros(channels * kernel * kernel, height_col * width_col, dtype=torch.float64)
        for c_im in range(channels):
            plane = image[b, c_im].double()
            for h_col in range(height_col):
                for w_col in range(width_col):
                    h_in, w_in = h_col * stride - pad, w_col * stride - pad
                    for i in range(kernel):
                        for j in range(kernel):
                            tap = i * kernel + j
                            offset_h = data_offset[((2 * tap) * height_col + h_col) * width_col + w_col]
                            offset_w = data_offset[((2 * tap + 1) * height_col + h_col) * width_col + w_col]
                            modulation = data_mask[(tap * height_col + h_col) * width_col + w_col]
                            h_im = h_in + i * dilation + offset_h
                            w_im = w_in + j * dilation + offset_w
                            value = 0.0
                            if h_im > -1 and w_im > -1 and h_im < height and w_im < width:
                                value = _official_bilinear(plane, height, width, h_im, w_im)
                            columns[c_im * kernel * kernel + tap, h_col * width_col + w_col] = value * modulation
        output[b] = (weight.double().flatten(1) @ columns).view(-1, height_col, width_col)
    return (output + bias.double().view(1, -1, 1, 1)).float()


@pytest.mark.parametrize("use_torchvision", [False, True])
@pytest.mark.parametrize("branch", ["coarser", "finer"])
def test_deformable_conv_offset_reuse_matches_the_official_kernel(branch: str, use_torchvision: bool) -> None:
    """DyConv feeds level l's offset/mask (computed on the (6, 7) level) to the conv of level l+1 (coarser, (3, 4):
    output smaller than the offset, read as a flat buffer) and of level l-1 (finer, (12, 14), stride 2)."""
    if use_torchvision and not torchvision_deform_conv_available():
        pytest.skip("torchvision.ops.deform_conv2d is not importable")
    channels, out_channels = 3, 4
    offset_mask = torch.randn(2, 27, 6, 7) * 1.5  # official DyConv: offset = [:, :18], mask = sigmoid([:, 18:])
    offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
    size, stride = ((3, 4), 1) if branch == "coarser" else ((12, 14), 2)
    image = torch.randn(2, channels, *size)
    conv = Glipv2ModulatedDeformConv2d(channels, out_channels, stride=stride)
    nn.init.normal_(conv.bias)
    conv.use_torchvision = use_torchvision
    with torch.no_grad():
        actual = conv(image, offset, mask)
    expected = _official_modulated_deform_conv(image, offset, mask, conv.weight.detach(), conv.bias.detach(), stride)
    assert actual.shape == expected.shape
    assert _relative_error(actual, expected) <= TOLERANCE


def _official_dyconv(
    weights: dict[str, torch.Tensor], features: list[torch.Tensor], groups: int
) -> list[torch.Tensor]:
    """`vldyhead.DyConv.forward` as written (USE_DFCONV, USE_DYFUSE, USE_DYRELU, GN), its convs by the kernel port."""
    prefix = "rpn.head.dyhead_tower.2."

    def weight(name: str) -> torch.Tensor:
        return weights[prefix + name]

    def conv3x3_norm(
        index: int, x: torch.Tensor, stride: int, offset: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        name = f"DyConv.{index}"
        out = _official_modulated_deform_conv(
            x, offset, mask, weight(f"{name}.conv.weight"), weight(f"{name}.conv.bias"), stride
        )
        return F.group_norm(out, groups, weight(f"{name}.bn.weight"), weight(f"{name}.bn.bias"))

    next_x = []
    for level, feature in enumerate(features):
        offset_mask = F.conv2d(feature, weight("offset.weight"), weight("offset.bias"), padding=1)
        offset, mask = offset_mask[:, :18, :, :], offset_mask[:, 18:, :, :].sigmoid()
        temp_fea = [conv3x3_norm(1, feature, 1, offset, mask)]
        if level > 0:
            temp_fea.append(conv3x3_norm(2, features[level - 1], 2, offset, mask))
        if level < len(features) - 1:  # F.upsample_bilinear: bilinear with align_corners=True
            coarser = conv3x3_norm(0, features[level + 1], 1, offset, mask)
            temp_fea.append(F.interpolate(coarser, size=feature.shape[-2:], mode="bilinear", align_corners=True))
        attn_fea = [
            F.relu(F.conv2d(F.adaptive_avg_pool2d(fea, 1), weight("AttnConv.1.weight"), weight("AttnConv.1.bias")))
            for fea in temp_fea
        ]
        spa_pyr_attn = F.relu6(torch.stack(attn_fea) + 3) / 6  # h_sigmoid
        next_x.append(torch.mean(torch.stack(temp_fea) * spa_pyr_attn, dim=0))
    outputs = []
    for x in next_x:  # DYReLU(reduction=4, lambda_a=1 -> 2, K2, use_bias, init_a=(1, 0), init_b=(0, 0))
        y = F.linear(F.relu(F.linear(x.mean(dim=(2, 3)), weight("relu.fc.0.weight"), weight("relu.fc.0.bias"))),
                     weight("relu.fc.2.weight"), weight("relu.fc.2.bias"))  # fmt: skip
        a1, b1, a2, b2 = torch.split((F.relu6(y + 3) / 6)[:, :, None, None], x.shape[1], dim=1)
        outputs.append(torch.max(x * ((a1 - 0.5) * 2 + 1) + (b1 - 0.5), x * ((a2 - 0.5) * 2) + (b2 - 0.5)))
    return outputs


def test_dyhead_block_matches_the_official_dyconv() -> None:
    """A whole DyHead block (the three level branches sharing the level's offset/mask, scale attention, DyReLU)
    against `DyConv.forward` transliterated, on non-square levels whose coarser neighbours are smaller."""
    from glipv2.fusion import Glipv2DyHeadBlock
    from tests.official_glip_keys import dyconv_shapes

    channels, groups = 16, 4
    official = _official_state_dict(
        dyconv_shapes(OfficialGlipSpec(dyhead_channels=channels), "rpn.head.dyhead_tower.2")
    )
    official["rpn.head.dyhead_tower.2.offset.weight"] *= 3.0  # offsets of a few pixels: samples cross borders
    ours = Glipv2DyHeadBlock(channels, deformable=True, dyrelu=True, scale_attention=True, norm_groups=groups).eval()
    missing, unexpected = ours.load_state_dict(_converted_part(official, "model.fusion.layers.0.dyhead."))
    assert missing == [] and unexpected == []
    features = [torch.randn(2, channels, *size) for size in ((8, 10), (4, 5), (2, 3), (1, 2), (1, 1))]
    with torch.no_grad():
        actual = ours(tuple(features))
    expected = _official_dyconv(official, features, groups)
    for level, (feature, reference) in enumerate(zip(actual, expected, strict=True)):
        assert _relative_error(feature, reference) <= TOLERANCE, level


def test_dyhead_block_gradients_match_the_official_dyconv(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with gradients: the batched scale attention and DyReLU (one coefficient MLP for all levels, updated
    in place) back-propagate as the official per-level code does. The kernel port reads Python lists, so here the
    official structure gets our differentiable deformable conv (checked against the port above)."""
    from glipv2.deformable_conv import deform_conv2d_reference, reinterpret_offset
    from glipv2.fusion import Glipv2DyHeadBlock
    from tests.official_glip_keys import dyconv_shapes

    def differentiable_deform_conv(x, offset, mask, weight, bias, stride):  # noqa: ANN001, ANN202
        out_h, out_w = (x.shape[-2] - 1) // stride + 1, (x.shape[-1] - 1) // stride + 1
        offset, mask = reinterpret_offset(offset, out_h, out_w), reinterpret_offset(mask, out_h, out_w)
        return deform_conv2d_reference(x, offset, mask, weight, bias, stride=stride, padding=1)

    monkeypatch.setattr(sys.modules[__name__], "_official_modulated_deform_conv", differentiable_deform_conv)

    channels, groups = 16, 4
    official = _official_state_dict(
        dyconv_shapes(OfficialGlipSpec(dyhead_channels=channels), "rpn.head.dyhead_tower.2")
    )
    official["rpn.head.dyhead_tower.2.offset.weight"] *= 3.0
    ours = Glipv2DyHeadBlock(channels, deformable=True, dyrelu=True, scale_attention=True, norm_groups=groups)
    ours.load_state_dict(_converted_part(official, "model.fusion.layers.0.dyhead."))
    features = [torch.randn(2, channels, *size) for size in ((8, 10), (4, 5), (2, 3), (1, 2), (1, 1))]
    upstream = [torch.randn_like(f) for f in features]

    def input_gradients(fn) -> list[torch.Tensor]:  # noqa: ANN001
        inputs = [f.clone().requires_grad_() for f in features]
        sum((out * g).sum() for out, g in zip(fn(inputs), upstream)).backward()
        return [i.grad for i in inputs]

    actual = input_gradients(lambda inputs: ours(tuple(inputs)))
    expected = input_gradients(lambda inputs: _official_dyconv(official, inputs, groups))
    for level, (grad, reference) in enumerate(zip(actual, expected, strict=True)):
        assert _relative_error(grad, reference) <= TOLERANCE, level


def test_grounding_head_matches_the_official_dot_product_head() -> None:
    """Converted head parameters in our head vs `VLDyHead.forward`'s dot-product branch, box and centerness convs."""
    from glipv2.heads import Glipv2GroundingHead
    from tests.official_glip_keys import head_shapes

    channels, text_dim = 16, 12
    spec = OfficialGlipSpec(dyhead_channels=channels, num_convs=0, bert={"hidden_size": text_dim})
    official = {key: value for key, value in _official_state_dict(head_shapes(spec)).items() if ".head." in key}
    ours = Glipv2GroundingHead(channels, text_dim, 5).eval()
    missing, unexpected = ours.load_state_dict(_converted_part(official, "grounding_head."))
    assert missing == [] and unexpected == []
    levels = [torch.randn(2, channels, size, size + 1) for size in (8, 4, 2, 1, 1)]
    text = torch.randn(2, 6, text_dim)
    mask = torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        logits, boxes, centerness = ours(tuple(levels), text, mask)
    head = {key.removeprefix("rpn.head."): value for key, value in official.items()}
    embedding = F.normalize(text, p=2, dim=-1)
    proj_tokens = F.linear(
        embedding / 2.0, head["dot_product_projection_text.weight"], head["dot_product_projection_text.bias"]
    )
    proj_tokens_bias = torch.matmul(embedding, head["bias_lang"]) + head["bias0"]
    expected_logits, expected_boxes, expected_centerness = [], [], []
    for level, x in enumerate(levels):
        queries = x.permute(0, 2, 3, 1).reshape(2, -1, channels)  # permute_and_flatten
        logit = torch.matmul(queries, proj_tokens.transpose(-1, -2)) / head["log_scale"].exp()
        expected_logits.append((logit + proj_tokens_bias.unsqueeze(1)).clamp(-50000, 50000))
        box = F.conv2d(x, head["bbox_pred.weight"], head["bbox_pred.bias"]) * head[f"scales.{level}.scale"]
        expected_boxes.append(box.permute(0, 2, 3, 1).reshape(2, -1, 4))
        center = F.conv2d(x, head["centerness.weight"], head["centerness.bias"])
        expected_centerness.append(center.reshape(2, -1))
    assert _relative_error(logits, torch.cat(expected_logits, dim=1)) <= TOLERANCE
    assert _relative_error(boxes, torch.cat(expected_boxes, dim=1)) <= TOLERANCE
    assert _relative_error(centerness, torch.cat(expected_centerness, dim=1)) <= TOLERANCE


# ----------------------------------------------------------------------------------------------- real checkpoint
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GLIP_CHECKPOINT"), reason="set GLIP_CHECKPOINT to an official GLIP .pth")
def test_real_checkpoint_converts_and_evaluates_zero_shot_coco(tmp_path: Path) -> None:
    """Converts a real checkpoint and, with GLIP_COCO_DIR (holding annotations/instances_val2017.json and
    val2017/), evaluates zero-shot COCO val2017 through scripts/evaluate_model.py:

        GLIP_CHECKPOINT=glip_tiny_model_o365_goldg_cc_sbu.pth GLIP_VARIANT=glip-tiny-o365-goldg-cc-sbu \\
        GLIP_COCO_DIR=coco pytest -m slow tests/test_conversion.py -p no:cacheprovider

    Official figures: GLIP-T (O365+GoldG+CC+SBU) 46.6 AP, GLIP-L 51.4 AP; the test allows 0.5 AP.
    GLIP_MAX_SAMPLES evaluates only the first N images (a smoke run: no AP check).
    """
    checkpoint = os.environ["GLIP_CHECKPOINT"]
    variant = os.environ.get("GLIP_VARIANT", "glip-large" if "large" in checkpoint else "glip-tiny-o365-goldg-cc-sbu")
    output = tmp_path / variant
    assert main(["--checkpoint", checkpoint, "--variant", variant, "--output", str(output)]) == 0
    model = Glipv2ForGrounding.from_pretrained(output)
    assert model.config.num_fusion_layers == (8 if variant == "glip-large" else 6)
    coco = os.environ.get("GLIP_COCO_DIR")
    if not coco:
        return
    command = [
        sys.executable,
        str(REPO_ROOT / "scripts" / "evaluate_model.py"),
        "--model",
        str(output),
        "--task",
        "detection",
        "--annotation-file",
        os.path.join(coco, "annotations", "instances_val2017.json"),
        "--image-dir",
        os.path.join(coco, "val2017"),
        "--split",
        "val2017",
        "--batch-size",
        "4",
        "--output",
        str(tmp_path / "metrics.json"),
    ]
    max_samples = os.environ.get("GLIP_MAX_SAMPLES")
    if max_samples:
        command += ["--max-samples", max_samples]
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    if not max_samples:
        expected = {"glip-large": 51.4, "glip-tiny-o365-goldg-cc-sbu": 46.6}.get(variant)
        if expected is not None:
            assert abs(100 * metrics["AP"] - expected) <= 0.5, metrics


REDUCED = OfficialGlipSpec(
    swint_embed_dim=24,
    swint_depths=(1, 1, 2, 1),
    swint_num_heads=(1, 2, 4, 8),
    fpn_channels=64,
    dyhead_channels=64,
    num_convs=2,
    bert={
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
    },
)
REDUCED_SET = [
    "--preset", "glip-tiny",
    "--set", 'vision_config={"embed_dim": 24, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 4, 8]}',
    "--set", 'text_config={"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64}',
    "--set", 'text_config={"num_attention_heads": 2}',
    "--set", "hidden_size=64",
    "--set", "num_fusion_layers=2",
]  # fmt: skip


def test_a_reduced_official_checkpoint_converts_from_the_command_line(tmp_path: Path, bert_vocab_dir: str) -> None:
    """Any size converts: a preset with overrides (or a config file) matching the checkpoint's sizes."""
    official = _official_state_dict(official_key_shapes(REDUCED))
    checkpoint = tmp_path / "reduced.pth"
    torch.save({"model": official}, checkpoint)
    output = tmp_path / "converted"
    argv = ["--checkpoint", str(checkpoint), "--output", str(output), "--tokenizer", str(bert_vocab_dir)]
    assert main([*argv, *REDUCED_SET]) == 0
    model = Glipv2ForGrounding.from_pretrained(output)
    assert model.config.num_fusion_layers == 2 and model.config.vision_config.embed_dim == 24
    state = model.state_dict()
    for official_key, key in {
        "module.rpn.head.dot_product_projection_text.weight": "grounding_head.text_projection.weight",
        "module.rpn.head.dyhead_tower.5.DyConv.2.conv.weight": "model.fusion.layers.1.dyhead.finer_conv.conv.weight",
        "module.backbone.fpn.fpn_layer4.weight": "model.fpn.output_convs.2.weight",
    }.items():
        torch.testing.assert_close(state[key], official[official_key], rtol=0, atol=0)
    # the same config from the written file converts too; a size that does not fit names the shapes
    assert main([*argv[:2], "--output", str(tmp_path / "again"), "--config", str(output / "config.json")]) == 0
    assert main([*argv, *REDUCED_SET[:-2], "--set", "num_fusion_layers=3"]) == 1
