"""Assembles a training run from a [`Recipe`]: each task's data, collator and label routing from its spec, the model,
the trainer, periodic evaluation and the final save. `scripts/train.py`, `scripts/finetune_peft.py` and the demo
run training through here; nothing in this module names a task."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from accelerate.utils import set_seed

from tasks.common import SkipReport
from tasks.peft_utils import count_parameters, prepare_model, save_trained
from tasks.peft_utils import inference_model as unwrap
from tasks.recipe import DataRecipe, Recipe, TaskRecipe, build_model, build_processor, model_class_for
from tasks.registry import get_task
from tasks.spec import DataFiles, TaskData
from tasks.trainer import MultitaskTrainer, TaskSource, summary_table

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything a training run is made of."""

    trainer: MultitaskTrainer
    model: Any
    processor: Any
    recipe: Recipe
    data: dict[str, TaskData]
    skipped: dict[str, SkipReport] = field(default_factory=dict)  # invalid training records per task

    @property
    def output_dir(self) -> str:
        return self.trainer.config.output_dir


def ensure_data(data: DataRecipe) -> str | None:
    """The data folder; generated with `tasks.synthetic` when the recipe asks for it and it is not there yet."""
    if (
        data.dir
        and data.generate
        and not os.path.isfile(os.path.join(data.dir, "annotations", "instances_train.json"))
    ):
        from tasks.synthetic import generate_synthetic_multitask

        generate_synthetic_multitask(data.dir, **data.generate)
    return data.dir


def task_files(recipe: Recipe, task: TaskRecipe, split: str) -> DataFiles:
    """A task's files for `split`: the data folder's layout, replaced by the entry's `files` (training split) or
    `eval_files` (other splits)."""
    spec = get_task(task.name)
    is_train = split == recipe.data.train_split
    explicit = task.files if is_train else task.eval_files
    key = "files" if is_train else "eval_files"
    base = spec.default_files(recipe.data.dir, split) if recipe.data.dir else None
    if explicit:
        allowed = DataFiles.field_names()
        unknown = sorted(set(explicit) - set(allowed))
        if unknown:
            raise ValueError(f"tasks[{task.name}].{key}: unknown keys {unknown}; expected some of {allowed}.")
        if base is not None:
            return dataclasses.replace(base, **explicit)
        missing = [name for name in ("image_dir", "annotation_file") if name not in explicit]
        if missing:
            raise ValueError(f"tasks[{task.name}].{key}: missing {missing} (and no data.dir to take them from).")
        return DataFiles(**explicit)
    if base is None:
        raise ValueError(f"tasks[{task.name}]: no data for split {split!r}: set data.dir or tasks[{task.name}].{key}.")
    return base


def load_task_data(recipe: Recipe, split: str, reports: dict[str, SkipReport] | None = None) -> dict[str, TaskData]:
    """Each task's `TaskData` for `split` through its spec's loader (`data.max_samples` records at most).

    `data.skip_invalid` skips malformed records instead of raising, counted per task in `reports` (and in the run's
    summary); `data.verify_images` decodes every image up front.
    """
    ensure_data(recipe.data)
    if recipe.data.shards and split == recipe.data.train_split:
        return load_task_shards(recipe)
    options = {"skip_invalid": recipe.data.skip_invalid, "verify_images": recipe.data.verify_images}
    out = {}
    for task in recipe.tasks:
        report = SkipReport()
        out[task.name] = get_task(task.name).load(
            task_files(recipe, task, split), recipe.data.max_samples, report=report, **options
        )
        if reports is not None:
            reports[task.name] = report
    return out


def load_task_shards(recipe: Recipe) -> dict[str, TaskData]:
    """Each task's training shards, `<data.shards>/<task>` (records were checked when the shards were written).
    `data.dir` and the tasks' `files` are then only what `scripts/write_shards.py --config` writes the shards from."""
    from tasks.shards import load_shards

    if recipe.data.max_samples:
        raise ValueError(
            f"data.max_samples ({recipe.data.max_samples}) does not apply to data.shards, which streams whole shard "
            "folders: write shards of the records to train on instead."
        )
    return {
        task.name: load_shards(os.path.join(recipe.data.shards, task.name), task.name, recipe.data.shuffle_buffer)
        for task in recipe.tasks
    }


