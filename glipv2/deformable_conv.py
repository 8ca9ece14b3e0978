"""Modulated deformable convolution (DCNv2) with torchvision's kernel and a pure-PyTorch fallback.

GLIP's DyHead computes one offset/mask tensor per pyramid level and feeds it to the three convolutions of that level,
including the one applied to the *coarser* neighbour level, whose output is smaller than the offset tensor. The
official CUDA kernel (`maskrcnn_benchmark/csrc/cuda/deform_conv_cuda.cu`, `modulated_deform_conv_cuda_forward`)
takes `offset[b]` and reads it as a flat buffer laid out for the convolution's own output size, i.e. it reads the
first `channels * out_h * out_w` values of each sample. [`reinterpret_offset`] reproduces that exactly, so converted
weights see the same sampling positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

try:  # torchvision is optional: the fallback below gives the same numbers.
    from torchvision.ops import deform_conv2d as _tv_deform_conv2d
except Exception:  # pragma: no cover - exercised only where torchvision is missing
    _tv_deform_conv2d = None


def torchvision_deform_conv_available() -> bool:
    """Whether torchvision's `deform_conv2d` kernel can be used."""
    return _tv_deform_conv2d is not None


def reinterpret_offset(offset: torch.Tensor, out_height: int, out_width: int) -> torch.Tensor:
    """Reads a per-sample offset (or mask) buffer laid out for another spatial size, as the official kernel does.

    Args:
        offset: `(batch, channels, height, width)`.
        out_height, out_width: the output size of the convolution that consumes it.

    Returns:
        `(batch, channels, out_height, out_width)`: the first `channels * out_height * out_width` values of each
        sample's contiguous buffer.
    """
    batch, channels, height, width = offset.shape
    # While the ONNX exporter traces, always the general read (the same values when the sizes agree): a branch taken
    # at the export size would be frozen into the graph for every other size.
    if (height, width) == (out_height, out_width) and not torch.jit.is_tracing():
        return offset
    needed = channels * out_height * out_width
    if needed > channels * height * width:
        raise ValueError(
            f"offset of spatial size {(height, width)} cannot serve a convolution output of size "
            f"{(out_height, out_width)}: the official kernel would read past the buffer."
        )
    return offset.reshape(batch, -1)[:, :needed].reshape(batch, channels, out_height, out_width)


def reinterpret_offset_regions(
    offset: torch.Tensor, sizes: list[tuple[int, int]], out_sizes: list[tuple[int, int]], out_shape: tuple[int, int]
) -> torch.Tensor:
    """[`reinterpret_offset`] of each image of a padded batch on its own region, as when the image is alone.

    Args:
        offset: `(batch, channels, height, width)`; image b's offsets fill its top-left `sizes[b]` region.
        sizes: per image the `(h, w)` region of `offset`; out_sizes: per image the `(h, w)` region of the output.
        out_shape: the output's padded `(height, width)`.

    Returns:
        `(batch, channels, *out_shape)`, each image's buffer read as the official kernel reads it alone, zero outside.
    """
    out = offset.new_zeros(*offset.shape[:2], *out_shape)
    for index, ((height, width), (out_h, out_w)) in enumerate(zip(sizes, out_sizes)):
        region = offset[index : index + 1, :, :height, :width]
        out[index, :, :out_h, :out_w] = reinterpret_offset(region, out_h, out_w)[0]
    return out


