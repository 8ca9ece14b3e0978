"""Grounding head of GLIP/GLIPv2: anchors, box coder and the region-word alignment head.

Faithful to the official GLIP code (``microsoft/GLIP``) so that converted checkpoints give the same numbers:

- anchors: ``maskrcnn_benchmark/modeling/rpn/anchor_generator.py`` (``make_anchor_generator_complex`` with one aspect
  ratio 1.0 and one scale per octave, i.e. one square anchor of side ``anchor_scale * stride`` per location, centred
  with the legacy ``generate_anchors`` "+1" convention);
- box coder: ``BoxCoder`` in ``maskrcnn_benchmark/modeling/rpn/vldyhead.py`` (weights 10, 10, 5, 5, ``TO_REMOVE = 1``);
- head: the dot-product branch of ``VLDyHead`` in the same file (``bbox_pred``, ``centerness``, ``scales``,
  ``dot_product_projection_text``, ``log_scale``, ``bias_lang``, ``bias0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Official VLDyHead clamps dot-product logits to +-50000 (FUSE_CONFIG.CLAMP_DOT_PRODUCT, True in the GLIP-T/L configs).
DOT_PRODUCT_LOGIT_CLAMP = 50000.0
# Logit given to padded text positions. It is the clamp floor, i.e. the lowest logit the official head can emit,
# so sigmoid() is exactly 0 and any max/mean over tokens ignores padding; the loss masks padding anyway.
PADDED_TOKEN_LOGIT = -DOT_PRODUCT_LOGIT_CLAMP


def generate_anchors(
    spatial_shapes: torch.Tensor | Sequence[Sequence[int]],
    strides: Sequence[int],
    anchor_scale: float = 8.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One square anchor per feature-map location, exactly as the official ATSS anchor generator.

    The official cell anchor comes from ``generate_anchors(stride, (anchor_scale * stride,), (1.0,))``: a reference
    window ``(0, 0, stride - 1, stride - 1)`` (centre ``(stride - 1) / 2``) grown to side ``anchor_scale * stride``
    with the "+1" width convention, i.e. ``centre -+ 0.5 * (side - 1)``. Grid shifts are ``x * stride``.
    Example: stride 8, scale 8 -> the cell at (0, 0) is ``[-28, -28, 35, 35]``.

    Args:
        spatial_shapes: ``(L, 2)`` long tensor or list of ``(H_l, W_l)``, levels fine to coarse. A list keeps
            the model free of data-dependent reads (one `torch.compile` graph, no host sync).
        strides: ``L`` strides in input pixels (e.g. ``(8, 16, 32, 64, 128)``).
        anchor_scale: anchor side in units of the stride (official ``ANCHOR_SIZES / ANCHOR_STRIDE`` = 8).
        device: device of the result (defaults to ``spatial_shapes.device``, or the CPU for a list).
        dtype: dtype of the result; the arithmetic is float32 as in the official code.

    Returns:
        ``(A, 4)`` xyxy anchors in input pixels, ``A = sum(H_l * W_l)``, levels concatenated, row-major per level.
    """
    if len(strides) != len(spatial_shapes):
        raise ValueError(f"got {len(strides)} strides for {len(spatial_shapes)} levels")
    if device is None:
        device = spatial_shapes.device if isinstance(spatial_shapes, torch.Tensor) else torch.device("cpu")
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    anchors = []
    for (height, width), stride in zip(spatial_shapes, strides):
        # Cell anchor in float64 (numpy in the official code), then float32 as ``.float()`` does there.
        centre = (stride - 1) / 2.0
        half = 0.5 * (anchor_scale * stride - 1)
        cell = torch.tensor([centre - half, centre - half, centre + half, centre + half], dtype=torch.float64)
        cell = cell.to(device=device, dtype=torch.float32)
        shifts_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
        shifts_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        anchors.append(shifts + cell)
    if not anchors:
        return torch.zeros(0, 4, device=device, dtype=dtype)
    return torch.cat(anchors, dim=0).to(dtype)


