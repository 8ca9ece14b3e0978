"""Batches of images of different sizes (`glipv2/padding.py`): each image's outputs equal its single-image outputs,
in the layers this library owns (FPN, fusion, DyHead, heads; checked with a backbone that has no border effects)
and through transformers' Swin and ResNet backbones; the masked operations equal their plain versions on hand-made
inputs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glipv2.padding import Glipv2PaddingMasks, group_norm, masked_spatial_mean, own_padded_sizes, upsample_aligned
from tests.conftest import tiny_config

SIZES = ((64, 96), (96, 64), (40, 72))  # (height, width): padded alone to 64x96, 96x64 and 64x96


class PoolingBackbone(nn.Module):
    """Feature maps at strides 8, 16, 32 from non-overlapping pooling and 1x1 convolutions: a position never sees
    another image region, so the batch's padding cannot reach an image (unlike a real backbone's borders)."""

    channels = (8, 12, 16)

    def __init__(self) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(3, c, 1) for c in self.channels)

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        maps = [proj(F.avg_pool2d(pixel_values, s)) for proj, s in zip(self.projections, (8, 16, 32))]
        return SimpleNamespace(feature_maps=maps)


def _pad(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as the processor pads it: to a multiple of 32, then to the largest image; the pixel mask."""
    height = max(-(-image.shape[1] // 32) * 32 for image in images)
    width = max(-(-image.shape[2] // 32) * 32 for image in images)
    pixels, mask = torch.zeros(len(images), 3, height, width), torch.zeros(len(images), height, width)
    for index, image in enumerate(images):
        pixels[index, :, : image.shape[1], : image.shape[2]] = image
        mask[index, : image.shape[1], : image.shape[2]] = 1
    return pixels, mask.long()


def _grounding_model(deformable: bool) -> torch.nn.Module:
    from glipv2 import Glipv2ForGrounding

    torch.manual_seed(0)
    config = tiny_config(fusion_attention_dropout=0.0, use_deformable_conv=deformable)
    model = Glipv2ForGrounding(config).eval()
    model.model.vision_backbone = PoolingBackbone()
    model.model.fpn.lateral_convs = nn.ModuleList(
        nn.Conv2d(c, model.config.hidden_size, 1) for c in PoolingBackbone.channels
    )
    for module in model.modules():  # offsets away from zero: the deformable convolutions sample between pixels
        if hasattr(module, "offset") and isinstance(module.offset, nn.Conv2d):
            nn.init.normal_(module.offset.weight, std=0.05)
    return model


@pytest.mark.parametrize("deformable", [True, False])
def test_each_image_of_a_mixed_batch_equals_itself_alone(deformable: bool) -> None:
    model = _grounding_model(deformable)
    generator = torch.Generator().manual_seed(3)
    images = [torch.randn(3, h, w, generator=generator) for h, w in SIZES]
    text = {"input_ids": torch.tensor([[101, 2417, 2675, 1012, 2630, 4418, 102]]), "attention_mask": torch.ones(1, 7)}
    with torch.no_grad():
        pixels, mask = _pad(images)
        batch = model(pixel_values=pixels, pixel_mask=mask, **text)
        model.model.mask_batch_padding = False
        unmasked = model(pixel_values=pixels, pixel_mask=mask, **text)
        model.model.mask_batch_padding = True
        assert batch.logits.shape[1] == unmasked.logits.shape[1]
        worst_unmasked = 0.0
        for index, image in enumerate(images):
            alone_pixels, alone_mask = _pad([image])
            alone = model(pixel_values=alone_pixels, pixel_mask=alone_mask, **text)
            keep = _anchors_of(alone.spatial_shapes, batch.spatial_shapes)
            for key in ("logits", "pred_boxes", "centerness"):
                got, want = getattr(batch, key)[index][keep], getattr(alone, key)[0]
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"image {index} {key}")
            worst_unmasked = max(worst_unmasked, float((unmasked.logits[index][keep] - alone.logits[0]).abs().max()))
            outside = torch.ones(batch.logits.shape[1], dtype=torch.bool)
            outside[keep] = False
            assert bool((batch.logits[index][outside] <= -49999).all())  # anchors beyond the image find nothing
    assert worst_unmasked > 1e-3  # without the masks the batch changes the images padded in it


def test_captioning_of_a_mixed_batch_equals_each_image_alone() -> None:
    """Captioning's image memory and its text side: teacher-forced logits and greedy captions of each image of a
    batch of several sizes (with the processor's `pixel_mask`) equal the image's own."""
    from glipv2 import Glipv2ForConditionalGeneration
    from tests.modeling_helpers import CAPTION_TEXT_CONFIG

    torch.manual_seed(0)
    model = Glipv2ForConditionalGeneration(tiny_config(fusion_attention_dropout=0.0, text_config=CAPTION_TEXT_CONFIG))
    model.model.vision_backbone = PoolingBackbone()
    model.model.fpn.lateral_convs = nn.ModuleList(
        nn.Conv2d(c, model.config.hidden_size, 1) for c in PoolingBackbone.channels
    )
    model.eval()
    generator = torch.Generator().manual_seed(5)
    images = [torch.randn(3, h, w, generator=generator) for h, w in SIZES]
    ids = torch.tensor([[101, 1037, 2417, 2675, 1998, 1037, 2630, 102]]).expand(len(images), -1)
    with torch.no_grad():
        pixels, mask = _pad(images)
        batch = model(pixel_values=pixels, pixel_mask=mask, input_ids=ids).logits
        captions = model.generate(pixel_values=pixels, pixel_mask=mask, max_new_tokens=6, num_beams=2)
        model.model.mask_batch_padding = False
        unmasked = model(pixel_values=pixels, pixel_mask=mask, input_ids=ids).logits
        model.model.mask_batch_padding = True
        for index, image in enumerate(images):
            alone_pixels, alone_mask = _pad([image])
            alone = model(pixel_values=alone_pixels, pixel_mask=alone_mask, input_ids=ids[:1]).logits[0]
            torch.testing.assert_close(batch[index], alone, rtol=1e-4, atol=1e-4, msg=f"image {index}")
            caption = model.generate(pixel_values=alone_pixels, max_new_tokens=6, num_beams=2)[0]
            assert torch.equal(captions[index][: len(caption)], caption), index
    assert max(float((unmasked[i] - batch[i]).abs().max()) for i in range(len(images))) > 1e-3  # the padding matters


SWIN_SHIFTED = {  # two blocks per stage: every second block shifts its windows
    "model_type": "swin", "embed_dim": 8, "depths": [2, 2, 2, 2], "num_heads": [1, 1, 2, 2], "window_size": 4,
    "out_features": ["stage2", "stage3", "stage4"],
}  # fmt: skip
RESNET = {
    "model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 24], "depths": [1, 1, 1, 1],
    "layer_type": "basic", "out_features": ["stage2", "stage3", "stage4"],
}  # fmt: skip
# (height, width), padded alone to 160x224, 224x160 and 192x192; every Swin stage is wider than its window alone
REAL_SIZES = ((160, 224), (224, 150), (170, 190))


@pytest.mark.parametrize("vision_config", [SWIN_SHIFTED, RESNET], ids=["swin", "resnet"])
def test_real_backbones_see_each_image_of_a_mixed_batch_alone(vision_config: dict) -> None:
    from glipv2 import Glipv2ForGrounding

    torch.manual_seed(0)
    config = tiny_config(fusion_attention_dropout=0.0, vision_config=vision_config)
    model = Glipv2ForGrounding(config).eval()
    generator = torch.Generator().manual_seed(5)
    images = [torch.randn(3, h, w, generator=generator) for h, w in REAL_SIZES]
    text = {"input_ids": torch.tensor([[101, 2417, 2675, 1012, 2630, 4418, 102]]), "attention_mask": torch.ones(1, 7)}
    backbone = model.model.vision_backbone
    stock_hooks = [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in backbone.modules()]
    with torch.no_grad():
        pixels, mask = _pad(images)
        batch = model(pixel_values=pixels, pixel_mask=mask, **text)
        model.model.mask_batch_padding = False
        unmasked = model(pixel_values=pixels, pixel_mask=mask, **text)
        model.model.mask_batch_padding = True
        worst_unmasked = 0.0
        for index, image in enumerate(images):
            alone = model(**dict(zip(("pixel_values", "pixel_mask"), _pad([image]))), **text)
            keep = _anchors_of(alone.spatial_shapes, batch.spatial_shapes)
            for key in ("logits", "pred_boxes"):
                got, want = getattr(batch, key)[index][keep], getattr(alone, key)[0]
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"image {index} {key}")
            worst_unmasked = max(worst_unmasked, float((unmasked.logits[index][keep] - alone.logits[0]).abs().max()))
    assert worst_unmasked > 1e-3
    # the hooks are gone after the forward: the backbone is the stock module again
    assert [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in backbone.modules()] == stock_hooks
    assert all("get_attn_mask" not in vars(m) for m in backbone.modules())


def _anchors_of(small: torch.Tensor, large: torch.Tensor) -> torch.Tensor:
    """Indices (in the large map's flat anchor order) of the anchors of the top-left `small` region of each level."""
    indices, start = [], 0
    for (h, w), (big_h, big_w) in zip(small.tolist(), large.tolist()):
        rows = torch.arange(h)[:, None] * big_w + torch.arange(w)[None, :]
        indices.append(start + rows.flatten())
        start += big_h * big_w
    return torch.cat(indices)


def test_no_masks_for_one_image_or_one_padded_size() -> None:
    mask = torch.zeros(2, 64, 96, dtype=torch.long)
    mask[0, :64, :96], mask[1, :40, :70] = 1, 1  # both pad to 64x96 alone
    assert own_padded_sizes(mask, 32) is None
    assert own_padded_sizes(mask[:1], 32) is None
    mask[1] = 0
    mask[1, :30, :30] = 1
    assert own_padded_sizes(mask, 32) == [(64, 96), (32, 32)]


def test_masked_operations_equal_the_plain_ones_on_the_region() -> None:
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 8, 6, 10, generator=generator)
    masks = Glipv2PaddingMasks.for_levels([(24, 80), (48, 40)], [(6, 10)], [8], torch.device("cpu"))
    assert masks.sizes == ([(3, 10), (6, 5)],)
    norm = nn.GroupNorm(4, 8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    for index, (h, w) in enumerate(masks.sizes[0]):
        region = feature[index : index + 1, :, :h, :w]
        masked = group_norm(feature, norm, masks.masks[0])[index : index + 1, :, :h, :w]
        torch.testing.assert_close(masked, norm(region), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(masked_spatial_mean(feature, masks.masks[0])[index], region.mean(dim=(0, 2, 3)))
        up = upsample_aligned(feature, (12, 20), ([(h, w), (h, w)], [(2 * h, 2 * w), (2 * h, 2 * w)]))
        expected = F.interpolate(region, size=(2 * h, 2 * w), mode="bilinear", align_corners=True)
        torch.testing.assert_close(up[index : index + 1, :, : 2 * h, : 2 * w], expected)
