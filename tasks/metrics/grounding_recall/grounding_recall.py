"""Phrase grounding Recall@k (Flickr30k Entities protocol, IoU >= 0.5) as an ``evaluate`` metric."""

from __future__ import annotations

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
enclosing box is >= the threshold. The predictions should then also be one (merged) box per rank."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per phrase, the predicted boxes sorted by decreasing score, [[x0, y0, x1, y1], ...].
    references: per phrase, its ground-truth boxes, [[x0, y0, x1, y1], ...] (at least one).
    ks: the k values (default (1, 5, 10)).
    protocol: "any_box" (default) or "merged_box".
    iou_threshold: default 0.5.
    box_format: "xyxy" (default) or "xywh", for both predictions and references.
Returns:
    {"recall@1": float, "recall@5": float, "recall@10": float} (fractions in [0, 1]).
"""


def _as_xyxy(boxes: list[list[float]], box_format: str) -> torch.Tensor:
    if box_format == "xywh":
        return xywh_to_xyxy(boxes)
    if box_format != "xyxy":
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    return torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)


def first_hit_rank(
    predicted: torch.Tensor, ground_truth: torch.Tensor, protocol: str, iou_threshold: float
) -> int | None:
    """0-based rank of the first predicted box that matches, or None."""
    if protocol == "merged_box":
        ground_truth = torch.cat([ground_truth[:, :2].min(dim=0).values, ground_truth[:, 2:].max(dim=0).values])[None]
    elif protocol != "any_box":
        raise ValueError(f"protocol must be 'any_box' or 'merged_box', got {protocol!r}")
    if len(predicted) == 0:
        return None
    hits = (box_iou(predicted, ground_truth) >= iou_threshold).any(dim=1).nonzero().flatten()
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
    ) -> dict[str, float]:
        ranks = []
        for index, (predicted, ground_truth) in enumerate(zip(predictions, references)):
            gt_boxes = _as_xyxy(ground_truth, box_format)
            if len(gt_boxes) == 0:
                raise ValueError(f"phrase {index} has no ground-truth box")
            ranks.append(first_hit_rank(_as_xyxy(predicted, box_format), gt_boxes, protocol, iou_threshold))
        total = max(len(ranks), 1)
        return {f"recall@{k}": sum(rank is not None and rank < k for rank in ranks) / total for k in ks}
