"""Publishing a saved GLIPv2 folder to the Hugging Face Hub: the model card and the upload.

The folder is already a complete repository: every `save_pretrained` writes `auto_map` for each task class the
checkpoint serves and `custom_pipelines` for this library's pipelines (`glipv2.auto_map`); [`prepare_for_hub`]
rewrites them for folders saved by earlier versions. The card lists those classes; each task's spec gives its rows'
usage, tags and `model-index` entries (`tasks.spec.HubCard`), so a new task needs nothing here.

- [`render_model_card`] / [`write_model_card`]: `README.md` from `model_cards/glipv2_model_card.md.j2` with a
  `model-index` built from metrics JSON files (`scripts/evaluate_model.py` output or `{task: {metric: value}}`).
- [`stage_folder`] / [`push_folder`] / [`publish`]: copy what is uploaded into a staging folder with its card, then
  `HfApi.upload_folder`.
- [`write_space`] / [`push_space`]: a Gradio Space for a model repository (the web demo of `tasks/app.py` loading
  it, `requirements.txt`, a `README.md` with the Spaces metadata), uploaded with `repo_type="space"`.

The token is never an argument here: `huggingface_hub` reads `HF_TOKEN` or the stored login itself.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glipv2.auto_map import Glipv2TaskClass, served_classes, write_auto_map
from glipv2.heads import HEAD_NAMES
from tasks.common import read_json
from tasks.registry import TASKS, get_task

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "model_cards" / "glipv2_model_card.md.j2"
# The web demo and its drawing helper: a Space runs copies of them (they import nothing else of the repository).
SPACE_MODULES = ("app.py", "visualize.py")
# The thumbnail colours a Space may name (Hub Spaces configuration reference).
SPACE_COLOURS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
SPACE_APP = '''"""Gradio Space: every task of the GLIPv2 model {model_repo} on one page.

Written by glipv2's `scripts/push_to_hub.py --space`; the app is glipv2's `tasks/app.py`, which loads the model with
its own code (`trust_remote_code`: glipv2 is not installed here).
"""

import sys

from tasks.app import main

MODEL = "{model_repo}"

if __name__ == "__main__":
    sys.exit(main(["--model", MODEL, "--trust-remote-code", *sys.argv[1:]]))
'''
SPACE_BODY = """
# {title}