def load_eval_data(recipe: Recipe) -> dict[str, TaskData]:
    """Each task's `data.eval_split` records (its `eval_files` where given), `data.eval_max_samples` at most."""
    eval_data = dataclasses.replace(recipe.data, max_samples=recipe.data.eval_max_samples)
    return load_task_data(dataclasses.replace(recipe, data=eval_data), recipe.data.eval_split)


def augmentation(data: DataRecipe) -> dict[str, Any]:
    """The training collators' resize options: GLIP's multi-scale training resize (official: shortest side 480-800,
    longest 1333; small synthetic images use sizes around their own) and one padded size for every batch, so that
    batch composition (and the number of processes) cannot change results."""
    options: dict[str, Any] = {}
    if data.train_min_sizes:
        options.update(min_sizes=tuple(data.train_min_sizes), max_size=data.train_max_size)
    if data.train_pad_size:
        options["pad_size"] = int(data.train_pad_size)
    return options


def build_sources(recipe: Recipe, train_data: dict[str, TaskData], processor: Any, seed: int) -> dict[str, TaskSource]:
    """Each task's training collator (augmentation on, its own options) around its records."""
    sources = {}
    for task in recipe.tasks:
        spec = get_task(task.name)
        spec.check_options(task.options, f"tasks[{task.name}].options")
        data = train_data[task.name]
        collator = spec.make_collator(
            processor, data, train=True, seed=seed, **augmentation(recipe.data), **task.options
        )
        sources[task.name] = TaskSource(dataset=data.dataset, collator=collator)
    return sources


def task_loss(model: Any, task: str, batch: dict[str, Any]) -> tuple[Any, dict]:
    """Forward one task's batch and return `(loss, named parts)`. A model whose `forward` takes the task's
    `label_argument` (the all-heads class: `vqa_labels`, `caption_labels`, ...) gets the collator's `labels` there;
    a task class takes them as `labels`. PEFT and DDP wrappers pass the arguments through."""
    argument = get_task(task).label_argument
    if argument != "labels" and "labels" in batch and argument in inspect.signature(unwrap(model).forward).parameters:
        batch = dict(batch)
        batch[argument] = batch.pop("labels")
    outputs = model(**batch)
    return outputs.loss, dict(getattr(outputs, "loss_dict", None) or {})


def training_config_overrides(recipe: Recipe, train_data: dict[str, Any]) -> dict[str, Any]:
    """The model config entries the training sets: each task's from its data (e.g. VQA's answers), and the mask head
    when a task's batches carry masks (`options: {with_masks: true}` on detection or grounding)."""
    overrides: dict[str, Any] = {}
    for name, data in train_data.items():
        overrides.update(get_task(name).model_config(data))
    if any(task.options.get("with_masks") for task in recipe.tasks):
        overrides["use_mask_head"] = True
    return overrides


def build_training(recipe: Recipe) -> Run:
    """Data, processor, model (with the config entries the training data sets, e.g. VQA's answers; PEFT when the
    recipe has a `peft` section) and the trainer (with periodic evaluation when `train.eval_every` is set)."""
    skipped: dict[str, SkipReport] = {}
    train_data = load_task_data(recipe, recipe.data.train_split, skipped)
    config_overrides = training_config_overrides(recipe, train_data)
    processor = build_processor(recipe.model)
    set_seed(recipe.train.seed)  # the same initial weights whatever ran before (e.g. data generation)
    model_class = model_class_for(recipe.task_names, masks=bool(config_overrides.get("use_mask_head")))
    model = build_model(recipe, model_class, config_overrides)
    if recipe.train.loss_weights and hasattr(model, "loss_weights"):
        model.loss_weights.update(recipe.train.loss_weights)
    if recipe.peft is not None:
        heads = sorted({get_task(name).head for name in recipe.task_names})
        model = prepare_model(model, recipe.peft, heads)
        trainable, total = count_parameters(model)
        if int(os.environ.get("RANK", "0")) == 0:  # the Accelerator does not exist yet: one line per run
            share = 100 * trainable / total
            print(f"{recipe.peft.method}: trainable parameters {trainable:,} of {total:,} ({share:.3f}%)")
    sources = build_sources(recipe, train_data, processor, recipe.train.seed)
    trainer = MultitaskTrainer(model, sources, recipe.train_config(), task_loss=task_loss)
    if recipe.train.eval_every:
        trainer.evaluate = build_evaluator(recipe, processor, trainer.accelerator)
    return Run(trainer, model, processor, recipe, train_data, skipped)


