"""Post-processing of GLIP/GLIPv2 grounding outputs into per-label detections.

Follows ``ATSSPostProcessor`` with dot-product logits in the official ``maskrcnn_benchmark/modeling/rpn/inference.py``
(``convert_grounding_to_od_logits`` with ``SCORE_AGG = "MEAN"``, ``MODEL.ATSS.INFERENCE_TH = 0.05``,
``PRE_NMS_TOP_N = 1000``, ``NMS_TH = 0.6``, ``DETECTIONS_PER_IMG = 100`` in ``config/defaults.py``).
NMS uses ``torchvision.ops.batched_nms`` when importable and a pure-PyTorch fallback otherwise.

Box convention: ``pred_boxes`` are expected in the *continuous* convention, i.e. the official inclusive-pixel boxes
with ``x2 + 1, y2 + 1`` (what ``modeling_glipv2_detection`` produces), normalised by the unpadded input size. Then
clipping to ``[0, 1]`` is the official ``clip_to_image`` (``[0, W - 1]`` inclusive), and the plain IoU used here
equals the official "+1" IoU of ``ml_nms`` (IoU is invariant to per-axis scaling), so no "+1" is needed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy
import torch

from .box_ops import box_iou, cxcywh_to_xyxy

try:  # torchvision is optional: the pure-PyTorch ``nms`` below is used without it.
    from torchvision.ops import batched_nms as _torchvision_batched_nms
except (ImportError, RuntimeError, OSError):  # pragma: no cover - depends on the environment
    _torchvision_batched_nms = None

# Rows of the IoU matrix computed at once by the fallback NMS (bounds its memory to _NMS_CHUNK x N floats).
_NMS_CHUNK = 1024


def _greedy_keep(boxes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy suppression of ``(N, 4)`` xyxy boxes already sorted by decreasing score -> ``(N,)`` bool keep mask."""
    num_boxes = boxes.shape[0]
    if num_boxes == 0:
        return torch.zeros(0, dtype=torch.bool, device=boxes.device)
    chunks = range(0, num_boxes, _NMS_CHUNK)
    overlaps = torch.cat([box_iou(boxes[start : start + _NMS_CHUNK], boxes) > iou_threshold for start in chunks])
    # Only later (lower-scoring) boxes can be suppressed: keep the strict upper triangle. numpy rows make the
    # sequential greedy pass far faster than per-element tensor indexing.
    overlaps = torch.triu(overlaps, diagonal=1).cpu().numpy()
    removed = numpy.zeros(num_boxes, dtype=bool)
    for index in range(num_boxes):  # greedy NMS is sequential by nature
        if not removed[index]:
            removed |= overlaps[index]
    return torch.from_numpy(~removed).to(boxes.device)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS in pure PyTorch, the same result as ``torchvision.ops.nms``.

    A box is dropped if its IoU with a kept, higher-scoring box is ``> iou_threshold``.

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``.
        iou_threshold: IoU above which the lower-scoring box is suppressed.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[_greedy_keep(boxes[order], iou_threshold)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float, use_torchvision: bool = True
) -> torch.Tensor:
    """Class-wise NMS: ``torchvision.ops.batched_nms`` when importable (and requested), else pure PyTorch.

    Runs in float64 so that torchvision's per-class coordinate offsets lose no precision with many labels. The
    fallback runs the greedy pass per label (cost ``sum(n_label ** 2)``, not ``N ** 2``).

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``.
        labels: ``(N,)`` int64 class ids; boxes of different labels never suppress each other.
        iou_threshold: IoU above which the lower-scoring box of the same label is suppressed.
        use_torchvision: set False to force the pure-PyTorch path.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    boxes, scores = boxes.double(), scores.double()
    if use_torchvision and _torchvision_batched_nms is not None:
        return _torchvision_batched_nms(boxes, scores, labels, iou_threshold)
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(labels[order], stable=True).indices]  # grouped by label, by score within a label
    if order.numel() == 0:
        return order
    counts = torch.unique_consecutive(labels[order], return_counts=True)[1].tolist()
    kept = order[torch.cat([_greedy_keep(boxes[group], iou_threshold) for group in order.split(counts)])]
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def _label_token_weights(positive_map: torch.Tensor, num_tokens: int, index: int) -> torch.Tensor:
    """``(K, T)`` 0/1 label-token map -> ``(K, T)`` weights whose matmul with token probabilities is their mean."""
    if positive_map.dim() != 2 or positive_map.shape[1] != num_tokens:
        raise ValueError(
            f"image {index}: 'positive_maps' must be (num_labels, {num_tokens}), got {tuple(positive_map.shape)}"
        )
    membership = (positive_map > 0).float()
    # A label without tokens (e.g. truncated away) scores 0 and is never kept; official code would give NaN.
    return membership / membership.sum(-1, keepdim=True).clamp(min=1.0)


def _select_level(
    label_scores: torch.Tensor, centerness: torch.Tensor, threshold: float, pre_nms_top_n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates of one level: label score ``> threshold``, then top ``pre_nms_top_n`` of score x centerness.

    Args:
        label_scores: ``(A_l, K)`` per-label scores (mean token sigmoid).
        centerness: ``(A_l,)`` centerness probabilities.
        threshold: minimum label score (before centerness).
        pre_nms_top_n: candidates kept on this level.

    Returns:
        anchor indices ``(n,)`` within the level, labels ``(n,)``, scores ``(n,)`` = ``sqrt(cls * centerness)``.
    """
    candidates = label_scores > threshold
    weighted = (label_scores * centerness[:, None])[candidates]
    top_scores, top = weighted.topk(min(weighted.numel(), pre_nms_top_n))
    anchor_label = candidates.nonzero()[top]
    return anchor_label[:, 0], anchor_label[:, 1], torch.sqrt(top_scores)


