"""Segmentation metrics: COCO / LVIS mask AP (`coco_detection` / `lvis_detection` with iou_type="segm") against
pycocotools' COCOeval and the LVIS API port on hand-written fixtures, and `referring_segmentation` (PhraseCut's
official mIoU / cumulative IoU / precision@t) against a straight numpy re-implementation and hand-computed cases."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tasks_test_utils import METRICS, REPO_ROOT

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
HEIGHT, WIDTH = 120, 160


@pytest.fixture(scope="module")
def coco_metric() -> Any:
    return evaluate.load(str(METRICS / "coco_detection"))


@pytest.fixture(scope="module")
def referring() -> Any:
    return evaluate.load(str(METRICS / "referring_segmentation"))


def encode(mask: np.ndarray) -> dict[str, Any]:
    """A binary mask as the project's RLE: compressed, counts as str."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def rectangle(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# ----------------------------------------------------------------------------------------------------------------
# Mask AP fixtures: polygons (one instance in two parts), a crowd region as an uncompressed RLE (as COCO files hold
# it), a compressed-RLE instance, overlapping instances of one category, three categories, all three area ranges,
# and an image without annotations.
def _gt_mask(segmentation: Any) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, HEIGHT, WIDTH))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, HEIGHT, WIDTH)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.T.reshape(-1).astype(np.int8)  # column-major
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [HEIGHT, WIDTH], "counts": counts[: len(counts) - (counts[-1] == 0)]}


def mask_ground_truth() -> dict[str, Any]:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    disc = (yy - 60) ** 2 + (xx - 120) ** 2 <= 30**2  # medium-large, given as a compressed RLE
    segmentations = [  # (image_id, category_id, segmentation, iscrowd)
        (1, 1, [[10, 10, 120, 10, 120, 100, 10, 100]], 0),  # large
        (1, 2, [[60, 40, 150, 40, 105, 115]], 0),  # overlaps the first
        (1, 2, [[80, 50, 140, 50, 140, 90, 80, 90]], 0),  # overlaps the other category-2 instance
        (1, 1, _uncompressed_rle(rectangle(HEIGHT, WIDTH, 102, 0, 120, 70)), 1),  # crowd
        (2, 3, [[5, 5, 25, 5, 25, 25, 5, 25], [30, 5, 40, 5, 40, 15, 30, 15]], 0),  # small, in two parts
        (2, 1, [[60, 30, 110, 30, 110, 80, 60, 80]], 0),  # medium
        (2, 3, encode(disc), 0),
        (4, 1, [[100, 100, 115, 100, 115, 112, 100, 112]], 0),  # small
        (4, 2, [[10, 20, 70, 20, 70, 75, 10, 75]], 0),
        (4, 2, [[40, 40, 90, 45, 85, 100, 45, 95]], 0),
    ]
    annotations = []
    for image_id, category_id, segmentation, iscrowd in segmentations:
        mask = _gt_mask(segmentation)
        rows, cols = np.nonzero(mask)
        bbox = [
            float(cols.min()),
            float(rows.min()),
            float(cols.max() - cols.min() + 1),
            float(rows.max() - rows.min() + 1),
        ]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "area": float(mask.sum()),
                "bbox": bbox,
                "iscrowd": iscrowd,
            }
        )
    images = [{"id": i, "width": WIDTH, "height": HEIGHT, "file_name": f"{i}.jpg"} for i in (1, 2, 3, 4)]
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    ys, xs = ys + dy, xs + dx
    keep = (ys >= 0) & (ys < HEIGHT) & (xs >= 0) & (xs < WIDTH)
    out[ys[keep], xs[keep]] = True
    return out


