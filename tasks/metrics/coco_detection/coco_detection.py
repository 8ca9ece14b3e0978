"""COCO box and mask mAP as an ``evaluate`` metric, computed with faster-coco-eval (numerically identical to
pycocotools)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from typing import Any

import datasets
import evaluate
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils

from glipv2.box_ops import xyxy_to_xywh

_DESCRIPTION = """COCO-style detection metrics (AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@1/10/100,
AR small/medium/large) computed by faster-coco-eval's COCOeval_faster: box AP (iou_type="bbox", the default) or
mask AP (iou_type="segm": predicted RLE masks against the ground truth's `segmentation`, polygons or RLE).

For mask AP the detections' area (which decides the small/medium/large ranges of unmatched detections) is the
mask's area, as in pycocotools' `loadRes` for results without a `bbox` and detectron2's COCOEvaluator, which
removes `bbox` from the results before evaluating `segm`."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one entry per image: {"image_id": int, "boxes": [[...4 floats], ...] (absolute pixels),
        "scores": [float, ...], "labels": [int, ...]}; labels are category ids of the ground-truth file.
        For iou_type="segm" also "masks": one COCO compressed RLE {"size": [height, width], "counts": str} per
        detection, aligned with scores and labels, at the image's size; "boxes" may then be empty (the masks'
        bounding boxes are used where a box is written).
    ground_truth: the ground-truth COCO instances JSON, as a path or an already-parsed dict.
    box_format: "xyxy" (default; what the GLIPv2 post-processing returns) or "xywh" (COCO's own format).
    iou_type: "bbox" (default) or "segm".
Returns:
    dict with AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (fractions in [0, 1]; -1 where
    COCO has no ground truth for an area range).
Example:
    >>> metric = evaluate.load("tasks/metrics/coco_detection")
    >>> metric.compute(predictions=[{"image_id": 1, "boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [3]}],
    ...                ground_truth="instances_val.json")
"""

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")

RLE_FEATURE = {"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")}
# One schema for both iou types: predictions without "masks" get an empty list before encoding (see
# `with_masks_key`), so box-only inputs keep working unchanged.
PREDICTION_FEATURES = datasets.Features(
    {
        "predictions": {
            "image_id": datasets.Value("int64"),
            "boxes": datasets.List(datasets.List(datasets.Value("float64"))),
            "scores": datasets.List(datasets.Value("float64")),
            "labels": datasets.List(datasets.Value("int64")),
            "masks": datasets.List(RLE_FEATURE),
        }
    }
)


def rle_with_str_counts(rle: Any) -> Any:
    """A compressed RLE with its counts as str (pycocotools' bytes counts decoded as utf-8); other values as given."""
    if isinstance(rle, dict) and isinstance(rle.get("counts"), bytes):
        return {**rle, "counts": rle["counts"].decode("utf-8")}
    return rle


def with_masks_key(predictions: Any) -> Any:
    """Per-image predictions as the metric's schema stores them: "masks" present (empty when not given), RLE
    counts as str. Anything else is passed on unchanged (evaluate then names the format error)."""
    if not isinstance(predictions, (list, tuple)):
        return predictions
    normalized = []
    for prediction in predictions:
        if isinstance(prediction, dict):
            masks = prediction.get("masks")
            if masks is None:
                masks = []
            elif isinstance(masks, (list, tuple)):
                masks = [rle_with_str_counts(mask) for mask in masks]
            prediction = {**prediction, "masks": masks}
        normalized.append(prediction)
    return normalized


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


def check_rle(rle: Any, where: str) -> None:
    """A compressed RLE `{"size": [height, width], "counts": str}`; anything else raises ValueError naming `where`."""
    if not isinstance(rle, dict) or set(rle) != {"size", "counts"}:
        raise ValueError(f"{where}: expected a compressed RLE {{'size': [height, width], 'counts': str}}, got {rle!r}")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(int(side) < 0 for side in size):
        raise ValueError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
    if not isinstance(rle["counts"], (str, bytes)):
        raise ValueError(f"{where}: RLE 'counts' must be a compressed string, got {type(rle['counts']).__name__}")


def to_coco_segm_results(predictions: list[dict[str, Any]], box_format: str = "xyxy") -> list[dict[str, Any]]:
    """Flatten per-image predictions with masks into COCO segm result entries: {"image_id", "category_id",
    "segmentation": RLE (counts as str), "score", "bbox"} -- the bbox in xywh, from "boxes", or the mask's bounding
    box where "boxes" is empty. This is what a COCO segm results file holds (detectron2 writes the bbox as well);
    mask AP is computed without the bbox (see `evaluate_coco`)."""
    if box_format not in ("xyxy", "xywh"):
        raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
    results = []
    for prediction in predictions:
        image_id = int(prediction["image_id"])
        masks, scores, labels = prediction.get("masks") or [], prediction["scores"], prediction["labels"]
        if not len(masks) == len(scores) == len(labels):
            raise ValueError(
                f"predictions for image_id={image_id}: {len(masks)} masks, {len(scores)} scores and {len(labels)} "
                "labels; iou_type='segm' needs one mask per detection"
            )
        boxes = prediction.get("boxes")
        boxes = [] if boxes is None else boxes
        if len(boxes) and len(boxes) != len(scores):
            raise ValueError(
                f"predictions for image_id={image_id}: {len(boxes)} boxes for {len(scores)} detections "
                "(give one box per mask, or none to use the masks' bounding boxes)"
            )
        if len(boxes):
            boxes = xyxy_to_xywh(boxes).tolist() if box_format == "xyxy" else boxes
        for index, (mask, score, label) in enumerate(zip(masks, scores, labels)):
            check_rle(mask, f"predictions for image_id={image_id}, mask {index}")
            rle = {"size": [int(side) for side in mask["size"]], "counts": rle_with_str_counts(mask)["counts"]}
            box = boxes[index] if len(boxes) else mask_utils.toBbox(rle).tolist()
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "segmentation": rle,
                    "score": float(score),
                    "bbox": [float(value) for value in box],
                }
            )
    return results


def check_segm_inputs(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Mask AP needs a `segmentation` on every ground-truth annotation and masks at their image's size; a missing
    annotation field or a mask of the wrong size raises ValueError naming it."""
    for annotation in ground_truth.get("annotations", []):
        if not annotation.get("segmentation"):
            raise ValueError(
                f"ground-truth annotation id={annotation.get('id')!r} has no 'segmentation' "
                "(iou_type='segm' needs one on every annotation)"
            )
    sizes = {image["id"]: [image.get("height"), image.get("width")] for image in ground_truth.get("images", [])}
    for result in results:
        image_id = result["image_id"]
        if "segmentation" not in result:
            raise ValueError(f"a result for image_id={image_id} has no 'segmentation' (iou_type='segm')")
        if image_id not in sizes:
            raise ValueError(f"predictions for image_id={image_id}: no such image in the ground truth")
        if result["segmentation"]["size"] != sizes[image_id]:
            raise ValueError(
                f"predictions for image_id={image_id}: a mask of size {result['segmentation']['size']} "
                f"([height, width]) for an image of size {sizes[image_id]}"
            )


def load_ground_truth(ground_truth: str | dict[str, Any]) -> dict[str, Any]:
    """The ground-truth dict (read from disk when a path is given; a given dict is copied, never modified)."""
    if isinstance(ground_truth, dict):
        return copy.deepcopy(ground_truth)
    with open(ground_truth, encoding="utf-8") as handle:
        return json.load(handle)


def results_for(iou_type: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results as they are evaluated: for "segm" without their `bbox`, so that a detection's area is its mask's
    (pycocotools' `loadRes` takes the box area whenever a result has a bbox; detectron2 removes it likewise)."""
    if iou_type == "segm":
        return [{key: value for key, value in result.items() if key != "bbox"} for result in results]
    return results


def evaluate_coco(ground_truth: dict[str, Any], results: list[dict[str, Any]], iou_type: str = "bbox") -> list[float]:
    """The 12 COCOeval stats of COCO-format `results` against `ground_truth` (a dict, not modified)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(ground_truth)
        coco_dt = coco_gt.loadRes(results_for(iou_type, results))
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(value) for value in evaluator.stats[:12]]


class MaskPredictionInputs:
    """Mixed into a metric whose features are `PREDICTION_FEATURES`: predictions without "masks" are given an empty
    list, pycocotools' bytes counts become str, before evaluate encodes them. (Not an `evaluate.Metric` itself, so
    that a metric script importing it still holds exactly one metric class.)"""

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """evaluate's `add_batch`, the predictions first given a "masks" key where they have none."""
        super().add_batch(predictions=with_masks_key(predictions), references=references, **kwargs)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """evaluate's `add`, the prediction first given a "masks" key where it has none."""
        super().add(prediction=with_masks_key([prediction])[0], reference=reference, **kwargs)


class CocoDetection(MaskPredictionInputs, evaluate.Metric):
    """COCO box or mask mAP (faster-coco-eval)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=PREDICTION_FEATURES,
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
        iou_type: str = "bbox",
    ) -> dict[str, float]:
        if ground_truth is None:
            raise ValueError("coco_detection needs ground_truth= (a COCO JSON path or dict)")
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        if iou_type == "segm":
            results = to_coco_segm_results(predictions, box_format)
        else:
            results = to_coco_results(predictions, box_format)
        if not results:
            return dict.fromkeys(STAT_NAMES, 0.0)
        ground_truth = load_ground_truth(ground_truth)
        if iou_type == "segm":
            check_segm_inputs(ground_truth, results)
        return dict(zip(STAT_NAMES, evaluate_coco(ground_truth, results, iou_type)))
