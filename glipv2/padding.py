"""Batches of images of different sizes: where each image is in the padded batch, and the operations that must
not see the padding that batching adds.

The official GLIP code pads every image to a multiple of 32 (`SIZE_DIVISIBILITY`) and a batch to its largest
image. An image's outputs then depend on its batch neighbours: convolutions read the extra padding at the image's
border, and the global poolings of DyHead (DyReLU's mean, the scale attention), its group norms and the text side of
VLFuse average over it. Within the layers this library owns (FPN, fusion, DyHead, head) the padding beyond each
image's own padded size is masked, so an image's outputs equal its single-image outputs; what the image backbone
does at the border (convolutions, Swin windows) remains, measured in `docs/batching.md`.

Masks are built only when some image is padded beyond its own padded size ([`own_padded_sizes`] returns None
otherwise): single images and batches of one size run the official code unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Size = tuple[int, int]


def own_padded_sizes(pixel_mask: torch.Tensor | None, divisor: int) -> list[Size] | None:
    """Each image's size rounded up to `divisor` (what it is padded to alone), or None when no image of the batch is
    padded beyond that (one image, or images of one padded size; the masks are then not needed).

    Args:
        pixel_mask: `(B, H, W)`, 1 on real pixels.
        divisor: the padding divisor (GLIP: 32, the coarsest backbone stride).
    """
    if pixel_mask is None or pixel_mask.shape[0] == 1:
        return None
    sizes = torch.stack([pixel_mask.amax(dim=2).sum(dim=1), pixel_mask.amax(dim=1).sum(dim=1)], dim=1)
    own = ((sizes + divisor - 1) // divisor * divisor).tolist()  # one device-to-host read, batches of several only
    height, width = pixel_mask.shape[-2:]
    if all(h >= height and w >= width for h, w in own):
        return None
    return [(min(h, height), min(w, width)) for h, w in own]


@dataclass
class Glipv2PaddingMasks:
    """Where each image of a padded batch lies on every pyramid level.

    Attributes:
        masks: per level `(B, H_l, W_l)` bool, True inside the image's own padded region.
        sizes: per level, per image `(h, w)` of that region (its top-left corner is the map's).
    """

    masks: tuple[torch.Tensor, ...]
    sizes: tuple[list[Size], ...]

    @classmethod
    def for_levels(
        cls, own_sizes: list[Size], shapes: Sequence[Size], strides: Sequence[int], device: torch.device
    ) -> Glipv2PaddingMasks:
        """The masks of levels of `shapes` at `strides` for images of `own_sizes` (input pixels)."""
        masks, sizes = [], []
        for (height, width), stride in zip(shapes, strides):
            level = [(min(-(-h // stride), height), min(-(-w // stride), width)) for h, w in own_sizes]
            rows = torch.tensor([h for h, _ in level], device=device)[:, None] > torch.arange(height, device=device)
            cols = torch.tensor([w for _, w in level], device=device)[:, None] > torch.arange(width, device=device)
            masks.append(rows[:, :, None] & cols[:, None, :])
            sizes.append(level)
        return cls(tuple(masks), tuple(sizes))

    def level(self, index: int) -> Glipv2PaddingMasks:
        """The masks of one level only."""
        return Glipv2PaddingMasks((self.masks[index],), (self.sizes[index],))

    def flat(self) -> torch.Tensor:
        """`(B, A)` over all levels concatenated row-major (the order of `fusion.flatten_levels` and the anchors)."""
        return torch.cat([mask.flatten(1) for mask in self.masks], dim=1)


def zero_outside(feature: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`(B, C, H, W)` with every position outside `mask` `(B, H, W)` set to 0 (what a convolution reads beyond an
    image's border when it is alone); unchanged without a mask."""
    return feature if mask is None else feature * mask[:, None].to(feature.dtype)


def masked_spatial_mean(feature: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, C)` mean over the positions of `mask` (all positions without one)."""
    if mask is None:
        return feature.mean(dim=(2, 3))
    weights = mask[:, None].to(feature.dtype)
    return (feature * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1.0)


def group_norm(feature: torch.Tensor, norm: nn.Module, mask: torch.Tensor | None) -> torch.Tensor:
    """`norm(feature)` for a `nn.GroupNorm` whose statistics cover only the positions of `mask` (identity norms and
    mask-free calls run `norm` itself)."""
    if mask is None or not isinstance(norm, nn.GroupNorm):
        return norm(feature)
    batch, channels, height, width = feature.shape
    groups = feature.view(batch, norm.num_groups, -1, height, width)
    weights = mask[:, None, None].to(feature.dtype)
    count = weights.sum(dim=(2, 3, 4), keepdim=True).clamp(min=1.0) * groups.shape[2]
    mean = (groups * weights).sum(dim=(2, 3, 4), keepdim=True) / count
    variance = ((groups - mean) ** 2 * weights).sum(dim=(2, 3, 4), keepdim=True) / count
    normed = ((groups - mean) / torch.sqrt(variance + norm.eps)).view(batch, channels, height, width)
    if norm.affine:
        normed = normed * norm.weight[:, None, None] + norm.bias[:, None, None]
    return normed


def upsample_aligned(
    feature: torch.Tensor, size: Size, sizes: tuple[list[Size], list[Size]] | None = None
) -> torch.Tensor:
    """Bilinear `align_corners=True` upsampling to `size` (official `F.upsample_bilinear`). With `sizes` (per image
    the source and target region), each image's region is resampled alone, as if its map were not padded: with
    `align_corners=True` the sampling grid depends on the whole map's size."""
    if sizes is None:
        return F.interpolate(feature, size=size, mode="bilinear", align_corners=True)
    out = feature.new_zeros(*feature.shape[:2], *size)
    groups: dict[tuple[Size, Size], list[int]] = {}
    for index, pair in enumerate(zip(*sizes)):
        groups.setdefault(pair, []).append(index)
    for ((source_h, source_w), (target_h, target_w)), images in groups.items():
        part = feature[images, :, :source_h, :source_w]
        resampled = F.interpolate(part, size=(target_h, target_w), mode="bilinear", align_corners=True)
        out[images, :, :target_h, :target_w] = resampled
    return out


__all__ = [
    "Glipv2PaddingMasks",
    "group_norm",
    "masked_spatial_mean",
    "own_padded_sizes",
    "upsample_aligned",
    "zero_outside",
]