def mask_predictions(ground_truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Shifted copies of the instances (some twice, some with the wrong label), detections on the crowd region,
    false positives (also on the image without annotations) and an empty mask. Boxes are the masks' bounding boxes
    grown threefold, so that evaluating with box areas would change the area ranges."""
    rng = random.Random(0)
    per_image = {image["id"]: [] for image in ground_truth["images"]}
    for annotation in ground_truth["annotations"]:
        mask = _gt_mask(annotation["segmentation"])
        copies = 2 if annotation["id"] in (2, 6) else 1
        for _ in range(copies):
            shifted = _shifted(mask, rng.randint(-4, 4), rng.randint(-4, 4))
            label = annotation["category_id"] if rng.random() < 0.8 else rng.choice([1, 2, 3])
            per_image[annotation["image_id"]].append((shifted, rng.random(), label))
    per_image[1].append((rectangle(HEIGHT, WIDTH, 104, 5, 118, 30), 0.95, 1))  # inside the crowd region
    per_image[3].append((rectangle(HEIGHT, WIDTH, 10, 10, 40, 50), 0.7, 1))  # no annotations on image 3
    per_image[3].append((rectangle(HEIGHT, WIDTH, 50, 50, 60, 58), 0.4, 3))
    per_image[2].append((rectangle(HEIGHT, WIDTH, 90, 10, 115, 40), 0.85, 3))
    per_image[4].append((np.zeros((HEIGHT, WIDTH), dtype=bool), 0.3, 2))  # empty
    predictions = []
    for image_id, detections in per_image.items():
        boxes = []
        for mask, _, _ in detections:
            rows, cols = np.nonzero(mask) if mask.any() else (np.array([0]), np.array([0]))
            x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
            w, h = x1 - x0, y1 - y0
            boxes.append([float(x0 - w), float(y0 - h), float(x1 + w), float(y1 + h)])
        predictions.append(
            {
                "image_id": image_id,
                "boxes": boxes,
                "scores": [score for _, score, _ in detections],
                "labels": [label for _, _, label in detections],
                "masks": [encode(mask) for mask, _, _ in detections],
            }
        )
    return predictions


def pycocotools_stats(ground_truth: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(ground_truth)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(value) for value in evaluator.stats]


def segm_results(predictions: list[dict[str, Any]], with_bbox: bool = False) -> list[dict[str, Any]]:
    results = []
    for p in predictions:
        for box, mask, score, label in zip(p["boxes"], p["masks"], p["scores"], p["labels"]):
            entry = {"image_id": p["image_id"], "category_id": label, "segmentation": mask, "score": score}
            if with_bbox:
                entry["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append(entry)
    return results


def test_coco_mask_ap_equals_pycocotools(coco_metric: Any, tmp_path: Path) -> None:
    ground_truth = mask_ground_truth()
    predictions = mask_predictions(ground_truth)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(ground_truth))
    result = coco_metric.compute(predictions=predictions, ground_truth=str(path), iou_type="segm")
    expected = pycocotools_stats(ground_truth, segm_results(predictions), "segm")
    assert 0.2 < result["AP"] < 0.95 and min(result[name] for name in ("APs", "APm", "APl")) > 0  # non-trivial
    for name, value in zip(STAT_NAMES, expected):
        assert result[name] == pytest.approx(value, abs=1e-12), name
    # the boxes are left out: with them, pycocotools takes box areas and the area-range numbers change
    with_boxes = pycocotools_stats(ground_truth, segm_results(predictions, with_bbox=True), "segm")
    assert with_boxes != expected
    # bytes counts (pycocotools' own) are accepted; the default stays box AP
    as_bytes = [{**p, "masks": [{**m, "counts": m["counts"].encode()} for m in p["masks"]]} for p in predictions]
    assert coco_metric.compute(predictions=as_bytes, ground_truth=ground_truth, iou_type="segm") == result
    box_result = coco_metric.compute(predictions=predictions, ground_truth=ground_truth)
    box_expected = pycocotools_stats(ground_truth, segm_results(predictions, with_bbox=True), "bbox")
    assert [box_result[name] for name in STAT_NAMES] == pytest.approx(box_expected, abs=1e-12)


def test_coco_segm_results_helper() -> None:
    from tasks.metrics.coco_detection.coco_detection import to_coco_segm_results

    mask = encode(rectangle(HEIGHT, WIDTH, 10, 20, 30, 60))
    predictions = [{"image_id": 7, "boxes": [[20, 10, 60, 30]], "scores": [0.5], "labels": [3], "masks": [mask]}]
    assert to_coco_segm_results(predictions) == [
        {"image_id": 7, "category_id": 3, "segmentation": mask, "score": 0.5, "bbox": [20.0, 10.0, 40.0, 20.0]}
    ]
    # without boxes, the bbox is the mask's; pycocotools' bytes counts are written as str
    no_boxes = [{**predictions[0], "boxes": [], "masks": [{**mask, "counts": mask["counts"].encode()}]}]
    assert to_coco_segm_results(no_boxes) == to_coco_segm_results(predictions)
    with pytest.raises(ValueError, match="image_id=7: 0 masks, 1 scores"):
        to_coco_segm_results([{**predictions[0], "masks": []}])


def test_coco_mask_ap_malformed_inputs(coco_metric: Any) -> None:
    ground_truth = mask_ground_truth()
    wrong_size = encode(rectangle(HEIGHT, WIDTH + 1, 0, 0, 5, 5))
    prediction = {"image_id": 2, "boxes": [[0, 0, 5, 5]], "scores": [0.5], "labels": [1], "masks": [wrong_size]}
    with pytest.raises(ValueError, match=r"image_id=2: a mask of size \[120, 161\].*image of size \[120, 160\]"):
        coco_metric.compute(predictions=[prediction], ground_truth=ground_truth, iou_type="segm")
    boxes_only = {key: value for key, value in prediction.items() if key != "masks"}
    with pytest.raises(ValueError, match="image_id=2: 0 masks, 1 scores and 1 labels"):
        coco_metric.compute(predictions=[boxes_only], ground_truth=ground_truth, iou_type="segm")
    no_segmentation = copy.deepcopy(ground_truth)
    del no_segmentation["annotations"][4]["segmentation"]
    right_size = {**prediction, "masks": [encode(rectangle(HEIGHT, WIDTH, 0, 0, 5, 5))]}
    with pytest.raises(ValueError, match="annotation id=5 has no 'segmentation'"):
        coco_metric.compute(predictions=[right_size], ground_truth=no_segmentation, iou_type="segm")
    with pytest.raises(ValueError, match="iou_type must be one of"):
        coco_metric.compute(predictions=[right_size], ground_truth=ground_truth, iou_type="boundary")


# ----------------------------------------------------------------------------------------------------------------
# LVIS mask AP against the LVIS API port of the LVIS benchmark tests, its IoU taken on masks as LVISEval does for
# "segm" (`_to_mask` / `ann_to_rle`) and the detections' areas their masks' (LVISResults without a bbox).
def test_lvis_mask_ap_equals_the_lvis_api_port() -> None:
    from tests.tasks.test_benchmark_lvis import LvisEvalPort

    class LvisSegmPort(LvisEvalPort):
        def __init__(self, gt: dict[str, Any], results: list[dict[str, Any]]) -> None:
            # LVISResults for segm results: bbox from the mask (unused by the IoU), area the mask's
            boxed = [{**r, "bbox": mask_utils.toBbox(_bytes_rle(r["segmentation"])).tolist()} for r in results]
            super().__init__(gt, boxed)
            for dt in self.dt:
                dt["area"] = float(mask_utils.area(_bytes_rle(dt["segmentation"])))

        def compute_iou(self, img_id: int, cat_id: int) -> Any:
            gt, dt = self._gts[img_id, cat_id], self._dts[img_id, cat_id]
            if len(gt) == 0 and len(dt) == 0:
                return []
            dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="mergesort")]
            gt_rles = [mask_utils.encode(np.asfortranarray(_gt_mask(g["segmentation"]).astype(np.uint8))) for g in gt]
            return self.iou([_bytes_rle(d["segmentation"]) for d in dt], gt_rles, [0] * len(gt))

    ground_truth = mask_ground_truth()
    ground_truth["annotations"] = [a for a in ground_truth["annotations"] if not a["iscrowd"]]
    federated = {1: ([3], []), 2: ([2], [3]), 3: ([1, 2], []), 4: ([], [2])}  # neg / not exhaustive per image
    for image in ground_truth["images"]:
        image["neg_category_ids"], image["not_exhaustive_category_ids"] = federated[image["id"]]
    for category, frequency in zip(ground_truth["categories"], "rcf"):
        category["frequency"] = frequency
    predictions = mask_predictions(ground_truth)
    metric = evaluate.load(str(METRICS / "lvis_detection"))
    result = metric.compute(predictions=predictions, ground_truth=ground_truth, iou_type="segm")
    expected = LvisSegmPort(ground_truth, segm_results(predictions)).run()
    assert 0.2 < result["AP"] < 0.95
    assert list(result) == list(expected)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-12), name
    box_result = metric.compute(predictions=predictions, ground_truth=ground_truth)  # default still box AP
    assert box_result == pytest.approx(dict(LvisEvalPort(ground_truth, segm_results(predictions, True)).run()))


def _bytes_rle(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": rle["size"], "counts": rle["counts"].encode()}


def test_new_metrics_load_offline() -> None:
    code = "import evaluate, sys\nfor name in sys.argv[1:]:\n    evaluate.load(name)\nprint('ok')"
    paths = [str(METRICS / name) for name in ("lvis_detection", "referring_segmentation")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")  # any network use fails
    result = subprocess.run(
        [sys.executable, "-c", code, *paths], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ----------------------------------------------------------------------------------------------------------------
# Referring segmentation. The reference: PhraseCut's Evaluator written out plainly on decoded masks.
def reference_metrics(
    predictions: list[dict[str, Any]], references: list[Any], thresholds=(0.5, 0.6, 0.7, 0.8, 0.9), strict=True
) -> dict[str, float]:
    ious, intersections, unions = [], [], []
    for prediction, reference in zip(predictions, references):
        instances = [reference] if isinstance(reference, dict) else reference
        predicted = mask_utils.decode(_bytes_rle(prediction)) > 0
        ground_truth = np.zeros(predicted.shape, dtype=bool)
        for instance in instances:
            ground_truth |= mask_utils.decode(_bytes_rle(instance)) > 0
        i = int(np.logical_and(predicted, ground_truth).sum())
        u = int(np.logical_or(predicted, ground_truth).sum())
        ious.append(0.0 if i == 0 else i / u)  # utils/iou.py iou_polygons_masks
        intersections.append(i)
        unions.append(u)
    result = {"mIoU": float(np.mean(ious)), "cIoU": sum(intersections) / sum(unions)}
    for t in thresholds:
        hits = [iou > t if strict else iou >= t for iou in ious]
        result[f"precision@{t:g}"] = sum(hits) / len(ious)
    return result


def _blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    top, left = int(rng.integers(0, height - 2)), int(rng.integers(0, width - 2))
    bottom, right = int(rng.integers(top + 1, height + 1)), int(rng.integers(left + 1, width + 1))
    if rng.random() < 0.5:
        return rectangle(height, width, top, left, bottom, right)
    yy, xx = np.mgrid[:height, :width]
    return (yy - top) ** 2 + (xx - left) ** 2 <= max(bottom - top, 2) ** 2


def _random_phrases(seed: int, count: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """Rectangles and discs on canvases of several sizes: single and multi-instance references (overlapping ones
    too), empty predictions, an empty reference, exact copies."""
    rng = np.random.default_rng(seed)
    predictions, references = [], []
    for index in range(count):
        height, width = int(rng.integers(8, 60)), int(rng.integers(8, 60))

        instances = [_blob(rng, height, width) for _ in range(int(rng.integers(1, 4)))]
        if index % 11 == 5:
            instances = [np.zeros((height, width), dtype=bool)]
        union = np.logical_or.reduce(instances)
        kind = index % 5
        predicted = {0: _blob(rng, height, width), 1: union.copy(), 2: np.zeros((height, width), dtype=bool)}.get(kind)
        if predicted is None:
            predicted = union ^ (rng.random((height, width)) < 0.15)  # the truth with noise
        predictions.append(encode(predicted))
        references.append(encode(instances[0]) if len(instances) == 1 else [encode(m) for m in instances])
    return predictions, references


@pytest.mark.parametrize("protocol", ["phrasecut", "refcoco"])
def test_referring_metrics_equal_a_straight_reimplementation(referring: Any, protocol: str) -> None:
    predictions, references = _random_phrases(seed=3, count=60)
    result = referring.compute(predictions=predictions, references=references, protocol=protocol)
    expected = reference_metrics(predictions, references, strict=protocol == "phrasecut")
    assert 0.2 < result["mIoU"] < 0.8
    assert list(result) == list(expected)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-12), name
    # in batches (as an evaluation loop adds them), with subsets: each subset is its phrases' own numbers
    for start in range(0, 60, 25):
        referring.add_batch(predictions=predictions[start : start + 25], references=references[start : start + 25])
    subsets = [["even"] if i % 2 == 0 else ["odd", "all_odd"] for i in range(60)]
    batched = referring.compute(subsets=subsets, thresholds=[0.5, 0.75], protocol=protocol)
    assert batched["mIoU"] == pytest.approx(result["mIoU"], abs=1e-12)
    odd = reference_metrics(predictions[1::2], references[1::2], (0.5, 0.75), protocol == "phrasecut")
    for name, value in odd.items():
        assert batched[f"{name}/odd"] == pytest.approx(value, abs=1e-12)
        assert batched[f"{name}/all_odd"] == batched[f"{name}/odd"]
    assert sorted({key.split("/")[-1] for key in batched if "/" in key}) == ["all_odd", "even", "odd"]


def test_referring_metrics_by_hand(referring: Any) -> None:
    # Phrase A, 4x4 (rows top to bottom, "#" = 1):
    #   prediction   ground truth (instances x and y unioned)
    #   . . . .      . . . .
    #   . # # .      . x x y
    #   . # # .      . x x y
    #   . . . .      . . . .
    # I = 4, U = 6, IoU = 2/3.
    # Phrase B, 4x4: prediction rows 0-1, all columns (8 px); ground truth rows 1-2 (8 px): I = 4, U = 12, IoU = 1/3.
    # Phrase C: empty prediction, ground truth 2 px: I = 0, U = 2, IoU = 0.
    # mIoU = (2/3 + 1/3 + 0) / 3 = 1/3; cIoU = (4 + 4 + 0) / (6 + 12 + 2) = 0.4;
    # precision@0.5 = 1/3 (only A), precision@0.7 = 0.
    a_x, a_y = rectangle(4, 4, 1, 1, 3, 3), rectangle(4, 4, 1, 3, 3, 4)
    predictions = [
        encode(rectangle(4, 4, 1, 1, 3, 3)),
        encode(rectangle(4, 4, 0, 0, 2, 4)),
        encode(np.zeros((4, 4), dtype=bool)),
    ]
    references = [[encode(a_x), encode(a_y)], encode(rectangle(4, 4, 1, 0, 3, 4)), encode(rectangle(4, 4, 3, 0, 4, 2))]
    result = referring.compute(predictions=predictions, references=references, thresholds=[0.5, 0.7])
    assert result == pytest.approx({"mIoU": 1 / 3, "cIoU": 0.4, "precision@0.5": 1 / 3, "precision@0.7": 0.0})

    # An IoU of exactly 0.5: prediction rows 1-2, columns 0-1 (4 px); ground truth rows 1-2, all columns (8 px):
    # I = 4, U = 8. PhraseCut counts IoU > t, so precision@0.5 = 0; RefCOCO (LAVT) counts IoU >= t, so 1.
    # Both masks empty: IoU 0 (the official "if i == 0: iou = 0"), nothing added to the sums of the cumulative IoU,
    # so adding such a phrase halves mIoU and keeps cIoU. Every union empty: cIoU is 0 / 0, NaN.
    half = [encode(rectangle(4, 4, 1, 0, 3, 2))], [encode(rectangle(4, 4, 1, 0, 3, 4))]
    assert referring.compute(predictions=half[0], references=half[1], thresholds=[0.5])["precision@0.5"] == 0.0
    refcoco = referring.compute(predictions=half[0], references=half[1], thresholds=[0.5], protocol="refcoco")
    assert refcoco == {"mIoU": 0.5, "cIoU": 0.5, "precision@0.5": 1.0}
    empty = encode(np.zeros((4, 4), dtype=bool))
    both = referring.compute(predictions=half[0] + [empty], references=half[1] + [empty], thresholds=[0.5])
    assert both == {"mIoU": 0.25, "cIoU": 0.5, "precision@0.5": 0.0}
    nothing = referring.compute(predictions=[empty], references=[empty], thresholds=[0.5])
    assert nothing["mIoU"] == 0.0 and math.isnan(nothing["cIoU"]) and nothing["precision@0.5"] == 0.0


def test_phrasecut_polygons_drawn_as_the_official_evaluation() -> None:
    from tasks.metrics.referring_segmentation.referring_segmentation import phrasecut_polygons_to_rle

    # PIL fills the polygon and its outline; vertices are truncated by int(): the square (1.9, 1.2)-(3.7, 3.99)
    # covers rows 1-3 and columns 1-3. A second instance with a 1-point polygon (skipped) and a 2-point one (a
    # line: row 0, columns 0-4).
    instances = [[[[1.9, 1.2], [3.7, 1.0], [3.2, 3.99], [1.0, 3.0]]], [[[4, 4]], [[0, 0], [4, 0]]]]
    expected = rectangle(5, 6, 1, 1, 4, 4) | rectangle(5, 6, 0, 0, 1, 5)
    assert phrasecut_polygons_to_rle(instances, height=5, width=6) == encode(expected)


def test_referring_malformed_inputs(referring: Any) -> None:
    four = encode(rectangle(4, 4, 0, 0, 2, 2))
    five = encode(rectangle(4, 5, 0, 0, 2, 2))
    with pytest.raises(ValueError, match=r"phrase 1: the prediction is \[4, 5\].*\(instance 0\) is \[4, 4\]"):
        referring.compute(predictions=[four, five], references=[four, four])
    with pytest.raises(ValueError, match=r"phrase 0: .*\(instance 1\) is \[4, 5\]"):
        referring.compute(predictions=[four], references=[[four, five]])
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        referring.compute(predictions=[four, four], references=[four])
    with pytest.raises(ValueError, match=r"prediction 0: RLE counts cover 20 pixels.*\[4, 4\] has 16"):
        referring.compute(predictions=[{**five, "size": [4, 4]}], references=[four])
    with pytest.raises(ValueError, match="reference 0 has no instance mask"):
        referring.compute(predictions=[four], references=[[]])
    with pytest.raises(ValueError, match="subsets has 2 entries for 1 phrases"):
        referring.compute(predictions=[four], references=[four], subsets=[["a"], ["b"]])
    with pytest.raises(ValueError, match="protocol must be one of"):
        referring.compute(predictions=[four], references=[four], protocol="lavt")
