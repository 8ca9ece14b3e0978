"""Phrase grounding Recall@k (Flickr30k Entities protocol, IoU >= 0.5) as an ``evaluate`` metric."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import datasets
import evaluate
import torch

from glipv2.box_ops import box_iou, xywh_to_xyxy

_DESCRIPTION = """Recall@k for phrase grounding: the fraction of phrases for which at least one of the k
highest-ranked predicted boxes matches the ground truth with IoU >= iou_threshold (0.5).

protocol="any_box" (default; MDETR's ANY-BOX protocol): a predicted box matches if its IoU with ANY of the
phrase's ground-truth boxes is >= the threshold.
protocol="merged_box" (MDETR's MERGED-BOXES protocol, the original Flickr30k Entities evaluation): the phrase's
ground-truth boxes are first merged into their enclosing box, and a predicted box matches if its IoU with that
enclosing box is >= the threshold.

upper_bound=True adds "upper_bound": the fraction of phrases matched by ANY of their predicted boxes (the official
evaluator's k = -1). phrase_types (one list of type names per phrase, e.g. Flickr30k Entities' "people",
"clothing") adds the same numbers per type, "recall@k/<type>", a phrase counting towards each of its types.
iou_type="giou" matches on generalized IoU instead (MDETR's RefExpEvaluator for RefCOCO/+/g)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per phrase, the predicted boxes sorted by decreasing score, [[x0, y0, x1, y1], ...].
    references: per phrase, its ground-truth boxes, [[x0, y0, x1, y1], ...] (at least one).
    ks: the k values (default (1, 5, 10)).
    protocol: "any_box" (default) or "merged_box".
    iou_threshold: default 0.5.
    box_format: "xyxy" (default) or "xywh", for both predictions and references.
    iou_type: "iou" (default) or "giou".
    upper_bound: also report "upper_bound" (a match among all of a phrase's predicted boxes).
    phrase_types: optional, per phrase a list of type names; adds "recall@k/<type>" (and "upper_bound/<type>").
Returns:
    {"recall@1": float, "recall@5": float, "recall@10": float} (fractions in [0, 1]), plus the optional entries.
"""

PROTOCOLS = ("any_box", "merged_box")
IOU_TYPES = ("iou", "giou")


def _as_xyxy(boxes: list[list[float]], box_format: str) -> torch.Tensor:
    if box_format == "xywh":
        return xywh_to_xyxy(boxes).double()
    if box_format != "xyxy":
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    return torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of xyxy boxes (DETR's `generalized_box_iou`): IoU minus the share of the enclosing box that
    the union leaves empty. An empty enclosing box (two equal degenerate boxes) counts as 0."""
    iou = box_iou(boxes1, boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    union = area1[:, None] + area2 - inter
    enclosing = torch.max(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, None, :2], boxes2[:, :2])
    enclosing = enclosing.clamp(min=0).prod(-1)
    safe = torch.where(enclosing > 0, enclosing, torch.ones_like(enclosing))
    return torch.where(enclosing > 0, iou - (enclosing - union) / safe, 0.0)


def merge_ground_truth(ground_truth: torch.Tensor) -> torch.Tensor:
    """The enclosing box of a phrase's ground-truth boxes, `(1, 4)`."""
    return torch.cat([ground_truth[:, :2].min(dim=0).values, ground_truth[:, 2:].max(dim=0).values])[None]


def first_hit_rank(
    predicted: torch.Tensor,
    ground_truth: torch.Tensor,
    protocol: str,
    iou_threshold: float,
    iou_type: str = "iou",
) -> int | None:
    """0-based rank of the first predicted box that matches, or None."""
    if protocol == "merged_box":
        ground_truth = merge_ground_truth(ground_truth)
    elif protocol != "any_box":
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if len(predicted) == 0:
        return None
    overlap = (box_iou if iou_type == "iou" else generalized_box_iou)(predicted, ground_truth)
    hits = (overlap >= iou_threshold).any(dim=1).nonzero().flatten()
    return int(hits[0]) if len(hits) else None


class GroundingRecall(evaluate.Metric):
    """Recall@k of phrase grounding (Flickr30k Entities protocol; any-box or merged-box)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Plummer et al., Flickr30k Entities, ICCV 2015; Kamath et al., MDETR, ICCV 2021.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.List(datasets.Value("float64"))),
                    "references": datasets.List(datasets.List(datasets.Value("float64"))),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[Any],
        references: list[Any],
        ks: tuple[int, ...] = (1, 5, 10),
        protocol: str = "any_box",
        iou_threshold: float = 0.5,
        box_format: str = "xyxy",
        iou_type: str = "iou",
        upper_bound: bool = False,
        phrase_types: list[list[str]] | None = None,
    ) -> dict[str, float]:
        if phrase_types is not None and len(phrase_types) != len(predictions):
            raise ValueError(f"phrase_types has {len(phrase_types)} entries for {len(predictions)} phrases")
        ranks = []
        for index, (predicted, ground_truth) in enumerate(zip(predictions, references)):
            gt_boxes = _as_xyxy(ground_truth, box_format)
            if len(gt_boxes) == 0:
                raise ValueError(f"phrase {index} has no ground-truth box")
            predicted = _as_xyxy(predicted, box_format)
            ranks.append(first_hit_rank(predicted, gt_boxes, protocol, iou_threshold, iou_type))
        groups: dict[str, list[int | None]] = {"": ranks}
        if phrase_types is not None:
            by_type: dict[str, list[int | None]] = defaultdict(list)
            for rank, types in zip(ranks, phrase_types):
                for phrase_type in types:
                    by_type[phrase_type].append(rank)
            groups.update({f"/{phrase_type}": by_type[phrase_type] for phrase_type in sorted(by_type)})
        result = {}
        for suffix, group in groups.items():
            total = max(len(group), 1)
            for k in ks:
                result[f"recall@{k}{suffix}"] = sum(rank is not None and rank < k for rank in group) / total
            if upper_bound:
                result[f"upper_bound{suffix}"] = sum(rank is not None for rank in group) / total
        return result
