"""What a task is: one [`TaskSpec`] per task owns everything about it, and training, PEFT, evaluation, publishing,
pseudo-labelling and the demo read it and nothing else.

A task package (`tasks/<name>/`) holds its loaders, its collator and a `task.py` that builds its spec; the registry
(`tasks/registry.py`) lists the specs. See "Adding a task" in `tasks/README.md`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

METRICS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics")


@dataclass(frozen=True)
class DataFiles:
    """Where a task's data lives.

    Attributes:
        image_dir: folder of the images.
        annotation_file: the task's annotation file (COCO instances, MDETR JSON, VQAv2 annotations, COCO captions).
        questions_file: VQAv2 questions (VQA only).
        image_name_format: VQA image file name pattern (`image_id`, `data_subtype`); None: the loader's default.
    """

    image_dir: str
    annotation_file: str | None
    questions_file: str | None = None
    image_name_format: str | None = None

    @classmethod
    def field_names(cls) -> list[str]:
        return [entry.name for entry in dataclasses.fields(cls)]


@dataclass
class TaskData:
    """A task's records for one split plus what its collator and metric need besides them.

    Attributes:
        dataset: records from the task's loader (`datasets.Dataset`), already cut to `max_samples`.
        categories: detection: `[{"id", "name"}]` in file order (the original category ids are kept).
        ground_truth: detection: the COCO instances JSON restricted to the images of `dataset`.
        answers: VQA: the answer vocabulary of these records (most frequent first).
    """

    dataset: Any
    categories: list[dict[str, Any]] | None = None
    ground_truth: dict[str, Any] | None = None
    answers: list[str] | None = None


# Official GLIP test-time settings: MODEL.ATSS.INFERENCE_TH 0.05, TEST.DETECTIONS_PER_IMG 100.
DETECTION_THRESHOLD = 0.05
MAX_DETECTIONS = 100
# Captions are generated with at most this many new tokens (COCO captions are ~10 words).
MAX_CAPTION_TOKENS = 32


@dataclass
class PredictOptions:
    """Inference settings of an evaluation (the defaults are the official test-time ones)."""

    threshold: float = DETECTION_THRESHOLD
    max_detections: int = MAX_DETECTIONS
    max_caption_tokens: int = MAX_CAPTION_TOKENS
    # Encoded detection prompts; every evaluation run gets a fresh one (during training a cache keyed by the model
    # would serve text features from before the last optimiser steps).
    text_cache: Any = None


Prediction = dict[str, Any]
LoadFn = Callable[..., TaskData]  # (files: DataFiles, max_samples: int | None, **loader_options) -> TaskData
PredictFn = Callable[[Any, Any, list[dict[str, Any]], TaskData, PredictOptions], list[Prediction]]
ScoreFn = Callable[[Any, list[Prediction], TaskData], dict[str, float]]
CollatorFn = Callable[..., Callable[[list[Any]], dict[str, Any]]]  # (processor, data, **options) -> collator


@dataclass(frozen=True)
class ShowcaseEntry:
    """One picture of the demo report: an image, boxes to draw (`{"label", "score", "box": {xmin, ...}}`), text."""

    title: str
    image: Any
    detections: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""


@dataclass(frozen=True)
class HubCard:
    """How a model card presents the task.

    Attributes:
        title: the task's name in the card.
        result_type / result_name: the `model-index` task type and name of its metrics.
        usage: per glipv2 model class, a Python snippet (`{repo_id}` is replaced by the repository id).
        tags: extra card tags.
    """

    title: str
    result_type: str
    result_name: str
    usage: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


def no_model_config(data: TaskData) -> dict[str, Any]:
    """For tasks whose training data sets nothing in the model config."""
    return {}


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one task.

    Attributes:
        name: the task name (recipes' `tasks[].name`, `--task`).
        model_class_name: the `glipv2` class that evaluates the task and runs its pipelines.
        head: the head it trains (`heads.HEAD_NAMES`): PEFT's `modules_to_save`, the linear probe.
        label_argument: the keyword of the all-heads model's `forward` that takes the collator's `labels` (a task
            class takes them as `labels`).
        metric: the `evaluate` module, a folder under `tasks/metrics` (or a path).
        load: `(DataFiles, max_samples, **loader_options) -> TaskData`; loader options are `skip_invalid`,
            `verify_images` and `report` (a `SkipReport`).
        default_files: `(data_dir, split) -> DataFiles` in the `tasks.synthetic` layout.
        make_collator: `(processor, data, train=..., seed=..., min_sizes=..., max_size=..., pad_size=...,
            **options) -> collator`, a callable from a list of records to model inputs with `labels`.
        predict: a batch of records -> one JSON-serialisable prediction per record.
        score: `(metric, predictions, data) -> metrics`.
        card: how the model card presents the task.
        pipelines: the pipeline tasks that serve it.
        showcase: `(model_dir, data, photos) -> [ShowcaseEntry]`, the demo's pictures of the task's pipelines.
        options: the task's own options a recipe's task entry may set (`options:`), passed to `make_collator`.
        model_config: `(training data) -> config entries` the training data sets (VQA: the answer vocabulary).
        adapt_model: `(model, checkpoint_dir) -> message` after a model is loaded from a checkpoint whose config
            differs (VQA: keep the weights of shared answers); returns a one-line report or None.
        benchmarks: the public benchmarks the task is evaluated on under their official protocols
            ([`tasks.protocol.Benchmark`]).
    """

    name: str
    model_class_name: str
    head: str
    label_argument: str
    metric: str
    load: LoadFn
    default_files: Callable[[str, str], DataFiles]
    make_collator: CollatorFn
    predict: PredictFn
    score: ScoreFn
    card: HubCard
    pipelines: tuple[str, ...] = ()
    showcase: Callable[[str, TaskData, list[tuple[str, Any]]], list[ShowcaseEntry]] | None = None
    options: tuple[str, ...] = ()
    model_config: Callable[[TaskData], dict[str, Any]] = no_model_config
    adapt_model: Callable[[Any, str], str | None] | None = None
    benchmarks: tuple[Any, ...] = ()

    @property
    def metric_path(self) -> str:
        """The metric folder, loadable offline with `evaluate.load`."""
        return self.metric if os.path.isabs(self.metric) else os.path.join(METRICS_DIR, self.metric)

    def model_class(self) -> type:
        """The `glipv2` model class of the task."""
        import glipv2

        return getattr(glipv2, self.model_class_name)

    def load_metric(self) -> Any:
        """The task's `evaluate` metric module."""
        import evaluate

        return evaluate.load(self.metric_path)

    def evaluate(
        self,
        accelerator: Any,
        model: Any,
        processor: Any,
        data: TaskData,
        batch_size: int = 8,
        options: PredictOptions | None = None,
    ) -> tuple[dict[str, float], list[Prediction]] | None:
        """[`tasks.evaluation.run_evaluation`] of this task: `(metrics, predictions)` on the main process."""
        from tasks.evaluation import run_evaluation

        return run_evaluation(self, accelerator, model, processor, data, batch_size, options)

    def check_options(self, options: dict[str, Any], where: str) -> None:
        """Raises naming the unknown keys and the allowed ones."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"{where}: unknown option(s) {unknown} for task {self.name!r}; allowed: {list(self.options)}."
            )


__all__ = [
    "METRICS_DIR",
    "DataFiles",
    "HubCard",
    "PredictOptions",
    "Prediction",
    "ShowcaseEntry",
    "TaskData",
    "TaskSpec",
    "no_model_config",
]
