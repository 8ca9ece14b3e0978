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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def _own_extent(own: int, length: int, padded: int) -> int:
    """An image's extent on a map of `length` positions over `padded` input pixels (`own` of them its own)."""
    return min(-(-own * length // padded), length)


def _region_masks(own_sizes: list[Size], padded: Size, shape: Size, device: torch.device) -> torch.Tensor:
    """`(B, h, w)` bool: each image's own region on a map of `shape` over the padded batch."""
    rows = [_own_extent(h, shape[0], padded[0]) for h, _ in own_sizes]
    cols = [_own_extent(w, shape[1], padded[1]) for _, w in own_sizes]
    inside_rows = torch.tensor(rows, device=device)[:, None] > torch.arange(shape[0], device=device)
    inside_cols = torch.tensor(cols, device=device)[:, None] > torch.arange(shape[1], device=device)
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def _is_swin_layer(module: nn.Module) -> bool:
    return type(module).__name__ == "SwinLayer" and hasattr(module, "layernorm_before")


def _swin_window_mask(
    layer: nn.Module, own_sizes: list[Size], padded: Size, dims: Size, padded_dims: Size, base: torch.Tensor | None
) -> torch.Tensor:
    """The attention mask of a Swin layer for a batch of several image sizes, `(B * windows, ws*ws, ws*ws)`:
    transformers' shifted-window mask plus, per image, every key beyond the windows the image fills alone (its own
    token grid rounded up to whole windows). With the cyclic shift over the batch's grid, the groups of tokens that
    attend each other are then those of the image alone."""
    from transformers.models.swin.modeling_swin import window_partition

    window, shift = int(layer.window_size), int(layer.shift_size)
    device = base.device if base is not None else layer.layernorm_before.weight.device
    tokens = [(_own_extent(h, dims[0], padded[0]), _own_extent(w, dims[1], padded[1])) for h, w in own_sizes]
    grids = [(-(-h // window) * window, -(-w // window) * window) for h, w in tokens]
    valid = _region_masks([(h, w) for h, w in grids], padded_dims, padded_dims, device)
    if shift > 0:
        valid = torch.roll(valid, shifts=(-shift, -shift), dims=(1, 2))
    dtype = base.dtype if base is not None else layer.layernorm_before.weight.dtype
    keys = window_partition(valid[..., None].to(dtype), window).view(-1, 1, window * window)
    mask = ((1.0 - keys) * -100.0).expand(-1, window * window, -1)
    if base is not None:
        mask = mask + base.repeat(len(own_sizes), 1, 1)
    return mask


@contextmanager
def backbone_sees_each_image_alone(backbone: nn.Module, own_sizes: list[Size], padded: Size) -> Iterator[None]:
    """For one forward of `backbone` over a batch padded to `padded` pixels, each image's features inside its own
    padded size (`own_sizes`, from [`own_padded_sizes`]) equal its features alone.

    Hooks, removed on exit: every convolution wider than 1x1 reads zeros beyond an image's own region (as its zero
    padding does when the image is alone) and max pooling reads -inf there; in transformers' Swin the normalised
    tokens beyond an image's own token grid are zero (its zero padding to whole windows) and keys beyond the windows
    the image fills alone are masked. Layers other than these (norms per position, activations, 1x1 convolutions,
    linear layers) need nothing.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    swin_dims: dict[int, Size] = {}

    def fill_outside(value: float):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple) -> tuple:
            feature = args[0]
            inside = _region_masks(own_sizes, padded, tuple(feature.shape[-2:]), feature.device)
            return (feature.masked_fill(~inside[:, None], value), *args[1:])

        return hook

    def remember_dims(layer: nn.Module, args: tuple, kwargs: dict) -> None:
        swin_dims[id(layer)] = tuple(kwargs["input_dimensions"] if "input_dimensions" in kwargs else args[1])

    def zero_beyond_tokens(layer: nn.Module):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            height, width = swin_dims[id(layer)]
            inside = _region_masks(own_sizes, padded, (height, width), output.device).flatten(1)
            return output * inside[..., None].to(output.dtype)

        return hook

    def window_mask(layer: nn.Module):  # noqa: ANN202
        original = type(layer).get_attn_mask.__get__(layer)

        def get_attn_mask(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
            base = original(height, width, dtype=dtype, device=device)
            return _swin_window_mask(layer, own_sizes, padded, swin_dims[id(layer)], (height, width), base)

        return get_attn_mask

    swin_layers = []
    try:
        for module in backbone.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
                handles.append(module.register_forward_pre_hook(fill_outside(0.0)))
            elif isinstance(module, nn.MaxPool2d):
                handles.append(module.register_forward_pre_hook(fill_outside(float("-inf"))))
            elif _is_swin_layer(module):
                handles.append(module.register_forward_pre_hook(remember_dims, with_kwargs=True))
                handles.append(module.layernorm_before.register_forward_hook(zero_beyond_tokens(module)))
                module.get_attn_mask = window_mask(module)
                swin_layers.append(module)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for layer in swin_layers:
            del layer.get_attn_mask


__all__ = [
    "Glipv2PaddingMasks",
    "backbone_sees_each_image_alone",
    "group_norm",
    "masked_spatial_mean",
    "own_padded_sizes",
    "upsample_aligned",
    "zero_outside",
]
