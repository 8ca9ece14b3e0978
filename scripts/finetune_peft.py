"""Fine-tune a GLIPv2 checkpoint on your own data: LoRA, prompt tuning, linear probing, or in full.

    python scripts/finetune_peft.py --model outputs/demo/final --method lora \\
        --train-annotations data/instances_train.json --train-images data/images/train \\
        [--val-annotations data/instances_val.json --val-images data/images/val] [--task detection] \\
        --output outputs/lora [--lora-r 8 --lora-alpha 16 --target-modules REGEX_OR_LIST] [--max-steps 300] \\
        [--merge] [--push_to_hub me/glipv2-lora] [--config configs/finetune_lora.yaml]

Data is read by the `tasks` loaders (COCO instances by default; `--task grounding|vqa|captioning` for the other
formats) and trained by `tasks.trainer.MultitaskTrainer`, so `accelerate launch` / `torchrun` with several processes
work as for `scripts/train.py`. `--output` receives the adapter (`adapter_model.safetensors` + `adapter_config.json`
for LoRA, `prompt_tuning.safetensors` + `prompt_tuning_config.json` for prompt tuning, the full model for
linear-probe/full), the processor, a model card and, with validation data, `eval_results.json`; `--merge` also writes
`<output>/merged`, a plain checkpoint that loads with `from_pretrained` without PEFT. `--config` reads defaults for
any option from YAML (option names with underscores); the command line wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

_SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
_REPO_ROOT = os.path.dirname(_SCRIPTS_DIR)
# `python scripts/finetune_peft.py` puts scripts/ first on sys.path, where scripts/evaluate.py would shadow the
# `evaluate` package; the repository root (for `tasks`) would be missing.
sys.path[:] = [path for path in sys.path if os.path.abspath(path or os.curdir) != _SCRIPTS_DIR]
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import yaml  # noqa: E402

from tasks.peft_utils import METHODS, TASK_HEADS  # noqa: E402

logger = logging.getLogger("glipv2.finetune_peft")


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of option defaults (e.g. configs/finetune_lora.yaml)")
    parser.add_argument("--model", help="base checkpoint folder (model + processor)")
    parser.add_argument("--method", choices=METHODS, default="lora")
    parser.add_argument("--task", choices=sorted(TASK_HEADS), default="detection")
    parser.add_argument("--train-annotations", help="COCO instances / MDETR / VQAv2 annotations / COCO captions JSON")
    parser.add_argument("--train-images", help="folder of the training images")
    parser.add_argument("--train-questions", help="VQA: VQAv2 questions JSON")
    parser.add_argument("--val-annotations", help="validation annotations (evaluated at the end)")
    parser.add_argument("--val-images", help="folder of the validation images")
    parser.add_argument("--val-questions", help="VQA: validation questions JSON")
    parser.add_argument("--image-name-format", help="VQA: image file name pattern")
    parser.add_argument("--output", help="output folder")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--target-modules", help="regex over full module names, or a comma-separated list of leaves")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8, help="images per process and step")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--text-learning-rate", type=float, help="text-encoder parameters (default: learning rate)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--schedule", choices=("cosine", "linear", "constant"), default="cosine")
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-val-samples", type=int)
    parser.add_argument("--train-min-sizes", type=int, nargs="+", help="multi-scale training sizes (GLIP: 480-800)")
    parser.add_argument("--train-max-size", type=int, help="longest side in training (GLIP: 1333)")
    parser.add_argument("--train-pad-size", type=int, help="pad every training batch to this square size")
    parser.add_argument(
        "--fixed-prompt",
        action="store_true",
        help="detection: train on the evaluation prompt (all categories in order, GLIP's DISABLE_SHUFFLE) instead "
        "of sampled, shuffled ones; suits prompt tuning",
    )
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--merge", action="store_true", help="also write <output>/merged, a plain checkpoint")
    parser.add_argument("--push_to_hub", "--push-to-hub", dest="push_to_hub", metavar="REPO", help="Hub repo id")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options from `--config` (YAML) overridden by the command line; required ones checked after both."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        with open(known.config, encoding="utf-8") as handle:
            defaults = {key.replace("-", "_"): value for key, value in (yaml.safe_load(handle) or {}).items()}
        unknown = sorted(set(defaults) - {action.dest for action in parser._actions})
        if unknown:
            parser.error(f"{known.config}: unknown option(s) {unknown}")
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    missing = [name for name in ("model", "train_annotations", "train_images", "output") if not getattr(args, name)]
    if missing:
        parser.error("missing " + ", ".join("--" + name.replace("_", "-") for name in missing))
    if args.task == "vqa" and not args.train_questions:
        parser.error("--task vqa needs --train-questions")
    return args


def load_split(args: argparse.Namespace, split: str) -> Any:
    """The `TaskData` of the train or val split through the task registry's loader."""
    from tasks.registry import DataFiles, get_task

    files = DataFiles(
        image_dir=getattr(args, f"{split}_images"),
        annotation_file=getattr(args, f"{split}_annotations"),
        questions_file=getattr(args, f"{split}_questions"),
        image_name_format=args.image_name_format,
    )
    return get_task(args.task).load(files, getattr(args, f"max_{split}_samples"))