def task_model(model: Any, task: str, device: Any, state: dict | None = None) -> Any:
    """`model`'s weights in the task's own class (the all-heads model evaluates each task as its class would);
    `model` itself when it already is of that class. `state` reuses a state dict across tasks."""
    model = unwrap(model)
    task_class = get_task(task).model_class()
    if type(model) is task_class:
        return model
    converted = task_class(model.config).to(device)
    missing = converted.load_state_dict(state if state is not None else model.state_dict(), strict=False).missing_keys
    if missing:
        raise ValueError(f"{type(model).__name__} lacks weights {missing[:5]} needed to evaluate {task}.")
    return converted


def evaluate_tasks(
    recipe: Recipe, model: Any, processor: Any, accelerator: Any, data: dict[str, TaskData]
) -> dict[str, dict[str, float]]:
    """Every task's metrics (main process; `{}` elsewhere), each task scored by its own class holding `model`'s
    weights, exactly as `scripts/evaluate_model.py` scores a saved checkpoint."""
    metrics: dict[str, dict[str, float]] = {}
    base = unwrap(model)
    state = base.state_dict()
    for name, task_data in data.items():
        scored = task_model(base, name, accelerator.device, state)
        result = get_task(name).evaluate(accelerator, scored, processor, task_data, recipe.data.eval_batch_size)
        if result is not None:
            metrics[name] = {key: float(value) for key, value in result[0].items()}
    return metrics


def build_evaluator(recipe: Recipe, processor: Any, accelerator: Any) -> Callable[[Any, int], dict[str, float]]:
    """The periodic evaluation of `train.eval_every`: every task on `data.eval_split` (the first
    `data.eval_max_samples` records), the data read once. Metrics come back as `"<task>/<metric>"`."""
    data = load_eval_data(recipe)

    def evaluate(model: Any, step: int) -> dict[str, float]:
        results = evaluate_tasks(recipe, model, processor, accelerator, data)
        metrics = {f"{task}/{key}": value for task, values in results.items() for key, value in values.items()}
        if metrics:
            logger.info("step %d evaluation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    return evaluate


def save_model(run: Run, folder: str, model: Any = None) -> None:
    """The trained model (or, for a PEFT run, what its method saves), the processor and the recipe, written whole
    to a temporary folder and renamed: a killed save never leaves a half-written `folder`. `model`: the trainer's
    `consolidated_model()` (needed under FSDP, where every process takes part in gathering it)."""
    model = model if model is not None else run.trainer.accelerator.unwrap_model(run.trainer.model)
    if run.trainer.ema is not None:
        model.load_state_dict(run.trainer.ema.module.state_dict())
    temporary = folder + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    save_trained(model, temporary, run.recipe.peft.method if run.recipe.peft else "full")
    run.processor.save_pretrained(temporary)
    with open(os.path.join(temporary, "training_recipe.json"), "w", encoding="utf-8") as handle:
        json.dump(run.recipe.to_dict(), handle, indent=2)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(temporary, folder)


def finish_training(run: Run, history: list[dict[str, float]]) -> str:
    """Saves `<output_dir>/final` ([`save_model`]), `train_summary.md` and `train_history.json`; returns the
    summary."""
    accelerator = run.trainer.accelerator
    accelerator.wait_for_everyone()
    summary = summary_table(history)
    summary += f"\n\nSteps skipped for a NaN/inf loss or gradient: {run.trainer.nonfinite_total}"
    for task, report in run.skipped.items():
        if report.total:
            reasons = ", ".join(f"{field_name}: {count}" for field_name, count in sorted(report.counts.items()))
            summary += f"\nInvalid {task} records skipped (data.skip_invalid): {report.total} ({reasons})"
    model = run.trainer.consolidated_model()  # every process: FSDP gathers the shards
    if accelerator.is_main_process:
        save_model(run, os.path.join(run.output_dir, "final"), model)
        with open(os.path.join(run.output_dir, "train_summary.md"), "w", encoding="utf-8") as handle:
            handle.write(summary + "\n")
        with open(os.path.join(run.output_dir, "train_history.json"), "w", encoding="utf-8") as handle:
            json.dump(history, handle)
    accelerator.wait_for_everyone()
    return summary


__all__ = [
    "Run",
    "augmentation",
    "build_evaluator",
    "build_sources",
    "build_training",
    "ensure_data",
    "evaluate_tasks",
    "finish_training",
    "load_eval_data",
    "load_task_data",
    "load_task_shards",
    "save_model",
    "task_files",
    "task_loss",
    "task_model",
    "training_config_overrides",
]
