"""LVIS box or mask AP as an ``evaluate`` metric: the LVIS API's federated evaluation (``lvis.LVISEval``, iou_type
"bbox" or "segm"), computed with faster-coco-eval's LVIS mode (``lvis_style``), which follows it step for step.

Also the Fixed AP that GLIP and MDETR report on LVIS (Dave et al., "Evaluating large-vocabulary object detectors:
the devil is in the details"; GLIP's ``LvisEvaluatorFixedAP``): no per-image limit, the 10,000 highest-scoring
detections of each category over the whole dataset (:class:`TopDetectionsPerCategory` collects them while a run
goes), then the same federated LVISEval (:func:`evaluate_lvis_fixed_ap`).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter, defaultdict
from typing import Any

import evaluate
import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from tasks.metrics.coco_detection.coco_detection import (
    IOU_TYPES,
    PREDICTION_FEATURES,
    MaskPredictionInputs,
    check_segm_inputs,
    load_ground_truth,
    results_for,
    to_coco_results,
    to_coco_segm_results,
)

# The LVIS API's limit (`LVISResults(max_dets=300)`, `Params.max_dets = 300`).
MAX_DETECTIONS_PER_IMAGE = 300
# Fixed AP's budget (GLIP's `LvisEvaluatorFixedAP(topk=10000)`, large-vocab-devil's `evaluate_ap_fixed.py`).
FIXED_AP_DETECTIONS_PER_CATEGORY = 10000
AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
FREQUENCIES = ("r", "c", "f")

_DESCRIPTION = """LVIS box (iou_type="bbox") or mask (iou_type="segm") detection metrics as the LVIS API
(lvis-dataset/lvis-api `LVISEval`) computes them: at most 300 detections per image (the highest scoring, over all
categories), federated evaluation -- detections of a category that is neither annotated in an image nor listed in
its `neg_category_ids` are dropped; unmatched detections of a category in the image's `not_exhaustive_category_ids`
are ignored -- and AP over IoU .50:.95 with 101 recall points, by object size (small/medium/large) and by category
frequency (rare/common/frequent, the categories' `frequency` field), plus AR@300. Computed with faster-coco-eval's
`lvis_style` COCOeval. Mask AP evaluates the results without their `bbox`, so that a detection's area is its mask's
(LVISResults takes the box area whenever a result has a bbox; detectron2's LVISEvaluator removes it likewise)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one entry per image: {"image_id": int, "boxes": [[...4 floats], ...] (absolute pixels),
        "scores": [float, ...], "labels": [int, ...]}; labels are category ids of the ground-truth file.
        For iou_type="segm" also "masks": one COCO compressed RLE {"size": [height, width], "counts": str} per
        detection, at the image's size ("boxes" may then be empty).
    ground_truth: the LVIS v1 JSON (path or parsed dict): images with `neg_category_ids` and
        `not_exhaustive_category_ids`, categories with `frequency`.
    box_format: "xyxy" (default) or "xywh".
    max_detections_per_image: the per-image limit applied before evaluation (LVIS: 300).
    iou_type: "bbox" (default) or "segm".
Returns:
    dict with AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@300, ARs@300, ARm@300, ARl@300 (the LVIS API's
    names; -1 where no category has ground truth, e.g. APr without rare categories).
"""

_STATS = {  # LVIS API name -> faster-coco-eval stats_as_dict name
    "AP": "AP_all",
    "AP50": "AP_50",
    "AP75": "AP_75",
    "APs": "AP_small",
    "APm": "AP_medium",
    "APl": "AP_large",
    "APr": "APr",
    "APc": "APc",
    "APf": "APf",
    "AR@{}": "AR_all",
    "ARs@{}": "AR_small",
    "ARm@{}": "AR_medium",
    "ARl@{}": "AR_large",
}


def stat_names(max_detections: int = MAX_DETECTIONS_PER_IMAGE) -> list[str]:
    """The metric names, in the LVIS API's order."""
    return [name.format(max_detections) for name in _STATS]


def limit_detections_per_image(results: list[dict[str, Any]], max_detections: int) -> list[dict[str, Any]]:
    """The LVIS API's `LVISResults.limit_dets_per_image`: an image with more than `max_detections` results keeps
    its highest-scoring ones (stable sort); results stay grouped by image in first-seen order."""
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(result)
    for image_id, entries in by_image.items():
        if len(entries) > max_detections:
            by_image[image_id] = sorted(entries, key=lambda entry: entry["score"], reverse=True)[:max_detections]
    return [entry for entries in by_image.values() for entry in entries]


def check_lvis_fields(ground_truth: dict[str, Any]) -> None:
    """The fields federated evaluation needs; a missing or malformed one raises ValueError naming it."""
    for category in ground_truth.get("categories", []):
        if category.get("frequency") not in FREQUENCIES:
            raise ValueError(
                f"category id={category.get('id')!r}: field 'frequency' must be one of {list(FREQUENCIES)}, "
                f"got {category.get('frequency')!r}"
            )
    for image in ground_truth.get("images", []):
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if not isinstance(image.get(key), list):
                raise ValueError(f"image id={image.get('id')!r}: field {key!r} must be a list of category ids")


class LvisDetection(MaskPredictionInputs, evaluate.Metric):
    """LVIS box or mask AP (federated; faster-coco-eval `lvis_style`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Gupta et al., LVIS: A Dataset for Large Vocabulary Instance Segmentation, CVPR 2019.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=PREDICTION_FEATURES,
            reference_urls=[
                "https://github.com/lvis-dataset/lvis-api",
                "https://github.com/MiXaiLL76/faster_coco_eval",
            ],
        )

    def _compute(
        self,
        predictions: list[dict[str, Any]],
        ground_truth: str | dict[str, Any] | None = None,
        box_format: str = "xyxy",
        max_detections_per_image: int = MAX_DETECTIONS_PER_IMAGE,
        iou_type: str = "bbox",
    ) -> dict[str, float]:
        if ground_truth is None:
            raise ValueError("lvis_detection needs ground_truth= (an LVIS JSON path or dict)")
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        if iou_type == "segm":
            results = to_coco_segm_results(predictions, box_format)
        else:
            results = to_coco_results(predictions, box_format)
        results = limit_detections_per_image(results, max_detections_per_image)
        return evaluate_lvis(load_ground_truth(ground_truth), results, max_detections_per_image, iou_type)


def evaluate_lvis(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    max_detections: int = MAX_DETECTIONS_PER_IMAGE,
    iou_type: str = "bbox",
) -> dict[str, float]:
    """LVIS box or mask metrics of COCO-format `results` (already limited per image) against `ground_truth`
    (modified). `max_detections` only names the AR entries (and bounds faster-coco-eval's per image and category
    count, which the limit per image already keeps below it). For "segm" the results need a `segmentation` (see
    `to_coco_segm_results`); their `bbox` is left out of the evaluation."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    check_lvis_fields(ground_truth)
    if iou_type == "segm":
        check_segm_inputs(ground_truth, results)
    for annotation in ground_truth.get("annotations", []):
        annotation["iscrowd"] = 0  # LVISEval never treats a ground-truth region as a crowd region
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(ground_truth)
        coco_dt = coco_gt.loadRes(results_for(iou_type, results))
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, lvis_style=True, print_function=print)
        evaluator.params.maxDets = [max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats_as_dict
    return {name.format(max_detections): float(stats[key]) for name, key in _STATS.items()}


def evaluate_lvis_fixed_ap(ground_truth: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, float]:
    """Fixed AP: LVISEval with no limit per image (`LVISResults(max_dets=-1)`, `params.max_dets = -1`) on
    `results`, each category's highest-scoring detections over the dataset (see [`TopDetectionsPerCategory`]).
    Returns the AP entries (AP, AP50, AP75, APs, APm, APl, APr, APc, APf), as GLIP reports them."""
    # faster-coco-eval keeps maxDets per image and category; the largest such count keeps all of them
    largest = max(Counter((r["image_id"], r["category_id"]) for r in results).values(), default=1)
    stats = evaluate_lvis(ground_truth, results, largest)
    return {name: stats[name] for name in AP_NAMES}


class TopDetectionsPerCategory:
    """Each category's `k` highest-scoring detections seen so far, collected batch by batch as GLIP's
    `LvisEvaluatorFixedAP.update` does (ties keep the earlier detection). Rows are kept as numpy arrays
    `[score, image_id, x, y, w, h]`; a category is cut back to `k` once it holds `k + k // 4`."""

    def __init__(self, k: int = FIXED_AP_DETECTIONS_PER_CATEGORY) -> None:
        self.k = k
        self._parts: dict[int, list[np.ndarray]] = defaultdict(list)
        self._counts: dict[int, int] = defaultdict(int)

    def add(self, image_id: int, boxes_xywh: Any, scores: Any, category_ids: Any) -> None:
        """One image's detections (any number, any categories)."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.size == 0:
            return
        boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        categories = np.asarray(category_ids, dtype=np.int64).reshape(-1)
        rows = np.concatenate([scores[:, None], np.full((scores.size, 1), float(image_id)), boxes], axis=1)
        for category in np.unique(categories).tolist():
            chosen = rows[categories == category]
            self._parts[category].append(chosen)
            self._counts[category] += len(chosen)
            if self._counts[category] > self.k + self.k // 4:
                self._parts[category] = [self._top(np.concatenate(self._parts[category]))]
                self._counts[category] = len(self._parts[category][0])

    def _top(self, rows: np.ndarray) -> np.ndarray:
        return rows[np.argsort(-rows[:, 0], kind="stable")[: self.k]]

    def state(self) -> dict[int, np.ndarray]:
        """Per category, its top `k` rows by decreasing score (what a process sends to be merged)."""
        return {category: self._top(np.concatenate(parts)) for category, parts in self._parts.items()}

    @classmethod
    def merge(
        cls, states: list[dict[int, np.ndarray]], k: int = FIXED_AP_DETECTIONS_PER_CATEGORY
    ) -> TopDetectionsPerCategory:
        """The processes' states joined (in process order); a row two processes both hold -- an image the sharded
        loader repeated to even out the last batch -- counts once."""
        merged = cls(k)
        for category in sorted({category for state in states for category in state}):
            rows = np.concatenate([state[category] for state in states if category in state])
            _, first = np.unique(rows, axis=0, return_index=True)
            merged._parts[category] = [merged._top(rows[np.sort(first)])]
            merged._counts[category] = len(merged._parts[category][0])
        return merged

    def results(self) -> list[dict[str, Any]]:
        """COCO-format results: each category's top `k`, categories in increasing id."""
        results = []
        for category, rows in sorted(self.state().items()):
            for score, image_id, x, y, w, h in rows.tolist():
                results.append(
                    {"image_id": int(image_id), "category_id": category, "bbox": [x, y, w, h], "score": score}
                )
        return results

    def short_categories(self) -> int:
        """How many categories hold fewer than `k` detections (GLIP warns: more detections would raise AP)."""
        return sum(1 for rows in self.state().values() if len(rows) < self.k)