def _bilinear_sample(image: torch.Tensor, sample_y: torch.Tensor, sample_x: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling with zeros outside, matching torchvision's/DCN's `bilinear_interpolate`.

    DCN reads the four neighbours of a point, each outside the image counting as 0, and returns 0 for points with
    `y <= -1`, `y >= height` (same for x). `grid_sample(padding_mode="zeros")` does exactly that: at `y = -1` the
    only in-range neighbour has weight 0. It does the four corners in one vectorised pass, about 6x faster on CPU
    than four `gather`s over `(channels, points)` tensors (and its backward is a fused kernel too).

    Args:
        image: `(batch, channels, height, width)`.
        sample_y, sample_x: `(batch, points)` positions in pixels.

    Returns:
        `(batch, channels, points)`.
    """
    height, width = image.shape[-2:]
    padded_h, padded_w = height, width
    if sample_x.requires_grad or sample_y.requires_grad:
        # grid_sample maps a normalised g back to pixels as ((g + 1) * size - 1) / 2. With a power-of-two size
        # every step of that round trip is exact, so an integer position stays an integer: DCN's kernel takes the
        # position's floor as the first neighbour, and at integer positions (zero offsets: DyHead's offset
        # convolution starts at zero) a position rounded to just below the integer would flip the offset gradient
        # to the other side. Zero padding on the bottom and right changes no sampled value (outside reads 0 either
        # way). Without a gradient to the positions the copy is skipped: the values differ by rounding at most.
        padded_h, padded_w = 1 << (height - 1).bit_length(), 1 << (width - 1).bit_length()
        if (padded_h, padded_w) != (height, width):
            image = F.pad(image, (0, padded_w - width, 0, padded_h - height))
    grid = torch.stack(((2 * sample_x + 1) / padded_w - 1, (2 * sample_y + 1) / padded_h - 1), dim=-1)
    sampled = F.grid_sample(
        image, grid.unsqueeze(1).to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled.squeeze(2)


def deform_conv2d_reference(
    image: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """Pure-PyTorch modulated deformable convolution (one offset group, one weight group).

    Args:
        image: `(batch, in_channels, height, width)`.
        offset: `(batch, 2 * kh * kw, out_h, out_w)`, (dy, dx) pairs per kernel tap as in DCNv2/torchvision.
        mask: `(batch, kh * kw, out_h, out_w)` modulation in [0, 1].
        weight: `(out_channels, in_channels, kh, kw)`.
        bias: `(out_channels,)` or None.

    Returns:
        `(batch, out_channels, out_h, out_w)`.
    """
    batch, in_channels, height, width = image.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = offset.shape[-2:]
    taps = kernel_h * kernel_w
    base_y = (torch.arange(out_h, device=image.device, dtype=image.dtype) * stride - padding).view(1, 1, out_h, 1)
    base_x = (torch.arange(out_w, device=image.device, dtype=image.dtype) * stride - padding).view(1, 1, 1, out_w)
    tap_y, tap_x = torch.meshgrid(
        torch.arange(kernel_h, device=image.device, dtype=image.dtype) * dilation,
        torch.arange(kernel_w, device=image.device, dtype=image.dtype) * dilation,
        indexing="ij",
    )
    offset = offset.reshape(batch, taps, 2, out_h, out_w)
    sample_y = base_y + tap_y.reshape(1, taps, 1, 1) + offset[:, :, 0]
    sample_x = base_x + tap_x.reshape(1, taps, 1, 1) + offset[:, :, 1]
    sampled = _bilinear_sample(image, sample_y.reshape(batch, -1), sample_x.reshape(batch, -1))
    sampled = sampled.reshape(batch, in_channels, taps, out_h * out_w) * mask.reshape(batch, 1, taps, -1)
    columns = sampled.reshape(batch, in_channels * taps, out_h * out_w)
    if torch.jit.is_tracing():
        # ONNX export: the weight as the constant right operand of the MatMul, the form onnxruntime's dynamic int8
        # quantization covers (`onnx_export.quantize_int8`); the same products (eager keeps its faster order).
        out = torch.matmul(columns.transpose(1, 2), weight.reshape(out_channels, -1).t()).transpose(1, 2)
        out = out.reshape(batch, out_channels, out_h, out_w)
    else:
        out = torch.matmul(weight.reshape(out_channels, -1), columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class Glipv2ModulatedDeformConv2d(nn.Module):
    """3x3 modulated deformable convolution whose offset and mask are computed outside (shared per level).

    `use_torchvision`: `None` (default) picks `torchvision.ops.deform_conv2d` on accelerators and the grid-sample +
    matmul reference on CPU, where it is faster both for inference (about 8x on a GLIP-T level, one thread) and for a
    training step of the demo model (torchvision's CPU backward kernel dominated the step); `True`/`False` force one
    path.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        self.stride = stride
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.use_torchvision: bool | None = None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        kernel = self.weight.shape[-1]
        return (
            (height + 2 * self.padding - kernel) // self.stride + 1,
            (width + 2 * self.padding - kernel) // self.stride + 1,
        )

    def forward(self, image: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`image` (B, C_in, H, W); `offset` (B, 18, h, w) and `mask` (B, 9, h, w) of the level that owns them."""
        out_h, out_w = self.output_size(*image.shape[-2:])
        offset = reinterpret_offset(offset, out_h, out_w)
        mask = reinterpret_offset(mask, out_h, out_w)
        use_torchvision = self.use_torchvision if self.use_torchvision is not None else image.device.type != "cpu"
        if use_torchvision and _tv_deform_conv2d is not None:
            # torchvision's CPU kernel has no bf16 path: compute in the image's float type.
            return _tv_deform_conv2d(
                image,
                offset.to(image.dtype).contiguous(),
                self.weight.to(image.dtype),
                self.bias.to(image.dtype),
                stride=self.stride,
                padding=self.padding,
                mask=mask.to(image.dtype).contiguous(),
            )
        return deform_conv2d_reference(
            image,
            offset.to(image.dtype),
            mask.to(image.dtype),
            self.weight.to(image.dtype),
            self.bias.to(image.dtype),
            stride=self.stride,
            padding=self.padding,
        )


__all__ = [
    "Glipv2ModulatedDeformConv2d",
    "deform_conv2d_reference",
    "reinterpret_offset",
    "reinterpret_offset_regions",
    "torchvision_deform_conv_available",
]
