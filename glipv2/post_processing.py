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

import math
from collections.abc import Sequence
from typing import Any

import numpy
import torch
import torch.nn.functional as F

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
    return_anchor_indices: bool = False,
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
        return_anchor_indices: also return each detection's anchor (``"anchor_indices"`` ``(N,)``, into ``A``).

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
            boxes, scores, labels, anchor_idx = boxes[keep], scores[keep], labels[keep], anchor_idx[keep]
        order = torch.sort(scores, descending=True, stable=True).indices
        if max_detections > 0:
            order = order[:max_detections]
        result = {"scores": scores[order], "boxes": boxes[order], "labels": labels[order]}
        if return_anchor_indices:
            result["anchor_indices"] = anchor_idx[order]
        results.append(result)
    return results


def keep_only_anchors(logits: torch.Tensor, anchor_indices: torch.Tensor) -> torch.Tensor:
    """``(B, A, T)`` logits with every anchor not in its image's ``anchor_indices`` ``(B, K)`` (``-1`` entries
    ignored) set to the lowest logit, so that post-processing decodes only those anchors."""
    keep = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
    valid = anchor_indices >= 0
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None].expand_as(anchor_indices)
    keep[rows[valid], anchor_indices[valid]] = True
    return logits.masked_fill(~keep[..., None], torch.finfo(logits.dtype).min)


def paste_masks(mask_logits: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, M, M)`` mask logits predicted in their boxes ``(N, 4)`` (continuous absolute xyxy in an image of
    ``height`` x ``width``) -> ``(N, height, width)`` probabilities.

    Each pixel centre ``(x + 0.5, y + 0.5)`` inside a box samples the box's probabilities bilinearly at its position
    in the box (detectron2's ``paste_masks_in_image``): the inverse of the training targets' RoIAlign
    (``aligned=True``), so a mask filling its box covers exactly the pixels whose centres lie in it (torchvision's
    legacy paste rounds boxes to integers and adds a pixel on each side)."""
    probabilities = mask_logits.float().sigmoid()
    pasted = probabilities.new_zeros(len(probabilities), height, width)
    for index, (x0, y0, x1, y1) in enumerate(boxes.float().tolist()):
        left, right = max(math.floor(x0), 0), min(math.ceil(x1), width)
        top, bottom = max(math.floor(y0), 0), min(math.ceil(y1), height)
        if right <= left or bottom <= top:
            continue
        xs = (torch.arange(left, right, device=pasted.device) + 0.5 - x0) / max(x1 - x0, 1e-6) * 2 - 1
        ys = (torch.arange(top, bottom, device=pasted.device) + 0.5 - y0) / max(y1 - y0, 1e-6) * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]
        sampled = F.grid_sample(probabilities[index][None, None], grid, align_corners=False, padding_mode="zeros")
        pasted[index, top:bottom, left:right] = sampled[0, 0]
    return pasted


def candidate_slots(candidates: torch.Tensor, anchor_indices: torch.Tensor) -> torch.Tensor:
    """The position in an image's mask candidates (anchors ``candidates`` ``(K,)``) of each detection's anchor
    (``anchor_indices`` ``(N,)``); a detection whose anchor is not a candidate raises."""
    matches = candidates[None, :] == anchor_indices[:, None]
    if not bool(matches.any(dim=1).all()):
        missing = anchor_indices[~matches.any(dim=1)].tolist()
        raise ValueError(f"detections at anchors {missing[:5]} are not mask candidates (keep_only_anchors first)")
    return matches.float().argmax(dim=1)


def detection_masks(
    pred_masks: torch.Tensor,
    candidates: torch.Tensor,
    anchor_indices: torch.Tensor,
    boxes: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """The masks of one image's detections: ``pred_masks`` ``(K, M, M)`` logits of its mask candidates (anchors
    ``candidates`` ``(K,)``), each detection's (anchor ``anchor_indices`` ``(N,)``, one of the candidates) pasted
    into its box ``boxes`` ``(N, 4)`` (absolute xyxy): ``(N, height, width)`` probabilities."""
    return paste_masks(pred_masks[candidate_slots(candidates, anchor_indices)], boxes, height, width)


def instance_segments(
    scores: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    return_binary_maps: bool = False,
    return_coco_annotation: bool = False,
) -> dict[str, Any]:
    """transformers' instance-segmentation result of one image from its instances (by decreasing score).

    Args:
        scores, labels: ``(N,)`` of the instances. masks: ``(N, H, W)`` probabilities at the output size.
        mask_threshold: a pixel belongs to an instance where its probability is ``> mask_threshold``.
        overlap_mask_area_threshold: in the segmentation map every pixel goes to the best-scoring instance covering
            it; an instance keeping less than this share of its mask there is dropped from the map (Mask2Former's
            rule), not from `return_binary_maps` / `return_coco_annotation` results.
        return_binary_maps: `segmentation` is then `(N, H, W)` binary maps, one per segment (all instances).
        return_coco_annotation: `segmentation` is then one COCO compressed RLE per segment (all instances), as
            COCO results files take them (pycocotools).

    Returns:
        `{"segmentation": (H, W) int32 map (-1 background, else the segment id) | maps | RLEs, "segments_info":
        [{"id", "label_id", "was_fused": False, "score"}]}`.
    """
    binary = masks > mask_threshold
    if return_binary_maps or return_coco_annotation:
        info = [
            {"id": index, "label_id": int(label), "was_fused": False, "score": float(score)}
            for index, (score, label) in enumerate(zip(scores.tolist(), labels.tolist()))
        ]
        if return_binary_maps:
            return {"segmentation": binary, "segments_info": info}
        from pycocotools import mask as mask_utils

        rles = []
        for mask in binary.cpu().numpy():
            rle = mask_utils.encode(numpy.asfortranarray(mask.astype(numpy.uint8)))
            rles.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")})
        return {"segmentation": rles, "segments_info": info}
    height, width = masks.shape[-2:]
    segmentation = torch.full((height, width), -1, dtype=torch.int32, device=masks.device)
    info = []
    for score, label, mask in zip(scores.tolist(), labels.tolist(), binary):
        area = int(mask.sum())
        visible = mask & (segmentation < 0)
        if area == 0 or int(visible.sum()) / area < overlap_mask_area_threshold:
            continue
        segmentation[visible] = len(info)
        info.append({"id": len(info), "label_id": int(label), "was_fused": False, "score": float(score)})
    return {"segmentation": segmentation, "segments_info": info}


__all__ = [
    "batched_nms",
    "candidate_slots",
    "detection_masks",
    "instance_segments",
    "keep_only_anchors",
    "nms",
    "paste_masks",
    "post_process_grounding",
]
