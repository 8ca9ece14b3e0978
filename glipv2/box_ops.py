"""Box operations, once each: format conversions, IoU (plain and the official "+1" convention), element-wise GIoU,
GLIP's anchors and its ATSS box coder. Every other module (and `tasks/`, `scripts/`) uses these.

Conventions: `xyxy` corners, `xywh` (COCO) top-left corner and size, `cxcywh` centre and size; "normalised" means
divided by the unpadded image's width / height. The official GLIP code (`microsoft/GLIP`, `maskrcnn_benchmark`) uses
inclusive pixel boxes (width `x2 - x1 + 1`, "TO_REMOVE = 1") for anchors, the box coder and ATSS; the model's outputs
are continuous boxes (`x2 + 1`), where plain IoU equals the official "+1" IoU up to scaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


# ---------------------------------------------------------------------------------------------------- conversions
def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` `(cx, cy, w, h)` -> `(..., 4)` `(x1, y1, x2, y2)` in the same units (normalised or pixels)."""
    centre_x, centre_y, width, height = boxes.unbind(-1)
    return torch.stack(
        (centre_x - 0.5 * width, centre_y - 0.5 * height, centre_x + 0.5 * width, centre_y + 0.5 * height), dim=-1
    )


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` `(x1, y1, x2, y2)` -> `(..., 4)` `(cx, cy, w, h)` in the same units."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def xyxy_to_normalized_cxcywh(boxes: torch.Tensor, image_sizes: torch.Tensor | Sequence) -> torch.Tensor:
    """Absolute `(x1, y1, x2, y2)` -> `(cx, cy, w, h)` relative to the image size (inverse of [`cxcywh_to_xyxy`]
    followed by scaling).

    Args:
        boxes: `(B, A, 4)` (or `(A, 4)`) xyxy pixels.
        image_sizes: `(B, 2)` (or `(2,)`) `(height, width)` of the unpadded image.
    """
    cxcywh = xyxy_to_cxcywh(boxes)
    height_width = torch.as_tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)
    scale = torch.cat((height_width.flip(-1), height_width.flip(-1)), dim=-1)
    if scale.dim() < boxes.dim():
        scale = scale.unsqueeze(-2)
    return cxcywh / scale


def xywh_to_xyxy(boxes: Any) -> torch.Tensor:
    """COCO `[x, y, w, h]` boxes (a tensor or nested lists, `(N, 4)`) -> `(N, 4)` xyxy (float64 for lists)."""
    boxes = torch.as_tensor(boxes, dtype=None if isinstance(boxes, torch.Tensor) else torch.float64).reshape(-1, 4)
    return torch.cat((boxes[:, :2], boxes[:, :2] + boxes[:, 2:]), dim=1)


def xyxy_to_xywh(boxes: Any) -> torch.Tensor:
    """`(N, 4)` xyxy -> COCO `[x, y, w, h]` (float64 for lists)."""
    boxes = torch.as_tensor(boxes, dtype=None if isinstance(boxes, torch.Tensor) else torch.float64).reshape(-1, 4)
    return torch.cat((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), dim=1)


# ------------------------------------------------------------------------------------------------------------ IoU
def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """`(N, 4)` xyxy -> `(N,)` areas (continuous convention)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes, continuous convention (as `torchvision.ops.box_iou`): `(N, 4)`, `(M, 4)` ->
    `(N, M)`. A pair whose union is empty (two degenerate boxes) has IoU 0."""
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(boxes1)[:, None] + box_area(boxes2) - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), 0.0)


def box_iou_legacy(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU with the legacy "+1" convention (official `boxlist_iou`: width = `x2 - x1 + 1`), used by ATSS.

    Args:
        boxes1: `(N, 4)` xyxy; boxes2: `(M, 4)` xyxy.

    Returns:
        `(N, M)` IoU.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2 - inter)


def elementwise_giou(pred_boxes: torch.Tensor, target_boxes: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """GIoU of matched pairs `(P, 4)` x `(P, 4)` xyxy -> `(P,)`, with the official `GIoULoss` arithmetic.

    As `ATSSLossComputation.GIoULoss`: areas without "+1", predicted `x2, y2` raised to at least `x1, y1`, `eps`
    added to the union and the enclosing area.
    """
    pred_x1, pred_y1 = pred_boxes[:, 0], pred_boxes[:, 1]
    pred_x2 = torch.max(pred_x1, pred_boxes[:, 2])
    pred_y2 = torch.max(pred_y1, pred_boxes[:, 3])
    pred_area = (pred_x2 - pred_x1) * (pred_y2 - pred_y1)
    target_x1, target_y1, target_x2, target_y2 = target_boxes.unbind(-1)
    target_area = (target_x2 - target_x1) * (target_y2 - target_y1)
    inter_w = torch.min(pred_x2, target_x2) - torch.max(pred_x1, target_x1)
    inter_h = torch.min(pred_y2, target_y2) - torch.max(pred_y1, target_y1)
    area_intersect = torch.where((inter_w > 0) & (inter_h > 0), inter_w * inter_h, torch.zeros_like(inter_w))
    enclosing_w = torch.max(pred_x2, target_x2) - torch.min(pred_x1, target_x1)
    enclosing_h = torch.max(pred_y2, target_y2) - torch.min(pred_y1, target_y1)
    area_enclosing = enclosing_w * enclosing_h + eps
    area_union = pred_area + target_area - area_intersect + eps
    return area_intersect / area_union - (area_enclosing - area_union) / area_enclosing


# ------------------------------------------------------------------------------------------------ anchors, coder
def generate_anchors(
    spatial_shapes: torch.Tensor | Sequence[Sequence[int]],
    strides: Sequence[int],
    anchor_scale: float = 8.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One square anchor per feature-map location, exactly as the official ATSS anchor generator.

    The official cell anchor comes from `generate_anchors(stride, (anchor_scale * stride,), (1.0,))`
    (`modeling/rpn/anchor_generator.py`): a reference window `(0, 0, stride - 1, stride - 1)` (centre
    `(stride - 1) / 2`) grown to side `anchor_scale * stride` with the "+1" width convention, i.e.
    `centre -+ 0.5 * (side - 1)`. Grid shifts are `x * stride`. Example: stride 8, scale 8 -> the cell at (0, 0) is
    `[-28, -28, 35, 35]`.

    Args:
        spatial_shapes: `(L, 2)` long tensor or list of `(H_l, W_l)`, levels fine to coarse. A list keeps the model
            free of data-dependent reads (one `torch.compile` graph, no host sync).
        strides: `L` strides in input pixels (e.g. `(8, 16, 32, 64, 128)`).
        anchor_scale: anchor side in units of the stride (official `ANCHOR_SIZES / ANCHOR_STRIDE` = 8).
        device: device of the result (defaults to `spatial_shapes.device`, or the CPU for a list).
        dtype: dtype of the result; the arithmetic is float32 as in the official code.

    Returns:
        `(A, 4)` xyxy anchors in input pixels, `A = sum(H_l * W_l)`, levels concatenated, row-major per level.
    """
    if len(strides) != len(spatial_shapes):
        raise ValueError(f"got {len(strides)} strides for {len(spatial_shapes)} levels")
    if device is None:
        device = spatial_shapes.device if isinstance(spatial_shapes, torch.Tensor) else torch.device("cpu")
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    anchors = []
    for (height, width), stride in zip(spatial_shapes, strides):
        # Cell anchor in float64 (numpy in the official code), then float32 as `.float()` does there.
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
    """ATSS box coder of the official GLIP code (`BoxCoder` in `modeling/rpn/vldyhead.py`).

    Widths use the legacy `TO_REMOVE = 1` convention (`x2 - x1 + 1`); decoded corners are `centre -+ 0.5 * (size - 1)`,
    so `decode(encode(boxes, anchors), anchors) == boxes`.

    Args:
        weights: `(wx, wy, ww, wh)` delta weights, official `(10, 10, 5, 5)`.
        bbox_xform_clip: upper clamp of `dw, dh` before `exp`, official `log(1000 / 16)`.
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
        """Regression targets `(N, 4)` `(dx, dy, dw, dh)` of `gt_boxes` `(N, 4)` relative to `anchors` `(N, 4)`
        (xyxy pixels)."""
        wx, wy, ww, wh = self.weights
        ex_widths, ex_heights, ex_ctr_x, ex_ctr_y = self._centre_size(anchors)
        gt_widths, gt_heights, gt_ctr_x, gt_ctr_y = self._centre_size(gt_boxes)
        targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        targets_dw = ww * torch.log(gt_widths / ex_widths)
        targets_dh = wh * torch.log(gt_heights / ex_heights)
        return torch.stack((targets_dx, targets_dy, targets_dw, targets_dh), dim=1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes (xyxy pixels, the shape of `deltas`) from deltas `(N, 4)` or `(..., N, 4)` and anchors `(N, 4)`
        (broadcast over the leading dimensions of `deltas`)."""
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


def inclusive_to_continuous(boxes: torch.Tensor) -> torch.Tensor:
    """Official inclusive-pixel boxes (`x2` = last pixel) -> continuous boxes (`x2 + 1`, `y2 + 1`)."""
    return boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)


def continuous_to_inclusive(boxes: torch.Tensor) -> torch.Tensor:
    """Continuous boxes -> official inclusive-pixel boxes (`x2 - 1`, `y2 - 1`)."""
    return boxes - torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)


__all__ = [
    "Glipv2BoxCoder",
    "box_area",
    "box_iou",
    "box_iou_legacy",
    "continuous_to_inclusive",
    "cxcywh_to_xyxy",
    "elementwise_giou",
    "generate_anchors",
    "inclusive_to_continuous",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_normalized_cxcywh",
    "xyxy_to_xywh",
]
