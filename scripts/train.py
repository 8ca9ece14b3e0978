"""Joint multitask training from a recipe (`configs/*.yaml`, see `tasks/recipe.py`), with command-line overrides.

    python scripts/train.py --config configs/demo.yaml --set train.max_steps=200 --output_dir outputs/run
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/train.py --config ...
    torchrun --nproc_per_node 2 scripts/train.py --config ...
    python scripts/train.py --config ... --resume_from_checkpoint latest

Writes checkpoints (`checkpoint-<step>/`, atomic, last K kept), TensorBoard logs, and at the end a Hub-ready folder
`<output_dir>/final` (weights or adapter, config, processor, recipe) plus `train_summary.md` and `train_history.json`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tasks.allocator import reexec_with_malloc_settings

if __name__ == "__main__":
    reexec_with_malloc_settings()  # first of all: glibc reads its allocator settings only at start-up

from tasks.multitask import build_training, finish_training  # noqa: E402
from tasks.publish import publish  # noqa: E402
from tasks.recipe import load_recipe  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe entry, e.g. train.max_steps=100 or tasks.vqa.loss_weight=2 (parsed by its type)",
    )
    parser.add_argument("--output_dir", default=None, help="overrides train.output_dir")
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (a log line every log_every)")
    parser.add_argument("--push_to_hub", default=None, metavar="REPO_ID", help="upload <output_dir>/final with a card")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: a private repository")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    run = build_training(load_recipe(args.config, args.set, args.output_dir))
    history = run.trainer.train(resume_from=args.resume_from_checkpoint, progress=not args.no_progress)
    summary = finish_training(run, history)
    if run.trainer.accelerator.is_main_process:
        print(summary)
        if args.push_to_hub:
            _, commit = publish(os.path.join(run.output_dir, "final"), args.push_to_hub, private=args.private)
            print(f"pushed to {args.push_to_hub}: commit {commit.oid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
