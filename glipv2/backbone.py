"""Feature pyramid on top of a transformers backbone: C3..C5 -> P3..P7 (official `FPN` + `LastLevelP6P7`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .padding import Glipv2PaddingMasks, zero_outside


class Glipv2FeaturePyramid(nn.Module):
    """FPN with P6/P7 computed from P5 (RetinaNet style), as `SWINT-FPN-RETINANET` in the official GLIP code.

    With `fine_channels` (the mask head's input, `config.use_mask_head`) it also builds P2, the stride-4 level of
    Mask R-CNN's FPN, from the backbone's stride-4 map and P3's top-down path. P2 is returned after P7 (the fusion
    and the grounding head see P3..P7 only) and has its own modules, so checkpoints without it keep their keys.

    Args:
        in_channels: channels of the backbone maps at strides 8, 16 and 32.
        out_channels: channels of every pyramid level.
        num_levels: total levels (5 gives P3..P7; each extra level beyond 3 is a stride-2 conv).
        fine_channels: channels of the backbone's stride-4 map, to build P2 from (None: no P2).
        detach_fine_inputs: build P2 from detached inputs (the backbone's stride-4 map and P3's top-down path), so
            that the mask loss trains P2's own convolutions and not the shared backbone
            (`config.mask_loss_to_backbone=False`).
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        num_levels: int = 5,
        fine_channels: int | None = None,
        detach_fine_inputs: bool = False,
    ) -> None:
        super().__init__()
        self.detach_fine_inputs = detach_fine_inputs
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.extra_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_levels - len(in_channels))
        )
        self.has_fine_level = fine_channels is not None
        if fine_channels is not None:
            # built without drawing from the global generator (their default init is replaced in `_init_weights`):
            # a model with P2 starts from the shared weights the same seed gives a model without it
            with torch.random.fork_rng(devices=[]):
                self.fine_lateral_conv = nn.Conv2d(fine_channels, out_channels, 1)
                self.fine_output_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(
        self, features: tuple[torch.Tensor, ...], padding: Glipv2PaddingMasks | None = None
    ) -> tuple[torch.Tensor, ...]:
        """`features`: backbone maps fine to coarse (with P2, the stride-4 map first). Returns P3..P7 (then P2), each
        `(B, out_channels, H_l, W_l)`.

        `padding` (masks of P3..P7, then P2, for a batch of several image sizes): every map is set to zero outside
        each image, so that the 3x3 and strided convolutions read zeros beyond an image's border, as they do when it
        is alone.
        """
        fine = None
        if self.has_fine_level:
            fine, features = features[0], features[1:]
        masks = padding.masks if padding is not None else (None,) * (len(features) + len(self.extra_convs) + 1)
        last_inner = zero_outside(self.lateral_convs[-1](features[-1]), masks[len(features) - 1])
        results = [zero_outside(self.output_convs[-1](last_inner), masks[len(features) - 1])]
        for index in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[index](features[index])
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = zero_outside(lateral + top_down, masks[index])
            results.insert(0, zero_outside(self.output_convs[index](last_inner), masks[index]))
        extra = results[-1]
        for level, conv in enumerate(self.extra_convs):
            extra = conv(extra if level == 0 else F.relu(extra))  # official: p7 = conv(relu(p6))
            extra = zero_outside(extra, masks[len(features) + level])
            results.append(extra)
        if fine is not None:
            mask = masks[len(results)] if len(masks) > len(results) else None
            if self.detach_fine_inputs:
                fine, last_inner = fine.detach(), last_inner.detach()
            lateral = self.fine_lateral_conv(fine)
            inner = zero_outside(lateral + F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest"), mask)
            results.append(zero_outside(self.fine_output_conv(inner), mask))
        return tuple(results)


__all__ = ["Glipv2FeaturePyramid"]
