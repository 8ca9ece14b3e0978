"""Publishing a saved GLIPv2 folder to the Hugging Face Hub: custom code and pipelines, model card, upload.

- [`HUB_TASKS`]: one row per task class (model class, Auto class, heads it needs, pipeline tasks, card tags,
  metrics keys, usage snippet). A new task class plugs in by adding a row; rows whose class is not importable from
  `glipv2`, or whose heads are missing from the checkpoint, are skipped.
- [`prepare_for_hub`]: makes a saved folder self-contained: `config.json` gets an `auto_map` entry for every Auto
  class the checkpoint supports and `custom_pipelines` for our own pipeline tasks, and the code they need is copied
  beside the weights, so that `from_pretrained(..., trust_remote_code=True)` and `pipeline(task, model=repo_id,
  trust_remote_code=True)` work where `glipv2` is not installed.
- [`render_model_card`] / [`write_model_card`]: `README.md` from `model_cards/glipv2_model_card.md.j2` with a
  `model-index` built from metrics JSON files (`scripts/evaluate.py` output or `{task: {metric: value}}`).
- [`stage_folder`] / [`push_folder`]: copy what is uploaded into a staging folder, then `HfApi.upload_folder`.

The token is never an argument here: `huggingface_hub` reads `HF_TOKEN` or the stored login itself.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "model_cards" / "glipv2_model_card.md.j2"

# What a model repository holds; anything else in the folder (checkpoints, optimizer states, logs) stays local.
# transformers' object-detection pipeline feeds a tokenizer, when it finds one, LayoutLM-style inputs (words and
# boxes): it runs a closed-vocabulary detector only from a repository without tokenizer files.
NEEDS_NO_TOKENIZER = ("object-detection",)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt")

UPLOAD_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "chat_template.jinja",
    "adapter_config.json",
    "prompt_tuning_config.json",
    "training_recipe.json",
    "README.md",
    "*.py",
)


@dataclass(frozen=True)
class HubTask:
    """A task class as published: what it needs from the checkpoint, how it loads, what the card says about it.

    Attributes:
        name: short name, used in the card.
        model_class: class name in `glipv2`.
        auto_class: the transformers Auto class it registers with (an `auto_map` key).
        heads: state-dict prefixes the checkpoint must hold (`grounding_head`, ...).
        pipeline_tag: the Hub pipeline tag of the task.
        pipelines: pipeline tasks this class runs (stock or registered by glipv2).
        tags: extra card tags.
        metrics: keys of the metrics JSON whose numbers belong to this task.
        usage: a Python snippet; `{repo_id}` is replaced by the repository id.
        config_keys: config entries that must be set (e.g. a closed vocabulary).
    """

    name: str
    model_class: str
    auto_class: str
    heads: tuple[str, ...]
    pipeline_tag: str | None
    pipelines: tuple[str, ...]
    tags: tuple[str, ...]
    metrics: tuple[str, ...]
    usage: str
    config_keys: tuple[str, ...] = ()


_LOAD = (
    "from PIL import Image\nfrom transformers import {auto}, AutoProcessor, pipeline\n\n"
    'image = Image.open("image.jpg")\n'
)

HUB_TASKS: tuple[HubTask, ...] = (
    HubTask(
        "open-vocabulary detection and phrase grounding",
        "Glipv2ForGrounding",
        "AutoModelForZeroShotObjectDetection",
        ("grounding_head",),
        "zero-shot-object-detection",
        ("zero-shot-object-detection", "open-vocabulary-detection", "phrase-grounding"),
        ("zero-shot-object-detection", "phrase-grounding", "open-vocabulary-detection"),
        ("detection", "grounding"),
        _LOAD.format(auto="AutoModelForZeroShotObjectDetection")
        + 'detector = pipeline("zero-shot-object-detection", model="{repo_id}", trust_remote_code=True)\n'
        'detector(image, candidate_labels=["cat", "remote control"], threshold=0.3)\n\n'
        "# all labels in one pass per prompt chunk (LVIS-size vocabularies are chunked)\n"
        'detector = pipeline("open-vocabulary-detection", model="{repo_id}", trust_remote_code=True)\n'
        'detector(image, candidate_labels=["cat", "remote control"], threshold=0.3)\n\n'
        'grounder = pipeline("phrase-grounding", model="{repo_id}", trust_remote_code=True)\n'
        'grounder(image, caption="a cat lying next to a remote control", phrases=["a cat", "a remote control"])\n\n'
        'model = AutoModelForZeroShotObjectDetection.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'inputs = processor(images=image, text=[["cat", "remote control"]], return_tensors="pt")\n'
        "results = processor.post_process_grounded_object_detection(\n"
        "    model(**inputs), threshold=0.3, target_sizes=[image.size[::-1]]\n)\n",
    ),
    HubTask(
        "closed-vocabulary object detection",
        "Glipv2ForObjectDetection",
        "AutoModelForObjectDetection",
        ("grounding_head",),
        "object-detection",
        ("object-detection",),
        ("object-detection",),
        ("detection",),
        "from PIL import Image\nfrom transformers import AutoImageProcessor, AutoModelForObjectDetection\n\n"
        'image = Image.open("image.jpg")\n'
        "# the label set is stored in the config (`id2label`): no prompt is needed\n"
        'model = AutoModelForObjectDetection.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'image_processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'outputs = model(**image_processor(image, return_tensors="pt"))\n'
        "results = image_processor.post_process_object_detection(outputs, 0.3, [image.size[::-1]])\n"
        "# in a repository without a tokenizer, the stock pipeline works too:\n"
        '# pipeline("object-detection", model="{repo_id}", trust_remote_code=True)(image, threshold=0.3)\n',
        config_keys=("detection_prompts",),
    ),
    HubTask(
        "visual question answering",
        "Glipv2ForQuestionAnswering",
        "AutoModelForVisualQuestionAnswering",
        ("vqa_head",),
        "visual-question-answering",
        ("visual-question-answering",),
        ("visual-question-answering",),
        ("vqa",),
        _LOAD.format(auto="AutoModelForVisualQuestionAnswering")
        + 'vqa = pipeline("visual-question-answering", model="{repo_id}", trust_remote_code=True)\n'
        'vqa(image, "What colour is the cat?", top_k=3)\n',
    ),
    HubTask(
        "image captioning",
        "Glipv2ForConditionalGeneration",
        "AutoModelForImageTextToText",
        ("caption_head",),
        "image-to-text",
        (),
        ("image-captioning",),
        ("captioning",),
        _LOAD.format(auto="AutoModelForImageTextToText")
        + 'model = AutoModelForImageTextToText.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'inputs = processor(images=image, return_tensors="pt")\n'
        "tokens = model.generate(**inputs, max_new_tokens=20)\n"
        "processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)\n",
    ),
    HubTask(
        "zero-shot image classification",
        "Glipv2ForZeroShotImageClassification",
        "AutoModelForZeroShotImageClassification",
        ("contrastive_head",),
        "zero-shot-image-classification",
        (),
        ("zero-shot-image-classification",),
        ("classification",),
        _LOAD.format(auto="AutoModelForZeroShotImageClassification")
        + 'model = AutoModelForZeroShotImageClassification.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'inputs = processor(images=image, text=["a photo of a cat", "a photo of a dog"], return_tensors="pt")\n'
        "model(**inputs).logits_per_image.softmax(-1)\n",
    ),
    HubTask(
        "pre-training (all heads)",
        "Glipv2ForPreTraining",
        "AutoModelForPreTraining",
        ("grounding_head", "vqa_head", "caption_head", "mlm_head", "contrastive_head"),
        None,
        (),
        (),
        (),
        "from transformers import AutoModelForPreTraining\n\n"
        'model = AutoModelForPreTraining.from_pretrained("{repo_id}", trust_remote_code=True)\n',
    ),
    HubTask(
        "fused image and text features",
        "Glipv2Model",
        "AutoModel",
        (),
        None,
        (),
        ("feature-extraction",),
        (),
        "from PIL import Image\nfrom transformers import AutoModel, AutoProcessor\n\n"
        'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n'
        'inputs = processor(images=Image.open("image.jpg"), text=[["cat", "remote control"]], return_tensors="pt")\n'
        "outputs = model(**inputs)  # vision_features (P3..P7) and text_features after deep fusion\n",
    ),
)

# metrics JSON key -> (model-index task type, task name)
METRIC_TASKS: dict[str, tuple[str, str]] = {
    "detection": ("object-detection", "Object Detection"),
    "grounding": ("zero-shot-object-detection", "Phrase Grounding"),
    "vqa": ("visual-question-answering", "Visual Question Answering"),
    "captioning": ("image-to-text", "Image Captioning"),
    "classification": ("zero-shot-image-classification", "Zero-Shot Image Classification"),
}


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of `path`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` as indented JSON (the layout `save_pretrained` uses)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def weight_names(model_dir: str | os.PathLike) -> set[str]:
    """The state-dict keys of the folder's safetensors weights (sharded or not); empty when it has none."""
    from safetensors import safe_open

    folder = Path(model_dir)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return set(read_json(index)["weight_map"])
    names: set[str] = set()
    for path in sorted(folder.glob("model*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            names.update(handle.keys())
    return names


def supported_tasks(model_dir: str | os.PathLike) -> list[HubTask]:
    """The rows of [`HUB_TASKS`] that this checkpoint serves: class importable, heads present, config complete."""
    import glipv2

    folder = Path(model_dir)
    if not (folder / "config.json").exists():
        return []
    config = read_json(folder / "config.json")
    names = weight_names(folder)
    supported = []
    for task in HUB_TASKS:
        if getattr(glipv2, task.model_class, None) is None:
            continue
        if not all(any(name.startswith(head + ".") for name in names) for head in task.heads):
            continue
        if not all(config.get(key) for key in task.config_keys):
            continue
        supported.append(task)
    return supported


def task_pipelines(task: HubTask, model_dir: str | os.PathLike) -> tuple[str, ...]:
    """The pipeline tasks `task` runs from this folder ([`NEEDS_NO_TOKENIZER`] ones only without a tokenizer)."""
    has_tokenizer = any((Path(model_dir) / name).exists() for name in TOKENIZER_FILES)
    return tuple(name for name in task.pipelines if not (has_tokenizer and name in NEEDS_NO_TOKENIZER))


def _copy_code(cls: type, folder: Path) -> str:
    """Copies the module defining `cls` and its relative imports into `folder`; returns `module.ClassName`."""
    from transformers.dynamic_module_utils import get_relative_import_files

    source = Path(inspect.getfile(cls))
    for path in [source, *map(Path, get_relative_import_files(str(source)))]:
        shutil.copyfile(path, folder / path.name)
    return f"{source.stem}.{cls.__name__}"


def custom_pipeline_entries(tasks: Iterable[HubTask], folder: Path) -> dict[str, dict[str, Any]]:
    """`config.custom_pipelines` for the pipeline tasks that glipv2 itself provides (code copied into `folder`).

    Same layout as transformers' `Pipeline.save_pretrained`: `{"impl": "module.Class", "pt": [auto class names],
    "type": ...}`. `pipeline()` reads it before its own task table, so tasks transformers removed work too.
    """
    from transformers.pipelines import PIPELINE_REGISTRY

    entries: dict[str, dict[str, Any]] = {}
    for task in tasks:
        for name in task.pipelines:
            registered = PIPELINE_REGISTRY.supported_tasks.get(name)
            impl = (registered or {}).get("impl")
            if not isinstance(impl, type) or not impl.__module__.startswith("glipv2."):
                continue  # a stock transformers pipeline: the auto_map entry is enough
            entries[name] = {"impl": _copy_code(impl, folder), "pt": [task.auto_class]}
            if registered.get("type"):
                entries[name]["type"] = registered["type"]
    return entries


def prepare_for_hub(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Makes a saved folder load from its own code: `auto_map` for every supported Auto class, `custom_pipelines`.

    Edits `config.json` in place and copies the needed `glipv2` modules beside it. Returns
    `{"auto_map": ..., "custom_pipelines": ...}` (empty for an adapter-only folder, which has no `config.json`).
    """
    import glipv2

    folder = Path(model_dir)
    tasks = supported_tasks(folder)
    if not tasks:
        return {"auto_map": {}, "custom_pipelines": {}}
    config = read_json(folder / "config.json")
    # model entries are rebuilt from the table: a stale one (say, a closed-vocabulary class without a vocabulary)
    # would load a model that cannot run
    model_autos = {task.auto_class for task in HUB_TASKS}
    auto_map = {key: value for key, value in (config.get("auto_map") or {}).items() if key not in model_autos}
    auto_map["AutoConfig"] = _copy_code(glipv2.Glipv2Config, folder)
    for task in tasks:
        auto_map[task.auto_class] = _copy_code(getattr(glipv2, task.model_class), folder)
    pipelines = custom_pipeline_entries(tasks, folder)
    config["auto_map"] = auto_map
    if pipelines:
        config["custom_pipelines"] = pipelines
    write_json(folder / "config.json", config)
    return {"auto_map": auto_map, "custom_pipelines": pipelines}


def load_metrics(paths: Sequence[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """Merges metrics files into `{task: {metric: value, ...}}`.

    Accepts `scripts/evaluate.py` output (`{"task", "split", "num_samples", "metrics": {...}}`, kept as the task's
    numbers plus `_split`/`_num_samples`) and plain `{task: {metric: value}}` files (a task entry may also carry
    `"dataset": {"name", "type", "split"}`).
    """
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        data = read_json(path)
        if isinstance(data.get("metrics"), dict) and "task" in data:
            entry = dict(data["metrics"])
            entry["dataset"] = {
                "name": data.get("dataset") or f"{data['task']} evaluation data",
                "split": data.get("split"),
            }
            merged.setdefault(data["task"], {}).update(entry)
            continue
        for task, values in data.items():
            if not isinstance(values, dict):
                raise ValueError(f"{path}: expected {{task: {{metric: value}}}}, got {task!r}: {values!r}")
            merged.setdefault(task, {}).update(values)
    return merged


def _numbers(values: dict[str, Any]) -> list[tuple[str, float]]:
    """The reportable metrics of one task: numbers only, without COCO's -1 ("not computed", e.g. no small boxes)."""
    numbers = []
    for metric, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            numbers.append((metric, float(value)))
    return numbers


def eval_results(metrics: dict[str, dict[str, Any]]) -> list[Any]:
    """`EvalResult`s for the card's `model-index`, one per numeric metric of a known task."""
    from huggingface_hub import EvalResult

    results = []
    for task, values in metrics.items():
        if task not in METRIC_TASKS:
            raise ValueError(f"unknown metrics task {task!r}; known: {sorted(METRIC_TASKS)}")
        task_type, task_name = METRIC_TASKS[task]
        dataset = values.get("dataset") or {}
        for metric, value in _numbers(values):
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset.get("type") or "custom",
                    dataset_name=dataset.get("name") or f"{task} evaluation data",
                    dataset_split=dataset.get("split"),
                    metric_type=metric,
                    metric_name=metric,
                    metric_value=value,
                )
            )
    return results


def _results_table(metrics: dict[str, dict[str, Any]]) -> str:
    lines = ["| task | dataset | metric | value |", "|---|---|---|---|"]
    for task, values in metrics.items():
        dataset = (values.get("dataset") or {}).get("name") or f"{task} evaluation data"
        for metric, value in _numbers(values):
            lines.append(f"| {task} | {dataset} | {metric} | {value:.4f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _training_section(recipe: dict[str, Any]) -> str:
    """A summary of `training_recipe.json`: tasks with their weights, data, model, and the full recipe."""
    import yaml

    lines = []
    for task in recipe.get("tasks", []):
        weights = ", ".join(f"{k} {v}" for k, v in task.items() if k != "name")
        lines.append(f"- {task.get('name')}" + (f" ({weights})" if weights else ""))
    data = recipe.get("data", {})
    if data.get("generate"):
        lines.append(f"- data: synthetic scenes from `tasks.synthetic` ({data['generate']})")
    elif data:
        lines.append(f"- data: `{data.get('dir', '')}` {', '.join(data.get('datasets', []))}".rstrip())
    recipe_yaml = yaml.safe_dump(recipe, sort_keys=False).rstrip()
    return "Tasks trained jointly:\n\n" + "\n".join(lines) + f"\n\nFull recipe:\n\n```yaml\n{recipe_yaml}\n```"


def _card_data(
    tasks: list[HubTask],
    metrics: dict[str, dict[str, Any]],
    model_name: str,
    license: str,  # noqa: A002
    datasets: Sequence[str],
    base_model: str | None,
    adapter: dict[str, Any] | None,
) -> Any:
    from huggingface_hub import ModelCardData

    tags = ["glipv2", "vision-language", "custom_code"] + [tag for task in tasks for tag in task.tags]
    if adapter is not None:
        tags.append("peft")
    return ModelCardData(
        license=license,
        library_name="peft" if adapter is not None and not tasks else "transformers",
        pipeline_tag=next((task.pipeline_tag for task in tasks if task.pipeline_tag), None),
        tags=list(dict.fromkeys(tags)),
        datasets=list(datasets) or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results(metrics) or None,
    )


def render_model_card(
    model_dir: str | os.PathLike,
    metrics: dict[str, dict[str, Any]] | None = None,
    repo_id: str | None = None,
    license: str = "mit",  # noqa: A002
    datasets: Sequence[str] = (),
    base_model: str | None = None,
    template_path: str | os.PathLike = TEMPLATE_PATH,
) -> str:
    """The model card (`README.md` text) of a saved folder.

    Args:
        model_dir: the saved folder (`config.json`, weights, processor; optionally `training_recipe.json`,
            `adapter_config.json`).
        metrics: `{task: {metric: value}}` (see [`load_metrics`]); becomes the `model-index` and a results table.
        repo_id: the repository id used in the usage snippets (default: the folder name).
        license: a Hub license identifier.
        datasets: Hub dataset ids for the front matter (default: `data.datasets` of the training recipe).
        base_model: the model this one was fine-tuned from (default: the adapter's or the recipe's base model).
        template_path: the Jinja template.
    """
    from huggingface_hub import ModelCard

    folder = Path(model_dir)
    metrics = metrics or {}
    repo_id = repo_id or folder.name
    recipe = read_json(folder / "training_recipe.json") if (folder / "training_recipe.json").exists() else {}
    adapter = read_json(folder / "adapter_config.json") if (folder / "adapter_config.json").exists() else None
    base_model = base_model or (adapter or {}).get("base_model_name_or_path") or recipe.get("base_model")
    datasets = list(datasets) or list(recipe.get("data", {}).get("datasets", []))
    tasks = supported_tasks(folder)
    config = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    card_data = _card_data(tasks, metrics, repo_id.split("/")[-1], license, datasets, base_model, adapter)
    task_rows = [
        {
            "name": task.name,
            "model_class": task.model_class,
            "auto_class": task.auto_class,
            "pipelines": ", ".join(f"`{p}`" for p in task_pipelines(task, folder)) or "-",
            "usage": task.usage.replace("{repo_id}", repo_id),
        }
        for task in tasks
    ]
    data_summary = "synthetic scenes" if recipe.get("data", {}).get("generate") else "its training data"
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        task_rows=task_rows,
        adapter={"base": base_model} if adapter is not None else None,
        results_table=_results_table(metrics),
        recipe=recipe,
        training=_training_section(recipe) if recipe else "",
        data_summary=data_summary,
        max_text_length=config.get("max_text_length", 256),
    )
    return str(card)


def write_model_card(
    model_dir: str | os.PathLike, metrics: dict[str, dict[str, Any]] | None = None, **kwargs: Any
) -> Path:
    """Renders the card (see [`render_model_card`]) into `<model_dir>/README.md`; returns its path."""
    path = Path(model_dir) / "README.md"
    path.write_text(render_model_card(model_dir, metrics, **kwargs), encoding="utf-8")
    return path


def files_to_upload(model_dir: str | os.PathLike) -> list[str]:
    """Relative paths in `model_dir` that a push uploads ([`UPLOAD_PATTERNS`]), sorted."""
    folder = Path(model_dir)
    selected = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in UPLOAD_PATTERNS):
            selected.append(path.name)
    return selected


