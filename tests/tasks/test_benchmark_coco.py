"""`--benchmark coco`: COCO 2017 files exactly as distributed (`annotations/instances_val2017.json`, `val2017/`,
the test-dev image-info file); the AP equals pycocotools' COCOeval on the results file the run writes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from scripts.evaluate_model import main
from tests.benchmark_fixtures import SCENE_BOXES_XYWH, scene_image, write_image, write_json

# COCO's ids are not contiguous; names as in the official file (underscores and all, cleaned for the prompt)
CATEGORIES = [
    {"id": 3, "name": "red_square", "supercategory": "shape"},
    {"id": 90, "name": "blue circle", "supercategory": "shape"},
    {"id": 11, "name": "green star", "supercategory": "shape"},
]


def _coco_root(root: Path) -> Path:
    scene = scene_image()
    wide = Image.new("RGB", (256, 128), (40, 40, 40))
    wide.paste(scene, (128, 0))
    images, annotations = [], []
    for image_id, (name, picture, offset) in enumerate(
        [("000000000139.jpg", scene, 0), ("000000000285.jpg", wide, 128), ("000000000632.jpg", scene, 0)], start=1
    ):
        write_image(root / "val2017" / name, picture)
        images.append({"id": image_id, "file_name": name, "width": picture.width, "height": picture.height})
        for category_id, (x, y, w, h) in zip((3, 90), SCENE_BOXES_XYWH):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [x + offset, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    annotations[-1]["iscrowd"] = 1  # a crowd region: neither a match nor a miss
    info = {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017}
    gt = {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}
    write_json(root / "annotations" / "instances_val2017.json", gt)
    test_images = [{"id": 7, "file_name": "000000000001.jpg", "width": 128, "height": 128}]
    write_image(root / "test2017" / "000000000001.jpg", scene)
    write_json(
        root / "annotations" / "image_info_test-dev2017.json",
        {"info": info, "images": test_images, "categories": CATEGORIES},
    )
    return root


def _pycocotools_ap(gt_file: Path, results_file: Path) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def test_val2017_ap_equals_pycocotools_on_the_written_results(scene_detector: Path, tmp_path: Path) -> None:
    root, out = _coco_root(tmp_path / "coco"), tmp_path / "out"
    argv = ["--model", str(scene_detector), "--benchmark", "coco", "--root", str(root), "--output-dir", str(out)]
    assert main([*argv, "--cpu", "--batch-size", "2"]) == 0
    summary = json.loads((out / "coco_val2017_metrics.json").read_text())
    assert summary["benchmark"] == "coco" and summary["split"] == "val2017" and summary["num_samples"] == 3
    assert summary["partial"] is False
    results_file = out / "detections_val2017_glipv2_results.json"
    results = json.loads(results_file.read_text())
    assert {entry["category_id"] for entry in results} <= {3, 90, 11} and len({e["image_id"] for e in results}) == 3
    assert max(sum(1 for e in results if e["image_id"] == i) for i in (1, 2, 3)) <= 100
    stats = _pycocotools_ap(root / "annotations" / "instances_val2017.json", results_file)
    metrics = summary["metrics"]
    assert metrics["AP"] > 0.3  # the scene model finds the shapes: a real comparison, not two zeros
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    for name, value in zip(names, stats):
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_test_dev_writes_the_server_results_file_only(scene_detector: Path, tmp_path: Path) -> None:
    root, out = _coco_root(tmp_path / "coco"), tmp_path / "out"
    argv = ["--model", str(scene_detector), "--benchmark", "coco", "--root", str(root), "--split", "test-dev2017"]
    assert main([*argv, "--output-dir", str(out), "--cpu"]) == 0
    summary = json.loads((out / "coco_test-dev2017_metrics.json").read_text())
    assert summary["metrics"] == {} and summary["num_samples"] == 1
    results = json.loads((out / "detections_test-dev2017_glipv2_results.json").read_text())
    assert results and all(set(entry) == {"image_id", "category_id", "bbox", "score"} for entry in results)
    assert {entry["image_id"] for entry in results} == {7}


def test_missing_official_files_are_named(scene_detector: Path, tmp_path: Path) -> None:
    argv = ["--model", str(scene_detector), "--benchmark", "coco", "--root", str(tmp_path), "--output-dir", "x"]
    with pytest.raises(FileNotFoundError, match=r"'coco', split 'val2017': expected the official image dir 'val2017'"):
        main(argv)
    (tmp_path / "val2017").mkdir()
    with pytest.raises(FileNotFoundError, match=r"official annotation file 'annotations/instances_val2017.json'"):
        main(argv)
    with pytest.raises(ValueError, match=r"no split 'val2014'; its splits: \['val2017', 'test-dev2017'\]"):
        main([*argv, "--split", "val2014"])
    with pytest.raises(KeyError, match="unknown benchmark 'cocoa'"):
        main(["--model", "m", "--benchmark", "cocoa", "--root", "r", "--output-dir", "o"])


def test_list_benchmarks_prints_the_official_files(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-benchmarks"]) == 0
    printed = capsys.readouterr().out
    assert "coco (task detection)" in printed
    assert "test-dev2017 [evaluation server: submission file only]" in printed
    assert "annotation_file=annotations/instances_val2017.json, image_dir=val2017" in printed
