"""`--benchmark refcoco` / `refcoco+` / `refcocog`: MDETR's `mdetr_annotations/finetune_<dataset>_<split>.json` with
COCO's `train2014/`, scored as MDETR's RefExpEvaluator: per expression, whether its k best boxes hold one at IoU
(and, as MDETR's code, GIoU) >= 0.5 with the referred box. The accuracies are checked against an independent
re-implementation on the predictions file the run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from scripts.evaluate_model import main
from tests.benchmark_fixtures import SCENE_BOXES_XYWH, scene_image, write_image, write_json

SQUARE, CIRCLE = SCENE_BOXES_XYWH


def _pictures() -> dict[int, tuple[Image.Image, float, int, int]]:
    """COCO image id -> (picture, scale, x and y offsets of the scene in it)."""
    scene = scene_image()
    padded = Image.new("RGB", (160, 160), (40, 40, 40))
    padded.paste(scene, (16, 16))
    wide = Image.new("RGB", (256, 128), (40, 40, 40))
    wide.paste(scene, (128, 0))
    return {
        581857: (scene, 1.0, 0, 0),
        9: (scene.resize((256, 256)), 2.0, 0, 0),
        25: (padded, 1.0, 16, 16),
        30: (wide, 1.0, 128, 0),
    }


# (COCO image id, expression, MDETR's tokens_positive: the root noun phrase, referred shape)
EXPRESSIONS = {
    "testA": [
        (581857, "red square on the left", [[0, 3], [4, 10]], SQUARE),
        (581857, "the blue circle up right", [[4, 8], [9, 15]], CIRCLE),
        (9, "big red square", [[0, 3], [4, 7], [8, 14]], SQUARE),
        (9, "circle", [[0, 6]], CIRCLE),
        (25, "the blue circle", [[4, 8], [9, 15]], CIRCLE),
        (25, "red square", [[0, 3], [4, 10]], SQUARE),
        (30, "blue circle", [[0, 4], [5, 11]], CIRCLE),
    ],
    "val": [(581857, "the red square", [[4, 7], [8, 14]], SQUARE), (30, "red square", [[0, 3], [4, 10]], SQUARE)],
    "test": [(9, "a blue circle", [[2, 6], [7, 13]], CIRCLE)],
}


def _mdetr_json(dataset: str, split: str, pictures: dict) -> dict:
    """`finetune_<dataset>_<split>.json` as MDETR's refexp_coco_format.py writes it: one image entry per expression
    (its COCO file, the expression as `caption`), one annotation (the referred COCO box, `tokens_positive`)."""
    images, annotations = [], []
    for index, (coco_id, expression, root, (x, y, w, h)) in enumerate(EXPRESSIONS[split]):
        picture, scale, dx, dy = pictures[coco_id]
        bbox = [x * scale + dx, y * scale + dy, w * scale, h * scale]
        images.append(
            {
                "file_name": f"COCO_train2014_{coco_id:012d}.jpg",
                "height": picture.height,
                "width": picture.width,
                "id": index,
                "original_id": coco_id,
                "caption": expression,
                "dataset_name": dataset,
                "tokens_negative": [[0, len(expression)]],
            }
        )
        annotations.append(
            {
                "area": bbox[2] * bbox[3],
                "iscrowd": 0,
                "image_id": index,
                "category_id": 1,
                "id": index,
                "bbox": bbox,
                "original_id": 1000 + index,
                "tokens_positive": root,
            }
        )
    info = {"description": "COCO 2014 Dataset", "version": "1.0", "year": 2014}
    categories = [{"supercategory": "shape", "id": 1, "name": "shape"}]
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def refexp_root(root: Path) -> Path:
    pictures = _pictures()
    for coco_id, (picture, *_) in pictures.items():
        write_image(root / "train2014" / f"COCO_train2014_{coco_id:012d}.jpg", picture)
    for dataset, splits in (("refcoco", ("val", "testA")), ("refcoco+", ("val",)), ("refcocog", ("val", "test"))):
        for split in splits:
            path = root / "mdetr_annotations" / f"finetune_{dataset}_{split}.json"
            write_json(path, _mdetr_json(dataset, split, pictures))
    return root


# ------------------------------------------------------------------------------ the reference implementation
def _overlaps(a: list[float], b: list[float]) -> tuple[float, float]:
    """IoU and GIoU of two xyxy boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = inter / union
    return iou, iou - (hull - union) / hull


def reference_accuracy(annotation_file: Path, predictions: list[dict]) -> dict[str, float]:
    """MDETR's RefExpEvaluator re-written: per expression, its boxes sorted by score, the referred box from the
    file's single annotation of that entry; a hit @k when one of the first k reaches 0.5."""
    data = json.loads(annotation_file.read_text())
    target = {a["image_id"]: a["bbox"] for a in data["annotations"]}
    by_id = {p["image_id"]: p for p in predictions}
    assert sorted(by_id) == sorted(image["id"] for image in data["images"])
    hits: dict[str, float] = {f"{kind}accuracy@{k}": 0.0 for kind in ("", "giou_") for k in (1, 5, 10)}
    for image_id, prediction in by_id.items():
        x, y, w, h = target[image_id]
        ranked = [box for _, box in sorted(zip(prediction["scores"], prediction["boxes"]), reverse=True)]
        overlaps = [_overlaps(box, [x, y, x + w, y + h]) for box in ranked]
        for k in (1, 5, 10):
            hits[f"accuracy@{k}"] += any(iou >= 0.5 for iou, _ in overlaps[:k])
            hits[f"giou_accuracy@{k}"] += any(giou >= 0.5 for _, giou in overlaps[:k])
    return {name: value / len(by_id) for name, value in hits.items()}


