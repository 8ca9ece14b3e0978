"""`--benchmark lvis-minival` / `lvis-val`: LVIS v1 files as distributed (image entries with `coco_url` and no
`file_name`, `neg_category_ids`, `not_exhaustive_category_ids`, categories with `frequency`), the images under the
COCO root's split folders. Every number is checked against `LvisEvalPort`, a straight port of the LVIS API's
`LVISEval` / `LVISResults` (lvis-dataset/lvis-api@7d7f07def11da91f8b2710ce352c62a78fd5a7ad, `lvis/eval.py`,
`lvis/results.py`; bbox only): the `lvis` package on PyPI (0.5.3) imports cv2 and matplotlib and calls `np.float`,
removed in NumPy 1.24, so it cannot run here. Hand-reasoned cases pin the federated rules and the 300 limit."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
import pytest
from PIL import Image

from scripts.evaluate_model import main
from tasks.common import Glipv2DataError
from tasks.metrics.coco_detection.coco_detection import to_coco_results
from tasks.metrics.lvis_detection.lvis_detection import TopDetectionsPerCategory, evaluate_lvis_fixed_ap
from tests.benchmark_fixtures import SCENE_BOXES_XYWH, scene_image, write_image, write_json

METRIC = str(Path(__file__).resolve().parents[2] / "tasks" / "metrics" / "lvis_detection")
NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR@300", "ARs@300", "ARm@300", "ARl@300")
AP_NAMES = NAMES[:9]


# ----------------------------------------------------------------------------------------------------------------
# The reference: lvis-api's LVISResults + LVISEval, ported line by line (bbox, use_cats=1).
class LvisEvalPort:
    def __init__(self, gt: dict[str, Any], results: list[dict[str, Any]], max_dets: int = 300) -> None:
        from pycocotools import mask as mask_utils

        self.iou = mask_utils.iou
        self.gt = copy.deepcopy(gt)
        results = copy.deepcopy(results)
        if max_dets >= 0:  # LVISResults.limit_dets_per_image
            img_ann = defaultdict(list)
            for ann in results:
                img_ann[ann["image_id"]].append(ann)
            for img_id, _anns in img_ann.items():
                if len(_anns) <= max_dets:
                    continue
                _anns = sorted(_anns, key=lambda ann: ann["score"], reverse=True)
                img_ann[img_id] = _anns[:max_dets]
            results = [ann for anns in img_ann.values() for ann in anns]
        for index, ann in enumerate(results):  # LVISResults for "bbox" results
            x1, y1, w, h = ann["bbox"]
            ann["area"] = w * h
            ann["id"] = index + 1
        self.dt = results
        self.max_dets = max_dets
        self.iou_thrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
        self.rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
        self.area_rng = [[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]]
        self.area_rng_lbl = ["all", "small", "medium", "large"]
        self.img_count_lbl = ["r", "c", "f"]
        self.img_ids = sorted(img["id"] for img in self.gt["images"])
        self.cat_ids = sorted(cat["id"] for cat in self.gt["categories"])
        self.results: OrderedDict[str, float] = OrderedDict()

    def _prepare(self) -> None:
        img_ids, cat_ids = set(self.img_ids), set(self.cat_ids)
        gts = [a for a in self.gt["annotations"] if a["image_id"] in img_ids and a["category_id"] in cat_ids]
        dts = [d for d in self.dt if d["image_id"] in img_ids and d["category_id"] in cat_ids]
        for gt in gts:
            if "ignore" not in gt:
                gt["ignore"] = 0
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        for gt in gts:
            self._gts[gt["image_id"], gt["category_id"]].append(gt)
        img_data = [img for img in self.gt["images"] if img["id"] in img_ids]
        img_nl = {d["id"]: d["neg_category_ids"] for d in img_data}
        img_pl = defaultdict(set)
        for ann in gts:
            img_pl[ann["image_id"]].add(ann["category_id"])
        self.img_nel = {d["id"]: d["not_exhaustive_category_ids"] for d in img_data}
        for dt in dts:
            img_id, cat_id = dt["image_id"], dt["category_id"]
            if cat_id not in img_nl[img_id] and cat_id not in img_pl[img_id]:
                continue
            self._dts[img_id, cat_id].append(dt)
        cats = {cat["id"]: cat for cat in self.gt["categories"]}
        self.freq_groups = [[] for _ in self.img_count_lbl]
        for idx, cat_id in enumerate(self.cat_ids):
            self.freq_groups[self.img_count_lbl.index(cats[cat_id]["frequency"])].append(idx)

    def compute_iou(self, img_id: int, cat_id: int) -> Any:
        gt, dt = self._gts[img_id, cat_id], self._dts[img_id, cat_id]
        if len(gt) == 0 and len(dt) == 0:
            return []
        idx = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in idx]
        return self.iou([d["bbox"] for d in dt], [g["bbox"] for g in gt], [0] * len(gt))

    def evaluate_img(self, img_id: int, cat_id: int, area_rng: list[float]) -> dict[str, Any] | None:
        gt, dt = self._gts[img_id, cat_id], self._dts[img_id, cat_id]
        if len(gt) == 0 and len(dt) == 0:
            return None
        for g in gt:
            g["_ignore"] = 1 if g["ignore"] or (g["area"] < area_rng[0] or g["area"] > area_rng[1]) else 0
        gt_idx = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
        gt = [gt[i] for i in gt_idx]
        dt_idx = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in dt_idx]
        ious = (
            self.ious[img_id, cat_id][:, gt_idx] if len(self.ious[img_id, cat_id]) > 0 else self.ious[img_id, cat_id]
        )
        num_thrs, num_gt, num_dt = len(self.iou_thrs), len(gt), len(dt)
        gt_m, dt_m = np.zeros((num_thrs, num_gt)), np.zeros((num_thrs, num_dt))
        gt_ig = np.array([g["_ignore"] for g in gt])
        dt_ig = np.zeros((num_thrs, num_dt))
        for iou_thr_idx, iou_thr in enumerate(self.iou_thrs):
            if len(ious) == 0:
                break
            for dt_i, _dt in enumerate(dt):
                iou = min([iou_thr, 1 - 1e-10])
                m = -1
                for gt_i, _ in enumerate(gt):
                    if gt_m[iou_thr_idx, gt_i] > 0:
                        continue
                    if m > -1 and gt_ig[m] == 0 and gt_ig[gt_i] == 1:
                        break
                    if ious[dt_i, gt_i] < iou:
                        continue
                    iou = ious[dt_i, gt_i]
                    m = gt_i
                if m == -1:
                    continue
                dt_ig[iou_thr_idx, dt_i] = gt_ig[m]
                dt_m[iou_thr_idx, dt_i] = gt[m]["id"]
                gt_m[iou_thr_idx, m] = _dt["id"]
        dt_ig_mask = [
            d["area"] < area_rng[0] or d["area"] > area_rng[1] or d["category_id"] in self.img_nel[d["image_id"]]
            for d in dt
        ]
        dt_ig_mask = np.repeat(np.array(dt_ig_mask).reshape((1, num_dt)), num_thrs, 0)
        dt_ig = np.logical_or(dt_ig, np.logical_and(dt_m == 0, dt_ig_mask))
        return {"dt_matches": dt_m, "dt_scores": [d["score"] for d in dt], "gt_ignore": gt_ig, "dt_ignore": dt_ig}

    def run(self) -> OrderedDict[str, float]:
        self._prepare()
        self.ious = {(i, c): self.compute_iou(i, c) for i in self.img_ids for c in self.cat_ids}
        eval_imgs = [self.evaluate_img(i, c, a) for c in self.cat_ids for a in self.area_rng for i in self.img_ids]
        num_thrs, num_recalls = len(self.iou_thrs), len(self.rec_thrs)
        num_cats, num_area_rngs, num_imgs = len(self.cat_ids), len(self.area_rng), len(self.img_ids)
        precision = -np.ones((num_thrs, num_recalls, num_cats, num_area_rngs))
        recall = -np.ones((num_thrs, num_cats, num_area_rngs))
        for cat_idx in range(num_cats):
            nk = cat_idx * num_area_rngs * num_imgs
            for area_idx in range(num_area_rngs):
                na = area_idx * num_imgs
                E = [eval_imgs[nk + na + img_idx] for img_idx in range(num_imgs)]
                E = [e for e in E if e is not None]
                if len(E) == 0:
                    continue
                dt_scores = np.concatenate([e["dt_scores"] for e in E], axis=0)
                dt_idx = np.argsort(-dt_scores, kind="mergesort")
                dt_m = np.concatenate([e["dt_matches"] for e in E], axis=1)[:, dt_idx]
                dt_ig = np.concatenate([e["dt_ignore"] for e in E], axis=1)[:, dt_idx]
                gt_ig = np.concatenate([e["gt_ignore"] for e in E])
                num_gt = np.count_nonzero(gt_ig == 0)
                if num_gt == 0:
                    continue
                tps = np.logical_and(dt_m, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dt_m), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                for iou_thr_idx, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    tp, fp = np.array(tp), np.array(fp)
                    num_tp = len(tp)
                    rc = tp / num_gt
                    recall[iou_thr_idx, cat_idx, area_idx] = rc[-1] if num_tp else 0
                    pr = (tp / (fp + tp + np.spacing(1))).tolist()
                    for i in range(num_tp - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    rec_thrs_insert_idx = np.searchsorted(rc, self.rec_thrs, side="left")
                    pr_at_recall = [0.0] * num_recalls
                    try:
                        for _idx, pr_idx in enumerate(rec_thrs_insert_idx):
                            pr_at_recall[_idx] = pr[pr_idx]
                    except IndexError:
                        pass
                    precision[iou_thr_idx, :, cat_idx, area_idx] = np.array(pr_at_recall)

        def summarize(kind: str, iou_thr: float | None = None, area: str = "all", freq: int | None = None) -> float:
            aidx = [idx for idx, lbl in enumerate(self.area_rng_lbl) if lbl == area]
            s = precision if kind == "ap" else recall
            if iou_thr is not None:
                s = s[np.where(iou_thr == self.iou_thrs)[0]]
            if kind == "ap":
                s = s[:, :, self.freq_groups[freq], aidx] if freq is not None else s[:, :, :, aidx]
            else:
                s = s[:, :, aidx]
            return -1 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

        r = self.results
        r["AP"], r["AP50"], r["AP75"] = summarize("ap"), summarize("ap", 0.50), summarize("ap", 0.75)
        r["APs"], r["APm"], r["APl"] = (summarize("ap", area=a) for a in ("small", "medium", "large"))
        r["APr"], r["APc"], r["APf"] = (summarize("ap", freq=f) for f in range(3))
        r[f"AR@{self.max_dets}"] = summarize("ar")
        for area in ("small", "medium", "large"):
            r[f"AR{area[0]}@{self.max_dets}"] = summarize("ar", area=area)
        return r


# ----------------------------------------------------------------------------------------------------------------
# Fixtures in the LVIS v1 format.
def _category(category_id: int, name: str, frequency: str) -> dict[str, Any]:
    return {
        "id": category_id,
        "name": name,
        "synset": f"{name}.n.01",
        "synonyms": [name],
        "def": f"a {name}",
        "frequency": frequency,
        "image_count": 1,
        "instance_count": 1,
    }


FILLERS = (
    "aerosol_can air_conditioner airplane alarm_clock alcohol alligator almond ambulance amplifier anklet antenna "
    "apple applesauce apricot apron aquarium arctic_(type_of_shoe) armband armchair armoire armor artichoke "
    "trash_can ashtray asparagus atomizer avocado award awning ax baboon baby_buggy basketball_backboard backpack "
    "handbag suitcase bagel bagpipe baguet bait ball ballet_skirt"
).split()
RED_SQUARE, BLUE_CIRCLE, SIGNBOARD = (
    7,
    1180,
    964,
)  # 45 categories: the square in the first prompt, the circle in the second


def lvis_categories() -> list[dict[str, Any]]:
    categories = [_category(RED_SQUARE, "red_square", "r"), _category(BLUE_CIRCLE, "blue_circle", "c")]
    categories.append(_category(SIGNBOARD, "signboard", "f"))
    ids = [i for i in range(1, 1000, 21) if i not in (RED_SQUARE, BLUE_CIRCLE, SIGNBOARD)]
    categories += [_category(ids[k], name, "rcf"[k % 3]) for k, name in enumerate(FILLERS[:42])]
    return categories


def _lvis_root(root: Path, inserted_file_name: bool = False) -> tuple[Path, dict[str, Any]]:
    """COCO root with val2017/ and train2017/ images and an LVIS v1 file (images only by coco_url)."""
    scene = scene_image()
    wide = Image.new("RGB", (256, 128), (40, 40, 40))
    wide.paste(scene, (128, 0))
    # (id, folder, picture, x offset of the scene, neg_category_ids, not_exhaustive_category_ids, annotated)
    layout = [
        (139, "val2017", scene, 0, [BLUE_CIRCLE, 22], [], (RED_SQUARE,)),  # circle present yet "negative"
        (285, "val2017", wide, 128, [22, 43], [], (RED_SQUARE, SIGNBOARD)),  # circle unknown here: not evaluated
        (9, "train2017", scene, 0, [22], [BLUE_CIRCLE], (RED_SQUARE, BLUE_CIRCLE)),
        (632, "val2017", scene, 0, [], [], (RED_SQUARE, BLUE_CIRCLE)),
    ]
    images, annotations = [], []
    for image_id, folder, picture, offset, negative, not_exhaustive, annotated in layout:
        name = f"{image_id:012d}.jpg"
        write_image(root / folder / name, picture)
        entry = {
            "id": image_id,
            "width": picture.width,
            "height": picture.height,
            "license": 1,
            "flickr_url": f"http://farm4.staticflickr.com/{name}",
            "coco_url": f"http://images.cocodataset.org/{folder}/{name}",
            "date_captured": "2013-11-14 11:18:45",
            "neg_category_ids": negative,
            "not_exhaustive_category_ids": not_exhaustive,
        }
        if inserted_file_name:  # GLIP's lvis_v1_minival_inserted_image_name.json
            entry["file_name"] = f"{folder}/{name}"
        images.append(entry)
        boxes = {
            RED_SQUARE: SCENE_BOXES_XYWH[0],
            BLUE_CIRCLE: SCENE_BOXES_XYWH[1],
            SIGNBOARD: [10.0, 10.0, 60.0, 40.0],
        }
        for category_id in annotated:
            x, y, w, h = boxes[category_id]
            x += 0 if category_id == SIGNBOARD else offset
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [x, y, w, h],
                    "area": w * h * 0.9,  # LVIS areas are the masks'
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
    gt = {
        "info": {"description": "LVIS v1 (test excerpt)", "version": "1.0", "year": 2020},
        "licenses": [{"id": 1, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": lvis_categories(),
    }
    return root, gt


def _port(gt: dict[str, Any], results: list[dict[str, Any]], max_dets: int = 300) -> dict[str, float]:
    return dict(LvisEvalPort(gt, results, max_dets).run())


def _port_fixed(gt: dict[str, Any], results: list[dict[str, Any]], k: int = 10000) -> dict[str, float]:
    """GLIP's LvisEvaluatorFixedAP._summarize_fixed: each category's top k, then LVISEval with max_dets -1."""
    by_cat = defaultdict(list)
    for ann in results:
        by_cat[ann["category_id"]].append(ann)
    kept = [ann for anns in by_cat.values() for ann in sorted(anns, key=lambda x: x["score"], reverse=True)[:k]]
    scores = _port(gt, kept, max_dets=-1)
    return {name: scores[name] for name in AP_NAMES}


@pytest.fixture(scope="module")
def metric() -> Any:
    return evaluate.load(METRIC)


# ----------------------------------------------------------------------------------------------------------------
# The metric alone: hand-reasoned cases and random ones against the port.
def _prediction(image_id: int, entries: list[tuple[int, list[float], float]]) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "boxes": [box for _, box, _ in entries],
        "scores": [score for _, _, score in entries],
        "labels": [label for label, _, _ in entries],
    }


def _federated_case(neg_of_first: list[int]) -> dict[str, Any]:
    """Three images, one ground-truth box each: square (f) in 1, circle (c) in 2, star (r) in 3."""
    cats = [_category(1, "red_square", "f"), _category(2, "blue_circle", "c"), _category(3, "green_star", "r")]
    images = [
        {"id": 1, "width": 100, "height": 100, "neg_category_ids": neg_of_first, "not_exhaustive_category_ids": []},
        {"id": 2, "width": 100, "height": 100, "neg_category_ids": [1], "not_exhaustive_category_ids": [2]},
        {"id": 3, "width": 100, "height": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []},
    ]
    box = [10.0, 10.0, 40.0, 40.0]
    annotations = [
        {"id": k, "image_id": k, "category_id": k, "bbox": box, "area": 1600.0, "segmentation": []} for k in (1, 2, 3)
    ]
    return {"images": images, "annotations": annotations, "categories": cats}


FEDERATED_PREDICTIONS = [
    # image 1: the square (TP); a circle (the circle is in its neg list: FP above the circle's TP); a star
    _prediction(1, [(1, [10, 10, 50, 50], 0.6), (2, [60, 60, 90, 90], 0.9), (3, [60, 10, 90, 40], 0.95)]),
    # image 2: the circle (TP) and an unmatched circle above it: the circle is not exhaustively annotated here
    _prediction(2, [(2, [10, 10, 50, 50], 0.5), (2, [60, 60, 90, 90], 0.7)]),
    # image 3: the star (TP)
    _prediction(3, [(3, [10, 10, 50, 50], 0.1)]),
]


def test_federated_rules_by_hand(metric: Any) -> None:
    # square AP 1; circle: the image-1 FP (neg list) ranks above its only TP: precision 1/2 at every recall -> 0.5,
    # the image-2 extra circle is ignored (not exhaustive); star: image 1 says nothing about stars (neither
    # annotated nor negative), so that detection is not evaluated -> 1.
    gt = _federated_case(neg_of_first=[2])
    scores = metric.compute(predictions=FEDERATED_PREDICTIONS, ground_truth=gt)
    assert scores["AP"] == pytest.approx((1 + 0.5 + 1) / 3) and scores["AP50"] == pytest.approx(2.5 / 3)
    assert (scores["APf"], scores["APc"], scores["APr"]) == pytest.approx((1.0, 0.5, 1.0))
    assert scores["AR@300"] == pytest.approx(1.0) and scores["APs"] == -1 and scores["APl"] == -1
    assert scores == pytest.approx(_port(gt, to_coco_results(FEDERATED_PREDICTIONS, "xyxy")), abs=1e-12)
    # once image 1 lists stars as absent, its star detection is a false positive above the star's TP
    gt = _federated_case(neg_of_first=[2, 3])
    scores = metric.compute(predictions=FEDERATED_PREDICTIONS, ground_truth=gt)
    assert scores["APr"] == pytest.approx(0.5) and scores["AP"] == pytest.approx(2 / 3)
    assert scores == pytest.approx(_port(gt, to_coco_results(FEDERATED_PREDICTIONS, "xyxy")), abs=1e-12)


@pytest.mark.parametrize(("false_positives", "expected"), [(299, 1.0), (300, 0.0)])
def test_at_most_300_detections_per_image(metric: Any, false_positives: int, expected: float) -> None:
    # the limit counts every category of the image: after 299 higher-scoring circles and stars the square's only
    # detection is the 300th and finds its box (AP 1); after 300 it is the 301st and is dropped (AP 0)
    gt = _federated_case(neg_of_first=[2, 3])
    gt["images"], gt["annotations"] = gt["images"][:1], gt["annotations"][:1]
    misses = [
        (2 if k % 2 else 3, [60.0, 60.0, 61.0 + k % 30, 61.0 + k // 30], 0.9 - k * 1e-4)
        for k in range(false_positives)
    ]
    predictions = [_prediction(1, [*misses, (1, [10, 10, 50, 50], 0.5)])]
    scores = metric.compute(predictions=predictions, ground_truth=gt)
    assert scores["APf"] == pytest.approx(expected)
    assert scores == pytest.approx(_port(gt, to_coco_results(predictions, "xyxy")), abs=1e-12)


@pytest.mark.parametrize(("false_positives", "standard"), [(299, 1.0), (300, 0.0)])
def test_fixed_ap_has_no_per_image_limit(false_positives: int, standard: float) -> None:
    # the same image as above: Fixed AP keeps the square's detection behind any number of others
    gt = _federated_case(neg_of_first=[2, 3])
    gt["images"], gt["annotations"] = gt["images"][:1], gt["annotations"][:1]
    misses = [(2, [60.0, 60.0, 61.0 + k % 30, 61.0 + k // 30], 0.9 - k * 1e-4) for k in range(false_positives)]
    results = to_coco_results([_prediction(1, [*misses, (1, [10, 10, 50, 50], 0.5)])], "xyxy")
    fixed = evaluate_lvis_fixed_ap(copy.deepcopy(gt), results)
    assert fixed["APf"] == 1.0 and _port(gt, results)["APf"] == pytest.approx(standard)
    assert fixed == pytest.approx(_port_fixed(gt, results), abs=1e-12)


def test_top_detections_per_category_as_glip_collects_them() -> None:
    top = TopDetectionsPerCategory(k=2)
    top.add(1, [[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]], [0.5, 0.9, 0.5], [7, 7, 8])
    top.add(2, [[1, 1, 1, 1], [1, 1, 2, 2]], [0.5, 0.7], [7, 8])
    # category 7: 0.9, then the earlier of the two 0.5s; category 8: 0.7 then 0.5
    assert [(r["category_id"], r["image_id"], r["score"], r["bbox"][2]) for r in top.results()] == [
        (7, 1, 0.9, 2.0),
        (7, 1, 0.5, 1.0),
        (8, 2, 0.7, 2.0),
        (8, 1, 0.5, 3.0),
    ]
    other = TopDetectionsPerCategory(k=2)
    other.add(2, [[1, 1, 1, 1], [1, 1, 2, 2]], [0.5, 0.7], [7, 8])  # image 2 again: a repeated sample
    other.add(3, [[5, 5, 5, 5]], [0.8], [9])
    merged = TopDetectionsPerCategory.merge([top.state(), other.state()], k=2)
    assert [(r["category_id"], r["image_id"], r["score"]) for r in merged.results()] == [
        (7, 1, 0.9),
        (7, 1, 0.5),
        (8, 2, 0.7),
        (8, 1, 0.5),
        (9, 3, 0.8),
    ]
    assert merged.short_categories() == 1


def test_best_detections_per_prompt() -> None:
    import torch

    from tasks.detection.lvis import _best_per_prompt

    prompt_of_detection = torch.tensor([0, 1, 0, 0, 1, 2, 1])  # detections by decreasing score
    assert _best_per_prompt(prompt_of_detection, 2).tolist() == [0, 1, 2, 4, 5]
    assert _best_per_prompt(prompt_of_detection, 0).tolist() == list(range(7))


def _random_case(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    cats = [_category(c * 3 + 1, f"thing_{c}", "rcf"[c % 3]) for c in range(9)]
    cat_ids = [c["id"] for c in cats]
    images, annotations, predictions = [], [], []
    for i in range(10):
        width, height = int(rng.integers(80, 400)), int(rng.integers(80, 400))
        present = list(rng.choice(cat_ids, size=int(rng.integers(0, 4)), replace=False))
        rest = [c for c in cat_ids if c not in present]
        negative = [int(c) for c in rng.choice(rest, size=int(rng.integers(0, 4)), replace=False)]
        not_exhaustive = [int(c) for c in present if rng.random() < 0.4]
        images.append(
            {
                "id": 50 + i,
                "width": width,
                "height": height,
                "neg_category_ids": negative,
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
        boxes, labels, scores = [], [], []
        for c in present:
            for _ in range(int(rng.integers(1, 4))):
                w, h = rng.uniform(3, width / 2), rng.uniform(3, height / 2)
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                area = float(w * h * rng.uniform(0.5, 1))
                bbox = [float(x), float(y), float(w), float(h)]
                annotation = {"id": len(annotations) + 1, "image_id": 50 + i, "category_id": int(c), "bbox": bbox}
                annotations.append({**annotation, "area": area, "segmentation": []})
                if rng.random() < 0.8:
                    jitter = rng.uniform(-6, 6, size=4)
                    boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
                    labels.append(int(c) if rng.random() < 0.85 else int(rng.choice(cat_ids)))
                    scores.append(float(rng.random()))
        for _ in range(int(rng.integers(0, 12))):
            w, h = rng.uniform(2, width / 2), rng.uniform(2, height / 2)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            boxes.append([x, y, x + w, y + h])
            labels.append(int(rng.choice(cat_ids)))
            scores.append(float(rng.random()))
        predictions.append({"image_id": 50 + i, "boxes": boxes, "scores": scores, "labels": labels})
    return {"images": images, "annotations": annotations, "categories": cats}, predictions


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_equal_the_lvis_api_port(metric: Any, seed: int) -> None:
    gt, predictions = _random_case(seed)
    scores = metric.compute(predictions=predictions, ground_truth=gt)
    expected = _port(gt, to_coco_results(predictions, "xyxy"))
    assert list(scores) == list(NAMES) and list(expected) == list(NAMES)
    assert scores == pytest.approx(expected, abs=1e-12)
    few = metric.compute(predictions=predictions, ground_truth=gt, max_detections_per_image=3)
    assert few == pytest.approx(_port(gt, to_coco_results(predictions, "xyxy"), max_dets=3), abs=1e-12)
    results = to_coco_results(predictions, "xyxy")
    top = TopDetectionsPerCategory(k=4)
    for prediction in predictions:
        image_results = [r for r in results if r["image_id"] == prediction["image_id"]]
        boxes, scores = [r["bbox"] for r in image_results], [r["score"] for r in image_results]
        top.add(prediction["image_id"], boxes, scores, [r["category_id"] for r in image_results])
    fixed = evaluate_lvis_fixed_ap(copy.deepcopy(gt), top.results())
    assert fixed == pytest.approx(_port_fixed(gt, results, k=4), abs=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# End to end.
def _run(model: Path, benchmark: str, root: Path, out: Path, *extra: str) -> dict[str, Any]:
    argv = ["--model", str(model), "--benchmark", benchmark, "--root", str(root), "--output-dir", str(out), "--cpu"]
    assert main([*argv, *extra]) == 0
    split = {"lvis-minival": "minival", "lvis-val": "val"}[benchmark]
    return json.loads((out / f"{benchmark}_{split}_metrics.json").read_text())


def test_lvis_val_equals_the_lvis_api_port_on_the_written_results(scene_detector: Path, tmp_path: Path) -> None:
    root, gt = _lvis_root(tmp_path / "coco")
    write_json(root / "annotations" / "lvis_od_val.json", gt)
    out = tmp_path / "out"
    summary = _run(scene_detector, "lvis-val", root, out, "--batch-size", "3")
    assert summary["split"] == "val" and summary["num_samples"] == 4 and summary["partial"] is False
    assert "federated" in summary["protocol"] and "CHUNKED_EVALUATION 40" in summary["protocol"]
    results = json.loads((out / "lvis_v1_val_glipv2_results.json").read_text())
    assert {entry["image_id"] for entry in results} == {139, 285, 9, 632}
    assert max(sum(entry["image_id"] == image_id for entry in results) for image_id in (139, 285, 9, 632)) <= 300
    assert all(set(entry) == {"image_id", "category_id", "bbox", "score"} for entry in results)
    assert {RED_SQUARE, BLUE_CIRCLE} <= {entry["category_id"] for entry in results}  # both prompts found theirs
    metrics = summary["metrics"]
    assert list(metrics) == [*NAMES, *(f"fixed {name}" for name in AP_NAMES)]
    assert metrics["AP"] > 0.3  # the scene model finds the shapes: a real comparison
    assert {name: metrics[name] for name in NAMES} == pytest.approx(_port(gt, results), abs=1e-12)
    # Fixed AP: every prompt's detections, no per-image limit; the per-image 300 are among them
    fixed_results = json.loads((out / "lvis_v1_val_glipv2_fixed_ap_results.json").read_text())
    fixed = {name: metrics[f"fixed {name}"] for name in AP_NAMES}
    assert fixed == pytest.approx(_port_fixed(gt, fixed_results), abs=1e-12) and fixed["AP"] > 0.3

    def key(entry: dict[str, Any]) -> tuple:
        return entry["image_id"], entry["category_id"], round(entry["score"], 6), *(round(v, 3) for v in entry["bbox"])

    assert {key(entry) for entry in results} <= {key(entry) for entry in fixed_results}


def test_lvis_minival_reads_glips_file_by_coco_url(scene_detector: Path, tmp_path: Path) -> None:
    root, gt = _lvis_root(tmp_path / "coco", inserted_file_name=True)
    gt["images"] = [image for image in gt["images"] if image["coco_url"].split("/")[-2] == "val2017"]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] != 9]
    write_json(root / "annotations" / "lvis_v1_minival_inserted_image_name.json", gt)
    summary = _run(scene_detector, "lvis-minival", root, tmp_path / "out", "--max-samples", "2")
    assert summary["num_samples"] == 2 and summary["partial"] is True
    results = json.loads((tmp_path / "out" / "lvis_v1_minival_glipv2_results.json").read_text())
    assert {entry["image_id"] for entry in results} <= {139, 285}
    kept = {
        **gt,
        "images": gt["images"][:2],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in (139, 285)],
    }
    assert {name: summary["metrics"][name] for name in NAMES} == pytest.approx(_port(kept, results), abs=1e-12)
    fixed_results = json.loads((tmp_path / "out" / "lvis_v1_minival_glipv2_fixed_ap_results.json").read_text())
    fixed = {name: summary["metrics"][f"fixed {name}"] for name in AP_NAMES}
    assert fixed == pytest.approx(_port_fixed(kept, fixed_results), abs=1e-12)


def test_prompts_are_glips_chunks_of_40_sorted_by_id() -> None:
    from tasks.detection.lvis import lvis_labels
    from tasks.detection.prompts import chunked_prompts
    from tests.conftest import bert_processor

    labels, ids = lvis_labels(lvis_categories())
    assert ids == sorted(ids) and len(ids) == 45
    assert labels[ids.index(RED_SQUARE)] == "red square" and "arctic " in labels  # clean_name, as GLIP
    prompts = chunked_prompts(bert_processor(64), labels, 40)
    assert [len(p.label_ids) for p in prompts] == [40, 5]
    assert prompts[1].label_ids == list(range(40, 45)) and prompts[1].labels == labels[40:]
    assert prompts[0].text == ". ".join(labels[:40])


MALFORMED = [
    ("neither file_name nor coco_url", ("images", 0, "coco_url"), None, "image id=139", "file_name"),
    ("coco_url without a folder", ("images", 0, "coco_url"), "000000000139.jpg", "image id=139", "coco_url"),
    ("image not under the url's folder", ("images", 2, "coco_url"), "http://x/val2017/000000000009.jpg", "image id=9",
     "coco_url"),
    ("missing neg_category_ids", ("images", 1, "neg_category_ids"), None, "image id=285", "neg_category_ids"),
    ("unknown not-exhaustive id", ("images", 1, "not_exhaustive_category_ids"), [5000], "image id=285",
     "not_exhaustive_category_ids"),
    ("bad frequency", ("categories", 0, "frequency"), "x", f"category id={RED_SQUARE}", "frequency"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "value", "record", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_name_file_record_and_field(
    scene_detector: Path, tmp_path: Path, case: str, path: tuple, value: Any, record: str, field: str
) -> None:
    root, gt = _lvis_root(tmp_path / "coco")
    target = gt
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    file = write_json(root / "annotations" / "lvis_od_val.json", gt)
    with pytest.raises(Glipv2DataError) as error:
        _run(scene_detector, "lvis-val", root, tmp_path / "out")
    assert error.value.file == str(file) and error.value.record == record and error.value.field == field


def test_missing_official_files_are_named(scene_detector: Path, tmp_path: Path) -> None:
    argv = ["--model", str(scene_detector), "--benchmark", "lvis-minival", "--root", str(tmp_path)]
    with pytest.raises(FileNotFoundError, match=r"'lvis-minival', split 'minival': expected the official annotation "
                       r"file 'annotations/lvis_v1_minival_inserted_image_name.json'"):  # fmt: skip
        main([*argv, "--output-dir", str(tmp_path / "out")])
    write_json(tmp_path / "annotations" / "lvis_od_val.json", {})
    (tmp_path / "val2017").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'lvis-val', split 'val': expected the official train images "
                       r"'train2017'"):  # fmt: skip
        main([*argv[:3], "lvis-val", *argv[4:], "--output-dir", str(tmp_path / "out")])
