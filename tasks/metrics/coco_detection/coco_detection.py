"""COCO box mAP as an ``evaluate`` metric, computed with faster-coco-eval (numerically identical to pycocotools)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from typing import Any

import datasets
import evaluate
from faster_coco_eval import COCO, COCOeval_faster

from glipv2.box_ops import xyxy_to_xywh

_DESCRIPTION = """COCO-style box detection metrics (AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@1/10/100,
AR small/medium/large) computed by faster-coco-eval's COCOeval_faster with iouType="bbox"."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one entry per image: {"image_id": int, "boxes": [[...4 floats], ...] (absolute pixels),
        "scores": [float, ...], "labels": [int, ...]}; labels are category ids of the ground-truth file.
    ground_truth: the ground-truth COCO instances JSON, as a path or an already-parsed dict.
    box_format: "xyxy" (default; what the GLIPv2 post-processing returns) or "xywh" (COCO's own format).
Returns:
    dict with AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (fractions in [0, 1]; -1 where
    COCO has no ground truth for an area range).
Example:
    >>> metric = evaluate.load("tasks/metrics/coco_detection")
    >>> metric.compute(predictions=[{"image_id": 1, "boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [3]}],
    ...                ground_truth="instances_val.json")
"""

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def to_coco_results(predictions: list[dict[str, Any]], box_format: str) -> list[dict[str, Any]]:
    """Flatten per-image predictions into COCO result entries with xywh boxes."""
    if box_format not in ("xyxy", "xywh"):
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    results = []
    for prediction in predictions:
        boxes = prediction["boxes"]
        boxes = xyxy_to_xywh(boxes).tolist() if box_format == "xyxy" and len(boxes) else boxes
        for box, score, label in zip(boxes, prediction["scores"], prediction["labels"]):
            results.append(
                {
                    "image_id": int(prediction["image_id"]),
                    "category_id": int(label),
                    "bbox": [float(value) for value in box],
                    "score": float(score),
                }
            )
    return results


def load_ground_truth(ground_truth: str | dict[str, Any]) -> dict[str, Any]:
    """The ground-truth dict (read from disk when a path is given; a given dict is copied, never modified)."""
    if isinstance(ground_truth, dict):
        return copy.deepcopy(ground_truth)
    with open(ground_truth, encoding="utf-8") as handle:
        return json.load(handle)


class CocoDetection(evaluate.Metric):
    """COCO box mAP (faster-coco-eval)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "image_id": datasets.Value("int64"),
                        "boxes": datasets.List(datasets.List(datasets.Value("float64"))),
                        "scores": datasets.List(datasets.Value("float64")),
                        "labels": datasets.List(datasets.Value("int64")),
                    }
                }
            ),
            reference_urls=[
                "https://github.com/MiXaiLL76/faster_coco_eval",
                "https://cocodataset.org/#detection-eval",
            ],
        )

    def _compute(
        self,
        predictions: list[dict[str, Any]],
        ground_truth: str | dict[str, Any] | None = None,
        box_format: str = "xyxy",
    ) -> dict[str, float]:
        if ground_truth is None:
            raise ValueError("coco_detection needs ground_truth= (a COCO JSON path or dict)")
        results = to_coco_results(predictions, box_format)
        if not results:
            return dict.fromkeys(STAT_NAMES, 0.0)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(load_ground_truth(ground_truth))
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats[:12])}
