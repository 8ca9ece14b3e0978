"""Exported detection models scored as the PyTorch model is: the detection task's data, its evaluation loop
(`tasks.evaluation.gather_predictions`) and its metric (`TaskSpec.score`, COCO box mAP), with an onnxruntime model
([`glipv2.onnx_export.Glipv2OnnxModel`]) in place of `detect_labels`.

    python scripts/export_onnx.py --model demo_output/model --output-dir onnx/ --int8 \
        --evaluate-data demo_output/data --split val
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator

from tasks.collate import load_rgb
from tasks.detection.prompts import detections_to_predictions
from tasks.evaluation import gather_predictions, run_evaluation
from tasks.registry import get_task
from tasks.spec import Prediction, PredictOptions, TaskData
from tasks.transforms import clean_category_name


def predict_detection_onnx(
    onnx_model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """The detection task's `predict` on an ONNX grounding model: every category, in the prompt chunks of
    `processor.build_prompts` (as `detect_labels`), one image per call, post-processed by
    `processor.post_process_grounded_object_detection`; chunks merged by score, `options.max_detections` kept."""
    names = [clean_category_name(category["name"]) for category in data.categories]
    category_ids = [int(category["id"]) for category in data.categories]
    prompts = processor.build_prompts(names, max_length=onnx_model.max_text_length)
    results = []
    for record in records:
        image = load_rgb(record["image"])
        parts = []
        for prompt in prompts:
            chunk_labels = [names[index] for index in prompt.label_ids]
            outputs = onnx_model(**processor(images=image, text=[chunk_labels]))
            (found,) = processor.post_process_grounded_object_detection(
                outputs,
                threshold=options.threshold,
                target_sizes=[(image.height, image.width)],
                text_labels=[chunk_labels],
            )
            found["labels"] = torch.tensor(prompt.label_ids, dtype=torch.int64)[found["labels"]]
            parts.append(found)
        scores = torch.cat([part["scores"] for part in parts])
        order = scores.argsort(descending=True, stable=True)
        order = order[: options.max_detections] if options.max_detections > 0 else order
        results.append({key: torch.cat([part[key] for part in parts])[order] for key in ("scores", "boxes", "labels")})
    return detections_to_predictions(records, results, category_ids)


def evaluate_detection_onnx(
    model_dir: str | os.PathLike,
    onnx_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    split: str = "val",
    batch_size: int = 8,
    max_samples: int | None = None,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """COCO box metrics of the PyTorch checkpoint `model_dir` (`detect_labels`, the task's own `predict`) and of
    the ONNX exports in `onnx_dir` (`model.onnx`, and `model_int8.onnx` when present) on the detection split
    `split` of `data_dir` (the `tasks.synthetic` layout). Returns `{"pytorch": metrics, "onnx_fp32": ...,
    "onnx_int8": ...}`."""
    from glipv2 import Glipv2ForGrounding, Glipv2Processor
    from glipv2.onnx_export import INT8_FILE, Glipv2OnnxModel

    spec = get_task("detection")
    data = spec.load(spec.default_files(str(data_dir), split), max_samples)
    accelerator = Accelerator(cpu=True)
    processor = Glipv2Processor.from_pretrained(str(model_dir))
    model = Glipv2ForGrounding.from_pretrained(str(model_dir)).eval()
    metrics, _ = run_evaluation(spec, accelerator, model, processor, data, batch_size)
    results = {"pytorch": metrics}
    options = PredictOptions()
    exports = {"onnx_fp32": False, "onnx_int8": True}
    for name, int8 in exports.items():
        if int8 and not os.path.isfile(os.path.join(onnx_dir, INT8_FILE)):
            continue
        onnx_model = Glipv2OnnxModel.from_pretrained(onnx_dir, int8=int8, threads=threads)

        def predict(records: list[dict[str, Any]], onnx_model: Any = onnx_model) -> list[Prediction]:
            return predict_detection_onnx(onnx_model, processor, records, data, options)

        predictions = gather_predictions(accelerator, predict, data.dataset, batch_size)
        results[name] = spec.score(spec.load_metric(), predictions, data)
    return results


__all__ = ["evaluate_detection_onnx", "predict_detection_onnx"]
