"""Writes training data as Parquet shards with the images inside, for streaming (`data.shards` in a recipe).

    # every task of a recipe, read from its data folder / task files as training would read them
    python scripts/write_shards.py --config configs/demo.yaml --output_dir data/shards
    # one source of one task, as a named part (a task folder may hold several parts: GoldG's mixed and flickr, ...)
    python scripts/write_shards.py --task grounding --image_dir flickr30k/images \\
        --annotation_file mdetr_annotations/final_flickr_separateGT_train.json --output_dir data/shards --part flickr

Each task gets `<output_dir>/<task>/<part>-NNNNN-of-MMMMM.parquet` and a `shards.json` manifest. Every format a
task's loader reads is accepted (COCO / Objects365 / LVIS instances, MDETR grounding, RefCOCO, PhraseCut, VQAv2,
COCO captions, pseudo-labels from `scripts/pseudo_label.py`); records are validated as training validates them.
Training then streams them: `--set data.shards=data/shards` (see `tasks/shards.py`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tasks.shards import shard_recipe, shard_task_files


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a recipe: shard every task's training split")
    source.add_argument("--task", help="a task name (tasks/registry.py): shard the files given below")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe overrides")
    parser.add_argument("--annotation_file", help="with --task: the task's annotation file")
    parser.add_argument("--image_dir", help="with --task: the image folder")
    parser.add_argument("--questions_file", help="with --task vqa: the VQAv2 questions file")
    parser.add_argument("--image_name_format", help="with --task vqa: image file name pattern")
    parser.add_argument("--output_dir", required=True, help="the shard root (one folder per task)")
    parser.add_argument("--part", default="train", help="the part's name in its task folder (default: train)")
    parser.add_argument("--records_per_shard", type=int, default=1000)
    parser.add_argument("--row_group_size", type=int, default=100, help="Parquet row group: rows read at once")
    parser.add_argument("--skip_invalid", action="store_true", help="with --task: skip malformed records")
    parser.add_argument("--verify_images", action="store_true", help="with --task: decode every image first")
    args = parser.parse_args(argv)
    if args.task and not (args.image_dir and args.annotation_file):
        parser.error("--task needs --image_dir and --annotation_file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    options = {"records_per_shard": args.records_per_shard, "row_group_size": args.row_group_size}
    try:
        if args.config:
            from tasks.recipe import load_recipe

            manifests = shard_recipe(load_recipe(args.config, args.set), args.output_dir, args.part, **options)
        else:
            from tasks.spec import DataFiles

            files = DataFiles(args.image_dir, args.annotation_file, args.questions_file, args.image_name_format)
            manifests = {
                args.task: shard_task_files(
                    args.task,
                    files,
                    args.output_dir,
                    args.part,
                    skip_invalid=args.skip_invalid,
                    verify_images=args.verify_images,
                    **options,
                )
            }
    except (OSError, ValueError, KeyError) as error:
        print(f"write_shards: {error}", file=sys.stderr)
        return 2
    for task, manifest in manifests.items():
        part = manifest["parts"][args.part]
        print(f"{task}: {part['num_records']} records in {len(part['files'])} shard(s) -> {args.output_dir}/{task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
