"""Fine-tune a GLIPv2 checkpoint on your own data: LoRA, prompt tuning, linear probing, or in full.

    python scripts/finetune_peft.py --model outputs/demo/final --method lora \\
        --train-annotations data/instances_train.json --train-images data/images/train \\
        [--val-annotations data/instances_val.json --val-images data/images/val] [--task detection] \\
        --output outputs/lora [--lora-r 8 --lora-alpha 16 --target-modules REGEX_OR_LIST] [--max-steps 300] \\
        [--merge] [--push_to_hub me/glipv2-lora] [--config configs/finetune_lora.yaml] [--set train.seed=1]

A fine-tuning run is a recipe (`tasks/recipe.py`, the dialect of `scripts/train.py`) with a `peft` section: `--config`
reads one (e.g. `configs/finetune_lora.yaml`), the options below fill or override its entries, `--set` any other.
Data is read by the task's loaders (COCO instances by default; `--task grounding|vqa|captioning` for the other
formats) and trained by the same loop as `scripts/train.py`, so `accelerate launch` / `torchrun` work.

`--output` receives the adapter (`adapter_model.safetensors` + `adapter_config.json` for LoRA,
`prompt_tuning.safetensors` + `prompt_tuning_config.json` for prompt tuning, the full model for linear-probe/full),
the processor, a model card and, with validation data, `eval_results.json`; `--merge` also writes
`<output>/merged`, a plain checkpoint that loads with `from_pretrained` without PEFT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import yaml

from tasks.allocator import reexec_with_malloc_settings

if __name__ == "__main__":
    reexec_with_malloc_settings()  # first of all: glibc reads its allocator settings only at start-up

from tasks.multitask import Run, build_training, evaluate_tasks, load_eval_data  # noqa: E402
from tasks.peft_utils import merge_trained, save_trained  # noqa: E402
from tasks.publish import publish, write_model_card  # noqa: E402
from tasks.recipe import PEFT_METHODS, Recipe, apply_overrides, recipe_from_dict  # noqa: E402
from tasks.registry import TASKS  # noqa: E402

logger = logging.getLogger("glipv2.finetune_peft")

# A run without --config: the defaults of a short fine-tune.
DEFAULTS: dict[str, Any] = {
    "train": {
        "max_steps": 300,
        "per_device_batch_size": 8,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "warmup_steps": 20,
        "report_to": None,
        "save_every": 0,
    },
    "peft": {"method": "lora"},
}
# Command-line option -> recipe entry (`section.key`; `task.` entries go to the fine-tuned task's entry).
OPTIONS = {
    "model": "model.init_from",
    "method": "peft.method",
    "lora_r": "peft.lora_r",
    "lora_alpha": "peft.lora_alpha",
    "lora_dropout": "peft.lora_dropout",
    "target_modules": "peft.target_modules",
    "output": "train.output_dir",
    "max_steps": "train.max_steps",
    "batch_size": "train.per_device_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "learning_rate": "train.learning_rate",
    "text_learning_rate": "train.text_learning_rate",
    "weight_decay": "train.weight_decay",
    "warmup_steps": "train.warmup_steps",
    "schedule": "train.schedule",
    "mixed_precision": "train.mixed_precision",
    "seed": "train.seed",
    "max_train_samples": "data.max_samples",
    "max_val_samples": "data.eval_max_samples",
    "train_min_sizes": "data.train_min_sizes",
    "train_max_size": "data.train_max_size",
    "train_pad_size": "data.train_pad_size",
    "eval_batch_size": "data.eval_batch_size",
    "train_annotations": "task.files.annotation_file",
    "train_images": "task.files.image_dir",
    "train_questions": "task.files.questions_file",
    "val_annotations": "task.eval_files.annotation_file",
    "val_images": "task.eval_files.image_dir",
    "val_questions": "task.eval_files.questions_file",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring); every option is optional where `--config` gives it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--config", help="a recipe with a `peft` section (e.g. configs/finetune_lora.yaml)")
    add("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe entry")
    add("--model", help="base checkpoint folder (model + processor)")
    add("--method", choices=PEFT_METHODS)
    add("--task", choices=sorted(TASKS), help="the task to fine-tune (default: the recipe's, else detection)")
    add("--train-annotations", help="COCO instances / MDETR / VQAv2 annotations / COCO captions JSON")
    add("--train-images", help="folder of the training images")
    add("--train-questions", help="VQA: VQAv2 questions JSON")
    add("--val-annotations", help="validation annotations (evaluated at the end)")
    add("--val-images", help="folder of the validation images")
    add("--val-questions", help="VQA: validation questions JSON")
    add("--image-name-format", help="VQA: image file name pattern (training and validation)")
    add("--output", help="output folder")
    add("--lora-r", type=int)
    add("--lora-alpha", type=int)
    add("--lora-dropout", type=float)
    add("--target-modules", help="regex over full module names, or a comma-separated list of leaves")
    add("--max-steps", type=int)
    add("--batch-size", type=int, help="images per process and step")
    add("--gradient-accumulation-steps", type=int)
    add("--learning-rate", type=float)
    add("--text-learning-rate", type=float, help="text-encoder parameters (default: the learning rate)")
    add("--weight-decay", type=float)
    add("--warmup-steps", type=int)
    add("--schedule", choices=("cosine", "linear", "constant"))
    add("--mixed-precision", choices=("no", "bf16", "fp16"))
    add("--seed", type=int)
    add("--max-train-samples", type=int)
    add("--max-val-samples", type=int)
    add("--train-min-sizes", type=int, nargs="+", help="multi-scale training sizes (GLIP: 480-800)")
    add("--train-max-size", type=int, help="longest side in training (GLIP: 1333)")
    add("--train-pad-size", type=int, help="pad every training batch to this square size")
    add(
        "--fixed-prompt",
        action="store_true",
        default=None,
        help="detection: train on the evaluation prompt (all categories in order, GLIP's DISABLE_SHUFFLE)",
    )
    add("--eval-batch-size", type=int)
    add("--merge", action="store_true", help="also write <output>/merged, a plain checkpoint")
    add("--push_to_hub", "--push-to-hub", dest="push_to_hub", metavar="REPO", help="Hub repo id")
    add("--no-progress", action="store_true")
    return parser


def _read_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return json.loads(json.dumps(DEFAULTS))
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a recipe mapping, got {type(data).__name__}")
    return data


def _set(node: dict[str, Any], keys: list[str], value: Any) -> None:
    """`node[keys[0]][keys[1]]... = value`, creating (or replacing empty) mappings on the way."""
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The run's recipe: `--config` (or [`DEFAULTS`]), then the options given, then `--set`."""
    data = _read_config(args.config)
    tasks = data.get("tasks") or [{"name": "detection"}]
    entry = tasks[0] if isinstance(tasks[0], dict) else {"name": tasks[0]}
    if args.task and args.task != entry.get("name"):
        entry = {"name": args.task}
    data["tasks"] = [entry]
    if args.fixed_prompt:
        entry.setdefault("options", {})["fixed_prompt"] = True
    if args.image_name_format:
        for key in ("files", "eval_files"):
            entry.setdefault(key, {})["image_name_format"] = args.image_name_format
    for option, target in OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            section, *keys = target.split(".")
            _set(entry if section == "task" else data, keys if section == "task" else [section, *keys], value)
    train = data.get("train") or {}
    train.setdefault("text_learning_rate", train.get("learning_rate", DEFAULTS["train"]["learning_rate"]))
    data["train"] = train
    data = apply_overrides(data, args.set)
    recipe = recipe_from_dict(data, args.config or "finetune_peft.py options")
    if recipe.peft is None:
        raise ValueError(f"{args.config}: a fine-tuning recipe needs a `peft` section (method: {PEFT_METHODS}).")
    missing = [] if recipe.model.init_from else ["--model"]
    if "output_dir" not in data["train"]:
        missing.append("--output")
    task = recipe.tasks[0]
    if not recipe.data.dir and not (task.files and {"annotation_file", "image_dir"} <= set(task.files)):
        missing.append("--train-annotations and --train-images")
    if task.name == "vqa" and not recipe.data.dir and not (task.files or {}).get("questions_file"):
        missing.append("--train-questions (--task vqa)")
    if missing:
        raise ValueError("missing " + ", ".join(missing))
    return recipe