# ------------------------------------------------------------------------------------------------- end to end
def _run(model: Path, root: Path, out: Path, benchmark: str, split: str) -> dict:
    argv = ["--model", str(model), "--benchmark", benchmark, "--root", str(root), "--output-dir", str(out)]
    assert main([*argv, "--split", split, "--cpu", "--batch-size", "3"]) == 0
    return json.loads((out / f"{benchmark}_{split}_metrics.json").read_text())


def test_refcoco_testA_accuracy_equals_the_official_evaluator(scene_detector: Path, tmp_path: Path) -> None:
    root, out = refexp_root(tmp_path / "coco"), tmp_path / "out"
    summary = _run(scene_detector, root, out, "refcoco", "testA")
    assert summary["benchmark"] == "refcoco" and summary["split"] == "testA" and summary["num_samples"] == 7
    predictions = json.loads((out / "refcoco_testA_glipv2_predictions.json").read_text())
    assert [p["image_id"] for p in predictions] == list(range(7))
    assert all(0 < len(p["boxes"]) <= 10 and p["scores"] == sorted(p["scores"], reverse=True) for p in predictions)
    reference = reference_accuracy(root / "mdetr_annotations" / "finetune_refcoco_testA.json", predictions)
    assert summary["metrics"] == pytest.approx(reference, abs=1e-12)
    assert 0.3 < summary["metrics"]["accuracy@1"] < 1.0  # the scene model finds most shapes: a real comparison


@pytest.mark.parametrize(("benchmark", "split", "count"), [("refcoco+", "val", 2), ("refcocog", "test", 1)])
def test_other_datasets_and_splits(
    scene_detector: Path, tmp_path: Path, benchmark: str, split: str, count: int
) -> None:
    root, out = refexp_root(tmp_path / "coco"), tmp_path / "out"
    summary = _run(scene_detector, root, out, benchmark, split)
    assert summary["num_samples"] == count
    predictions = json.loads((out / f"{benchmark}_{split}_glipv2_predictions.json").read_text())
    reference = reference_accuracy(root / "mdetr_annotations" / f"finetune_{benchmark}_{split}.json", predictions)
    assert summary["metrics"] == pytest.approx(reference, abs=1e-12)


def test_accuracy_by_hand() -> None:
    import evaluate

    from tasks.grounding.benchmarks import refexp_accuracy
    from tasks.spec import METRICS_DIR

    metric = evaluate.load(f"{METRICS_DIR}/grounding_recall")
    predictions = [
        # IoU 8.2^2 / (200 - 8.2^2) = 0.5065: a hit; GIoU 0.5065 - (11.8^2 - 132.76) / 11.8^2 = 0.4599: a miss
        {"boxes": [[1.8, 1.8, 11.8, 11.8]]},
        {"boxes": [[50.0, 50.0, 60.0, 60.0]] * 5 + [[0.0, 0.0, 10.0, 10.0]]},  # found sixth
        {"boxes": []},  # no box at all: a miss
        {"boxes": [[20.0, 20.0, 40.0, 40.0]]},
    ]
    ground_truth = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [20.0, 20.0, 40.0, 40.0]]
    metrics = refexp_accuracy(metric, predictions, ground_truth)
    assert metrics == {
        "accuracy@1": 2 / 4,
        "accuracy@5": 2 / 4,
        "accuracy@10": 3 / 4,
        "giou_accuracy@1": 1 / 4,
        "giou_accuracy@5": 1 / 4,
        "giou_accuracy@10": 2 / 4,
    }


# -------------------------------------------------------------------------------------------- bad input
def test_malformed_files_name_file_record_and_field(scene_detector: Path, tmp_path: Path) -> None:
    from tasks.common import Glipv2DataError

    root = refexp_root(tmp_path / "coco")
    argv = ["--model", str(scene_detector), "--benchmark", "refcoco", "--root", str(root), "--output-dir", "x"]
    path = root / "mdetr_annotations" / "finetune_refcoco_val.json"
    data = json.loads(path.read_text())
    data["annotations"].append(dict(data["annotations"][0], id=99))
    path.write_text(json.dumps(data))
    with pytest.raises(Glipv2DataError, match=r"finetune_refcoco_val\.json: image id=0: field 'annotations': .* 2$"):
        main(argv)
    data["annotations"].pop()
    data["annotations"][1]["tokens_positive"] = [[4, 40]]
    path.write_text(json.dumps(data))
    with pytest.raises(Glipv2DataError, match=r"_val\.json: annotation id=1 \(image id=1\): field 'tokens_positive'"):
        main(argv)
    with pytest.raises(FileNotFoundError, match=r"'refcoco', split 'testB': .* 'mdetr_annotations/finetune_refcoco_"):
        main([*argv, "--split", "testB"])
    with pytest.raises(ValueError, match=r"'refcocog' has no split 'testA'; its splits: \['val', 'test'\]"):
        main([*argv[:3], "refcocog", *argv[4:], "--split", "testA"])


def test_list_benchmarks_prints_the_official_files(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-benchmarks"]) == 0
    printed = capsys.readouterr().out
    for name, splits in (("refcoco", "val testA testB"), ("refcoco+", "val testA testB"), ("refcocog", "val test")):
        assert f"{name} (task grounding)" in printed
        for split in splits.split():
            line = f"  {split}: annotation_file=mdetr_annotations/finetune_{name}_{split}.json, image_dir=train2014"
            assert line in printed.splitlines()
