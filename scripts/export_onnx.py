"""Export a GLIPv2 detection checkpoint to ONNX (onnxruntime on CPU), optionally int8, and score the exports.

    # open vocabulary / phrase grounding: onnx/model.onnx (+ model_int8.onnx), config.json, processor files
    python scripts/export_onnx.py --model demo_output/model --output-dir onnx/ --int8
    # closed vocabulary (Glipv2ForObjectDetection): the checkpoint's vocabulary, or --labels
    python scripts/export_onnx.py --model demo_output/model --closed-vocabulary --labels "red circle,blue square" \
        --output-dir onnx_closed/
    # COCO box AP of PyTorch, ONNX fp32 and ONNX int8 on a detection split (the tasks.synthetic layout)
    python scripts/export_onnx.py --model demo_output/model --output-dir onnx/ --int8 \
        --evaluate-data demo_output/data --split val

The graphs come from `torch.onnx.export` (TorchScript tracer, dynamic batch, image size and prompt length);
optimum's exporter does not know this architecture. Limits (mixed-size batches, the smallest image for a Swin
backbone) are described in `glipv2/onnx_export.py` and `docs/deploy.md`. Run an export with
`glipv2.onnx_export.Glipv2OnnxModel.from_pretrained(output_dir)` and post-process with the saved processor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from glipv2 import Glipv2ForGrounding, Glipv2ForObjectDetection, Glipv2Processor  # noqa: E402
from glipv2.onnx_export import DEFAULT_OPSET, export_onnx  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder (model + processor)")
    parser.add_argument("--output-dir", required=True, help="folder for the ONNX file(s), config and processor")
    parser.add_argument("--closed-vocabulary", action="store_true", help="export Glipv2ForObjectDetection")
    parser.add_argument("--labels", help="closed vocabulary: comma-separated labels (default: the checkpoint's)")
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (dynamic int8 linear layers)")
    parser.add_argument(
        "--int8-activation-products",
        action="store_true",
        help="--int8: also quantize products of two activations (the bi-attention's matmuls)",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 16: GridSample)")
    parser.add_argument("--evaluate-data", help="score PyTorch and the exports on this detection dataset root")
    parser.add_argument("--split", default="val", help="--evaluate-data: the split")
    parser.add_argument("--max-samples", type=int, help="--evaluate-data: only the first N images")
    parser.add_argument("--threads", type=int, help="torch and onnxruntime threads")
    args = parser.parse_args(argv)
    if args.evaluate_data and args.closed_vocabulary:
        parser.error("--evaluate-data scores the open-vocabulary export; drop --closed-vocabulary")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    processor = Glipv2Processor.from_pretrained(args.model)
    model_class = Glipv2ForObjectDetection if args.closed_vocabulary else Glipv2ForGrounding
    model = model_class.from_pretrained(args.model).eval()
    if args.closed_vocabulary and args.labels:
        model.set_vocabulary(processor, [label.strip() for label in args.labels.split(",") if label.strip()])
    try:
        written = export_onnx(
            model,
            processor,
            args.output_dir,
            int8=args.int8,
            opset=args.opset,
            int8_activation_products=args.int8_activation_products,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for kind, path in written.items():
        print(f"{kind}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if args.evaluate_data:
        from tasks.deploy.onnx import evaluate_detection_onnx

        results = evaluate_detection_onnx(
            args.model, args.output_dir, args.evaluate_data, args.split, max_samples=args.max_samples
        )
        print(json.dumps(results, indent=2))
        for name, metrics in results.items():
            print(f"{name}: AP50 {metrics['AP50']:.4f}  AP {metrics['AP']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