def stage_folder(
    model_dir: str | os.PathLike,
    staging_dir: str | os.PathLike,
    metrics: dict[str, dict[str, Any]] | None = None,
    card: bool = True,
    **card_kwargs: Any,
) -> list[str]:
    """Copies the uploadable files to `staging_dir`, prepares them for the Hub and writes the model card there.

    The source folder is left untouched. Returns the staged relative paths.
    """
    staging = Path(staging_dir)
    staging.mkdir(parents=True, exist_ok=True)
    for name in files_to_upload(model_dir):
        shutil.copyfile(Path(model_dir) / name, staging / name)
    prepare_for_hub(staging)
    if card:
        write_model_card(staging, metrics, **card_kwargs)
    return files_to_upload(staging)


def push_folder(
    staging_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload GLIPv2 model",
    endpoint: str | None = None,
) -> Any:
    """Creates the repository (and the `revision` branch) if needed and uploads a staged folder in one commit.

    Returns the `CommitInfo` (its `oid` is the commit sha). Authentication is `huggingface_hub`'s own (`HF_TOKEN`
    or the stored login).
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(staging_dir),
        revision=revision,
        commit_message=commit_message,
        allow_patterns=list(UPLOAD_PATTERNS),
    )


__all__ = [
    "HUB_TASKS",
    "METRIC_TASKS",
    "UPLOAD_PATTERNS",
    "HubTask",
    "NEEDS_NO_TOKENIZER",
    "custom_pipeline_entries",
    "eval_results",
    "files_to_upload",
    "load_metrics",
    "prepare_for_hub",
    "push_folder",
    "render_model_card",
    "stage_folder",
    "supported_tasks",
    "task_pipelines",
    "weight_names",
    "write_model_card",
]