def build_model(args: argparse.Namespace, answer_vocab: list[str] | None) -> Any:
    """The base checkpoint as the task's training class, prepared for the method (parameters printed)."""
    from tasks.multitask import model_class_for
    from tasks.peft_utils import count_parameters, prepare_model

    extra = {"id2label": dict(enumerate(answer_vocab))} if answer_vocab else {}
    model = model_class_for([args.task]).from_pretrained(args.model, **extra)
    model = prepare_model(
        model, args.method, args.task, args.target_modules, args.lora_r, args.lora_alpha, args.lora_dropout
    )
    trainable, total = count_parameters(model)
    if int(os.environ.get("RANK", "0")) == 0:  # the Accelerator does not exist yet: one line per run, not per rank
        print(f"{args.method}: trainable parameters {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")
    return model


def train_config(args: argparse.Namespace) -> Any:
    """`TrainConfig` of the run (one task, no checkpoints, no trackers)."""
    from tasks.trainer import TaskConfig, TrainConfig

    return TrainConfig(
        output_dir=args.output,
        tasks=[TaskConfig(name=args.task)],
        seed=args.seed,
        max_steps=args.max_steps,
        per_device_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        text_learning_rate=args.text_learning_rate or args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        schedule=args.schedule,
        mixed_precision=args.mixed_precision,
        report_to=None,
    )


def build_trainer(args: argparse.Namespace, processor: Any) -> Any:
    """Data sources through the `tasks` collators, the prepared model and the shared `MultitaskTrainer`."""
    from accelerate.utils import set_seed

    from tasks.multitask import build_sources
    from tasks.peft_utils import fixed_prompt_source, peft_task_loss
    from tasks.trainer import MultitaskTrainer
    from tasks.vqa import build_answer_vocab

    train_data = load_split(args, "train")
    answer_vocab = build_answer_vocab(train_data.dataset) if args.task == "vqa" else None
    data_recipe: dict[str, Any] = {}
    if args.train_min_sizes:
        data_recipe.update(train_min_sizes=args.train_min_sizes, train_max_size=args.train_max_size)
    if args.train_pad_size:
        data_recipe["train_pad_size"] = args.train_pad_size
    set_seed(args.seed)
    model = build_model(args, answer_vocab)
    sources = build_sources({args.task: train_data}, processor, args.seed, answer_vocab, data_recipe)
    if args.fixed_prompt:
        if args.task != "detection":
            raise ValueError("--fixed-prompt applies to --task detection (the prompt is the category list).")
        sources[args.task] = fixed_prompt_source(train_data, processor, args.seed, data_recipe)
    return MultitaskTrainer(model, sources, train_config(args), task_loss=peft_task_loss)


