"""The task registry: one declarative row per task naming its loader, collator, metric, model class and
evaluation functions, so scripts and training look a task up by name instead of branching on it.

Model classes are named, not imported: ``Glipv2ForQuestionAnswering`` and ``Glipv2ForConditionalGeneration`` are
resolved from ``glipv2`` only when a task is actually run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks import evaluation
from tasks.captioning import load_coco_captions
from tasks.collators import CaptionCollator, DetectionCollator, GroundingCollator, VqaCollator
from tasks.common import read_json
from tasks.detection import load_coco_detection
from tasks.evaluation import PredictFn, PredictOptions, ScoreFn, TaskData
from tasks.grounding import load_mdetr_grounding
from tasks.synthetic import split_paths
from tasks.vqa import load_vqa

METRICS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics")
# Modules of glipv2 that may hold a task's model class beyond the ones `import glipv2` exports.
_MODEL_MODULES = ("glipv2", "glipv2.modeling_glipv2_understanding")


@dataclass(frozen=True)
class DataFiles:
    """Where a task's data lives.

    Attributes:
        image_dir: folder of the images.
        annotation_file: COCO instances (detection), MDETR JSON (grounding), VQAv2 annotations (vqa) or COCO
            captions (captioning).
        questions_file: VQAv2 questions (vqa only).
        image_name_format: VQA image file name pattern (``image_id``, ``data_subtype``); None: the loader's
            default (COCO's ``COCO_val2014_000000397133.jpg``).
    """

    image_dir: str
    annotation_file: str
    questions_file: str | None = None
    image_name_format: str | None = None


def _select(dataset: Any, max_samples: int | None) -> Any:
    """The first ``max_samples`` records (all of them for None)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.select(range(max_samples))


def load_detection_data(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """COCO instances -> records, categories (original ids) and the ground truth of the selected images.

    ``options`` go to the loader: ``skip_invalid``, ``verify_images``, ``report`` (a :class:`SkipReport`); the same
    holds for every ``load_*_data`` below."""
    dataset, categories = load_coco_detection(files.annotation_file, files.image_dir, **options)
    dataset = _select(dataset, max_samples)
    ground_truth = evaluation.restrict_coco_ground_truth(read_json(files.annotation_file), dataset["image_id"])
    return TaskData(dataset=dataset, categories=categories, ground_truth=ground_truth)


def load_grounding_data(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """MDETR grounding JSON -> one record per caption."""
    dataset = load_mdetr_grounding(files.annotation_file, files.image_dir, **options)
    return TaskData(dataset=_select(dataset, max_samples))


def load_vqa_data(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """VQAv2 questions + annotations -> one record per question."""
    if files.questions_file is None:
        raise ValueError("VQA needs a questions file")
    if files.image_name_format is not None:
        options["image_name_format"] = files.image_name_format
    dataset = load_vqa(files.questions_file, files.annotation_file, files.image_dir, **options)
    return TaskData(dataset=_select(dataset, max_samples))


def load_captioning_data(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """COCO captions JSON -> one record per image with all its reference captions."""
    dataset = load_coco_captions(files.annotation_file, files.image_dir, **options)
    return TaskData(dataset=_select(dataset, max_samples))


def resolve_model_class(name: str) -> type:
    """The ``glipv2`` model class called ``name`` (imported now, so tasks whose classes are not written yet still
    appear in the registry)."""
    for module_name in _MODEL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"model class {name!r} is not available in {' or '.join(_MODEL_MODULES)}")


@dataclass(frozen=True)
class TaskSpec:
    """One row of the registry.

    Attributes:
        name: the task name (``--task``).
        model_class_name: the ``glipv2`` class that evaluates it (resolved lazily, see :meth:`model_class`).
        metric_name: folder under ``tasks/metrics``.
        load: ``(DataFiles, max_samples) -> TaskData``.
        collator: the training collator class.
        predict: a batch of records -> one prediction per record (see :mod:`tasks.evaluation`).
        score: ``(metric, predictions, data) -> metrics``.
        default_files: ``(data_dir, split) -> DataFiles`` for the ``tasks.synthetic`` layout.
    """

    name: str
    model_class_name: str
    metric_name: str
    load: Callable[[DataFiles, int | None], TaskData]
    collator: type
    predict: PredictFn
    score: ScoreFn
    default_files: Callable[[str, str], DataFiles]

    @property
    def metric_path(self) -> str:
        """``tasks/metrics/<metric_name>``, loadable offline with ``evaluate.load``."""
        return os.path.join(METRICS_DIR, self.metric_name)

    def model_class(self) -> type:
        """The model class (import happens here, not at registry construction)."""
        return resolve_model_class(self.model_class_name)

    def load_metric(self) -> Any:
        """The ``evaluate`` metric module of the task."""
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
    ) -> tuple[dict[str, float], list[dict[str, Any]]] | None:
        """:func:`tasks.evaluation.run_evaluation` with this task's functions and metric."""
        return evaluation.run_evaluation(
            accelerator, model, processor, data, self.predict, self.score, self.load_metric(), batch_size, options
        )


def _synthetic_files(kind: str) -> Callable[[str, str], DataFiles]:
    """``default_files`` for the ``tasks.synthetic`` layout (``annotations/<kind>_<split>.json``,
    ``images/<split>/``)."""

    def files(data_dir: str, split: str) -> DataFiles:
        paths = split_paths(data_dir, split)
        if kind == "vqa":
            return DataFiles(paths.image_dir, paths.vqa_annotations, paths.vqa_questions, paths.vqa_image_name_format)
        return DataFiles(paths.image_dir, getattr(paths, kind))

    return files


TASKS: dict[str, TaskSpec] = {
    "detection": TaskSpec(
        "detection",
        "Glipv2ForGrounding",
        "coco_detection",
        load_detection_data,
        DetectionCollator,
        evaluation.predict_detection,
        evaluation.score_detection,
        _synthetic_files("instances"),
    ),
    "grounding": TaskSpec(
        "grounding",
        "Glipv2ForGrounding",
        "grounding_recall",
        load_grounding_data,
        GroundingCollator,
        evaluation.predict_grounding,
        evaluation.score_grounding,
        _synthetic_files("grounding"),
    ),
    "vqa": TaskSpec(
        "vqa",
        "Glipv2ForQuestionAnswering",
        "vqa_accuracy",
        load_vqa_data,
        VqaCollator,
        evaluation.predict_vqa,
        evaluation.score_vqa,
        _synthetic_files("vqa"),
    ),
    "captioning": TaskSpec(
        "captioning",
        "Glipv2ForConditionalGeneration",
        "caption_metrics",
        load_captioning_data,
        CaptionCollator,
        evaluation.predict_captioning,
        evaluation.score_captioning,
        _synthetic_files("captions"),
    ),
}


def get_task(name: str) -> TaskSpec:
    """The registry row of ``name``; a clear error lists the known tasks."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["METRICS_DIR", "TASKS", "DataFiles", "TaskSpec", "get_task", "resolve_model_class"]
