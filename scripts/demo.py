"""The built-in demo (the README's main job), offline on CPU: synthetic multitask data, joint training, held-out
evaluation, a Hub-ready folder with its model card, self-training, every pipeline on held-out images and real
photographs, and `report.html` (see `tasks/demo.py`).

    python scripts/demo.py --output-dir demo_output [--max-steps N] [--set KEY=VALUE] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tasks.allocator import reexec_with_malloc_settings

if __name__ == "__main__":
    reexec_with_malloc_settings()  # first of all: glibc reads its allocator settings only at start-up

from tasks.demo import run_demo  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="demo_output")
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"))
    parser.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe overrides")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (tests): few images and steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    overrides = list(args.set) + ([f"train.max_steps={args.max_steps}"] if args.max_steps is not None else [])
    run_demo(args.config, args.output_dir, overrides, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