def save_outputs(run: Run, metrics: dict[str, float] | None, merge: bool) -> str:
    """Adapter (or full model), processor, metrics and card in the output folder; `merged/` with `merge`.
    Returns the folder to publish."""
    output, method, task = run.output_dir, run.recipe.peft.method, run.recipe.tasks[0].name
    model = run.trainer.accelerator.unwrap_model(run.trainer.model)
    os.makedirs(output, exist_ok=True)
    save_trained(model, output, method)
    run.processor.save_pretrained(output)
    card_metrics = {task: metrics} if metrics else None
    if metrics:
        with open(os.path.join(output, "eval_results.json"), "w", encoding="utf-8") as handle:
            json.dump({"task": task, "model": output, "metrics": metrics}, handle, indent=2)
    base = run.recipe.model.init_from
    write_model_card(output, card_metrics, base_model=base)
    if not merge:
        return output
    if method not in ("lora", "prompt"):
        logger.info("--merge: a %s fine-tune is already a full checkpoint (%s)", method, output)
        return output
    merged_dir = os.path.join(output, "merged")
    merge_trained(model, method).save_pretrained(merged_dir)
    run.processor.save_pretrained(merged_dir)
    write_model_card(merged_dir, card_metrics, base_model=base)
    return merged_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Fine-tune, evaluate, save (see the module docstring); returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        recipe = recipe_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    run = build_training(recipe)
    started = time.time()
    history = run.trainer.train(progress=not args.no_progress)
    elapsed = time.time() - started
    task = recipe.tasks[0]
    has_val = bool(recipe.data.dir or task.eval_files)
    accelerator = run.trainer.accelerator
    metrics = None
    if has_val:
        data = load_eval_data(recipe)
        metrics = evaluate_tasks(recipe, run.trainer.model, run.processor, accelerator, data).get(task.name)
    if accelerator.is_main_process:
        first, last = history[0]["loss"], sum(r["loss"] for r in history[-10:]) / len(history[-10:])
        print(f"trained {run.trainer.step} steps in {elapsed:.0f} s: loss {first:.4f} -> {last:.4f} (mean of last 10)")
        if metrics is not None:
            print("validation: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        folder = save_outputs(run, metrics, args.merge)
        if args.push_to_hub:
            card = {task.name: metrics} if metrics else None
            message = f"Upload GLIPv2 {recipe.peft.method} fine-tune"
            _, commit = publish(
                folder, args.push_to_hub, card, commit_message=message, base_model=recipe.model.init_from
            )
            print(f"pushed {folder} to {args.push_to_hub}: commit {commit.oid}")
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