class Glipv2BoxCoder:
    """ATSS box coder of the official GLIP code (``BoxCoder`` in ``modeling/rpn/vldyhead.py``).

    Widths use the legacy ``TO_REMOVE = 1`` convention (``x2 - x1 + 1``); decoded corners are
    ``centre -+ 0.5 * (size - 1)``, so ``decode(encode(boxes, anchors), anchors) == boxes``.

    Args:
        weights: ``(wx, wy, ww, wh)`` delta weights, official ``(10, 10, 5, 5)``.
        bbox_xform_clip: upper clamp of ``dw, dh`` before ``exp``, official ``log(1000 / 16)``.
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        bbox_xform_clip: float = math.log(1000.0 / 16),
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    @staticmethod
    def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        widths = boxes[:, 2] - boxes[:, 0] + 1  # TO_REMOVE = 1
        heights = boxes[:, 3] - boxes[:, 1] + 1
        ctr_x = (boxes[:, 2] + boxes[:, 0]) / 2
        ctr_y = (boxes[:, 3] + boxes[:, 1]) / 2
        return widths, heights, ctr_x, ctr_y

    def encode(self, gt_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Regression targets of ``gt_boxes`` relative to ``anchors``.

        Args:
            gt_boxes: ``(N, 4)`` xyxy pixels.
            anchors: ``(N, 4)`` xyxy pixels.

        Returns:
            ``(N, 4)`` deltas ``(dx, dy, dw, dh)``.
        """
        wx, wy, ww, wh = self.weights
        ex_widths, ex_heights, ex_ctr_x, ex_ctr_y = self._centre_size(anchors)
        gt_widths, gt_heights, gt_ctr_x, gt_ctr_y = self._centre_size(gt_boxes)
        targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        targets_dw = ww * torch.log(gt_widths / ex_widths)
        targets_dh = wh * torch.log(gt_heights / ex_heights)
        return torch.stack((targets_dx, targets_dy, targets_dw, targets_dh), dim=1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes from deltas.

        Args:
            deltas: ``(N, 4)`` or ``(..., N, 4)`` deltas ``(dx, dy, dw, dh)``.
            anchors: ``(N, 4)`` xyxy pixels (broadcast over leading dims of ``deltas``).

        Returns:
            Boxes of the shape of ``deltas``, xyxy pixels.
        """
        anchors = anchors.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        widths, heights, ctr_x, ctr_y = self._centre_size(anchors)
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        # Prevent sending too large values into torch.exp() (official clamp, max only).
        dw = torch.clamp(deltas[..., 2] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.bbox_xform_clip)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        return torch.stack(
            (
                pred_ctr_x - 0.5 * (pred_w - 1),
                pred_ctr_y - 0.5 * (pred_h - 1),
                pred_ctr_x + 0.5 * (pred_w - 1),
                pred_ctr_y + 0.5 * (pred_h - 1),
            ),
            dim=-1,
        )


class Glipv2Scale(nn.Module):
    """A learnable scalar multiplier (official ``maskrcnn_benchmark.layers.Scale``); parameter ``scale``: [1]."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Returns ``hidden_states * scale`` (any shape)."""
        return hidden_states * self.scale


def _flatten_level(feature: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H * W, C)``, row-major (official ``permute_and_flatten`` with one anchor)."""
    batch_size, channels = feature.shape[:2]
    return feature.permute(0, 2, 3, 1).reshape(batch_size, -1, channels)


class Glipv2GroundingHead(nn.Module):
    """Region-word alignment head: token logits, box deltas and centerness for every anchor.

    The dot-product branch of the official ``VLDyHead`` (``modeling/rpn/vldyhead.py``), without the unused
    ``cls_logits`` conv (its loss weight is 0 when ``USE_CLASSIFICATION_LOSS`` is False, as in every GLIP config).

    Args:
        hidden_size: visual channels ``C`` (256 in GLIP).
        text_hidden_size: text channels ``D`` (768 for BERT-base).
        num_levels: number of feature levels (one ``Glipv2Scale`` each).
        prior_prob: focal-loss prior; ``bias0 = -log((1 - p) / p)``.
        log_scale_init: initial temperature ``log_scale`` (official ``DYHEAD.LOG_SCALE`` = 0.0).
    """

    def __init__(
        self,
        hidden_size: int = 256,
        text_hidden_size: int = 768,
        num_levels: int = 5,
        prior_prob: float = 0.01,
        log_scale_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.text_hidden_size = text_hidden_size
        self.num_levels = num_levels
        self.prior_prob = prior_prob
        self.log_scale_init = log_scale_init
        self.bbox_pred = nn.Conv2d(hidden_size, 4, kernel_size=1)
        self.centerness = nn.Conv2d(hidden_size, 1, kernel_size=1)
        self.scales = nn.ModuleList([Glipv2Scale(1.0) for _ in range(num_levels)])
        self.text_projection = nn.Linear(text_hidden_size, hidden_size, bias=True)
        self.log_scale = nn.Parameter(torch.tensor([float(log_scale_init)]))
        self.bias_lang = nn.Parameter(torch.zeros(text_hidden_size))
        self.bias0 = nn.Parameter(torch.tensor([self.prior_bias]))
        self.reset_parameters()

    @property
    def prior_bias(self) -> float:
        """``-log((1 - p) / p)``: the initial logit giving probability ``prior_prob``."""
        return -math.log((1 - self.prior_prob) / self.prior_prob)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Official initialisation: convs N(0, 0.01) with zero bias, scales 1, ``bias_lang`` 0, ``bias0`` prior.

        ``text_projection`` keeps PyTorch's default ``nn.Linear`` init, as the official
        ``dot_product_projection_text`` does (the official init loop only touches ``nn.Identity`` there).
        """
        for conv in (self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0.0)
        for scale in self.scales:
            scale.scale.fill_(1.0)
        self.text_projection.reset_parameters()
        self.log_scale.fill_(self.log_scale_init)
        self.bias_lang.zero_()
        self.bias0.fill_(self.prior_bias)

    def forward(
        self,
        vision_features: tuple[torch.Tensor, ...],
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-anchor outputs over all levels (fine to coarse, row-major within a level).

        Args:
            vision_features: ``num_levels`` fused maps, each ``(B, C, H_l, W_l)``.
            text_features: ``(B, T, D)`` fused text features (official ``language_dict_features["hidden"]`` with
                ``USE_FUSED_FEATURES_DOT_PRODUCT``).
            text_attention_mask: ``(B, T)``, 1 for real tokens, 0 for padding.

        Returns:
            logits: ``(B, A, T)`` region-word logits ``(visual . proj(text)) / exp(log_scale) + bias``, clamped to
                +-50000; padded text positions are set to ``PADDED_TOKEN_LOGIT`` (-50000, sigmoid 0).
            box_regression: ``(B, A, 4)`` box deltas, already multiplied by the level's scale.
            centerness: ``(B, A)`` centerness logits.
        """
        if len(vision_features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature levels, got {len(vision_features)}")
        normalized_text = F.normalize(text_features, p=2, dim=-1)
        projected_text = self.text_projection(normalized_text / 2.0)  # (B, T, C); "/ 2.0" is official
        token_bias = torch.matmul(normalized_text, self.bias_lang) + self.bias0  # (B, T)
        temperature = self.log_scale.exp()
        padding = ~text_attention_mask.bool()
        logits, box_regression, centerness = [], [], []
        for level, feature in enumerate(vision_features):
            box_regression.append(_flatten_level(self.scales[level](self.bbox_pred(feature))))
            centerness.append(_flatten_level(self.centerness(feature)).squeeze(-1))
            visual = _flatten_level(feature)  # (B, HW, C)
            level_logits = torch.matmul(visual, projected_text.transpose(-1, -2)) / temperature
            level_logits = level_logits + token_bias.unsqueeze(1)
            level_logits = level_logits.clamp(min=-DOT_PRODUCT_LOGIT_CLAMP, max=DOT_PRODUCT_LOGIT_CLAMP)
            logits.append(level_logits.masked_fill(padding.unsqueeze(1), PADDED_TOKEN_LOGIT))
        return torch.cat(logits, dim=1), torch.cat(box_regression, dim=1), torch.cat(centerness, dim=1)
