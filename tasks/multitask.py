"""Assembles a training run from a recipe: data sources from the task registry, the model, the trainer, and the
evaluation and export at the end. Shared by `scripts/train.py`, `scripts/finetune_peft.py` and `scripts/demo.py`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from accelerate.utils import set_seed

from tasks.common import SkipReport
from tasks.registry import get_task
from tasks.trainer import MultitaskTrainer, TaskSource, TrainConfig, summary_table
from tasks.vqa import build_answer_vocab

logger = logging.getLogger(__name__)

# Tasks whose loss the grounding model computes on its own; any other task needs the all-heads model.
GROUNDING_TASKS = ("detection", "grounding")


@dataclass
class Run:
    """Everything a training run is made of."""

    trainer: MultitaskTrainer
    model: Any
    processor: Any
    config: TrainConfig
    recipe: dict[str, Any]
    data: dict[str, Any]
    skipped: dict[str, SkipReport] = field(default_factory=dict)  # invalid training records per task


def ensure_data(data_recipe: dict[str, Any]) -> str:
    """The data folder; generated with `tasks.synthetic` when the recipe asks for it and it is not there yet."""
    data_dir = data_recipe["dir"]
    generate = data_recipe.get("generate")
    if generate and not os.path.isfile(os.path.join(data_dir, "annotations", "instances_train.json")):
        from tasks.synthetic import generate_synthetic_multitask

        generate_synthetic_multitask(data_dir, **generate)
    return data_dir


def model_class_for(task_names: list[str]) -> type:
    """`Glipv2ForGrounding` for detection/grounding alone, else `Glipv2ForPreTraining` (every head)."""
    import glipv2

    if all(name in GROUNDING_TASKS for name in task_names):
        return glipv2.Glipv2ForGrounding
    return glipv2.Glipv2ForPreTraining


def load_task_data(recipe: dict[str, Any], split: str, reports: dict[str, SkipReport] | None = None) -> dict[str, Any]:
    """Each task's `TaskData` for `split`, read through the registry's loaders.

    A task entry may replace its training files with `files: {annotation_file, image_dir, questions_file,
    image_name_format}` (e.g. a grounding task trained on `scripts/pseudo_label.py` output); evaluation splits keep
    the data folder's layout. `data.skip_invalid: true` skips malformed records instead of raising, counted per task
    in `reports` (and in the run's summary); `data.verify_images: true` decodes every image up front.
    """
    data_dir = ensure_data(recipe["data"])
    limit = recipe["data"].get("max_samples")
    options = {
        "skip_invalid": bool(recipe["data"].get("skip_invalid", False)),
        "verify_images": bool(recipe["data"].get("verify_images", False)),
    }
    train_split = recipe["data"].get("train_split", "train")
    out = {}
    for task in recipe["tasks"]:
        name = task["name"] if isinstance(task, dict) else task
        spec = get_task(name)
        files = spec.default_files(data_dir, split)
        overrides = task.get("files") if isinstance(task, dict) and split == train_split else None
        if overrides:
            known = {entry.name for entry in dataclasses.fields(files)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise ValueError(f"tasks[{name}].files: unknown keys {unknown}; expected some of {sorted(known)}.")
            files = dataclasses.replace(files, **overrides)
        report = SkipReport()
        out[name] = spec.load(files, limit, report=report, **options)
        if reports is not None:
            reports[name] = report
    return out


def build_sources(
    train_data: dict[str, Any], processor: Any, seed: int, answer_vocab: list[str] | None, data_recipe: dict
) -> dict:
    """Training collators (augmentation on) around each task's records.

    `data.train_min_sizes` / `data.train_max_size` set GLIP's multi-scale training resize (official: shortest side
    480-800, longest 1333); small synthetic images use sizes around their own. `data.train_pad_size` pads every
    batch to one square size, so that batch composition (and the number of processes) cannot change results.
    """
    sources = {}
    scales = {}
    if "train_min_sizes" in data_recipe:
        scales = {"min_sizes": tuple(data_recipe["train_min_sizes"]), "max_size": data_recipe.get("train_max_size")}
    if data_recipe.get("train_pad_size"):
        scales["pad_size"] = int(data_recipe["train_pad_size"])
    for name, data in train_data.items():
        spec = get_task(name)
        kwargs: dict[str, Any] = {"train": True, "seed": seed, **scales}
        if name == "detection":
            kwargs["categories"] = data.categories
            if "num_negatives" in data_recipe:  # official: up to 85 sampled absent classes per prompt
                kwargs["num_negatives"] = int(data_recipe["num_negatives"])
        if name == "vqa":
            kwargs["answer_vocab"] = answer_vocab
        sources[name] = TaskSource(dataset=data.dataset, collator=spec.collator(processor, **kwargs))
    return sources


def build_training(
    recipe: dict[str, Any],
    build_processor: Callable[[dict], Any],
    build_model: Callable[[dict, type, dict], Any],
    config: TrainConfig,
) -> Run:
    """Data, processor, model (answer vocabulary in `config.id2label` when VQA is trained) and the trainer."""
    skipped: dict[str, SkipReport] = {}
    train_data = load_task_data(recipe, recipe["data"].get("train_split", "train"), skipped)
    answer_vocab = None
    extra_config: dict[str, Any] = {}
    if "vqa" in train_data:
        answer_vocab = build_answer_vocab(train_data["vqa"].dataset)
        extra_config["id2label"] = dict(enumerate(answer_vocab))
    processor = build_processor(recipe["model"])
    set_seed(config.seed)  # the same initial weights whatever ran before (e.g. data generation)
    model = build_model(recipe["model"], model_class_for(list(train_data)), extra_config)
    if hasattr(model, "loss_weights") and config.loss_weights:
        model.loss_weights.update(config.loss_weights)
    sources = build_sources(train_data, processor, config.seed, answer_vocab, recipe["data"])
    trainer = MultitaskTrainer(model, sources, config, task_loss=task_loss)
    if config.eval_every:
        trainer.evaluate = build_evaluator(recipe, processor, trainer.accelerator)
    return Run(trainer, model, processor, config, recipe, train_data, skipped)


def build_evaluator(
    recipe: dict[str, Any], processor: Any, accelerator: Any
) -> Callable[[Any, int], dict[str, float]]:
    """The periodic evaluation of `train.eval_every`: every trained task's metrics on `data.eval_split` (default
    `val`; the first `data.eval_max_samples` records), with the data read once.

    Each task is scored by its own model class (`Glipv2ForGrounding`, `Glipv2ForQuestionAnswering`, ...) holding the
    current weights, exactly as `scripts/evaluate.py` scores a saved checkpoint. Call on every process; the metrics
    (`"<task>/<metric>"`) come back on the main process, `{}` elsewhere.
    """
    data_recipe = {**recipe["data"], "max_samples": recipe["data"].get("eval_max_samples")}
    data = load_task_data({**recipe, "data": data_recipe}, recipe["data"].get("eval_split", "val"))
    batch_size = int(recipe["data"].get("eval_batch_size", 8))

    def evaluate(model: Any, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        state = None
        for name, task_data in data.items():
            spec = get_task(name)
            task_class = spec.model_class()
            task_model = model
            if type(model) is not task_class:  # e.g. the all-heads model: same weights in the task's class
                state = model.state_dict() if state is None else state
                task_model = task_class(model.config).to(accelerator.device)
                missing = task_model.load_state_dict(state, strict=False).missing_keys
                if missing:
                    raise ValueError(f"{type(model).__name__} lacks weights {missing[:5]} needed to evaluate {name}.")
            result = spec.evaluate(accelerator, task_model, processor, task_data, batch_size)
            if result is not None:
                metrics.update({f"{name}/{key}": float(value) for key, value in result[0].items()})
        if metrics:
            logger.info("step %d evaluation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    return evaluate


# The all-heads model names each task's labels (the collators all call them `labels`).
PRETRAINING_LABEL_NAMES = {"vqa": "vqa_labels", "captioning": "caption_labels"}


def task_loss(model: Any, task: str, batch: dict[str, Any]) -> tuple[Any, dict]:
    """Forward one task's batch; for `Glipv2ForPreTraining` its labels go to the task's own argument."""
    if type(_unwrap(model)).__name__ == "Glipv2ForPreTraining" and task in PRETRAINING_LABEL_NAMES:
        batch = dict(batch)
        batch[PRETRAINING_LABEL_NAMES[task]] = batch.pop("labels")
    outputs = model(**batch)
    return outputs.loss, dict(getattr(outputs, "loss_dict", None) or {})


def _unwrap(model: Any) -> Any:
    """The model under DDP (`.module`) and PEFT (`.get_base_model()`) wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def finish_training(run: Run, history: list[dict[str, float]]) -> str:
    """Saves `<output_dir>/final` (weights, config, processor) and `train_summary.md`; returns the summary."""
    accelerator = run.trainer.accelerator
    accelerator.wait_for_everyone()
    summary = summary_table(history)
    skipped = run.trainer.nonfinite_total
    summary += f"\n\nSteps skipped for a NaN/inf loss or gradient: {skipped}"
    for task, report in run.skipped.items():
        if report.total:
            reasons = ", ".join(f"{field_name}: {count}" for field_name, count in sorted(report.counts.items()))
            summary += f"\nInvalid {task} records skipped (data.skip_invalid): {report.total} ({reasons})"
    if accelerator.is_main_process:
        final = os.path.join(run.config.output_dir, "final")
        temporary = final + ".tmp"  # written whole, then renamed: a killed save never leaves a half-written final/
        shutil.rmtree(temporary, ignore_errors=True)
        model = accelerator.unwrap_model(run.trainer.model)
        if run.trainer.ema is not None:
            model.load_state_dict(run.trainer.ema.module.state_dict())
        model.save_pretrained(temporary)
        run.processor.save_pretrained(temporary)
        with open(os.path.join(temporary, "training_recipe.json"), "w") as handle:
            json.dump(run.recipe, handle, indent=2)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        with open(os.path.join(run.config.output_dir, "train_summary.md"), "w") as handle:
            handle.write(summary + "\n")
    accelerator.wait_for_everyone()
    return summary


__all__ = [
    "Run",
    "build_evaluator",
    "build_training",
    "ensure_data",
    "finish_training",
    "load_task_data",
    "model_class_for",
    "task_loss",
]