def _image_scale(
    target_sizes: torch.Tensor | Sequence | None, index: int, device: torch.device
) -> torch.Tensor | None:
    """``(4,)`` ``(w, h, w, h)`` of image ``index`` or None."""
    if target_sizes is None:
        return None
    height, width = (float(value) for value in torch.as_tensor(target_sizes[index]).reshape(2).tolist())
    return torch.tensor([width, height, width, height], device=device)


def post_process_grounding(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    centerness: torch.Tensor,
    spatial_shapes: torch.Tensor,
    positive_maps: Sequence[torch.Tensor],
    threshold: float = 0.05,
    pre_nms_top_n: int = 1000,
    nms_threshold: float = 0.6,
    max_detections: int = 100,
    target_sizes: torch.Tensor | Sequence | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Turn region-word logits into scored, labelled, NMS-filtered boxes (official ``ATSSPostProcessor``).

    Per label, the score of an anchor is the mean of the sigmoids of the label's tokens; an (anchor, label) pair is a
    candidate if that score is ``> threshold``; per level the top ``pre_nms_top_n`` candidates by
    ``score * sigmoid(centerness)`` are kept with final score ``sqrt(score * sigmoid(centerness))``; boxes are
    clipped to the image; class-wise NMS at ``nms_threshold`` over all levels; the best ``max_detections`` remain.

    Args:
        logits: ``(B, A, T)`` region-word logits.
        pred_boxes: ``(B, A, 4)`` decoded boxes, normalised ``(cx, cy, w, h)`` relative to the unpadded image.
        centerness: ``(B, A)`` centerness logits.
        spatial_shapes: ``(L, 2)`` long ``(H_l, W_l)``, ``A = sum(H_l * W_l)``, levels fine to coarse.
        positive_maps: per image a ``(num_labels_i, T)`` 0/1 map of each label's tokens.
        threshold: minimum mean token probability of a label (official ``INFERENCE_TH`` 0.05).
        pre_nms_top_n: candidates kept per level (official 1000).
        nms_threshold: class-wise NMS IoU threshold (official 0.6); ``<= 0`` disables NMS.
        max_detections: detections kept per image (official 100); ``<= 0`` keeps all.
        target_sizes: ``(B, 2)`` tensor or list of ``(height, width)``; boxes are then absolute pixels.

    Returns:
        Per image ``{"scores": (N,) float32, "boxes": (N, 4) float32 xyxy (absolute if ``target_sizes`` else
        normalised), "labels": (N,) int64 row index into ``positive_maps[i]``}``, by decreasing score.
    """
    batch_size, num_anchors, num_tokens = logits.shape
    level_sizes = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).tolist()
    if sum(level_sizes) != num_anchors:
        raise ValueError(f"spatial_shapes give {sum(level_sizes)} anchors, logits have {num_anchors}")
    if len(positive_maps) != batch_size or (target_sizes is not None and len(target_sizes) != batch_size):
        raise ValueError(f"positive_maps / target_sizes must have one entry per image ({batch_size})")
    probabilities = logits.float().sigmoid()
    centerness_probabilities = centerness.float().sigmoid()
    boxes_xyxy = cxcywh_to_xyxy(pred_boxes.float())
    results = []
    for index in range(batch_size):
        weights = _label_token_weights(positive_maps[index].to(logits.device), num_tokens, index)
        anchor_idx, labels, scores, start = [], [], [], 0
        for level_size in level_sizes:
            level = slice(start, start + level_size)
            label_scores = probabilities[index, level] @ weights.T  # (A_l, K): mean over each label's tokens
            level_anchors, level_labels, level_scores = _select_level(
                label_scores, centerness_probabilities[index, level], threshold, pre_nms_top_n
            )
            anchor_idx.append(level_anchors + start)
            labels.append(level_labels)
            scores.append(level_scores)
            start += level_size
        anchor_idx, labels, scores = torch.cat(anchor_idx), torch.cat(labels), torch.cat(scores)
        boxes = boxes_xyxy[index, anchor_idx].clamp(min=0.0, max=1.0)
        scale = _image_scale(target_sizes, index, boxes.device)
        if scale is not None:
            boxes = boxes * scale
        if nms_threshold > 0 and scores.numel() > 0:
            keep = batched_nms(boxes, scores, labels, nms_threshold)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = torch.sort(scores, descending=True, stable=True).indices
        if max_detections > 0:
            order = order[:max_detections]
        results.append({"scores": scores[order], "boxes": boxes[order], "labels": labels[order]})
    return results


__all__ = ["batched_nms", "nms", "post_process_grounding"]
