"""`--benchmark coco-mask` and `--benchmark phrasecut`: files exactly as distributed; the mask AP equals
pycocotools' COCOeval `segm` on the results file the run writes, PhraseCut's mean and cumulative IoU equal the
official evaluation's arithmetic on the masks it writes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from scripts.evaluate_model import main
from tests.benchmark_fixtures import (
    SCENE_BOXES_XYWH,
    SCENE_BOXES_XYXY,
    SCENE_LABELS,
    scene_image,
    write_image,
    write_json,
)

CATEGORIES = [{"id": 3, "name": "red_square"}, {"id": 90, "name": "blue circle"}]


@pytest.fixture(scope="module")
def segmenter(scene_detector: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' scene detector with a mask head trained alone for a few steps on the scene's shapes (their pixels
    by colour): the boxes are found, the masks roughly."""
    from glipv2 import Glipv2ForInstanceSegmentation, Glipv2Processor

    folder = tmp_path_factory.mktemp("segmenter")
    torch.manual_seed(0)
    options = {"use_mask_head": True, "mask_candidates": 20, "mask_loss_to_backbone": False}
    model = Glipv2ForInstanceSegmentation.from_pretrained(scene_detector, **options)
    processor = Glipv2Processor.from_pretrained(scene_detector)
    pixels = np.asarray(scene_image())
    masks = np.stack([pixels[..., 0] > 200, pixels[..., 2] > 200])  # the red square, the blue disc
    prompt = processor.build_prompt(SCENE_LABELS)
    targets = [{"boxes": SCENE_BOXES_XYXY, "spans": [[span] for span in prompt.label_spans], "masks": masks}]
    encoding = processor(images=scene_image(), text=[SCENE_LABELS], grounding_targets=targets)
    optimizer = torch.optim.AdamW(model.mask_head.parameters(), lr=1e-3)
    model.train()
    for _ in range(60):
        loss = model(**{k: v for k, v in encoding.items() if k != "labels"}, labels=encoding["labels"]).loss_dict
        optimizer.zero_grad()
        loss["loss_mask"].backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _coco_root(root: Path) -> Path:
    images, annotations = [], []
    for image_id, name in enumerate(("000000000139.jpg", "000000000285.jpg"), start=1):
        write_image(root / "val2017" / name, scene_image())
        images.append({"id": image_id, "file_name": name, "width": 128, "height": 128})
        for category_id, box in zip((3, 90), SCENE_BOXES_XYWH):
            annotations.append(
                {
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id, "bbox": box,
                    "area": box[2] * box[3], "iscrowd": 0, "segmentation": _polygon(*box),
                }
            )  # fmt: skip
    write_json(
        root / "annotations" / "instances_val2017.json",
        {"images": images, "annotations": annotations, "categories": CATEGORIES},
    )
    return root


def _pycocotools_segm(gt_file: Path, results: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # detectron2's COCOEvaluator drops the bbox of segm results: the detections' areas are then their masks'
    results = [{key: value for key, value in result.items() if key != "bbox"} for result in results]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(results), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def test_coco_mask_ap_equals_pycocotools_on_the_written_results(segmenter: Path, tmp_path: Path) -> None:
    root, out = _coco_root(tmp_path / "coco"), tmp_path / "out"
    argv = ["--model", str(segmenter), "--benchmark", "coco-mask", "--root", str(root), "--output-dir", str(out)]
    assert main([*argv, "--cpu", "--batch-size", "2"]) == 0
    summary = json.loads((out / "coco-mask_val2017_metrics.json").read_text())
    assert summary["benchmark"] == "coco-mask" and summary["num_samples"] == 2
    results = json.loads((out / "detections_val2017_glipv2_results.json").read_text())
    assert results and {"image_id", "category_id", "segmentation", "score", "bbox"} <= set(results[0])
    assert {result["category_id"] for result in results} <= {3, 90}
    assert all(result["segmentation"]["size"] == [128, 128] for result in results)
    expected = _pycocotools_segm(root / "annotations" / "instances_val2017.json", results)
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    assert [summary["metrics"][name] for name in names] == pytest.approx(expected[:6], abs=1e-9)
    assert summary["metrics"]["AP50"] > 0.3


def test_phrasecut_metrics_are_the_official_arithmetic_on_the_written_masks(segmenter: Path, tmp_path: Path) -> None:
    from tasks.grounding.phrasecut import official_polygons_mask
    from tests.tasks.test_segmentation_data import phrasecut_dir

    root, out = phrasecut_dir(tmp_path), tmp_path / "out"
    argv = ["--model", str(segmenter), "--benchmark", "phrasecut", "--root", str(root), "--output-dir", str(out)]
    assert main([*argv, "--split", "miniv", "--cpu", "--batch-size", "2"]) == 0
    summary = json.loads((out / "phrasecut_miniv_metrics.json").read_text())
    written = json.loads((out / "phrasecut_miniv_glipv2_masks.json").read_text())
    tasks = json.loads((root / "refer_miniv.json").read_text())
    info = {entry["image_id"]: entry for entry in json.loads((root / "image_data_split.json").read_text())}
    assert [entry["task_id"] for entry in written] == [task["task_id"] for task in tasks]
    intersections, unions = [], []
    for task, entry in zip(tasks, written):
        height, width = info[task["image_id"]]["height"], info[task["image_id"]]["width"]
        truth = official_polygons_mask([p for instance in task["Polygons"] for p in instance], height, width)
        predicted = mask_utils.decode({**entry["mask"], "counts": entry["mask"]["counts"].encode()}).astype(bool)
        assert predicted.shape == (height, width)
        intersections.append(int((truth & predicted).sum()))
        unions.append(int((truth | predicted).sum()))
    ious = [i / u if i else 0.0 for i, u in zip(intersections, unions)]
    assert summary["metrics"]["mIoU"] == pytest.approx(float(np.mean(ious)))
    assert summary["metrics"]["cIoU"] == pytest.approx(sum(intersections) / sum(unions))


def test_lvis_mask_ap_is_the_metric_on_the_written_results(segmenter: Path, tmp_path: Path) -> None:
    import evaluate

    from tasks.spec import METRICS_DIR
    from tests.tasks.test_benchmark_lvis import _lvis_root

    root, gt = _lvis_root(tmp_path / "coco")
    write_json(root / "annotations" / "lvis_od_val.json", gt)
    out = tmp_path / "out"
    argv = ["--model", str(segmenter), "--benchmark", "lvis-val-mask", "--root", str(root), "--output-dir", str(out)]
    assert main([*argv, "--cpu", "--batch-size", "2"]) == 0
    summary = json.loads((out / "lvis-val-mask_val_metrics.json").read_text())
    assert summary["num_samples"] == 4 and "segm" in summary["protocol"]
    results = json.loads((out / "lvis_v1_val_glipv2_segm_results.json").read_text())
    assert results and all(entry["segmentation"]["size"] for entry in results)
    by_image: dict[int, dict] = {}
    for entry in results:
        prediction = by_image.setdefault(
            entry["image_id"], {"image_id": entry["image_id"], "boxes": [], "scores": [], "labels": [], "masks": []}
        )
        prediction["scores"].append(entry["score"])
        prediction["labels"].append(entry["category_id"])
        prediction["masks"].append(entry["segmentation"])
    metric = evaluate.load(str(Path(METRICS_DIR) / "lvis_detection"))
    expected = metric.compute(predictions=list(by_image.values()), ground_truth=gt, iou_type="segm")
    assert summary["metrics"] == pytest.approx(expected, abs=1e-12)
    assert summary["metrics"]["AP50"] > 0.3  # a real comparison: the shapes are found and roughly segmented
