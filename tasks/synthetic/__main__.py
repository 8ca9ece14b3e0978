"""Command line: ``python -m tasks.synthetic --output DIR --seed 0 --num-train N``."""

from __future__ import annotations

import argparse
import json
import sys

from tasks.synthetic.generator import generate_synthetic_multitask


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, generate the dataset, print its counts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--num-val-unseen", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    metadata = generate_synthetic_multitask(
        args.output, args.seed, args.num_train, args.num_val, args.image_size, args.num_val_unseen
    )
    print(json.dumps({"output": args.output, "counts": metadata["counts"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