A web demo of every task of the GLIPv2 model [{model_repo}](https://huggingface.co/{model_repo}): open-vocabulary
detection, phrase grounding, visual question answering, captioning, zero-shot image classification, instance
segmentation and referring segmentation, one tab each. A task the model cannot serve (its head is missing) says why.

The model runs through its transformers pipelines with its own code (`trust_remote_code=True`). Run the same page
locally with glipv2's `python scripts/app.py --model {model_repo} --trust-remote-code`.
"""

# What a model repository holds; anything else in the folder (checkpoints, optimizer states, logs) stays local.
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


def folder_heads(model_dir: str | os.PathLike) -> list[str]:
    """The heads a saved checkpoint holds."""
    names = weight_names(model_dir)
    return [head for head in HEAD_NAMES if any(name.startswith(head + ".") for name in names)]


def supported_classes(model_dir: str | os.PathLike) -> list[Glipv2TaskClass]:
    """The task classes a saved checkpoint serves (its heads present, its config complete)."""
    folder = Path(model_dir)
    if not (folder / "config.json").exists():
        return []
    return served_classes(folder_heads(folder), read_json(folder / "config.json"))


def prepare_for_hub(model_dir: str | os.PathLike) -> dict[str, Any]:
    """`auto_map` and `custom_pipelines` for every class the folder serves, with their code (what `save_pretrained`
    writes today; for folders saved by earlier versions). Empty for an adapter-only folder (no `config.json`)."""
    if not (Path(model_dir) / "config.json").exists():
        return {"auto_map": {}, "custom_pipelines": {}}
    return write_auto_map(model_dir, folder_heads(model_dir))


def load_metrics(paths: Sequence[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """Merges metrics files into `{task: {metric: value, ...}}`.

    Accepts `scripts/evaluate_model.py` output (`{"task", "split", "num_samples", "metrics": {...}}`, kept as the
    task's numbers plus `_split`/`_num_samples`) and plain `{task: {metric: value}}` files (a task entry may also
    carry `"dataset": {"name", "type", "split"}`).
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
    """`EvalResult`s for the card's `model-index`, one per numeric metric of a registered task."""
    from huggingface_hub import EvalResult

    results = []
    for task, values in metrics.items():
        if task not in TASKS:
            raise ValueError(f"unknown metrics task {task!r}; known: {sorted(TASKS)}")
        card = get_task(task).card
        dataset = values.get("dataset") or {}
        for metric, value in _numbers(values):
            results.append(
                EvalResult(
                    task_type=card.result_type,
                    task_name=card.result_name,
                    # the task names a custom dataset: the Hub groups results by task and dataset type
                    dataset_type=dataset.get("type") or task,
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
        weights = ", ".join(f"{k} {v}" for k, v in task.items() if k != "name" and v not in (None, {}, []))
        lines.append(f"- {task.get('name')}" + (f" ({weights})" if weights else ""))
    data = recipe.get("data", {})
    if data.get("generate"):
        lines.append(f"- data: synthetic scenes from `tasks.synthetic` ({data['generate']})")
    elif data:
        lines.append(f"- data: `{data.get('dir', '')}` {', '.join(data.get('datasets', []))}".rstrip())
    recipe_yaml = yaml.safe_dump(recipe, sort_keys=False).rstrip()
    return "Tasks trained jointly:\n\n" + "\n".join(lines) + f"\n\nFull recipe:\n\n```yaml\n{recipe_yaml}\n```"


def _class_title(entry: Glipv2TaskClass) -> str:
    """A class without a task's card: its Auto class in words (`AutoModelForPreTraining` -> "pre training")."""
    words = re.findall(r"[A-Z][a-z]+", entry.auto_class.removeprefix("AutoModelFor").removeprefix("AutoModel"))
    return " ".join(word.lower() for word in words) or "fused image and text features"


def card_rows(model_dir: str | os.PathLike, repo_id: str) -> list[dict[str, str]]:
    """One card row per class the folder serves: title and usage from the task specs that present it (a generic
    `from_pretrained` snippet otherwise), its Auto class and pipelines."""
    rows = []
    for entry in supported_classes(model_dir):
        cards = [spec.card for spec in TASKS.values() if entry.name in spec.card.usage]
        usage = "".join(card.usage[entry.name] for card in cards) or (
            f"from transformers import {entry.auto_class}\n\n"
            f'model = {entry.auto_class}.from_pretrained("{{repo_id}}", trust_remote_code=True)\n'
        )
        rows.append(
            {
                "name": " and ".join(dict.fromkeys(card.title for card in cards)) or _class_title(entry),
                "model_class": entry.name,
                "auto_class": entry.auto_class,
                "pipelines": ", ".join(f"`{name}`" for name in entry.pipelines) or "-",
                "usage": usage.replace("{repo_id}", repo_id),
            }
        )
    return rows


def _card_data(
    classes: list[Glipv2TaskClass],
    metrics: dict[str, dict[str, Any]],
    model_name: str,
    license: str,  # noqa: A002
    datasets: Sequence[str],
    base_model: str | None,
    adapter: dict[str, Any] | None,
) -> Any:
    from huggingface_hub import ModelCardData

    tags = ["glipv2", "vision-language", "custom_code"]
    for spec in TASKS.values():
        if any(entry.name in spec.card.usage for entry in classes):
            tags.extend(spec.card.tags)
    if adapter is not None:
        tags.append("peft")
    return ModelCardData(
        license=license,
        library_name="peft" if adapter is not None and not classes else "transformers",
        pipeline_tag=next((entry.pipelines[0] for entry in classes if entry.pipelines), None),
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
    recipe_base = (recipe.get("model") or {}).get("init_from")
    base_model = base_model or (adapter or {}).get("base_model_name_or_path") or recipe_base
    datasets = list(datasets) or list(recipe.get("data", {}).get("datasets", []))
    config = read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    classes = supported_classes(folder)
    card_data = _card_data(classes, metrics, repo_id.split("/")[-1], license, datasets, base_model, adapter)
    data_summary = "synthetic scenes" if recipe.get("data", {}).get("generate") else "its training data"
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        task_rows=card_rows(folder, repo_id),
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


def publish(
    model_dir: str | os.PathLike,
    repo_id: str,
    metrics: dict[str, dict[str, Any]] | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload GLIPv2 model",
    card: bool = True,
    dry_run: bool = False,
    **card_kwargs: Any,
) -> tuple[list[str], Any]:
    """Stages `model_dir` with its card and uploads it (nothing with `dry_run`). Returns the staged files with their
    sizes and the commit (None for a dry run)."""
    with tempfile.TemporaryDirectory(prefix="glipv2-push-") as staging:
        files = stage_folder(model_dir, staging, metrics, card=card, repo_id=repo_id, **card_kwargs)
        sized = [(name, os.path.getsize(os.path.join(staging, name))) for name in files]
        if dry_run:
            return sized, None
        return sized, push_folder(staging, repo_id, private, revision, commit_message)


def space_requirements() -> list[str]:
    """The Space's `requirements.txt` lines: glipv2's own runtime requirements (what the model's code imports;
    Gradio itself comes with the Space's `sdk_version`)."""
    from importlib.metadata import requires

    return [requirement for requirement in requires("glipv2") or [] if "extra ==" not in requirement]


def render_space_card(
    model_repo: str,
    title: str | None = None,
    emoji: str = "\U0001f50e",
    colours: tuple[str, str] = ("blue", "green"),
    license: str = "mit",  # noqa: A002
    sdk_version: str | None = None,
) -> str:
    """The Space's `README.md`: the Spaces YAML metadata (`sdk: gradio`, `sdk_version`, `app_file`,
    `models: [model_repo]`, title, emoji, thumbnail colours) and a description. `sdk_version` defaults to the
    installed Gradio, the one the app is tested with."""
    from huggingface_hub import SpaceCard, SpaceCardData

    if not all(colour in SPACE_COLOURS for colour in colours):
        raise ValueError(f"Space colours must be among {SPACE_COLOURS}, not {colours}.")
    if sdk_version is None:
        import gradio

        sdk_version = gradio.__version__
    title = title or model_repo.split("/")[-1]
    data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=sdk_version,
        app_file="app.py",
        models=[model_repo],
        license=license,
        tags=["glipv2", "vision-language"],
        emoji=emoji,
        colorFrom=colours[0],
        colorTo=colours[1],
        pinned=False,
        short_description="GLIPv2: detection, grounding, VQA, captions, masks",
    )
    return str(SpaceCard(f"---\n{data.to_yaml()}\n---\n" + SPACE_BODY.format(title=title, model_repo=model_repo)))


def write_space(space_dir: str | os.PathLike, model_repo: str, **card_kwargs: Any) -> list[str]:
    """Writes a Space-ready folder for the Hub model `model_repo` into `space_dir`: `app.py` (the web demo loading
    the model), `tasks/` (copies of the app module and its drawing helper), `requirements.txt` and `README.md`
    ([`render_space_card`]). Returns the written relative paths, sorted."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", model_repo):
        raise ValueError(f"{model_repo!r} is not a Hub repository id (namespace/name).")
    folder = Path(space_dir)
    (folder / "tasks").mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(SPACE_APP.format(model_repo=model_repo), encoding="utf-8")
    (folder / "tasks" / "__init__.py").write_text(
        '"""Copies of glipv2\'s web demo (`tasks/app.py`) and its drawing helper (`tasks/visualize.py`)."""\n',
        encoding="utf-8",
    )
    for name in SPACE_MODULES:
        shutil.copyfile(Path(__file__).resolve().parent / name, folder / "tasks" / name)
    (folder / "requirements.txt").write_text("\n".join(space_requirements()) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(render_space_card(model_repo, **card_kwargs), encoding="utf-8")
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def push_space(
    space_dir: str | os.PathLike,
    space_id: str,
    private: bool = False,
    commit_message: str = "Upload GLIPv2 web demo",
    endpoint: str | None = None,
) -> Any:
    """Creates the Gradio Space `space_id` if needed and uploads a folder written by [`write_space`] in one commit;
    returns the `CommitInfo`."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=space_id,
        repo_type="space",
        folder_path=str(space_dir),
        commit_message=commit_message,
        allow_patterns=["*.py", "tasks/*.py", "requirements.txt", "README.md"],
    )


__all__ = [
    "SPACE_COLOURS",
    "UPLOAD_PATTERNS",
    "card_rows",
    "eval_results",
    "files_to_upload",
    "folder_heads",
    "load_metrics",
    "prepare_for_hub",
    "publish",
    "push_folder",
    "push_space",
    "render_model_card",
    "render_space_card",
    "space_requirements",
    "stage_folder",
    "supported_classes",
    "weight_names",
    "write_model_card",
    "write_space",
]
