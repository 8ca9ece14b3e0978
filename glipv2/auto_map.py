"""Which Auto class, heads and pipelines each task class of the family has: the one table that `import glipv2`
registers from, that every `save_pretrained` writes into a folder, and that publishing reads.

A saved folder is a complete Hub repository: [`write_auto_map`] gives its `config.json` an `auto_map` entry for
every task class whose heads the checkpoint holds and `custom_pipelines` for every pipeline of this library those
classes serve, and copies the code they need beside the weights, so that each class loads with
`trust_remote_code=True` where `glipv2` is not installed. Entries are strings: this module imports no modeling code
when it loads (the modeling base class calls it while saving); [`pipeline_class`] imports the pipelines when called.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .heads import HEAD_NAMES, OPTIONAL_HEADS

CODE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Glipv2TaskClass:
    """A public model class of the family.

    Attributes:
        name: the class name.
        module: the module (file stem) defining it.
        auto_class: the transformers Auto class it is registered with (its `auto_map` key).
        heads: the heads it holds (a checkpoint serves the class when it holds them all).
        pipelines: pipeline tasks it serves, stock or this library's ([`PIPELINES`]).
        requires: config entries it needs set (a closed vocabulary), else a checkpoint does not serve it.
    """

    name: str
    module: str
    auto_class: str
    heads: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        """`module.ClassName`, the form of an `auto_map` value."""
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Glipv2PipelineClass:
    """A pipeline task this library provides (transformers has none, or none for these models)."""

    task: str
    module: str
    name: str
    auto_class: str
    type: str = "multimodal"

    @property
    def reference(self) -> str:
        return f"{self.module}.{self.name}"


TASK_CLASSES: tuple[Glipv2TaskClass, ...] = (
    Glipv2TaskClass("Glipv2Model", "modeling_glipv2", "AutoModel"),
    Glipv2TaskClass(
        "Glipv2ForGrounding",
        "modeling_glipv2_detection",
        "AutoModelForZeroShotObjectDetection",
        ("grounding_head",),
        ("zero-shot-object-detection", "open-vocabulary-detection", "phrase-grounding"),
    ),
    Glipv2TaskClass(
        "Glipv2ForObjectDetection",
        "modeling_glipv2_detection",
        "AutoModelForObjectDetection",
        ("grounding_head",),
        ("object-detection",),
        requires=("detection_prompts",),
    ),
    Glipv2TaskClass(
        "Glipv2ForInstanceSegmentation",
        "modeling_glipv2_segmentation",
        "AutoModelForInstanceSegmentation",
        ("grounding_head", "mask_head"),
        ("instance-segmentation", "referring-segmentation"),
    ),
    Glipv2TaskClass(
        "Glipv2ForSegmentation",
        "modeling_glipv2_segmentation",
        "AutoModelForImageSegmentation",
        ("grounding_head", "mask_head"),
        ("image-segmentation",),
        requires=("detection_prompts",),
    ),
    Glipv2TaskClass(
        "Glipv2ForQuestionAnswering",
        "modeling_glipv2_vqa",
        "AutoModelForVisualQuestionAnswering",
        ("vqa_head",),
        ("visual-question-answering",),
    ),
    Glipv2TaskClass(
        "Glipv2ForConditionalGeneration",
        "modeling_glipv2_captioning",
        "AutoModelForImageTextToText",
        ("caption_head",),
        ("image-text-to-text", "image-captioning"),
    ),
    Glipv2TaskClass(
        "Glipv2ForZeroShotImageClassification",
        "modeling_glipv2_zero_shot",
        "AutoModelForZeroShotImageClassification",
        ("contrastive_head",),
        ("zero-shot-image-classification",),
    ),
    Glipv2TaskClass(
        "Glipv2ForPreTraining",
        "modeling_glipv2_pretraining",
        "AutoModelForPreTraining",
        tuple(head for head in HEAD_NAMES if head not in OPTIONAL_HEADS),
    ),
)

PIPELINES: tuple[Glipv2PipelineClass, ...] = (
    Glipv2PipelineClass(
        "open-vocabulary-detection",
        "pipelines_glipv2",
        "Glipv2OpenVocabularyDetectionPipeline",
        "AutoModelForZeroShotObjectDetection",
    ),
    # transformers' own task, whose stock code fails on a closed-vocabulary detector saved with its tokenizer
    Glipv2PipelineClass(
        "object-detection", "pipelines_glipv2", "Glipv2ObjectDetectionPipeline", "AutoModelForObjectDetection"
    ),
    Glipv2PipelineClass(
        "phrase-grounding", "pipelines_glipv2", "Glipv2PhraseGroundingPipeline", "AutoModelForZeroShotObjectDetection"
    ),
    # transformers' own task: the stock pipeline, without its "not supported" error for this family
    Glipv2PipelineClass(
        "image-segmentation",
        "pipelines_glipv2_segmentation",
        "Glipv2ImageSegmentationPipeline",
        "AutoModelForImageSegmentation",
    ),
    Glipv2PipelineClass(
        "instance-segmentation",
        "pipelines_glipv2_segmentation",
        "Glipv2InstanceSegmentationPipeline",
        "AutoModelForInstanceSegmentation",
    ),
    Glipv2PipelineClass(
        "referring-segmentation",
        "pipelines_glipv2_segmentation",
        "Glipv2ReferringSegmentationPipeline",
        "AutoModelForInstanceSegmentation",
    ),
    Glipv2PipelineClass(
        "visual-question-answering",
        "pipelines_glipv2_vqa",
        "Glipv2VisualQuestionAnsweringPipeline",
        "AutoModelForVisualQuestionAnswering",
    ),
    Glipv2PipelineClass(
        "image-captioning",
        "pipelines_glipv2_captioning",
        "Glipv2ImageCaptioningPipeline",
        "AutoModelForImageTextToText",
    ),
)

TASK_CLASS_BY_NAME = {entry.name: entry for entry in TASK_CLASSES}


def task_class(name: str) -> Glipv2TaskClass:
    """The table row of the class called `name`."""
    if name not in TASK_CLASS_BY_NAME:
        raise KeyError(f"{name!r} is not a glipv2 task class; classes: {sorted(TASK_CLASS_BY_NAME)}.")
    return TASK_CLASS_BY_NAME[name]


def pipeline_class(task: str) -> type:
    """The pipeline class of this library serving `task` ([`PIPELINES`]). Its modules are imported by name, not
    through `importlib`: transformers assembles a remote-code copy of this package from the relative imports of the
    class it loads, and every model class imports this module, so each such copy carries every pipeline's code and a
    plain `save_pretrained` of a model loaded with `trust_remote_code=True` writes the pipelines again."""
    from .pipelines_glipv2 import (
        Glipv2ObjectDetectionPipeline,
        Glipv2OpenVocabularyDetectionPipeline,
        Glipv2PhraseGroundingPipeline,
    )
    from .pipelines_glipv2_captioning import Glipv2ImageCaptioningPipeline
    from .pipelines_glipv2_segmentation import (
        Glipv2ImageSegmentationPipeline,
        Glipv2InstanceSegmentationPipeline,
        Glipv2ReferringSegmentationPipeline,
    )
    from .pipelines_glipv2_vqa import Glipv2VisualQuestionAnsweringPipeline

    classes = (
        Glipv2ObjectDetectionPipeline,
        Glipv2OpenVocabularyDetectionPipeline,
        Glipv2PhraseGroundingPipeline,
        Glipv2ImageCaptioningPipeline,
        Glipv2ImageSegmentationPipeline,
        Glipv2InstanceSegmentationPipeline,
        Glipv2ReferringSegmentationPipeline,
        Glipv2VisualQuestionAnsweringPipeline,
    )
    by_name = {cls.__name__: cls for cls in classes}
    for pipe in PIPELINES:
        if pipe.task == task:
            return by_name[pipe.name]
    raise KeyError(f"{task!r} is not a pipeline of glipv2; tasks: {[pipe.task for pipe in PIPELINES]}.")


def served_classes(heads: Iterable[str], config: dict[str, Any]) -> list[Glipv2TaskClass]:
    """The task classes a checkpoint holding `heads` (and with `config`) serves."""
    heads = set(heads)
    return [
        entry for entry in TASK_CLASSES if set(entry.heads) <= heads and all(config.get(key) for key in entry.requires)
    ]


def _copy_module(module: str, folder: Path) -> bool:
    """Copies `module.py` and its relative imports from this package's folder into `folder`; False if missing
    (a remote-code copy of the package holds only the modules its class imports: its own family's modeling code and,
    through [`pipeline_class`], every pipeline's)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    source = CODE_DIR / f"{module}.py"
    if not source.is_file():
        return False
    for path in [source, *map(Path, get_relative_import_files(str(source)))]:
        target = folder / path.name
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
    return True


def auto_map_entries(heads: Iterable[str], config: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """`{"auto_map": ..., "custom_pipelines": ...}` for a checkpoint holding `heads`; with `folder`, the code of
    every entry is copied there (entries whose code is not available are left out)."""
    classes = served_classes(heads, config)
    available = (lambda module: _copy_module(module, folder)) if folder is not None else (lambda module: True)
    auto_map: dict[str, Any] = {"AutoConfig": "configuration_glipv2.Glipv2Config"}
    for entry in classes:
        if available(entry.module):
            auto_map[entry.auto_class] = entry.reference
    served = {task for entry in classes if entry.auto_class in auto_map for task in entry.pipelines}
    pipelines = {
        pipe.task: {"impl": pipe.reference, "pt": [pipe.auto_class], "type": pipe.type}
        for pipe in PIPELINES
        if pipe.task in served and pipe.auto_class in auto_map and available(pipe.module)
    }
    return {"auto_map": auto_map, "custom_pipelines": pipelines}


def write_auto_map(folder: str | os.PathLike, heads: Iterable[str]) -> dict[str, Any]:
    """Rewrites `folder/config.json`'s `auto_map` (every served task class; other Auto entries are kept) and
    `custom_pipelines`, and copies the code they name into `folder`. Returns the two entries written."""
    folder = Path(folder)
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    entries = auto_map_entries(heads, config, folder)
    model_autos = {entry.auto_class for entry in TASK_CLASSES}
    kept = {key: value for key, value in (config.get("auto_map") or {}).items() if key not in model_autos}
    config["auto_map"] = {**kept, **entries["auto_map"]}
    if entries["custom_pipelines"]:
        config["custom_pipelines"] = entries["custom_pipelines"]
    else:
        config.pop("custom_pipelines", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _copy_module("configuration_glipv2", folder)
    return {"auto_map": config["auto_map"], "custom_pipelines": entries["custom_pipelines"]}


__all__ = [
    "PIPELINES",
    "TASK_CLASSES",
    "Glipv2PipelineClass",
    "Glipv2TaskClass",
    "auto_map_entries",
    "pipeline_class",
    "served_classes",
    "task_class",
    "write_auto_map",
]