def evaluate(args: argparse.Namespace, trainer: Any, processor: Any) -> dict[str, float] | None:
    """The task's metrics on the validation split (all processes take part; the main process gets them)."""
    from tasks.peft_utils import inference_model
    from tasks.registry import get_task

    if not (args.val_annotations and args.val_images):
        return None
    model = inference_model(trainer.accelerator.unwrap_model(trainer.model))
    result = get_task(args.task).evaluate(
        trainer.accelerator, model, processor, load_split(args, "val"), args.eval_batch_size
    )
    return None if result is None else result[0]


def save_outputs(args: argparse.Namespace, model: Any, processor: Any, metrics: dict[str, float] | None) -> None:
    """Adapter (or full model), processor, metrics, model card; `merged/` with `--merge` (main process only)."""
    from tasks.peft_utils import merge_prompt_tuning, save_prompt_tuning

    os.makedirs(args.output, exist_ok=True)
    if args.method == "prompt":
        save_prompt_tuning(model, args.output)
    else:
        model.save_pretrained(args.output)  # LoRA: adapter_model.safetensors + adapter_config.json
    processor.save_pretrained(args.output)
    card_metrics = {args.task: metrics} if metrics else None
    if metrics:
        with open(os.path.join(args.output, "eval_results.json"), "w", encoding="utf-8") as handle:
            json.dump({"task": args.task, "model": args.output, "metrics": metrics}, handle, indent=2)
    _write_card(args.output, card_metrics, args.model)
    if args.merge and args.method not in ("lora", "prompt"):
        logger.info("--merge: a %s fine-tune is already a full checkpoint (%s)", args.method, args.output)
    elif args.merge:
        merged_dir = os.path.join(args.output, "merged")
        merged = model.merge_and_unload() if args.method == "lora" else merge_prompt_tuning(model)
        merged.save_pretrained(merged_dir)
        processor.save_pretrained(merged_dir)
        _write_card(merged_dir, card_metrics, args.model)


def _write_card(folder: str, metrics: dict[str, dict[str, float]] | None, base_model: str) -> None:
    from tasks.publish import write_model_card

    write_model_card(folder, metrics, base_model=base_model)


def push(args: argparse.Namespace, metrics: dict[str, float] | None) -> None:
    """Uploads `--output` (the adapter folder, or `merged/` with `--merge`) as `tasks.publish` stages it."""
    from tasks.publish import push_folder, stage_folder

    merged = args.merge and args.method in ("lora", "prompt")
    folder = os.path.join(args.output, "merged") if merged else args.output
    with tempfile.TemporaryDirectory(prefix="glipv2-peft-push-") as staging:
        card_metrics = {args.task: metrics} if metrics else None
        stage_folder(folder, staging, card_metrics, repo_id=args.push_to_hub, base_model=args.model)
        commit = push_folder(staging, args.push_to_hub, commit_message=f"Upload GLIPv2 {args.method} fine-tune")
    print(f"pushed {folder} to {args.push_to_hub}: commit {commit.oid}")


def main(argv: Sequence[str] | None = None) -> int:
    """Fine-tune, evaluate, save (see the module docstring); returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from glipv2 import Glipv2Processor

    processor = Glipv2Processor.from_pretrained(args.model)
    trainer = build_trainer(args, processor)
    started = time.time()
    history = trainer.train(progress=not args.no_progress)
    elapsed = time.time() - started
    metrics = evaluate(args, trainer, processor)
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        first, last = history[0]["loss"], sum(r["loss"] for r in history[-10:]) / len(history[-10:])
        print(f"trained {trainer.step} steps in {elapsed:.0f} s: loss {first:.4f} -> {last:.4f} (mean of last 10)")
        if metrics is not None:
            print("validation: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        save_outputs(args, accelerator.unwrap_model(trainer.model), processor, metrics)
        if args.push_to_hub:
            push(args, metrics)
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
