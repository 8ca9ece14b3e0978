"""The evaluate metric modules: offline loading and agreement with the reference tools / hand computations."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import evaluate
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tasks_test_utils import METRICS, REPO_ROOT

from tasks.metrics.vqa_accuracy.vqa_normalization import (
    normalize_answer,
    official_vqa_accuracy,
    process_punctuation,
)


def load_metric(name: str) -> evaluate.Metric:
    return evaluate.load(str(METRICS / name))


def test_metrics_load_offline_without_network() -> None:
    code = "import evaluate, sys\nfor name in sys.argv[1:]:\n    evaluate.load(name)\nprint('ok')"
    paths = [str(METRICS / name) for name in ("coco_detection", "grounding_recall", "vqa_accuracy", "caption_metrics")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")  # any network use fails
    result = subprocess.run(
        [sys.executable, "-c", code, *paths], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _ground_truth() -> dict:
    """Eight images with several categories, boxes of all COCO area ranges, and a crowd box."""
    rng = random.Random(0)
    images, annotations = [], []
    for image_id in range(1, 9):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for _ in range(rng.randint(1, 5)):
            side = rng.choice([20, 60, 150])
            x, y = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": rng.choice([1, 2, 5]),
                    "bbox": [x, y, side * rng.uniform(0.7, 1.3), side],
                    "area": side * side,
                    "iscrowd": 0,
                }
            )
    annotations[3]["iscrowd"] = 1
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 5, "name": "c"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _predictions(ground_truth: dict) -> list[dict]:
    """Jittered copies of most ground-truth boxes, some wrong labels, and false positives (xyxy)."""
    rng = random.Random(1)
    per_image = {
        image["id"]: {"image_id": image["id"], "boxes": [], "scores": [], "labels": []}
        for image in ground_truth["images"]
    }
    for annotation in ground_truth["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = annotation["bbox"]
        dx, dy = rng.uniform(-0.2, 0.2) * w, rng.uniform(-0.2, 0.2) * h
        prediction = per_image[annotation["image_id"]]
        prediction["boxes"].append([x + dx, y + dy, x + dx + w, y + dy + h])
        prediction["scores"].append(rng.random())
        prediction["labels"].append(annotation["category_id"] if rng.random() < 0.85 else 2)
    for prediction in per_image.values():
        x, y = rng.uniform(0, 500), rng.uniform(0, 400)
        prediction["boxes"].append([x, y, x + 40, y + 30])
        prediction["scores"].append(rng.random())
        prediction["labels"].append(rng.choice([1, 2, 5]))
    return list(per_image.values())


def test_coco_detection_equals_pycocotools(tmp_path: Path) -> None:
    ground_truth = _ground_truth()
    predictions = _predictions(ground_truth)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(ground_truth))
    metric = load_metric("coco_detection")
    result = metric.compute(predictions=predictions, ground_truth=str(path))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        results = [
            {
                "image_id": p["image_id"],
                "category_id": label,
                "score": score,
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            }
            for p in predictions
            for box, score, label in zip(p["boxes"], p["scores"], p["labels"])
        ]
        reference = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert 0.2 < result["AP"] < 0.95  # a non-trivial case
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    for name, expected in zip(names, reference.stats):
        assert result[name] == pytest.approx(expected, abs=1e-6), name
    # a dict works as ground truth, and xywh boxes give the same numbers
    xywh = [{**p, "boxes": [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in p["boxes"]]} for p in predictions]
    assert metric.compute(predictions=xywh, ground_truth=ground_truth, box_format="xywh") == pytest.approx(result)


def test_coco_detection_perfect_and_empty() -> None:
    ground_truth = _ground_truth()
    perfect = {}
    for a in ground_truth["annotations"]:
        p = perfect.setdefault(a["image_id"], {"image_id": a["image_id"], "boxes": [], "scores": [], "labels": []})
        x, y, w, h = a["bbox"]
        p["boxes"].append([x, y, x + w, y + h])
        p["scores"].append(1.0)
        p["labels"].append(a["category_id"])
    metric = load_metric("coco_detection")
    assert metric.compute(predictions=list(perfect.values()), ground_truth=ground_truth)["AP"] == pytest.approx(1.0)
    empty = [{"image_id": 1, "boxes": [], "scores": [], "labels": []}]
    assert metric.compute(predictions=empty, ground_truth=ground_truth)["AP"] == 0.0


def test_grounding_recall_by_hand() -> None:
    metric = load_metric("grounding_recall")
    gt_a = [[0, 0, 10, 10], [100, 100, 120, 120]]
    predictions = [
        [[100, 100, 121, 121], [0, 0, 1, 1]],  # rank 0 hits the second gt box (IoU 400/441)
        [[50, 50, 60, 60]] * 4 + [[0, 0, 10, 12]] + [[50, 50, 60, 60]],  # rank 4 hits (IoU 100/120)
        [[50, 50, 60, 60]] * 7 + [[0, 0, 10, 10]],  # rank 7 hits
        [[0, 0, 10, 30]] * 10,  # IoU 1/3 everywhere: never a hit
        [[0, 0, 60, 60]],  # any-box: no hit; merged box [0, 0, 120, 120]: IoU 3600/14400 = 0.25, no hit
    ]
    references = [gt_a, [[0, 0, 10, 10]], [[0, 0, 10, 10]], [[0, 0, 10, 10]], gt_a]
    result = metric.compute(predictions=predictions, references=references)
    assert result == {"recall@1": 1 / 5, "recall@5": 2 / 5, "recall@10": 3 / 5}
    merged = metric.compute(
        predictions=[[[0, 0, 120, 110]], [[0, 0, 10, 10]]], references=[gt_a, gt_a], protocol="merged_box", ks=[1]
    )
    assert merged == {"recall@1": 0.5}  # 13200/14400 hits the merged box; the small box does not
    any_box = metric.compute(predictions=[[[0, 0, 120, 110]], [[0, 0, 10, 10]]], references=[gt_a, gt_a], ks=[1])
    assert any_box == {"recall@1": 0.5}
    xywh = metric.compute(predictions=[[[100, 100, 21, 21]]], references=[[[100, 100, 20, 20]]], box_format="xywh")
    assert xywh["recall@1"] == 1.0


def test_grounding_recall_upper_bound_phrase_types_and_giou_by_hand() -> None:
    metric = load_metric("grounding_recall")
    predictions = [
        [[50, 50, 60, 60]] * 10 + [[0, 0, 10, 10]],  # found eleventh: only the upper bound (k = -1) counts it
        [[1.8, 1.8, 11.8, 11.8]],  # IoU 67.24 / 132.76 = 0.5065; GIoU 0.5065 - (139.24 - 132.76) / 139.24 = 0.4599
        [],  # nothing predicted: a miss
    ]
    references = [[[0, 0, 10, 10]]] * 3
    types = [["people"], ["people", "clothing"], ["clothing"]]  # a phrase counts towards each of its types
    result = metric.compute(
        predictions=predictions, references=references, ks=[1, 10], upper_bound=True, phrase_types=types
    )
    assert result == {
        "recall@1": 1 / 3,
        "recall@10": 1 / 3,
        "upper_bound": 2 / 3,
        "recall@1/clothing": 1 / 2,
        "recall@10/clothing": 1 / 2,
        "upper_bound/clothing": 1 / 2,
        "recall@1/people": 1 / 2,
        "recall@10/people": 1 / 2,
        "upper_bound/people": 1.0,
    }
    giou = metric.compute(predictions=predictions, references=references, ks=[1, 20], iou_type="giou")
    assert giou == {"recall@1": 0.0, "recall@20": 1 / 3}
    with pytest.raises(ValueError, match="iou_type must be one of"):
        metric.compute(predictions=predictions, references=references, iou_type="diou")


def test_vqa_normalisation_matches_official_rules() -> None:
    assert normalize_answer("Two.") == "2"
    assert normalize_answer("the Bananas!") == "bananas"
    assert normalize_answer("dont know") == "don't know"
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer("1,000") == "1000"
    assert normalize_answer("black/white") == "black white"
    assert normalize_answer(" yes\n") == "yes"


def test_vqa_accuracy_by_hand() -> None:
    metric = load_metric("vqa_accuracy")
    answers = ["2", "two", "2", "3", "2", "2", "1", "2", "3", "2"]
    # gt answers disagree, so they and the prediction are normalised: "two" -> "2", which appears 7 times.
    # leaving out one of the seven "2": 6 matches -> 1; leaving out another: 7 matches -> 1  => 1.0
    assert official_vqa_accuracy("two", answers) == 1.0
    # "3" appears twice: leaving out a "3" -> 1/3 (2 cases); else 2/3 (8 cases) => (2/3 + 16/3) / 10 = 0.6
    assert official_vqa_accuracy("3", answers) == pytest.approx(0.6)
    # "1" once: 0 when left out, 1/3 otherwise => 0.3
    assert official_vqa_accuracy("one", answers) == pytest.approx(0.3)
    result = metric.compute(
        predictions=["3", "yes", "Bananas", "pizza"],
        references=[answers, ["yes"] * 9 + ["no"], ["bananas"] * 2 + ["banana"] * 8, ["pizza"] * 10],
        answer_types=["number", "yes/no", "other", "other"],
    )
    # "bananas" twice: (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert result["accuracy"] == pytest.approx((0.6 + 1.0 + 0.6 + 1.0) / 4)
    assert result["accuracy_other"] == pytest.approx(0.8)
    assert result["accuracy_number"] == pytest.approx(0.6)
    assert "official" not in result


def test_vqa_accuracy_follows_the_official_vqaeval() -> None:
    metric = load_metric("vqa_accuracy")
    # ten identical answers are compared unnormalised, the prediction too (whitespace aside)
    assert official_vqa_accuracy("yes", ["Yes"] * 10) == 0.0 and official_vqa_accuracy(" Yes\n", ["Yes"] * 10) == 1.0
    assert official_vqa_accuracy("2", ["two"] * 10) == 0.0 and official_vqa_accuracy("2", ["2", "two"] * 5) == 1.0
    # at most 32 periods are stripped (re.UNICODE passed as sub's count): 40 leave 8
    assert process_punctuation("a" + "." * 40) == "a" + "." * 8 and process_punctuation("3.5.") == "3.5"
    result = metric.compute(
        predictions=["2", "yes", "no"],
        references=[["two"] * 9 + ["3"], ["yes"] * 10, ["yes"] * 10],
        answer_types=["number", "yes/no", "yes/no"],
        question_types=["how many", "is the", "is it"],
    )
    # "2" against nine "two" and a "3" (normalised, as they disagree): always >= 3 matches => 1.0
    assert result["accuracy"] == pytest.approx(2 / 3) and result["accuracy_yes/no"] == 0.5
    assert result["official"] == {
        "overall": 66.67,
        "perQuestionType": {"how many": 100.0, "is the": 100.0, "is it": 0.0},
        "perAnswerType": {"number": 100.0, "yes/no": 50.0},
    }
    with pytest.raises(ValueError, match="no ground-truth answers"):
        metric.compute(predictions=["yes"], references=[[]])


def test_caption_metrics_equal_pycocoevalcap() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    predictions = ["a man is making pizza in a kitchen.", "a bowl of fruit on a table", "a red circle."]
    references = [
        ["A man is in a kitchen making pizzas.", "Man in apron standing on front of oven with pans and bakeware "],
        ["The dining table near the kitchen has a bowl of fruit on it.", "A bowl of bananas on a table."],
        ["a red circle.", "one red circle"],
    ]
    result = load_metric("caption_metrics").compute(predictions=predictions, references=references)
    tokenizer = PTBTokenizer()
    with contextlib.redirect_stdout(io.StringIO()):
        gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in enumerate(references)})
        res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
        bleu, _ = Bleu(4).compute_score(gts, res)
        expected = {
            "BLEU-4": bleu[3],
            "METEOR": Meteor().compute_score(gts, res)[0],
            "ROUGE-L": Rouge().compute_score(gts, res)[0],
            "CIDEr": Cider().compute_score(gts, res)[0],
        }
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name
    assert 0 < result["BLEU-4"] < 1 and result["CIDEr"] > 0
