"""Publish a saved GLIPv2 folder to the Hugging Face Hub with its code, pipelines and model card.

    python scripts/push_to_hub.py --model outputs/demo/final --repo_id me/glipv2-demo \\
        [--private] [--revision BRANCH] [--commit_message MSG] [--metrics results.json ...] [--dry-run]
        [--space [--space_id me/glipv2-demo-app] [--space_dir DIR] [--space_title TITLE]]

Uploads the safetensors weights, config, processor files, the custom code (`auto_map` for every Auto class the
checkpoint supports, `custom_pipelines` for glipv2's pipeline tasks), the rendered model card (README.md) and PEFT
adapter files when present. `--dry-run` prints what would be uploaded and uploads nothing. The token comes from
`HF_TOKEN` or `hf auth login` and is never printed or written; set `HF_ENDPOINT` to publish to another Hub.

`--space` also writes a Gradio Space for the model repository (the web demo of `scripts/app.py` loading `--repo_id`,
`requirements.txt`, a README with the Spaces metadata) into `--space_dir` (default: a temporary folder) and uploads
it as the Space `--space_id` (default `<repo_id>-demo`); without `--model` only the Space is published (for a model
already on the Hub). With `--dry-run` the Space folder is written and listed, not uploaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from tasks.publish import load_metrics, publish, push_space, write_space


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="folder written by save_pretrained (required without --space)")
    parser.add_argument("--repo_id", required=True, help="namespace/name of the Hub repository")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    parser.add_argument("--commit_message", default="Upload GLIPv2 model", help="commit message")
    parser.add_argument("--metrics", nargs="*", default=[], help="metrics JSON (evaluate_model.py output)")
    parser.add_argument("--license", default="mit", help="Hub license identifier for the model card")
    parser.add_argument("--datasets", nargs="*", default=[], help="Hub dataset ids for the model card")
    parser.add_argument("--base_model", default=None, help="the model this one was fine-tuned from")
    parser.add_argument("--no_card", action="store_true", help="upload the folder's own README.md, if any")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="list, upload nothing")
    parser.add_argument("--space", action="store_true", help="also publish a Gradio Space demo of the model")
    parser.add_argument("--space_id", default=None, help="namespace/name of the Space (default: <repo_id>-demo)")
    parser.add_argument("--space_dir", default=None, help="write the Space folder here (default: a temporary one)")
    parser.add_argument("--space_title", default=None, help="the Space's title (default: the model's name)")
    args = parser.parse_args(argv)
    if args.model is None and not args.space:
        parser.error("--model is required (or --space alone, for a model already on the Hub)")
    return args


def publish_space(args: argparse.Namespace) -> None:
    """Writes the Space folder and uploads it (lists it with `--dry-run`)."""
    space_id = args.space_id or f"{args.repo_id}-demo"
    with tempfile.TemporaryDirectory(prefix="glipv2-space-") as scratch:
        folder = args.space_dir or scratch
        files = write_space(folder, args.repo_id, title=args.space_title)
        if args.dry_run:
            print(f"dry run: would upload the Space {space_id} ({len(files)} files, written to {folder}):")
            for name in files:
                print(f"  {name}")
            return
        commit = push_space(folder, space_id, private=args.private)
    print(f"uploaded the Space {space_id}: commit {commit.oid}")
    print(commit.commit_url)


def main(argv: Sequence[str] | None = None) -> int:
    """Stage, then list (`--dry-run`) or upload; returns the process exit status."""
    args = parse_args(argv)
    if args.model is None:
        publish_space(args)
        return 0
    if not os.path.isdir(args.model):
        print(f"error: --model {args.model!r} is not a folder", file=sys.stderr)
        return 2
    files, commit = publish(
        args.model,
        args.repo_id,
        load_metrics(args.metrics),
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        card=not args.no_card,
        dry_run=args.dry_run,
        license=args.license,
        datasets=args.datasets,
        base_model=args.base_model,
    )
    target = f"{args.repo_id}@{args.revision or 'main'}" + (" (private)" if args.private else "")
    if commit is None:
        print(f"dry run: would upload {len(files)} files to {target}:")
        for name, size in files:
            print(f"  {name} ({size} bytes)")
    else:
        print(f"uploaded {len(files)} files to {target}: commit {commit.oid}")
        print(commit.commit_url)
    if args.space:
        publish_space(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
